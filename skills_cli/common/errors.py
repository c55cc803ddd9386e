"""Errors a user can act on. The CLI prints them as one line and exits with status 2; nothing is submitted."""


class UserError(Exception):
    """Bad input or an environment problem the user can fix (message printed as is, no traceback)."""


def exits_on_user_error(main):
    """Decorate an in-job program's `main`: a UserError becomes one `error: ...` line and exit status 2."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapper
