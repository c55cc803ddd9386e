"""Checks of files on this machine that bare local jobs (executor `none`) will read or write.

Each finds, before anything is queued, what the job would otherwise meet only after submission: a folder
given as a file, a binary or non-UTF-8 file (a UnicodeDecodeError traceback in the job), an empty input (a
job that "succeeds" with an empty output), a JSON array instead of JSON lines, an output folder that is a
file. Every failure is one line naming the option and the path.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

from skills_cli.common.errors import UserError

_CHUNK = 1 << 20


def check_jsonl_file(path_text: str, option: str) -> int:
    """The number of rows (non-blank lines) of a JSONL input; the file is read once, in chunks."""
    path = Path(path_text)
    if path.is_dir():
        raise UserError(f"{option} {path_text!r} is a directory, not a JSONL file")
    if not path.is_file():
        raise UserError(f"{option} {path_text!r} does not exist")
    decoder = codecs.getincrementaldecoder("utf-8")()
    rows, first_row, offset, tail = 0, None, 0, ""
    try:
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                if b"\0" in block:
                    raise UserError(f"{option} {path_text!r} is not a text file (it holds NUL bytes)")
                text = tail + decoder.decode(block)
                lines = text.split("\n")
                tail = lines.pop()
                rows, first_row = _count(lines, rows, first_row)
                offset += len(block)
            text = tail + decoder.decode(b"", final=True)
            rows, first_row = _count([text], rows, first_row)
    except UnicodeDecodeError as error:
        raise UserError(f"{option} {path_text!r} is not UTF-8 text (bad byte near offset "
                        f"{offset + error.start})") from None  # fmt: skip
    except OSError as error:
        raise UserError(f"cannot read {option} {path_text!r}: {error.strerror or error}") from None
    if rows == 0:
        raise UserError(f"{option} {path_text!r} is empty: it needs one JSON object per line")
    _check_first_row(first_row or "", option, path_text)
    return rows


def _count(lines: list[str], rows: int, first_row: str | None) -> tuple[int, str | None]:
    for line in lines:
        if line.strip():
            rows += 1
            first_row = line if first_row is None else first_row
    return rows, first_row


def _check_first_row(line: str, option: str, path_text: str) -> None:
    """The first row tells JSON lines from a JSON array (`[` alone, or `[{...}, ...]` on one line)."""
    stripped = line.strip()
    if stripped.startswith("["):
        raise UserError(f"{option} {path_text!r} holds a JSON array; write one JSON object per line (JSONL)")
    try:
        row = json.loads(stripped)
    except json.JSONDecodeError as error:
        raise UserError(f"{option} {path_text!r}: line 1 is not JSON ({error.msg}); the file must be JSONL") from None
    if not isinstance(row, dict):
        raise UserError(f"{option} {path_text!r}: line 1 is {type(row).__name__}, not a JSON object")


def check_output_dir(path_text: str, option: str) -> None:
    """An output folder must be a folder, or creatable: neither it nor any existing parent may be a file."""
    path = Path(path_text)
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == path else f"cannot be created: {candidate} is a file"
                raise UserError(f"{option} {path_text!r} {what}, not a directory")
            return


def check_model_dir(path_text: str, option: str) -> None:
    """A local model must be a folder; a name that is no local path (a hub id, a served model) is left alone."""
    path = Path(path_text)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path_text!r} is a file; give the model's folder (config.json, weights, tokenizer)")
