"""Log a table of generated samples to Weights & Biases or SwanLab (`ns generate --log_samples`).

    python -m skills_cli.inference.log_samples --file out.jsonl --backend wandb --project P --group G --name N

The mode comes from the environment as each tool defines it (WANDB_MODE / SWANLAB_MODE: `offline` writes a
local run that `wandb sync` / `swanlab sync` uploads later), so jobs on offline clusters work unchanged.
"""

from __future__ import annotations

import argparse
import json
import sys

from skills_cli.common.jsonl import read_jsonl

COLUMNS_FIRST = ("problem", "question", "generation", "expected_answer", "finish_reason", "num_generated_tokens")


def table_rows(rows: list[dict], limit: int) -> tuple[list[str], list[list[str]]]:
    """Columns: the well-known fields first, then the rest; values as text (tables want one type per column)."""
    keys = [k for k in COLUMNS_FIRST if any(k in r for r in rows)]
    keys += sorted({k for r in rows for k in r} - set(keys))
    text = [[v if isinstance(v := r.get(k), str) else json.dumps(v) for k in keys] for r in rows[:limit]]
    return keys, text


def log_wandb(columns: list[str], data: list[list[str]], args: argparse.Namespace) -> str:
    import wandb

    run = wandb.init(project=args.project, group=args.group, name=args.name, job_type="samples",
                     config={"file": args.file})  # fmt: skip
    run.log({"samples": wandb.Table(columns=columns, data=data)})
    location = run.dir
    run.finish()
    return location


def log_swanlab(columns: list[str], data: list[list[str]], args: argparse.Namespace) -> str:
    import swanlab

    run = swanlab.init(project=args.project, experiment_name=args.name, group=args.group, config={"file": args.file})
    # SwanLab has no table type: each sample is a text entry, with its fields as JSON
    for index, row in enumerate(data):
        swanlab.log({"samples": swanlab.Text(json.dumps(dict(zip(columns, row, strict=True)), ensure_ascii=False))},
                    step=index)  # fmt: skip
    location = getattr(getattr(run, "public", None), "run_dir", "") or ""
    swanlab.finish()
    return str(location)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", required=True)
    parser.add_argument("--backend", choices=("wandb", "swanlab"), default="wandb")
    parser.add_argument("--project", default="skills-cli")
    parser.add_argument("--group", default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument("--num_samples", type=int, default=100)
    args = parser.parse_args(argv)
    columns, data = table_rows(read_jsonl(args.file), args.num_samples)
    where = (log_wandb if args.backend == "wandb" else log_swanlab)(columns, data, args)
    print(f"logged {len(data)} samples of {args.file} to {args.backend} {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
