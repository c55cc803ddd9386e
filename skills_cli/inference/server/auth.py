"""The per-job API key of self-hosted model servers (stdlib only: the pipeline and the launchers import it).

A job that hosts a server gets a fresh random key in `$SKILLS_SERVER_API_KEY` when it starts (never at
submission, so it is in no spec file or batch script). The server requires it as `Authorization: Bearer
<key>`; the job's client sends it. It travels only through the job's environment, which other users cannot
read (/proc/PID/environ is owner-only), never through a command line, which they can (`ps`).

    python -m skills_cli.inference.server.auth    # prints a new key (used by batch scripts)
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Iterable

from skills_cli.inference.config import PORT_ENV

API_KEY_ENV = "SKILLS_SERVER_API_KEY"
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"


def new_api_key() -> str:
    """256 random bits, hex: safe in headers, shell words and file names alike."""
    return secrets.token_hex(32)


def api_key_names(port_names: Iterable[str]) -> list[str]:
    """[API_KEY_ENV] for a job that hosts a server (it gets the server's free port), else []: launchers set
    these variables to a new key when the job starts."""
    return [API_KEY_ENV] if PORT_ENV in port_names else []


def job_api_key() -> str | None:
    """The key of this job's server, or None when the job hosts none (an empty value counts as none)."""
    return os.environ.get(API_KEY_ENV) or None


def bearer_matches(authorization: str | None, key: str) -> bool:
    """`Authorization: Bearer <key>`, compared in constant time (no timing hints about the key)."""
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


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
