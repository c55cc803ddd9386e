"""LLM-as-judge, in two steps around a generation run with a judge prompt (`judge/math` unless one is given).

    python -m skills_cli.evaluation.judge prepare --results_dir DIR --output DIR/judge/input.jsonl
    (generation of DIR/judge/input.jsonl -> DIR/judge/output.jsonl with ++prompt_config=judge/math)
    python -m skills_cli.evaluation.judge apply --results_dir DIR --judgements DIR/judge/output.jsonl \
        [--verdict MODULE::FUNCTION]

`prepare` decides what needs no judge: an empty answer is wrong and an exact match (after light
normalization) is right; only the rest goes to the model, each request carrying every field of its result row
(so a custom judge prompt may use any of them: problem, expected_answer, predicted_answer, generation, ...).
`apply` reads each verdict, by default from the judge's last `Judgement: Yes|No` line, or with a judge module's
function `(row, judgement_text) -> True | False | None` (`my_lab.judges::strict_verdict`, or
`/path/to/file.py::strict_verdict`), and writes `judge_correct` into every result file (atomically). A missing
or unparseable verdict counts as wrong and is recorded in `judge_error`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from skills_cli.common.errors import exits_on_user_error
from skills_cli.common.functions import load_function
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.grade import result_files

JUDGE_KEY = "judge_correct"
_VERDICT = re.compile(r"judgement\s*:\s*\**\s*(yes|no)\b", re.IGNORECASE)


def normalized(answer: str) -> str:
    return re.sub(r"\s+", "", answer).strip("$.").lower()


def decided_without_judge(row: dict) -> bool | None:
    """True/False when no judge is needed; None when the judge must decide."""
    predicted = row.get("predicted_answer")
    if predicted is None or not str(predicted).strip():
        return False
    if normalized(str(predicted)) == normalized(str(row.get("expected_answer", ""))):
        return True
    return None


def verdict(text: str | None) -> bool | None:
    matches = _VERDICT.findall(text or "")
    return None if not matches else matches[-1].lower() == "yes"


def default_verdict(row: dict, judgement: str | None) -> bool | None:
    """The judge/math prompt's verdict: its last `Judgement: Yes|No` line."""
    return verdict(judgement)


def prepare(results_dir: str, output: str) -> str:
    requests = []
    for path in result_files(results_dir):
        for index, row in enumerate(read_jsonl(path)):
            if decided_without_judge(row) is None:
                requests.append({**row, "problem": row.get("problem", ""), "_file": path.name, "_index": index})
    write_jsonl_atomic(output, requests)
    return f"{len(requests)} answers need the judge (written to {output})"


def apply(
    results_dir: str, judgements: str, read_verdict: Callable[[dict, str | None], bool | None] = default_verdict
) -> str:
    verdicts = {
        (row["_file"], row["_index"]): read_verdict(row, row.get("generation")) for row in read_jsonl(judgements)
    }
    judged = unparsed = 0
    for path in result_files(results_dir):
        rows = []
        for index, row in enumerate(read_jsonl(path)):
            decision, error = decided_without_judge(row), None
            if decision is None:
                decision = verdicts.get((path.name, index))
                judged += 1
                if decision is None:
                    decision, error = False, "no verdict from the judge"
                    unparsed += 1
            rows.append({**row, JUDGE_KEY: decision, "judge_error": error})
        write_jsonl_atomic(path, rows)
    return f"{judged} answers judged by the model ({unparsed} without a verdict)"


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "apply"))
    parser.add_argument("--results_dir", required=True)
    parser.add_argument("--output", help="prepare: where the judge's input goes")
    parser.add_argument("--judgements", help="apply: the judge generation's output")
    parser.add_argument("--verdict", help="apply: MODULE::FUNCTION(row, judgement_text) -> True/False/None")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        print(prepare(args.results_dir, args.output or f"{args.results_dir}/judge/input.jsonl"))
    else:
        read_verdict = load_function(args.verdict, "--verdict") if args.verdict else default_verdict
        print(apply(args.results_dir, args.judgements or f"{args.results_dir}/judge/output.jsonl", read_verdict))
    return 0


if __name__ == "__main__":
    sys.exit(main())
