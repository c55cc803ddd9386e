"""Layer 4: the `ns` command line (typer). Parses, calls the pipeline, prints."""

import os
import sys

from skills_cli.common import interrupts

INTERRUPTED = 130  # 128 + SIGINT, the shell's status for a command stopped by Ctrl-C


def main() -> None:
    """The `ns` entry point. The command modules are imported here, inside the guard, so a Ctrl-C that lands
    while Python is still importing them aborts like one that lands later: "aborted", status 130."""
    interrupts.install()
    try:
        from skills_cli.cli.app import main as run
    except KeyboardInterrupt:
        abort()
    run()


def abort() -> None:
    """Print "aborted" and leave with 130 at once: by now the command has cancelled what it started, and an
    interrupted interpreter's shutdown can turn the status into death by SIGINT."""
    print("aborted", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)
