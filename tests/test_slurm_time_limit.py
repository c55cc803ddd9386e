"""A training job that really meets its Slurm time limit: `ns train sft --time 00:01:00 --dependent_jobs 3` on the
local Slurm (one minute: Slurm's smallest limit). The trainer's deadline is the job's end time as Slurm has it
(no variable set by the test); the trainer saves and stops before it, the next copy starts after the first ended
(afterany), resumes and finishes, and the final weights equal an uninterrupted run's bit for bit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_sft_support import read_metrics, tiny_model, write_jsonl
from test_slurm import finish, sacct_times

from skills_cli.pipeline import train_sft, wrap_arguments
from skills_cli.pipeline.store import JobState
from skills_cli.training.algorithms.sft.trainer import main as sft_main

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parent.parent

LIMIT_S, SAVE_BEFORE_S, STARTUP_S = 60, 25, 15  # STARTUP_S: a job's start to its first step (~14 s here)
DEPENDENT_JOBS = 3
TRAINING = ["++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=8", "++sft.max_num_epochs=1000",
            "++sft.seed=3"]  # fmt: skip


def local_run(model: str, train: str, out: Path, steps: int) -> Path:
    args = [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={out}",
            f"++sft.max_num_steps={steps}", "++checkpointing.enabled=false", *TRAINING]  # fmt: skip
    assert sft_main(args) == 0
    return out


def steps_for_two_windows(model: str, train: str, out: Path) -> int:
    """Steps that take about twice the training time a job has before its save point (start-up aside), at this
    machine's speed now: the first job cannot finish them unless the machine gets twice as fast, and the four
    jobs of the chain together have room for twice slower (or start-ups 10 s longer)."""
    rows = read_metrics(local_run(model, train, out, 40))[10:]  # past the warm-up steps
    seconds_per_step = sorted(row["step_time_s"] for row in rows)[len(rows) // 2]
    return max(60, int(2 * (LIMIT_S - SAVE_BEFORE_S - STARTUP_S) / seconds_per_step))


def safetensors_of(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.timeout(1200)
def test_a_job_at_its_time_limit_hands_over_to_its_dependent_copy(slurm_config, infra, tmp_path):
    model = tiny_model()
    rows = [{"messages": [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": f"{a}+{b} = {a + b}"}]}
            for a in range(10) for b in range(10)]  # fmt: skip
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    steps = steps_for_two_windows(model, train, tmp_path / "calibration")
    # the local Slurm over SSH, with the checkout's interpreter for the in-job trainer
    config = (slurm_config / "slurm_local.yaml").read_text() + f"python: {REPO / '.venv' / 'bin' / 'python'}\n"
    (slurm_config / "slurm_train.yaml").write_text(config)
    out = tmp_path / "chain"
    overrides = [f"++sft.max_num_steps={steps}", f"++checkpointing.save_before_deadline_seconds={SAVE_BEFORE_S}",
                 f"++checkpointing.save_period={10 * steps}", *TRAINING]  # fmt: skip
    train_sft(ctx=wrap_arguments(" ".join(overrides)), cluster="slurm_train", config_dir=str(slurm_config),
              expname="limit", hf_model=model, training_data=train, output_dir=str(out), num_gpus=0,
              time="00:01:00", dependent_jobs=DEPENDENT_JOBS)  # fmt: skip
    records = sorted(finish("limit", timeout=900), key=lambda r: int(r.external_id))
    assert [r.state for r in records] == [JobState.SUCCEEDED] * (1 + DEPENDENT_JOBS), records
    times = sacct_times(infra, [r.external_id for r in records])
    first, second = (times[r.external_id] for r in records[:2])
    assert second[0] >= first[1]  # afterany: the copy started once the first had ended
    first_log = Path(records[0].log_path).read_text()
    stopped = re.search(r"stopping at step (\d+) before the deadline", first_log)
    assert stopped and 0 < int(stopped.group(1)) < steps, first_log[-3000:]
    deadline = int(re.search(r"deadline (\d+) \(unix seconds", first_log).group(1))
    assert abs(deadline - (first[0].timestamp() + LIMIT_S)) <= 2  # Slurm's end time: the start plus the limit
    assert (first[1] - first[0]).total_seconds() < LIMIT_S  # it saved and left before Slurm's kill
    summary = json.loads((out / "logs" / "summary.json").read_text())
    assert (summary["status"], summary["final_step"]) == ("finished", steps)
    reference = local_run(model, train, tmp_path / "uninterrupted", steps)  # after the chain: no CPU shared
    ours, theirs = safetensors_of(out / "final_hf"), safetensors_of(reference / "final_hf")
    assert ours.keys() == theirs.keys() and all(bool((ours[k] == theirs[k]).all()) for k in ours)
