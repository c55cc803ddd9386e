"""What one jail is made of: the program, its working directory, environment, limits, uid and namespaces.

The service builds it; the warden (jail.py) receives it on its command line, marshalled, and reports a setup
failure as one line on the status pipe (`status_fd`), which the service reads with `setup_errors`.
"""

from __future__ import annotations

import marshal
import os
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class JailSpec:
    argv: list[str]  # the program (argv[0] an absolute path)
    workdir: str
    env: dict[str, str]
    status_fd: int
    memory_mb: int
    max_processes: int
    cpu_seconds: int
    file_mb: int
    uid: int | None = None  # None: keep the warden's uid (non-root service, or no uid to drop to)
    namespaces: dict[str, bool] = field(default_factory=dict)  # net, pid, mount, user
    service_fd: int | None = None  # read end of a pipe only the service writes to: EOF means it died

    def to_argv(self, python: str) -> list[str]:
        """The warden's command line (jail.py reads the spec back with marshal)."""
        return [python, "-S", "-s", "-m", "skills_cli.sandbox.jail", marshal.dumps(asdict(self)).hex()]


def setup_errors(status_read: int) -> str | None:
    """Close the read end of a status pipe; what the warden reported on it (None: nothing went wrong)."""
    with os.fdopen(status_read, "rb") as status:
        lines = [line.strip() for line in status.read().decode(errors="replace").splitlines() if line.strip()]
    return "; ".join(lines) or None
