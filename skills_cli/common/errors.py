"""Errors a user can act on. The CLI prints them as one line and exits with status 2; nothing is submitted."""


class UserError(Exception):
    """Bad input or an environment problem the user can fix (message printed as is, no traceback)."""
