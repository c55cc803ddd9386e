"""Runs one program in a fresh jail: its private working directory, the warden process, output read with caps
and a deadline, and the one-line verdict (status + message) of how it ended."""

from __future__ import annotations

import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from skills_cli.sandbox.client import Execution, Limits, sandbox_error
from skills_cli.sandbox.isolation import AUDIT_HOOK_GUARD, Isolation, UidPool, warden_env
from skills_cli.sandbox.spec import JailSpec, setup_errors

log = logging.getLogger("skills_cli.sandbox")

FILE_SIZE_MB = 64  # RLIMIT_FSIZE: the largest file a program may write
OUTPUT_KILL_FACTOR = 4  # a stream this many times over its cap (plus KILL_SLACK) gets the program killed
KILL_SLACK = 65536
READ_CHUNK = 65536
MEMORY_MARKERS = ("MemoryError", "Cannot allocate memory", "std::bad_alloc", "out of memory")


def program_env(workdir: str, python: str) -> dict[str, str]:
    """The program's whole environment: nothing inherited from the service."""
    return {
        "PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


@dataclass
class Capture:
    """One output stream, kept up to `cap` bytes and counted beyond."""

    cap: int
    kept: bytearray
    total: int = 0

    def add(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.cap - len(self.kept)
        if room > 0:
            self.kept += chunk[:room]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    @property
    def far_over(self) -> bool:
        return self.total > OUTPUT_KILL_FACTOR * self.cap + KILL_SLACK

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


@dataclass(frozen=True)
class Ending:
    """How the wait for a program ended: its exit code, or why the service stopped it."""

    exit_code: int | None
    stopped_for: str | None  # "timeout" | "output_limit" | None
    setup_error: str | None


class Launcher:
    """Starts wardens and keeps track of them, so SIGTERM can kill every running program."""

    def __init__(self, isolation: Isolation, work_root: str, uids: UidPool):
        self.isolation = isolation
        self.work_root = work_root
        self.uids = uids
        self._live: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.closing = False
        # every warden watches the read end; the write end, never written, closes only when this process exits
        self._service_alive, self._service_alive_write = os.pipe()

    @contextmanager
    def workdir(self, uid: int | None):
        """A fresh directory (0700, owned by the run's uid) removed with everything in it afterwards."""
        path = tempfile.mkdtemp(prefix="run-", dir=self.work_root)
        try:
            if uid is not None:
                os.chown(path, uid, uid)
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def program_argv(self, args: list[str]) -> list[str]:
        """python -s ARGS, behind the audit-hook network guard when there is no network namespace."""
        python = self.isolation.python
        if not self.isolation.audit_hook:
            return [python, "-s", *args]
        if args[0] == "-c":  # a session's loop: the guard goes first in the same source
            return [python, "-s", "-c", AUDIT_HOOK_GUARD + args[1], *args[2:]]
        runner = (
            AUDIT_HOOK_GUARD + "import runpy\nsys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')"
        )
        return [python, "-s", "-c", runner, *args]

    def start(self, args: list[str], limits: Limits, uid: int | None, workdir: str, cpu_seconds: int,
              stdin: int) -> tuple[subprocess.Popen, int]:  # fmt: skip
        """Start the warden for `python -s ARGS`; the process and the read end of its status pipe."""
        status_read, status_write = os.pipe()
        spec = JailSpec(argv=self.program_argv(args), workdir=workdir, env=program_env(workdir, self.isolation.python),
                        status_fd=status_write, memory_mb=limits.memory_mb, max_processes=limits.max_processes,
                        cpu_seconds=cpu_seconds, file_mb=FILE_SIZE_MB, uid=uid, namespaces=self.isolation.namespaces,
                        service_fd=self._service_alive)  # fmt: skip
        try:
            process = subprocess.Popen(spec.to_argv(sys.executable), stdin=stdin, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, pass_fds=(status_write, self._service_alive),
                                       env=warden_env())  # fmt: skip
        except OSError:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        with self._lock:
            self._live.add(process)
        return process, status_read

    def stop(self, process: subprocess.Popen) -> None:
        """Kill the warden (its PID namespace dies with it) or, without one, its whole process group."""
        if not self.isolation.namespaces.get("pid"):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if process.poll() is None:
            process.kill()

    def finish(self, process: subprocess.Popen, status_read: int, uid: int | None) -> str | None:
        """Reap the warden and whatever the program left running; the setup error it reported, if any."""
        self.stop(process)
        process.wait()
        if uid is not None and not self.isolation.namespaces.get("pid"):
            self.kill_every_process_of(uid)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream:
                stream.close()
        with self._lock:
            self._live.discard(process)
        return setup_errors(status_read)

    def kill_every_process_of(self, uid: int) -> None:
        """Without a PID namespace, a process that left the group (setsid) survives killpg; but the uid is this
        run's alone, so kill(-1) sent as that uid reaches exactly what is left of the run."""
        sweep = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass"
        try:
            subprocess.run([self.isolation.python, "-c", sweep], user=uid, group=uid, extra_groups=[], env={},
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.SubprocessError) as error:
            log.warning("sandbox: could not sweep the processes of uid %d: %s", uid, error)

    def kill_all(self) -> None:
        self.closing = True
        with self._lock:
            running = list(self._live)
        for process in running:
            self.stop(process)

    def run(self, code: str, limits: Limits, stdin: str = "") -> Execution:
        """Run `code` as main.py in a fresh jail (waits for a free worker first)."""
        if self.closing:
            return sandbox_error("the sandbox is shutting down")
        uid = self.uids.take()
        try:
            with self.workdir(uid) as workdir:
                write_program(workdir, code, uid)
                return self._run_in(workdir, uid, limits, stdin)
        finally:
            self.uids.give_back(uid)

    def _run_in(self, workdir: str, uid: int | None, limits: Limits, stdin: str) -> Execution:
        start = time.monotonic()
        stdin_mode = subprocess.PIPE if stdin else subprocess.DEVNULL
        process, status_read = self.start(["main.py"], limits, uid, workdir, cpu_seconds(limits.timeout), stdin_mode)
        if stdin:
            threading.Thread(target=feed, args=(process.stdin, stdin), daemon=True).start()
        out, err = Capture(limits.max_output_bytes, bytearray()), Capture(limits.max_output_bytes, bytearray())
        stopped_for = self.collect(process, out, err, start + limits.timeout)
        setup_error = self.finish(process, status_read, uid)
        if self.closing:
            return sandbox_error("the sandbox shut down while the program ran", time.monotonic() - start)
        ending = Ending(process.returncode, stopped_for, setup_error)
        return verdict(ending, out, err, limits, time.monotonic() - start)

    def collect(self, process: subprocess.Popen, out: Capture, err: Capture, deadline: float) -> str | None:
        """Read stdout and stderr until both close; stop the program at the deadline or when its output is far
        over the cap. Why it was stopped, or None."""
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, out)
            selector.register(process.stderr, selectors.EVENT_READ, err)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                events = selector.select(min(remaining, 0.5))
                for key, _ in events:
                    chunk = os.read(key.fd, READ_CHUNK)
                    if not chunk:
                        selector.unregister(key.fileobj)
                    key.data.add(chunk)
                if out.far_over or err.far_over:
                    return "output_limit"
                if not events and process.poll() is not None and not self.isolation.namespaces.get("pid"):
                    return None  # the warden is done; what still holds the pipes is a leftover (killed next)
        try:  # both pipes closed: a program may close them and go on working
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return "timeout"
        return None


def cpu_seconds(timeout: float) -> int:
    """RLIMIT_CPU for a run: a little over its wall-clock limit (the wall clock is what the user set)."""
    return max(1, math.ceil(timeout) + 1)


def write_program(workdir: str, code: str, uid: int | None) -> None:
    path = os.path.join(workdir, "main.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(code)
    if uid is not None:
        os.chown(path, uid, uid)


def feed(stream, text: str) -> None:
    try:
        stream.write(text.encode())
        stream.close()
    except (BrokenPipeError, OSError, ValueError):  # the program exited without reading it all
        pass


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failure_message(exit_code: int, stderr: str) -> str:
    """One line for a non-zero exit: the exception's last line when Python printed one."""
    if exit_code > 128:
        return f"killed by {signal_name(exit_code - 128)}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"exited with code {exit_code}"


def verdict(ending: Ending, out: Capture, err: Capture, limits: Limits, duration: float) -> Execution:
    """The Execution for how the program ended."""
    stdout, stderr = out.text(), err.text()
    truncated = out.truncated or err.truncated
    code = ending.exit_code

    def result(status: str, message: str | None, exit_code: int | None = code) -> Execution:
        return Execution(status, stdout, stderr, exit_code, round(duration, 4), truncated, message)

    if ending.setup_error:
        return result("sandbox_error", f"the sandbox could not start the program: {ending.setup_error}", None)
    if ending.stopped_for == "timeout":
        return result("timeout", f"timed out after {limits.timeout:g} s", None)
    if ending.stopped_for == "output_limit":
        return result("output_limit", f"output far over the limit of {limits.max_output_bytes} bytes: stopped", None)
    if code == 128 + signal.SIGXCPU:
        return result("timeout", f"CPU time limit reached ({cpu_seconds(limits.timeout)} s)")
    if code != 0 and any(marker in stderr[-2000:] for marker in MEMORY_MARKERS):
        return result("memory", f"ran out of memory (limit {limits.memory_mb} MB)")
    if code != 0:
        return result("error", failure_message(code, stderr))
    return result("ok", f"output cut at {limits.max_output_bytes} bytes" if truncated else None)
