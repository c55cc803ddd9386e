"""The evaluation suite beyond math, end to end: `ns eval --benchmarks humaneval,mbpp:2,ifeval,gsm8k
--max_samples 10 --server_type hf` with a tiny model, on bare processes and on the local Slurm (the code
benchmarks' grading jobs run the sandbox as their second command), then `ns summarize_results` prints one
table per benchmark under that benchmark's own metric names.

The tiny model writes random text, so the figures are near zero: what is checked is that every benchmark is
generated, graded by its own grader (error kinds, instruction lists, math answers) and summarized."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import benchmarks_dir, run_ns
from test_eval_e2e import FAST

from skills_cli.common.artifacts import EVALUATION, read_json_artifact
from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline import prepare_data, wrap_arguments
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.store import JobState, Store

SUITE = "humaneval,mbpp:2,ifeval,gsm8k"
ERROR_KINDS = {None, "no_code", "syntax_error", "timeout", "wrong_answer", "runtime_error", "memory", "test_error",
               "output_limit", "sandbox_error"}  # fmt: skip
# each benchmark's table: its mode(s) and the columns of its own grader
TABLES = {
    "humaneval": (["greedy"], ["passed_tests"]),
    "mbpp": (["pass@1[avg-of-2]", "pass@2"], ["passed_tests"]),
    "ifeval": (["greedy"], ["prompt_strict_accuracy", "prompt_loose_accuracy", "instruction_strict_accuracy",
                            "instruction_loose_accuracy"]),
    "gsm8k": (["greedy"], ["symbolic_correct"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """The tiny model with room for MBPP's 3-shot prompts (over 2k tokens with its small vocabulary)."""
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", max_position_embeddings=8192))


@pytest.fixture(scope="module")
def suite_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("suite") / "data"
    prepare_data(benchmarks=["humaneval", "mbpp", "ifeval", "gsm8k"], data_dir=str(benchmarks_dir()),
                 output_dir=str(out))  # fmt: skip
    return out


def run_suite(model: str, data: Path, output: Path, expname: str, **extra) -> list:
    evaluate(ctx=wrap_arguments(FAST), benchmarks=SUITE, data_dir=str(data), output_dir=str(output), model=model,
             server_type="hf", max_samples=10, expname=expname, num_jobs=1, **extra)  # fmt: skip
    store = Store()
    records = wait(store.jobs(expname), store, timeout=900, poll=1.0)
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), run_ns("logs", expname).stdout[-4000:]
    return records


def check_suite(output: Path, printed: str) -> None:
    metrics = read_json_artifact(output / "metrics.json", EVALUATION)[1]
    for name, (modes, columns) in TABLES.items():
        assert [mode for mode in metrics[name] if mode in modes] == modes, (name, list(metrics[name]))
        for column in columns:
            assert 0.0 <= metrics[name][modes[0]][column] <= 100.0, (name, column)
        assert metrics[name][modes[0]]["num_entries"] == 10
        lines = printed.splitlines()
        title = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])  # a table's title line
        header = lines[title + 2]
        assert all(column in header for column in columns), "\n".join(lines[title : title + 4])
    assert "majority@2" not in read_json_artifact(output / "metrics.json", EVALUATION)[1]["mbpp"]  # code: no votes
    humaneval = read_jsonl(output / "eval-results/humaneval/output.jsonl")
    assert all(row["error_kind"] in ERROR_KINDS and isinstance(row["passed_tests"], bool) for row in humaneval)
    ifeval = read_jsonl(output / "eval-results/ifeval/output.jsonl")
    assert all(len(row["follow_instruction_list_strict"]) == len(row["instruction_id_list"]) for row in ifeval)


def test_the_suite_runs_on_bare_processes(tiny_model, suite_data, tmp_path):
    output = tmp_path / "evals"
    records = run_suite(tiny_model, suite_data, output, "suite-local")
    assert sorted(r.name for r in records) == ["generate", "gsm8k-grade", "humaneval-grade", "ifeval-grade",
                                               "mbpp-grade", "summarize"]  # fmt: skip
    check_suite(output, run_ns("summarize_results", str(output), check=True).stdout)


@pytest.mark.infra
def test_the_suite_runs_on_slurm_with_the_sandbox_beside_the_grading(tiny_model, suite_data, tmp_path,
                                                                     slurm_config):  # fmt: skip
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    output = tmp_path / "evals"
    records = run_suite(tiny_model, suite_data, output, "suite-slurm", cluster="slurm_local",
                        config_dir=str(slurm_config))  # fmt: skip
    assert all(r.executor == "slurm" for r in records)
    logs = run_ns("logs", "suite-slurm", check=True).stdout
    assert "humaneval-grade" in logs and "sandbox" in logs
    check_suite(output, run_ns("summarize_results", str(output), check=True).stdout)
