"""Merge the chunk outputs of a generation into the final file, once every chunk is done.

    python -m skills_cli.inference.merge_chunks --output_file DIR/output.jsonl --num_chunks N

Chunk k wrote `DIR/output_chunk_k.jsonl` (+ `.done`). The merged file is written atomically, in chunk
order (which is input order), then `output.jsonl.done`. Chunk files are kept: a rerun is idempotent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skills_cli.common.jsonl import iter_jsonl, touch_atomic, write_jsonl_atomic
from skills_cli.inference.config import done_marker


def chunk_file(output_file: str, chunk_id: int) -> str:
    path = Path(output_file)
    return str(path.with_name(f"{path.stem}_chunk_{chunk_id}{path.suffix}"))


def merge(output_file: str, num_chunks: int) -> int:
    missing = [k for k in range(num_chunks) if not Path(done_marker(chunk_file(output_file, k))).exists()]
    if missing:
        print(f"error: chunks {missing} of {output_file} are not finished; nothing merged", file=sys.stderr)
        return 1
    rows = (row for k in range(num_chunks) for row in iter_jsonl(chunk_file(output_file, k)))
    write_jsonl_atomic(output_file, rows)
    touch_atomic(done_marker(output_file))
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
