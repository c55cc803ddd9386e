"""The per-job API key of self-hosted model servers (stdlib only: the pipeline and the launchers import it).

A job that hosts a server gets a fresh random key in `$SKILLS_SERVER_API_KEY` when it starts, never at
submission, so it is in no spec file or batch script (a job that hosts the code sandbox gets one in
`$SKILLS_SANDBOX_API_KEY` the same way). The server requires it as `Authorization: Bearer
<key>`; the job's client sends it. It travels only through the job's environment, which other users cannot
read (/proc/PID/environ is owner-only), never through a command line, which they can (`ps`).

    python -m skills_cli.inference.server.auth    # prints a new key (used by batch scripts)
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterable

from skills_cli.inference.config import PORT_ENV
from skills_cli.sandbox.client import SANDBOX_KEY_ENV, SANDBOX_PORT_ENV

API_KEY_ENV = "SKILLS_SERVER_API_KEY"
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


def new_api_key() -> str:
    """256 random bits, hex: safe in headers, shell words and file names alike."""
    return secrets.token_hex(32)


# each service a job may host: the variable of its free port -> the variable of its key
SERVICE_KEYS = {PORT_ENV: API_KEY_ENV, SANDBOX_PORT_ENV: SANDBOX_KEY_ENV}


def api_key_names(port_names: Iterable[str]) -> list[str]:
    """The key variables of the services a job hosts (the model server, the sandbox), known by the free ports
    they get: launchers set these variables to a new key when the job starts."""
    ports = set(port_names)
    return [key for port, key in SERVICE_KEYS.items() if port in ports]


def job_api_key() -> str | None:
    """The key of this job's server, or None when the job hosts none (an empty value counts as none)."""
    return os.environ.get(API_KEY_ENV) or None


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`: addresses no other machine can connect to."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    print(new_api_key())
