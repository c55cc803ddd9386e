"""Linux process facts and ties: processes that die with their launcher, process identity across PID reuse, and
finding a job's processes by the job uid in their environment.

Why: torch elastic (torchrun) starts each worker in a session of its own, so killing torchrun's process group
never reaches the workers; a SIGKILLed torchrun (which cannot forward anything) leaves them training as orphans.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
TORCHRUN_ENV = ("TORCHELASTIC_RUN_ID", "LOCAL_RANK")  # set by torchrun in every worker's environment


def arm_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Have Linux send `signum` to this process when its parent exits; False where that is not possible.

    The setting survives exec and is cleared by fork, so it ties exactly this process to its parent."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return True


def launched_by_torchrun(environ: dict[str, str] | None = None) -> bool:
    environ = os.environ if environ is None else environ
    return any(name in environ for name in TORCHRUN_ENV)


def die_with_launcher() -> None:
    """In a torchrun worker: die (SIGKILL) when torchrun dies, however it dies. Call first thing in `main()`.

    A plain process (no torchrun) is left alone: its parent is the job's supervisor, whose stop reaches it.
    If torchrun already died before the signal was armed, nothing would ever send it, so the worker exits now
    instead of training as an orphan."""
    if not launched_by_torchrun():
        return
    launcher = os.getppid()
    if not arm_parent_death_signal(signal.SIGKILL):
        return
    if os.getppid() != launcher or _reparented_to_init(launcher):
        print("error: the launcher (torchrun) of this worker is gone; exiting", file=sys.stderr)
        raise SystemExit(1)


def _reparented_to_init(parent: int) -> bool:
    """An orphan's parent is PID 1 (init, or a container's init). In a container without an init process
    torchrun itself may be PID 1, so PID 1 counts as the launcher when it is a torch launcher."""
    if parent != 1:
        return False
    try:
        return b"torch" not in Path("/proc/1/cmdline").read_bytes()
    except OSError:
        return True


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22), or None if there is no such
    process. Together with the PID it names one process: a reused PID has a later start."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    if fields[0] == "Z":  # a zombie has finished; only its exit status is left to collect
        return None
    return int(fields[19])


def boot_id() -> str:
    """This boot of this machine (PIDs and start ticks mean something only within one boot)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def processes_with_env(name: str, value: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live processes of this user whose environment holds exactly `name=value` (their initial environment,
    which children inherit; a process cannot hide from this by starting a new session or double-forking)."""
    wanted = f"{name}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in exclude:
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            environ = (entry / "environ").read_bytes()  # empty for zombies and kernel threads
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
