"""JSON-lines files: strict reading (a bad line is an error with its line number), atomic whole-file writes,
and durable appends for resumable work.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from skills_cli.common.errors import UserError


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
    with open(path, encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if skip_partial_last_line and number == len(lines) and not line.endswith("\n"):
            return
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: malformed JSON line ({error.msg} at column {error.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
        yield number, row


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict]) -> None:
    """Write to a temporary file in the same directory, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.", delete=False)
    try:
        with handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


class DurableAppender:
    """Append one JSON line per finished item.

    Each line is written to the OS (flush) before `append` returns, so a SIGKILL of the process right after
    loses nothing; fsync runs at most every `fsync_seconds` and on close, which covers machine crashes
    without paying a disk sync per sample.
    """

    def __init__(self, path: str | Path, fsync_seconds: float = 1.0):
        self.fsync_seconds = fsync_seconds
        self._last_sync = time.monotonic()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_partial_last_line()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _repair_partial_last_line(self) -> None:
        """Cut an unterminated last line left by a killed writer, so the next append starts a fresh line."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as handle:
            data = handle.read()
            if not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)

    def append(self, row: dict) -> None:
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._handle.flush()
        if time.monotonic() - self._last_sync >= self.fsync_seconds:
            os.fsync(self._handle.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def __enter__(self) -> DurableAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def touch_atomic(path: str | Path, text: str = "") -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
