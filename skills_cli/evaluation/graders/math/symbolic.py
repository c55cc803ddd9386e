"""Stage 6, the symbolic fallback: math-verify (sympy) in a killable worker process, under a time limit.

Only notation the evaluator does not know (sums, floors, primes, ...) gets here. Inputs that are obviously
explosive (power towers, huge exponents or factorials, very long expressions) are refused before any symbolic
work; the worker itself is `symbolic_worker.py`, started on first need.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import re
import select
import subprocess
import sys
import threading
import time


class GradingError(Exception):
    """A comparison that could not finish (timeout, refused input, broken worker); it grades as incorrect."""


_MAX_SYMBOLIC_LENGTH = 400
# A numeric power tower (`9^{9^{9}}`): exact integer arithmetic on it never ends. `e^{-x^2}` stays allowed.
_NUMERIC_TOWER_RE = re.compile(r"\d\s*\}?\s*\^\s*[{(]?\s*\d+\s*\}?\s*\^")
_BIG_EXPONENT_RE = re.compile(r"\^\s*\{?\s*\(?\s*-?\d{4,}")
_BIG_FACTORIAL_RE = re.compile(r"\d{4,}\s*!|\{\s*\d{4,}\s*\}\s*!")
# Run by path, so the worker does not import this package (nor sympy into the grading process).
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "symbolic_worker.py")
_WORKER_START_TIMEOUT = 120.0
_WORKER_RETRY_DELAY = 60.0


def refusal_reason(text: str) -> str | None:
    """Why `text` is too explosive for sympy (towers, exponents >= 1000, factorials >= 1000!), or None."""
    if len(text) > _MAX_SYMBOLIC_LENGTH:
        return f"expression of {len(text)} characters"
    if _NUMERIC_TOWER_RE.search(text):
        return "numeric power tower"
    if _BIG_EXPONENT_RE.search(text):
        return "exponent of 1000 or more"
    if _BIG_FACTORIAL_RE.search(text):
        return "factorial of 1000 or more"
    if text.count("\\frac") > 12:
        return "more than 12 nested fractions"
    return None


class _SymbolicWorker:
    """A child Python process running math-verify, one JSON request per line; killed and replaced on overrun.

    Works from any thread (no signals in this process); concurrent callers take turns on a lock, and the time spent
    waiting for the lock counts against their timeout. A forked child never touches its parent's worker.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self._owner_pid = 0
        self._failed_start_at = -math.inf

    def equal(self, predicted: str, expected: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            raise GradingError(f"timeout: waited {timeout:.1f}s for the symbolic worker")
        try:
            process = self._ready_process()
            request = json.dumps({"predicted": predicted, "expected": expected}) + "\n"
            try:
                process.stdin.write(request.encode())
                process.stdin.flush()
            except OSError as error:
                self._stop()
                raise GradingError(f"symbolic worker died: {error}") from None
            try:
                reply = _read_line(process.stdout.fileno(), deadline)
            except EOFError:
                self._stop()
                raise GradingError("symbolic worker exited (out of memory?)") from None
            if reply is None:
                self._stop()  # the only way to stop sympy mid-computation
                raise GradingError(f"timeout: symbolic check exceeded {timeout:.1f}s")
            answer = json.loads(reply)
            if "error" in answer:
                raise GradingError(f"symbolic check failed: {answer['error']}")
            return bool(answer["equal"])
        finally:
            self._lock.release()

    def _ready_process(self) -> subprocess.Popen:
        if self._process is not None and self._owner_pid == os.getpid() and self._process.poll() is None:
            return self._process
        if self._owner_pid == os.getpid():
            self._stop()
        if time.monotonic() - self._failed_start_at < _WORKER_RETRY_DELAY:
            raise GradingError("symbolic worker unavailable (failed to start recently)")
        self._process = subprocess.Popen(
            [sys.executable, "-u", _WORKER_SCRIPT, "--symbolic-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        self._owner_pid = os.getpid()
        try:
            greeting = _read_line(self._process.stdout.fileno(), time.monotonic() + _WORKER_START_TIMEOUT)
        except EOFError:
            greeting = None
        if greeting != "ready":
            self._stop()
            self._failed_start_at = time.monotonic()  # do not pay a start-up per answer when it cannot start
            raise GradingError("symbolic worker failed to start (is math-verify installed?)")
        return self._process

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or self._owner_pid != os.getpid():
            return
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout):
            stream.close()

    def close(self) -> None:
        """Stop the worker (registered at exit)."""
        if self._lock.acquire(timeout=5):
            try:
                self._stop()
            finally:
                self._lock.release()


def _read_line(fd: int, deadline: float) -> str | None:
    """One line from a pipe, None at the deadline, EOFError when the writer is gone (select works in any thread)."""
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            raise EOFError
        buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


_SYMBOLIC_WORKER = _SymbolicWorker()
atexit.register(_SYMBOLIC_WORKER.close)


def symbolic_equal(predicted: str, expected: str, timeout: float) -> bool:
    """math-verify's verdict within `timeout` seconds, from the shared worker; GradingError when it cannot say."""
    return _SYMBOLIC_WORKER.equal(predicted, expected, timeout)
