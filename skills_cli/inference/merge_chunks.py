"""Merge the chunk outputs of a generation into the final file, once every chunk is done.

    python -m skills_cli.inference.merge_chunks --output_file DIR/output.jsonl --num_chunks N

Chunk k wrote `DIR/output_chunk_k.jsonl` (+ `.done`). The merged file is written atomically, in chunk
order (which is input order), then `output.jsonl.done`, which records the fingerprints of the chunks' `.done`
markers. Chunk files are kept: a rerun is idempotent. A chunk that generates again removes the merged
`.done` (see `generate.forget_merged_output`), so the merged output never claims to be complete for chunks
that have changed since.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from skills_cli.common.jsonl import DiskFull, iter_jsonl, touch_atomic, write_jsonl_atomic
from skills_cli.inference.config import done_marker
from skills_cli.inference.resume import marker_stamp


def chunk_file(output_file: str, chunk_id: int) -> str:
    path = Path(output_file)
    return str(path.with_name(f"{path.stem}_chunk_{chunk_id}{path.suffix}"))


def merged_file(chunk_output_file: str, chunk_id: int) -> str | None:
    """The inverse of `chunk_file`: the merged output that chunk `chunk_id`'s output belongs to (None for a
    file not named by `chunk_file`, e.g. a chunk run by hand into a file of its own)."""
    path = Path(chunk_output_file)
    suffix = f"_chunk_{chunk_id}"
    if not path.stem.endswith(suffix):
        return None
    return str(path.with_name(f"{path.stem[: -len(suffix)]}{path.suffix}"))


def chunk_fingerprint(marker: Path) -> str | None:
    """The fingerprint a chunk's `.done` holds (None for an older version's empty marker)."""
    try:
        return json.loads(marker.read_text(encoding="utf-8") or "{}").get("fingerprint")
    except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
        return None


def merge(output_file: str, num_chunks: int) -> int:
    missing = [k for k in range(num_chunks) if not Path(done_marker(chunk_file(output_file, k))).exists()]
    if missing:
        print(f"error: chunks {missing} of {output_file} are not finished; nothing merged", file=sys.stderr)
        return 1
    chunks = [chunk_fingerprint(Path(done_marker(chunk_file(output_file, k)))) for k in range(num_chunks)]
    stamps = [marker_stamp(Path(done_marker(chunk_file(output_file, k)))) for k in range(num_chunks)]
    rows = (row for k in range(num_chunks) for row in iter_jsonl(chunk_file(output_file, k)))
    try:
        write_jsonl_atomic(output_file, rows)
        merged = hashlib.sha256(json.dumps(chunks).encode()).hexdigest()
        touch_atomic(
            done_marker(output_file), json.dumps({"fingerprint": merged, "chunks": chunks, "stamps": stamps}) + "\n"
        )
    except DiskFull as error:
        print(f"error: {error}; the chunk outputs are kept and a rerun merges them", file=sys.stderr)
        return 1
    print(f"merged {num_chunks} chunks into {output_file}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_file", required=True)
    parser.add_argument("--num_chunks", type=int, required=True)
    args = parser.parse_args()
    return merge(args.output_file, args.num_chunks)


if __name__ == "__main__":
    sys.exit(main())
