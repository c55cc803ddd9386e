"""Judges: a custom judge prompt config and a judge module (`MODULE::FUNCTION` reading the verdict), checked
before submission, carried into the judge job, and applied to the judge's answers."""

from __future__ import annotations

import json

import pytest
from conftest import run_ns
from test_eval_e2e import FAST, eval_graph

from skills_cli.common.errors import UserError
from skills_cli.common.functions import load_function
from skills_cli.common.jsonl import read_jsonl
from skills_cli.evaluation import judge
from skills_cli.pipeline.store import Store

# a lab's own verdict format: "VERDICT: correct|incorrect", and a rule of its own (an answer it calls "close"
# is wrong whatever the judge said)
VERDICT_MODULE = """
import re

def strict_verdict(row, judgement):
    if "close" in str(row.get("predicted_answer")):
        return False
    found = re.findall(r"VERDICT: (correct|incorrect)", judgement or "")
    return None if not found else found[-1] == "correct"
"""


def results_with_judgements(tmp_path, answers: list[tuple[str, str]]):
    """A math500 results folder whose answers all need the judge, and the judge's output for them."""
    results = tmp_path / "r" / "math500"
    results.mkdir(parents=True)
    rows = [{"id": str(i), "problem": f"p{i}", "expected_answer": "7", "predicted_answer": predicted,
             "generation": f"so it is {predicted}", "symbolic_correct": False} for i, (predicted, _) in enumerate(answers)]  # fmt: skip
    (results / "output.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    judge.prepare(str(results), str(results / "judge/input.jsonl"))
    asked = read_jsonl(results / "judge/input.jsonl")
    said = [{**request, "generation": text} for request, (_, text) in zip(asked, answers, strict=True)]
    (results / "judge/output.jsonl").write_text("".join(json.dumps(row) + "\n" for row in said))
    return results, asked


def test_a_judge_module_reads_the_verdicts_and_requests_carry_the_whole_row(tmp_path):
    module = tmp_path / "lab_judges.py"
    module.write_text(VERDICT_MODULE)
    answers = [("seven", "VERDICT: correct"), ("8", "VERDICT: incorrect"), ("close to 7", "VERDICT: correct"),
               ("7.0?", "Judgement: Yes")]  # fmt: skip
    results, asked = results_with_judgements(tmp_path, answers)
    # every field of the result row reaches the judge's prompt (a custom prompt may use the generation)
    assert asked[0]["generation"] == "so it is seven" and asked[0]["symbolic_correct"] is False
    read_verdict = load_function(f"{module}::strict_verdict", "--judge_module")
    assert judge.apply(str(results), str(results / "judge/output.jsonl"), read_verdict) == (
        "4 answers judged by the model (1 without a verdict)")  # fmt: skip
    judged = read_jsonl(results / "output.jsonl")
    assert [row["judge_correct"] for row in judged] == [True, False, False, False]
    assert [row["judge_error"] for row in judged] == [None, None, None, "no verdict from the judge"]
    # the program's own command line takes the same reference
    assert judge.main(["apply", "--results_dir", str(results), "--verdict", f"{module}::strict_verdict"]) == 0


@pytest.mark.parametrize(("reference", "message"), [
    ("lab_judges.strict", "use MODULE::FUNCTION"),
    ("no_such_module_xyz::f", "cannot import no_such_module_xyz"),
    ("json::no_such_function", "json has no function no_such_function"),
    ("/no/such/file.py::f", "no such file /no/such/file.py"),
])  # fmt: skip
def test_judge_module_references_that_cannot_work_are_one_error(reference, message):
    with pytest.raises(UserError, match=message):
        load_function(reference, "--judge_module")


def test_the_judge_job_uses_the_given_prompt_and_module(tmp_path):
    prompt = tmp_path / "my_judge.yaml"
    prompt.write_text('user: "Expected {expected_answer}; got {predicted_answer}. Say VERDICT: correct|incorrect"\n')
    jobs = {job.name: job for job in eval_graph(benchmarks="arith", judge_model="/judge", judge_prompt_config=str(prompt),
                                                judge_module="my_lab.judges::strict_verdict")}  # fmt: skip
    script = jobs["arith-judge"].commands[-1].argv[2]
    assert f"++prompt_config={prompt}" in script and "judge/math" not in script
    assert "skills_cli.evaluation.judge apply --verdict my_lab.judges::strict_verdict" in script
    default = {job.name: job for job in eval_graph(benchmarks="arith", judge_model="/judge")}["arith-judge"]
    assert (
        "++prompt_config=judge/math" in default.commands[-1].argv[2] and "--verdict" not in default.commands[-1].argv[2]
    )


def test_a_missing_judge_prompt_or_module_fails_before_submission(tmp_path):
    base = ("eval", "--benchmarks", "arith", "--output_dir", str(tmp_path / "o"), "--model", "/m", "--judge_model",
            "/j", "--expname", "judged", FAST)  # fmt: skip
    result = run_ns(*base, "--judge_prompt_config", "judge/nope")
    assert result.returncode == 2 and "prompt config 'judge/nope' not found" in result.stderr, result.stderr
    result = run_ns(*base, "--judge_module", "strict_verdict")
    assert result.returncode == 2 and "--judge_module 'strict_verdict': use MODULE::FUNCTION" in result.stderr
    result = run_ns(*base, "--judge_module", str(tmp_path / "missing.py") + "::f")
    assert result.returncode == 2 and "no such file" in result.stderr, result.stderr
    assert not Store().has_experiment("judged")
