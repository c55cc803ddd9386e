"""Stateful sessions: one persistent jailed interpreter per session (cell_runner.py) whose globals persist across
cells. A cell that times out or kills its interpreter ends the session, and its next cell says so; sessions idle
longer than the idle limit are closed; at most `max_sessions` are open at once."""

from __future__ import annotations

import json
import os
import secrets
import selectors
import subprocess
import threading
import time
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from skills_cli.sandbox.client import Execution, Limits
from skills_cli.sandbox.isolation import UidPool
from skills_cli.sandbox.runner import Launcher, failure_message, signal_name

CELL_RUNNER_SOURCE = (Path(__file__).parent / "cell_runner.py").read_text()
SESSION_CPU_SECONDS = 3600  # RLIMIT_CPU counts a session's whole life, not one cell
START_TIMEOUT = 60.0
ENDED_MEMORY = 1000  # how many ended sessions keep their reason for a late cell


class SessionLimitReached(Exception):
    """All session slots are taken (HTTP 429)."""


@dataclass
class Session:
    process: subprocess.Popen
    status_read: int
    uid: int | None
    resources: ExitStack  # the working directory
    limits: Limits
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: bytes = b""


def read_line(session: Session, deadline: float) -> bytes | None:
    """The interpreter's next reply line; None at EOF (it died); TimeoutError at the deadline."""
    fd = session.process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in session.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise TimeoutError
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            session.pending += chunk
    line, _, session.pending = session.pending.partition(b"\n")
    return line


class Sessions:
    def __init__(self, launcher: Launcher, uids: UidPool, max_sessions: int, idle_seconds: float):
        self.launcher = launcher
        self.uids = uids
        self.max_sessions = max_sessions
        self.idle_seconds = idle_seconds
        self._open: dict[str, Session] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        threading.Thread(target=self._expire_forever, daemon=True, name="session-expiry").start()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, limits: Limits) -> str:
        with self._lock:
            if len(self._open) >= self.max_sessions:
                raise SessionLimitReached(f"{self.max_sessions} sessions are open (the limit); close one first")
            uid = self.uids.take(timeout=0)  # never empty while under max_sessions
            name = secrets.token_hex(16)
            self._open[name] = None  # reserve the slot while the interpreter starts
        try:
            self._open[name] = self._start(limits, uid)
        except BaseException:
            with self._lock:
                del self._open[name]
            self.uids.give_back(uid)
            raise
        return name

    def _start(self, limits: Limits, uid: int | None) -> Session:
        resources = ExitStack()
        try:
            workdir = resources.enter_context(self.launcher.workdir(uid))
            args = ["-c", CELL_RUNNER_SOURCE, str(limits.max_output_bytes)]
            process, status_read = self.launcher.start(args, limits, uid, workdir, SESSION_CPU_SECONDS, subprocess.PIPE)
        except BaseException:
            resources.close()
            raise
        session = Session(process, status_read, uid, resources, limits)
        try:
            ready = read_line(session, time.monotonic() + START_TIMEOUT)
        except TimeoutError:
            ready = None
        if ready is None:
            error = self.launcher.finish(process, status_read, uid)
            resources.close()
            raise RuntimeError(f"the session's interpreter did not start: {error or 'it exited at once'}")
        return session

    def run(self, name: str, code: str, timeout: float | None) -> Execution:
        session = self._open.get(name)
        if session is None:
            reason = self._ended.get(name, "no such session (never opened, or closed)")
            return Execution("error", "", "", None, 0.0, False, f"session {name} has ended: {reason}")
        with session.lock:
            session.last_used = time.monotonic()
            start = session.last_used
            limit = timeout if timeout is not None else session.limits.timeout
            execution, ended = self._send(session, code, limit)
            execution = replace(execution, duration=round(time.monotonic() - start, 4))
            session.last_used = time.monotonic()
        if ended:
            self._end(name, execution.message)
        return execution

    def _send(self, session: Session, code: str, timeout: float) -> tuple[Execution, bool]:
        """The cell's result, and whether the interpreter is gone (the session ends)."""
        try:
            session.process.stdin.write((json.dumps({"code": code}) + "\n").encode())
            session.process.stdin.flush()
            line = read_line(session, time.monotonic() + timeout)
        except TimeoutError:
            self.launcher.stop(session.process)
            message = f"timed out after {timeout:g} s (the session has ended)"
            return Execution("timeout", "", "", None, 0.0, False, message), True
        except (BrokenPipeError, OSError):
            line = None
        if line is None:
            return self._died(session), True
        reply = json.loads(line)
        return Execution(reply["status"], reply["stdout"], reply["stderr"], None, 0.0, reply["truncated"],
                         reply["message"]), False  # fmt: skip

    def _died(self, session: Session) -> Execution:
        code = session.process.wait()
        how = f"killed by {signal_name(code - 128)}" if code > 128 else failure_message(code, "")
        message = f"the session's interpreter died ({how}); the session has ended"
        return Execution("error", "", "", code, 0.0, False, message)

    def close(self, name: str, reason: str = "closed") -> bool:
        return self._end(name, reason)

    def _end(self, name: str, reason: str | None) -> bool:
        with self._lock:
            session = self._open.pop(name, None)
            if session is None:
                return False
            self._ended[name] = reason or "ended"
            while len(self._ended) > ENDED_MEMORY:
                self._ended.popitem(last=False)
        self.launcher.finish(session.process, session.status_read, session.uid)
        session.resources.close()
        self.uids.give_back(session.uid)
        return True

    def close_all(self) -> None:
        for name in list(self._open):
            self._end(name, "the sandbox shut down")

    def _expire_forever(self) -> None:
        while True:
            time.sleep(min(5.0, self.idle_seconds / 2))
            now = time.monotonic()
            for name, session in list(self._open.items()):
                if session and not session.lock.locked() and now - session.last_used > self.idle_seconds:
                    self._end(name, f"closed after {self.idle_seconds:g} s idle")
