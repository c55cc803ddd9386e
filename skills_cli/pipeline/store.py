"""The local metadata store: experiments, their jobs, scheduler ids and states, across invocations.

One SQLite file under `$SKILLS_CLI_HOME` (default `~/.skills_cli`). It is written by the submitting `ns`
process and, for local executors, by each job's supervisor process, so every connection uses WAL mode and
a busy timeout. `--run_after NAME` is resolved here: an unknown name is an error.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from skills_cli.common.errors import UserError


class JobState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)

    @property
    def failed(self) -> bool:
        return self in (JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)


def home_dir() -> Path:
    return Path(os.environ.get("SKILLS_CLI_HOME") or Path.home() / ".skills_cli")


# -- owner-only state ------------------------------------------------------------------------------------
# The state folder holds job specs, logs and code that may reveal secrets or work: other local users must not
# read it. Folders are 0700 and files 0600; the folder itself being 0700 already shuts everyone else out.
PRIVATE_UMASK = 0o077


@contextmanager
def private_files() -> Iterator[int]:
    """Files and folders created inside are owner-only; yields the umask in force before (jobs keep it)."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield previous
    finally:
        os.umask(previous)


def _open_to_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & 0o077)
    except FileNotFoundError:
        return False


def make_private(root: Path, marker: Path | None = None) -> None:
    """Create `root` owner-only. If it (or `marker` in it) is open to others, as older versions left it, every
    folder and file under it is made owner-only once; after that the check costs two stats."""
    with private_files():
        root.mkdir(parents=True, exist_ok=True)
    if not (_open_to_others(root) or (marker is not None and _open_to_others(marker))):
        return
    for directory, _dirnames, filenames in os.walk(root):
        for path in [Path(directory), *(Path(directory) / name for name in filenames)]:
            try:
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode & 0o700)
            except OSError:  # gone meanwhile, or written by a container as root: its folder is closed anyway
                continue


@dataclass
class JobRecord:
    """One submitted job (a row). `depends_on` holds upstream job uids; `dependency_types` their edge types."""

    uid: str
    expname: str
    name: str
    cluster: str
    executor: str
    state: JobState = JobState.PENDING
    external_id: str | None = None
    reason: str = ""
    exit_code: int | None = None
    log_path: str | None = None
    work_dir: str | None = None
    depends_on: list[str] = field(default_factory=list)
    dependency_types: list[str] = field(default_factory=list)
    submitted_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    pid: int | None = None


_COLUMNS = [
    "uid", "expname", "name", "cluster", "executor", "state", "external_id", "reason", "exit_code", "log_path",
    "work_dir", "depends_on", "dependency_types", "submitted_at", "started_at", "ended_at", "pid",
]  # fmt: skip

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS experiments (name TEXT PRIMARY KEY, cluster TEXT, executor TEXT, created_at REAL);
CREATE TABLE IF NOT EXISTS jobs ({", ".join(c + (" TEXT PRIMARY KEY" if c == "uid" else "") for c in _COLUMNS)});
CREATE INDEX IF NOT EXISTS jobs_by_exp ON jobs (expname, submitted_at);
CREATE TABLE IF NOT EXISTS clusters (name TEXT PRIMARY KEY, source TEXT);
CREATE TABLE IF NOT EXISTS submissions (expname TEXT, submitted_at REAL, cluster TEXT, run_after TEXT, outputs TEXT,
                                        uids TEXT);
"""


@dataclass
class SubmissionRecord:
    """One `ns` invocation that added jobs to an experiment: what it ran after (by name, even when those had
    already finished, so no dependency edge was needed), where it writes results, and the uids of its jobs."""

    expname: str
    submitted_at: float
    cluster: str
    run_after: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    uids: list[str] = field(default_factory=list)


def new_uid() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:8]


class Store:
    def __init__(self, path: Path | None = None):
        self.path = path or home_dir() / "store.sqlite"
        make_private(self.path.parent, marker=self.path)
        # created owner-only before SQLite opens it: its -wal and -shm files take the database's mode
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        with self._connect() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except sqlite3.OperationalError as error:
            raise _store_error(self.path, error) from None
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=60000")
            yield db
        except sqlite3.OperationalError as error:
            raise _store_error(self.path, error) from None
        finally:
            db.close()

    # -- writes ------------------------------------------------------------------------------------
    def add_experiment(self, name: str, cluster: str, executor: str) -> None:
        with self._connect() as db:
            db.execute("INSERT OR IGNORE INTO experiments VALUES (?, ?, ?, ?)", (name, cluster, executor, time.time()))

    def remember_cluster(self, name: str, source: str) -> None:
        """Where a cluster config came from, so `ns status` finds it without the submission's --config_dir."""
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO clusters VALUES (?, ?)", (name, source))

    def cluster_source(self, name: str) -> str | None:
        with self._connect() as db:
            row = db.execute("SELECT source FROM clusters WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def add_submission(self, record: SubmissionRecord) -> None:
        with self._connect() as db:
            db.execute("INSERT INTO submissions VALUES (?, ?, ?, ?, ?, ?)",
                       (record.expname, record.submitted_at, record.cluster, json.dumps(record.run_after),
                        json.dumps(record.outputs), json.dumps(record.uids)))  # fmt: skip

    def add_job(self, record: JobRecord) -> None:
        row = _to_row(record)
        with self._connect() as db:
            db.execute(f"INSERT INTO jobs VALUES ({', '.join('?' * len(_COLUMNS))})", row)

    def update_job(self, uid: str, **changes: object) -> None:
        if not changes:
            return
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise KeyError(f"unknown job fields {unknown}")
        values = [_encode(key, value) for key, value in changes.items()]
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE uid = ?", [*values, uid])

    # -- reads -------------------------------------------------------------------------------------
    def experiment_names(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT name FROM experiments ORDER BY created_at")]

    def has_experiment(self, name: str) -> bool:
        with self._connect() as db:
            return db.execute("SELECT 1 FROM experiments WHERE name = ?", (name,)).fetchone() is not None

    def submissions(self, expname: str) -> list[SubmissionRecord]:
        """The experiment's submissions, oldest first (none for experiments stored before submissions were)."""
        with self._connect() as db:
            rows = db.execute("SELECT expname, submitted_at, cluster, run_after, outputs, uids FROM submissions "
                              "WHERE expname = ? ORDER BY submitted_at, rowid", (expname,)).fetchall()  # fmt: skip
        return [SubmissionRecord(name, at, cluster, json.loads(after), json.loads(outputs), json.loads(uids))
                for name, at, cluster, after, outputs, uids in rows]  # fmt: skip

    def job(self, uid: str) -> JobRecord:
        with self._connect() as db:
            row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE uid = ?", (uid,)).fetchone()
        if row is None:
            raise KeyError(uid)
        return _from_row(row)

    def jobs(self, expname: str) -> list[JobRecord]:
        """Every submission of every job of the experiment, oldest first."""
        with self._connect() as db:
            rows = db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM jobs WHERE expname = ? ORDER BY submitted_at, rowid", (expname,)
            ).fetchall()
        return [_from_row(row) for row in rows]

    def latest_jobs(self, expname: str) -> list[JobRecord]:
        """The newest submission of each job name: what `--run_after expname` waits for."""
        latest: dict[str, JobRecord] = {}
        for record in self.jobs(expname):
            latest[record.name] = record
        return list(latest.values())

    def resolve_run_after(self, names: list[str]) -> list[JobRecord]:
        """Jobs that `--run_after` names; an unknown or empty experiment is an error."""
        records = []
        for name in names:
            if not self.has_experiment(name):
                known = ", ".join(self.experiment_names()[-20:]) or "none yet"
                raise UserError(f"--run_after {name!r}: no experiment of that name (known: {known})")
            jobs = self.latest_jobs(name)
            if not jobs:
                raise UserError(f"--run_after {name!r}: the experiment has no jobs")
            records.extend(jobs)
        return records


def _store_error(path: Path, error: sqlite3.OperationalError) -> Exception:
    """A full disk is the user's to fix: one line naming the store (SQLite's transactions keep it intact)."""
    text = str(error)
    # SQLite reports ENOSPC as "database or disk is full", or as a "disk I/O error" when its WAL files fail
    if "full" in text or ("disk I/O" in text and _free_bytes(path.parent) < 1 << 20):
        return UserError(f"disk full while writing the job store {path}; it is intact: free space and rerun")
    if "disk I/O" in text:
        return UserError(f"cannot write the job store {path} (disk I/O error); it is intact")
    return error


def _free_bytes(directory: Path) -> int:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return 1 << 62
    return stat.f_bavail * stat.f_frsize


def _encode(key: str, value: object) -> object:
    if key in ("depends_on", "dependency_types"):
        return json.dumps(list(value))  # type: ignore[arg-type]
    if isinstance(value, JobState):
        return value.value
    return value


def _to_row(record: JobRecord) -> list[object]:
    return [_encode(key, getattr(record, key)) for key in _COLUMNS]


def _from_row(row: tuple) -> JobRecord:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["depends_on"] = json.loads(values["depends_on"] or "[]")
    values["dependency_types"] = json.loads(values["dependency_types"] or "[]")
    values["state"] = JobState(values["state"])
    return JobRecord(**values)
