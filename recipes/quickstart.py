"""Quickstart: a three-stage pipeline of dependent jobs on the embedded default (bare local processes).

    python recipes/quickstart.py [--cluster local] [--output_dir DIR] [--dry_run]

Stage 1 writes a small synthetic arithmetic data set, stage 2 answers it with a reference solver, stage 3
grades the answers and prints a summary. Each stage is its own experiment started with `run_after` on the
previous one, so the whole chain is submitted at once and the supervisors run it in order. (Later issues
replace these stages with the real lifecycle: SDG -> SFT -> GRPO -> eval -> summary.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from skills_cli.pipeline import run_cmd, wrap_arguments
from skills_cli.pipeline.store import JobState

PY = sys.executable

MAKE_DATA = """
import json, random, sys
rng = random.Random(0)
with open(sys.argv[1], "w") as f:
    for i in range(200):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        f.write(json.dumps({"id": i, "problem": f"What is {a} + {b}?", "a": a, "b": b, "expected": a + b}) + "\\n")
print("wrote 200 problems")
"""
SOLVE = """
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
with open(sys.argv[2], "w") as f:
    for row in rows:
        # a deliberately imperfect solver: forgets the carry when the last digits overflow
        guess = row["a"] + row["b"] - (10 if (row["a"] % 10 + row["b"] % 10) >= 10 and row["id"] % 3 == 0 else 0)
        f.write(json.dumps({**row, "generation": f"\\\\boxed{{{guess}}}"}) + "\\n")
print("answered", len(rows))
"""
GRADE = """
import json, re, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
correct = sum(int(re.search(r"boxed\\{(-?\\d+)\\}", r["generation"]).group(1)) == r["expected"] for r in rows)
summary = {"num_entries": len(rows), "accuracy": round(100 * correct / len(rows), 2)}
json.dump(summary, open(sys.argv[2], "w"))
print(f"num_entries {summary['num_entries']} | accuracy {summary['accuracy']:.2f}%")
"""


def stage(code: str, *args: str) -> str:
    """A shell command running an inline Python program (the program text is one quoted argument)."""
    from skills_cli.pipeline.shell import quote_argv

    return quote_argv([PY, "-c", code, *args])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster", default="local")
    parser.add_argument("--output_dir", default=str(Path.cwd() / "quickstart_output"))
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    common = {"cluster": args.cluster, "dry_run": args.dry_run}
    # The first two stages start detached: their supervisors wait for one another through run_after.
    first = run_cmd(ctx=wrap_arguments(stage(MAKE_DATA, f"{out}/problems.jsonl")), expname="quickstart-data",
                    detach=True, **common)  # fmt: skip
    run_cmd(ctx=wrap_arguments(stage(SOLVE, f"{out}/problems.jsonl", f"{out}/answers.jsonl")),
            expname="quickstart-solve", run_after=[] if args.dry_run else ["quickstart-data"], detach=True, **common)  # fmt: skip
    last = run_cmd(ctx=wrap_arguments(stage(GRADE, f"{out}/answers.jsonl", f"{out}/summary.json")),
                   expname="quickstart-grade", run_after=[] if args.dry_run else ["quickstart-solve"], **common)  # fmt: skip
    if args.dry_run:
        print(first.dry_run_text + last.dry_run_text)
        return 0
    if not all(r.state is JobState.SUCCEEDED for r in last.records):
        print("the pipeline failed; see `ns status quickstart-grade` and `ns logs quickstart-solve`", file=sys.stderr)
        return 1
    summary = json.loads((out / "summary.json").read_text())
    print(f"quickstart done: {summary['num_entries']} problems, accuracy {summary['accuracy']:.2f}% "
          f"(outputs in {out}; `ns status quickstart-grade`, `ns logs quickstart-solve`)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
