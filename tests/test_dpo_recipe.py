"""recipes/dpo_from_sdg.py end to end at `--size small` on executor `none`, from the shared warmed-up tiny model:
every stage runs after the one before it, SDG's graded samples become preference pairs, `ns train dpo` finishes
and exports, both evaluations write metrics, and a rerun skips every stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from arith_models import warmed_model
from conftest import REPO

from skills_cli.common.artifacts import EVAL_METRICS_FILE, EVALUATION, read_json_artifact
from skills_cli.pipeline.store import JobRecord, JobState, Store

RECIPE = REPO / "recipes" / "dpo_from_sdg.py"
# --start_model replaces the model and warmup stages
STAGES = ["data", "baseline", "sdg", "pairs", "dpo", "final"]
EVAL_PROBLEMS = 40  # the small size's first test problems, one greedy answer each


def run_recipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECIPE), "--size", "small", *args], capture_output=True, text=True,
                          timeout=1200, env=dict(os.environ))  # fmt: skip


def stage_jobs() -> dict[str, list[JobRecord]]:
    store = Store()
    return {stage: store.jobs(f"dpo-{stage}") for stage in STAGES}


def check_chain(jobs: dict[str, list[JobRecord]]) -> None:
    """Every stage succeeded, waited for the previous one (a dependency edge) and started after it ended."""
    for stage, records in jobs.items():
        assert records and all(r.state is JobState.SUCCEEDED for r in records), (stage, records)
    for previous, stage in zip(STAGES[:-1], STAGES[1:], strict=True):
        assert any({r.uid for r in jobs[previous]} & set(r.depends_on) for r in jobs[stage]), stage
        assert min(r.started_at for r in jobs[stage]) >= max(r.ended_at for r in jobs[previous]), stage


def check_pairs(output: Path) -> int:
    """The pairs file: a correct and a different incorrect solution of one SDG problem, at most 2 per problem."""
    rows = [json.loads(line) for line in (output / "pairs.jsonl").read_text().splitlines()]
    graded = [json.loads(line) for path in sorted((output / "sdg").glob("output-rs*.jsonl"))
              for line in path.read_text().splitlines()]  # fmt: skip
    grades = {(row["problem"], row["generation"], row["symbolic_correct"]) for row in graded}
    for row in rows:
        assert row["prompt"] == [{"role": "user", "content": row["problem"]}]  # the recipe's one-line prompt
        assert (row["problem"], row["chosen"], True) in grades and (row["problem"], row["rejected"], False) in grades
        assert row["chosen"] != row["rejected"]
    per_problem = [sum(row["problem"] == problem for row in rows) for problem in {row["problem"] for row in rows}]
    assert max(per_problem) <= 2
    return len(rows)


@pytest.mark.timeout(1500)
def test_recipe_runs_sdg_pairs_dpo_and_eval_in_order(tmp_path):
    output = tmp_path / "dpo"
    result = run_recipe("--output_dir", str(output), "--start_model", str(warmed_model()["model"]))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check_chain(stage_jobs())
    num_pairs = check_pairs(output)
    assert num_pairs >= 32  # at least one global batch
    _, summary = read_json_artifact(output / "training" / "dpo" / "logs" / "summary.json")
    assert summary["status"] == "finished" and summary["final_step"] == 4 and summary["num_train_pairs"] == num_pairs
    assert (output / "models" / "dpo" / "config.json").is_file()  # the exported model the final eval served
    for evaluation in ("baseline", "final"):
        _, metrics = read_json_artifact(output / "evals" / evaluation / EVAL_METRICS_FILE, expect=EVALUATION)
        assert metrics["arith"]["greedy"]["num_entries"] == EVAL_PROBLEMS
    assert "dpo_from_sdg done: greedy on arith" in result.stdout and "(after DPO)" in result.stdout
    # a rerun finds every stage's output and submits nothing
    jobs_before = sum(len(records) for records in stage_jobs().values())
    again = run_recipe("--output_dir", str(output), "--start_model", str(warmed_model()["model"]))
    assert again.returncode == 0 and again.stdout.count("already done, skipped") == len(STAGES)
    assert sum(len(records) for records in stage_jobs().values()) == jobs_before


def test_bad_cluster_is_one_error_line(tmp_path):
    result = run_recipe("--output_dir", str(tmp_path), "--cluster", "nosuch")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.infra
@pytest.mark.timeout(3000)
def test_recipe_on_the_local_slurm_over_ssh(tmp_path, slurm_config):
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    output = tmp_path / "dpo"
    result = run_recipe("--output_dir", str(output), "--start_model", str(warmed_model()["model"]),
                        "--cluster", "slurm_local", "--config_dir", str(slurm_config))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = stage_jobs()
    assert all(r.executor == "slurm" and r.state is JobState.SUCCEEDED for records in jobs.values() for r in records)
    assert check_pairs(output) >= 32 and "dpo_from_sdg done: greedy on arith" in result.stdout
