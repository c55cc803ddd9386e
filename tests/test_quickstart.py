"""The README's main job, recipes/quickstart.py, end to end at `--size small`: on executor `none` every stage runs
after the one before it (run_after edges, start times), the final model beats the baseline on arith, and a rerun
skips every stage; the same chain through the local Slurm over SSH (infra) at `--size smoke` (every stage, too few
steps to learn: the jobs and the code in them are the same, what Slurm adds is the chain)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from skills_cli.common.artifacts import EVAL_METRICS_FILE, EVALUATION, read_json_artifact
from skills_cli.pipeline.store import JobRecord, JobState, Store

RECIPE = REPO / "recipes" / "quickstart.py"
STAGES = ["data", "model", "warmup", "baseline", "sdg", "filter", "sft", "after-sft", "grpo", "final"]
HEADLINE = "pass@1[avg-of-4]"  # the small size samples 4 solutions per test problem


def run_recipe(output: Path, *extra: str, size: str = "small") -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(RECIPE), "--size", size, "--output_dir", str(output), *extra],
                            capture_output=True, text=True, timeout=1500, env=dict(os.environ))  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def stage_jobs() -> dict[str, list[JobRecord]]:
    store = Store()
    return {stage: store.jobs(f"quickstart-{stage}") for stage in STAGES}


def accuracy(output: Path, evaluation: str, headline: str = HEADLINE) -> float:
    _, metrics = read_json_artifact(output / "evals" / evaluation / EVAL_METRICS_FILE, expect=EVALUATION)
    return metrics["arith"][headline]["symbolic_correct"]


def check_chain(jobs: dict[str, list[JobRecord]], timed: bool = True) -> None:
    """Every stage succeeded, waited for the previous stage (a dependency edge) and, where the store records job
    times (local executors; Slurm's are in sacct), started after it ended."""
    for stage, records in jobs.items():
        assert records and all(r.state is JobState.SUCCEEDED for r in records), (stage, records)
    for previous, stage in zip(STAGES[:-1], STAGES[1:], strict=True):
        upstream = {r.uid for r in jobs[previous]}
        assert any(upstream & set(r.depends_on) for r in jobs[stage]), f"{stage} does not wait for {previous}"
        assert not timed or min(r.started_at for r in jobs[stage]) >= max(r.ended_at for r in jobs[previous]), stage


@pytest.mark.timeout(1800)
def test_quickstart_runs_every_stage_in_order_and_beats_the_baseline(tmp_path):
    output = tmp_path / "quickstart"
    shown = run_recipe(output).stdout
    check_chain(stage_jobs())
    baseline, final = accuracy(output, "baseline"), accuracy(output, "final")
    assert final > baseline, shown[-2000:]
    assert f"quickstart done: {HEADLINE} on arith {baseline:.2f}% (baseline) -> {final:.2f}% (final)" in shown
    assert (output / "evals" / "final" / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun finds every stage's output and submits nothing
    jobs_before = sum(len(records) for records in stage_jobs().values())
    again = run_recipe(output).stdout
    assert again.count("already done, skipped") == len(STAGES) and "every stage was already done" in again
    assert sum(len(records) for records in stage_jobs().values()) == jobs_before
    assert f"{baseline:.2f}% (baseline) -> {final:.2f}% (final)" in again


@pytest.mark.infra
@pytest.mark.timeout(3000)
def test_quickstart_on_the_local_slurm_over_ssh(tmp_path, slurm_config):
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    output = tmp_path / "quickstart"
    shown = run_recipe(output, "--cluster", "slurm_local", "--config_dir", str(slurm_config), size="smoke").stdout
    jobs = stage_jobs()
    assert all(r.executor == "slurm" for records in jobs.values() for r in records)
    check_chain(jobs, timed=False)  # Slurm itself holds each stage until the previous one succeeded (afterok)
    baseline, final = (accuracy(output, name, "pass@1[avg-of-2]") for name in ("baseline", "final"))
    assert f"{baseline:.2f}% (baseline) -> {final:.2f}% (final)" in shown  # the report read the cluster's results


def test_the_stage_table_counts_only_this_runs_jobs(capsys):
    """The store keeps earlier runs of the same experiment names (another output folder): the table's states and
    seconds come from the jobs this run submitted, not from the span since the first run."""
    import importlib.util
    import time

    spec = importlib.util.spec_from_file_location("quickstart_recipe", RECIPE)
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe  # its dataclasses look their module up while being defined
    spec.loader.exec_module(recipe)
    store, now = Store(), time.time()
    store.add_experiment("quickstart-data", "local", "none")
    earlier = JobRecord("old", "quickstart-data", "quickstart-data", "local", "none", JobState.FAILED,
                        submitted_at=now - 3600, started_at=now - 3600, ended_at=now - 3590)  # fmt: skip
    this_run = JobRecord("new", "quickstart-data", "quickstart-data", "local", "none", JobState.SUCCEEDED,
                         submitted_at=now - 9, started_at=now - 8, ended_at=now - 1)  # fmt: skip
    for record in (earlier, this_run):
        store.add_job(record)
    records = recipe.wait_for(["quickstart-data"], since=now - 10)
    assert [r.uid for r in records["quickstart-data"]] == ["new"]
    assert recipe.show_stages(records, now - 10) == []  # nothing failed in this run
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("quickstart-data"))
    assert row.split()[1:] == ["SUCCEEDED", "7"]
