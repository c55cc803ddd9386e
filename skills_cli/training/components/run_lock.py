"""One live trainer per output directory: `<output_dir>/.trainer.lock`.

Two trainers in one directory overwrite each other's checkpoints (one removes a partial save the other is
about to load), so a trainer refuses to start while another holds the directory. Global rank 0 takes the lock
before anything is read or written and holds it for the run's life; every rank learns its verdict.

The lock is an open file under `fcntl.flock` (released by the kernel however the holder dies, so on one
machine a dead holder never blocks anyone) that also names its holder: host, pid, the pid's start time,
this boot, the job uid and the Slurm job. Output directories may live on shared filesystems where flock does
not reach across nodes, so the name is checked too: a holder on this machine whose pid is dead (or reused:
another start time) is stale and taken over with a one-line message; a holder on another machine is refused,
unless its Slurm job is known to have ended (a `--dependent_jobs` copy on another node after a killed one).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.process import boot_id, start_ticks

LOCK_NAME = ".trainer.lock"
JOB_UID_ENV = "SKILLS_CLI_JOB_UID"
FLOCK_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in the lock file."""

    host: str
    pid: int
    start_ticks: int | None
    boot_id: str
    started_at: float
    job_uid: str | None = None
    slurm_job_id: str | None = None

    @classmethod
    def this_process(cls) -> Holder:
        return cls(host=socket.gethostname(), pid=os.getpid(), start_ticks=start_ticks(os.getpid()),
                   boot_id=boot_id(), started_at=time.time(), job_uid=os.environ.get(JOB_UID_ENV),
                   slurm_job_id=os.environ.get("SLURM_JOB_ID"))  # fmt: skip

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        """None for an empty or unreadable file (a holder that died while writing it holds nothing)."""
        try:
            fields = json.loads(text)
            return cls(**{name: fields.get(name) for name in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None

    def on_this_machine(self) -> bool:
        return self.host == socket.gethostname() and self.boot_id == boot_id()

    def alive(self) -> bool | None:
        """Is the holder still running? None when this machine cannot tell (it ran elsewhere)."""
        if self.on_this_machine():
            return self.start_ticks is not None and start_ticks(self.pid) == self.start_ticks
        return slurm_job_running(self.slurm_job_id)

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_at or 0))
        extra = "".join(f", {label} {value}" for label, value in
                        (("job", self.job_uid), ("Slurm job", self.slurm_job_id)) if value)  # fmt: skip
        return f"host {self.host} pid {self.pid} (started {when}{extra})"


def slurm_job_running(job_id: str | None) -> bool | None:
    """Is Slurm job `job_id` still queued or running? None when there is no job id or no Slurm to ask."""
    if not job_id:
        return None
    try:
        result = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format=%T"], capture_output=True,
                                text=True, timeout=20)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    if result.returncode != 0:  # squeue errors on a job id it no longer knows
        return False if "Invalid job id" in result.stderr else None
    return bool(result.stdout.strip())


class TrainerLock:
    """A held lock; `release()` removes the file (before unlocking, so a waiter never takes a removed file)."""

    def __init__(self, path: Path, descriptor: int, created: list[Path]):
        self.path, self.descriptor, self.created = path, descriptor, created

    @classmethod
    def acquire(cls, output_dir: Path) -> TrainerLock:
        created = _missing_directories(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / LOCK_NAME
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if _take(path, descriptor):
                    return cls(path, descriptor, created)
            except BaseException:
                os.close(descriptor)
                _remove_if_empty(created)
                raise
            os.close(descriptor)  # the file was replaced or removed meanwhile: start over with the new one

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.descriptor)
        _remove_if_empty(self.created)


def _take(path: Path, descriptor: int) -> bool:
    """Lock the open file and write this process into it; False when `path` no longer names that file.
    Raises UserError when a live trainer holds it."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_holder(descriptor)
        if holder is None or holder.alive() is not False:
            raise UserError(_refusal(path, holder)) from None
        # the recorded trainer is gone: a process it forked (a compile or data worker) still has the file
        # open, and with it the flock; the lock is stale all the same and is taken over below
    except OSError as error:  # a filesystem without flock: the holder's name is all there is to go by
        if error.errno not in FLOCK_UNSUPPORTED:
            raise
    try:
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            return False
    except FileNotFoundError:
        return False
    holder = _read_holder(descriptor)
    if holder is not None and holder.pid != os.getpid():
        alive = holder.alive()
        if alive is not False:  # alive, or on another machine with no way to tell
            raise UserError(_refusal(path, holder))
        print(f"warning: taking over the stale trainer lock {path} of {holder.describe()}: it no longer runs",
              file=sys.stderr, flush=True)  # fmt: skip
    _write_holder(descriptor, Holder.this_process())
    return True


def _refusal(path: Path, holder: Holder | None) -> str:
    who = holder.describe() if holder else "another process"
    where = "" if holder is None or holder.on_this_machine() else f" (if host {holder.host} is dead, remove {path})"
    return f"output_dir {path.parent} is in use by a trainer on {who}; wait for it or stop it{where}"


def _read_holder(descriptor: int) -> Holder | None:
    os.lseek(descriptor, 0, os.SEEK_SET)
    return Holder.parse(os.read(descriptor, 1 << 16).decode(errors="replace"))


def _write_holder(descriptor: int, holder: Holder) -> None:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(asdict(holder)).encode() + b"\n", 0)
    os.fsync(descriptor)


def _missing_directories(directory: Path) -> list[Path]:
    """What `mkdir -p directory` will create, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_if_empty(created: list[Path]) -> None:
    """A run that stops before writing anything (a refusal, a bad input) leaves no output directory behind."""
    for directory in created:
        try:
            directory.rmdir()  # only an empty one
        except OSError:
            return


@contextlib.contextmanager
def trainer_lock(output_dir: str | Path | None, dist) -> Iterator[TrainerLock | None]:
    """Hold `output_dir`'s lock on global rank 0 for the body's length. Every rank raises the same UserError
    when rank 0 is refused (`dist`: training.parallel.Distributed). Without an output_dir there is nothing to
    lock (the trainer's own check reports it)."""
    lock, refusal = None, None
    if dist.is_main and output_dir:
        try:
            lock = TrainerLock.acquire(Path(output_dir))
        except UserError as error:
            refusal = str(error)
    refusal = _from_rank_zero(refusal, dist)
    if refusal:
        raise UserError(refusal)
    try:
        yield lock
    finally:
        if lock is not None:
            lock.release()


def _from_rank_zero(value: str | None, dist) -> str | None:
    """Rank 0's `value` on every rank (the other ranks wait here for rank 0's verdict)."""
    if dist.world_size == 1:
        return value
    import torch.distributed

    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]
