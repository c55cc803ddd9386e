"""JSON-lines files: strict reading (a bad line is an error with its line number), atomic whole-file writes,
and durable appends for resumable work.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from skills_cli.common.errors import UserError

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError):
    """The disk (or quota) filled up while writing `path`; what was written before is intact."""

    def __init__(self, path: str | Path, error: OSError):
        super().__init__(f"disk full while writing {path} ({error.strerror})")
        self.path = Path(path)


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def read_jsonl(path: str | Path) -> list[dict]:
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path, skip_partial_last_line: bool = False, kind: str = "input") -> Iterator[dict]:
    """Rows of a JSONL file (see `iter_numbered_jsonl`)."""
    for _, row in iter_numbered_jsonl(path, skip_partial_last_line, kind):
        yield row


def iter_numbered_jsonl(
    path: str | Path, skip_partial_last_line: bool = False, kind: str = "input"
) -> Iterator[tuple[int, dict]]:
    """(line number, row) of a JSONL file; blank lines are skipped, anything else that is not a JSON object
    is an error naming the file and line.

    `skip_partial_last_line` is for append-only side files: a process killed mid-write leaves an
    unterminated last line, which is dropped (its sample is redone) rather than reported.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{kind} file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            # one line at a time: a large file is never held in memory as a whole
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                if skip_partial_last_line and not line.endswith("\n"):  # only the last line can lack one
                    return
                yield number, parse_row(path, number, line)
    except UnicodeDecodeError as error:  # decoding runs ahead of the lines, so no line number to give
        byte = error.object[error.start]
        raise UserError(f"{path}: not a UTF-8 text file (it holds the byte 0x{byte:02x}, e.g. a binary or "
                        "compressed file); expected JSON lines, one object per line") from None  # fmt: skip


def parse_row(path: Path, number: int, line: str) -> dict:
    """One JSON object; a JSON array (or a pretty-printed file) is named as such, since it is a common mix-up."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        hint = "; expected JSON lines (one object per line), not a JSON array" if line.lstrip().startswith("[") else ""
        raise UserError(f"{path}:{number}: malformed JSON line ({error.msg} at column {error.colno}){hint}") from None
    if isinstance(row, list):
        raise UserError(f"{path}:{number}: expected a JSON object, got list "
                        "(JSON lines hold one object per line, not a JSON array)")  # fmt: skip
    if not isinstance(row, dict):
        raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    return row


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename: readers never see half a file.

    The file gets the mode a plain open() would give it (an existing file's, else 0666 less the umask), not
    the temporary file's 0600. A full disk is a `DiskFull` error and leaves any earlier file untouched.
    """
    path = Path(path)
    temporary: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False
        )
        temporary = Path(handle.name)
        with handle:
            os.fchmod(handle.fileno(), mode_of_new_file(path))
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path, error) from None
        raise


def mode_of_new_file(path: Path) -> int:
    """What open(path, "w") would leave: the mode of the file it replaces, or 0666 less the umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it (os.umask can only be read by setting it, which races
    with threads creating files); the set-and-restore fallback is for kernels without /proc's Umask line."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class DurableAppender:
    """Append one JSON line per finished item.

    Each line is written to the OS (flush) before `append` returns, so a SIGKILL of the process right after
    loses nothing; fsync runs at most every `fsync_seconds` and on close, which covers machine crashes
    without paying a disk sync per sample.
    """

    def __init__(self, path: str | Path, fsync_seconds: float = 1.0):
        self.fsync_seconds = fsync_seconds
        self._last_sync = time.monotonic()
        self._failed: Exception | None = None
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._repair_partial_last_line()
            self._handle = open(self.path, "a", encoding="utf-8")
        except OSError as error:
            if is_disk_full(error):
                raise DiskFull(self.path, error) from None
            raise

    def _repair_partial_last_line(self) -> None:
        """Cut an unterminated last line left by a killed writer, so the next append starts a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, row: dict) -> None:
        if self._failed is not None:  # a concurrent writer already hit the error: stop here too
            raise self._failed
        try:
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._handle.flush()
            if time.monotonic() - self._last_sync >= self.fsync_seconds:
                os.fsync(self._handle.fileno())
                self._last_sync = time.monotonic()
        except OSError as error:
            raise self._fail(error) from None

    def _fail(self, error: OSError) -> Exception:
        """Close after a failed write (ignoring the failed flush that close retries): the lines before are on
        disk, and a cut last line is dropped by readers and by the next appender. A full disk is `DiskFull`."""
        self._failed = DiskFull(self.path, error) if is_disk_full(error) else error
        try:
            self._handle.close()
        except OSError:
            pass
        return self._failed

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
        except OSError as error:
            raise self._fail(error) from None

    def __enter__(self) -> DurableAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def touch_atomic(path: str | Path, text: str = "") -> None:
    """Write a small file whole or not at all (a full disk is `DiskFull` and leaves the old one)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        if is_disk_full(error):
            raise DiskFull(path, error) from None
        raise
