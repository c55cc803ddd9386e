"""The one place where argument vectors become shell text.

Everything a job runs is kept as argv (lists of strings) until a renderer needs a line of shell; then it
calls `quote_argv` here. User input (job names, paths, commands) is always quoted with `shlex.quote`, so a
value such as `$(rm -rf ~)` or `it's "odd"` reaches the program as the same literal string and is never
evaluated by a shell on the way.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping

from skills_cli.common.errors import UserError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Raw(str):
    """Shell text written by our renderers (e.g. `${SLURM_JOB_ID}`), emitted unquoted so it expands at run time.

    Never wrap user input in Raw: user values are plain `str` and always quoted.
    """


def quote(word: str) -> str:
    """One shell word, quoted only when it needs to be; `Raw` words pass through as written."""
    return word if isinstance(word, Raw) else shlex.quote(str(word))


def quote_argv(argv: Iterable[str]) -> str:
    """A command line whose words reach the program unchanged."""
    return " ".join(quote(word) for word in argv)


def check_env_name(name: str) -> str:
    """Environment variable names are spliced into scripts unquoted, so only plain names are allowed."""
    if not _ENV_NAME.match(name):
        raise UserError(f"invalid environment variable name {name!r} (letters, digits and _ only)")
    return name


def export_lines(env: Mapping[str, str]) -> list[str]:
    """`export NAME=value` lines, values quoted."""
    return [f"export {check_env_name(name)}={quote(value)}" for name, value in env.items()]


def env_prefix(env: Mapping[str, str]) -> str:  # noqa: D401
    """`NAME=value NAME2=value2 ` to put before a command (empty when there is no env)."""
    return "".join(f"{check_env_name(name)}={quote(value)} " for name, value in env.items())


def bash_c(script: str) -> list[str]:
    """The argv that runs a user's shell snippet; the snippet stays one argv word until quoted."""
    return ["bash", "-c", script]
