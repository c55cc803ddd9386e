"""The sandbox's client: what graders and the generation program call (standard library only, thread-safe).

    client = SandboxClient()                 # http://$SKILLS_SANDBOX_HOST:$SKILLS_SANDBOX_PORT, key from the env
    client.wait_until_ready(log_file=...)    # bounded; SandboxUnavailable names the URL and the log's tail
    result = client.run("print(1)", Limits(timeout=5))

A run that fails in the sandbox (exception, timeout, memory, output) is an `Execution` with its status, never an
exception; so is a service that fails mid-run (`sandbox_error`). A wrong key or a malformed request raises
`SandboxError`: those are configuration mistakes, not one sample's fault. Async callers use asyncio.to_thread.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

SANDBOX_PORT_ENV = "SKILLS_SANDBOX_PORT"  # set per job by the launcher (a free port on the node)
SANDBOX_KEY_ENV = "SKILLS_SANDBOX_API_KEY"  # per-job random key made at job start; the service requires it if set
SANDBOX_HOST_ENV = "SKILLS_SANDBOX_HOST"  # default 127.0.0.1
RUN_DIR_ENV = "SKILLS_CLI_RUN_DIR"  # the job's scratch folder, set by the launcher
SANDBOX_LOG = "sandbox.log"  # the job's sandbox writes its log there (the bounded wait quotes its last lines)
DEFAULT_HOST = "127.0.0.1"
LOG_TAIL_LINES = 20
STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "sandbox_error")


@dataclass(frozen=True)
class Limits:
    timeout: float = 10.0  # wall-clock seconds per run
    memory_mb: int = 1024  # address space
    max_output_bytes: int = 65536  # each of stdout/stderr is cut there (truncated=True)
    max_processes: int = 32


@dataclass(frozen=True)
class Execution:
    status: str  # one of STATUSES: ok (exit 0), error (non-zero exit), timeout, memory, output_limit, sandbox_error
    stdout: str
    stderr: str
    exit_code: int | None
    duration: float
    truncated: bool
    message: str | None  # one line describing a non-ok run (e.g. "timed out after 10 s")

    @classmethod
    def from_json(cls, fields: dict) -> Execution:
        """From the service's answer; ValueError for one that is not an Execution."""
        if fields.get("status") not in STATUSES:
            raise ValueError(f"not a sandbox result: {str(fields)[:200]}")
        return cls(**{name: fields.get(name) for name in cls.__dataclass_fields__})


def sandbox_error(message: str, duration: float = 0.0) -> Execution:
    """The result of a run the service could not carry out (it failed, or could not be reached)."""
    return Execution("sandbox_error", "", "", None, duration, False, message)


class SandboxError(Exception):
    """A request the service refused: wrong key (401), malformed request, too many open sessions."""


class SandboxUnavailable(SandboxError):
    """The service did not answer within the bounded wait (the message names the URL and the log's last lines)."""


def default_url() -> str:
    port = os.environ.get(SANDBOX_PORT_ENV)
    if not port:
        raise SandboxError(f"no sandbox address: pass url= or set ${SANDBOX_PORT_ENV} (the job's sandbox port)")
    return f"http://{os.environ.get(SANDBOX_HOST_ENV) or DEFAULT_HOST}:{port}"


def job_sandbox_log() -> str | None:
    """The log of the job's own sandbox, `$SKILLS_CLI_RUN_DIR/sandbox.log`, where the launcher writes it."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    return str(Path(run_dir) / SANDBOX_LOG) if run_dir else None


def log_tail(log_file: str | None, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the service's log, for error messages ('' without a readable log)."""
    if not log_file:
        return ""
    try:
        text = Path(log_file).read_text(errors="replace")
    except OSError as error:
        return f"\n(log {log_file} unreadable: {error.strerror})"
    tail = "\n".join(text.rstrip().splitlines()[-lines:])
    return f"\nlast lines of {log_file}:\n{tail}" if tail else f"\n(log {log_file} is empty)"


class SandboxClient:
    """HTTP client of one sandbox service; holds no connection state, so one instance serves many threads."""

    def __init__(self, url: str | None = None, api_key: str | None = None, request_timeout: float = 300.0):
        self.url = (url or default_url()).rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get(SANDBOX_KEY_ENV) or None)
        self.request_timeout = request_timeout

    def wait_until_ready(self, timeout: float = 120.0, log_file: str | None = None) -> float:
        """Poll GET /health until the service answers; the seconds waited. Raises SandboxUnavailable after
        `timeout` seconds, quoting `log_file` (default: the job's sandbox log, when in a job)."""
        log_file = log_file or job_sandbox_log()
        start = time.monotonic()
        last_error = "no answer"
        while True:
            try:
                self._request("GET", "/health", None, timeout=min(5.0, max(timeout, 0.1)))
                return time.monotonic() - start
            except (OSError, SandboxError) as error:
                last_error = str(getattr(error, "reason", None) or error)
            if time.monotonic() - start >= timeout:
                raise SandboxUnavailable(
                    f"sandbox at {self.url} did not answer within {timeout:g} s ({last_error}){log_tail(log_file)}"
                )
            time.sleep(0.2)

    def health(self) -> dict:
        """The service's /health: status, workers, open sessions and the isolation layers in force."""
        return self._request("GET", "/health", None)

    def run(self, code: str, limits: Limits = Limits(), stdin: str = "") -> Execution:
        """Run `code` as a fresh program (python main.py) in its own jail."""
        return self._execute("/run", {"code": code, "stdin": stdin, "limits": asdict(limits)})

    def open_session(self, limits: Limits = Limits()) -> str:
        """Start a persistent interpreter (globals persist across cells); its id. `limits.timeout` is the default
        per-cell timeout."""
        return self._request("POST", "/sessions", {"limits": asdict(limits)})["session"]

    def run_in_session(self, session: str, code: str, timeout: float | None = None) -> Execution:
        """Run one cell; a cell that times out or crashes ends the session (its next cell says so)."""
        return self._execute(f"/sessions/{session}/run", {"code": code, "timeout": timeout})

    def close_session(self, session: str) -> None:
        self._request("DELETE", f"/sessions/{session}", None)

    def _execute(self, path: str, body: dict) -> Execution:
        start = time.monotonic()
        try:
            return Execution.from_json(self._request("POST", path, body))
        except (OSError, ValueError) as error:  # connection refused or reset, timeout, 5xx, garbled answer
            return sandbox_error(f"sandbox at {self.url} failed: {error}", time.monotonic() - start)

    def _request(self, method: str, path: str, body: dict | None, timeout: float | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.request_timeout) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace").strip()
            if error.code < 500:
                raise SandboxError(f"sandbox at {self.url} refused {method} {path}: {error.code} {detail}") from None
            raise OSError(f"{error.code} {detail}") from None
        return json.loads(text) if text else {}
