"""Multi-node training for real: `ns train sft|grpo --num_nodes 2` on the local cluster's `multi` partition (the
host's node and two container nodes, tests/infra/nodes.sh), one CPU process per node, torchrun's c10d rendezvous
across the nodes' network. The curves equal a single-node two-process run of the same data and seed; for SFT the
checkpoint is the same set of shards (written once, not once per node) and a second 2-node job resumes from it."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_ns
from multinode_support import job_nodes, write_multi_cluster
from test_sft_support import read_metrics, tiny_model, write_jsonl
from test_slurm import finish

from skills_cli.evaluation.benchmarks.arith import generate as arith
from skills_cli.pipeline import train_grpo, train_sft, wrap_arguments
from skills_cli.pipeline.store import JobState, Store

pytestmark = pytest.mark.infra

STEPS, RESUMED_STEPS = 4, 6
TRAINING = ["++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2", "++policy.optimizer.kwargs.lr=1e-3",
            "++checkpointing.save_period=4", "++sft.seed=7"]  # fmt: skip


@pytest.fixture(scope="module")
def multi(infra, tmp_path_factory) -> Path:
    """A cluster config for the multi partition; its job folder is under /tmp, which every node shares."""
    return write_multi_cluster(
        infra, tmp_path_factory.mktemp("multinode_configs"), tmp_path_factory.mktemp("multinode_jobs")
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[str, str]:
    rows = [{"messages": [{"role": "user", "content": f"{a}*{b}?"}, {"role": "assistant", "content": f"{a}*{b} = {a * b}"}]}
            for a in range(1, 9) for b in range(1, 9)]  # fmt: skip
    folder = tmp_path_factory.mktemp("multinode_data")
    return tiny_model(), write_jsonl(folder / "train.jsonl", rows)


def two_processes_one_node(algorithm: str, model: str, train: str, out: Path, overrides: list[str]) -> Path:
    """The reference: the same trainer under torchrun with two processes on this machine."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", f"skills_cli.training.algorithms.{algorithm}", f"++policy.model_name={model}",
               f"++data.train_data={train}", f"++output_dir={out}", f"++checkpointing.checkpoint_dir={out}/checkpoints",
               f"++logger.log_dir={out}/logs", *overrides]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def sft_reference(data, tmp_path_factory) -> Path:
    return two_processes_one_node("sft", *data, tmp_path_factory.mktemp("one_node"),
                                  [f"++sft.max_num_steps={RESUMED_STEPS}", *TRAINING])  # fmt: skip


def on_two_nodes(api, multi: Path, model: str, train: str, out: Path, expname: str, overrides: list[str]):
    api(ctx=wrap_arguments(" ".join(overrides)), cluster="slurm_multi", config_dir=str(multi), expname=expname,
        hf_model=model, training_data=train, output_dir=str(out), num_nodes=2, num_gpus=0)  # fmt: skip
    (record,) = finish(expname, timeout=300)
    assert record.state is JobState.SUCCEEDED, record
    return record


def train_on_two_nodes(multi: Path, data, out: Path, expname: str, steps: int):
    return on_two_nodes(train_sft, multi, *data, out, expname, [f"++sft.max_num_steps={steps}", *TRAINING])


def shard_names(checkpoint: Path) -> list[str]:
    return sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())


def losses(out: Path) -> list[float]:
    return [row["train/loss"] for row in read_metrics(out) if "train/loss" in row]


@pytest.mark.timeout(900)
def test_two_node_sft_equals_two_processes_on_one_node_and_resumes(multi, data, sft_reference, tmp_path):
    out = tmp_path / "two_nodes"
    first = train_on_two_nodes(multi, data, out, "mn-sft", STEPS)
    nodes = job_nodes(first.external_id)
    assert len(set(nodes)) == 2, nodes
    summary = json.loads((out / "logs" / "summary.json").read_text())
    assert (summary["world_size"], summary["data_parallel_size"]) == (2, 2)
    reference = losses(sft_reference)
    assert losses(out) == pytest.approx(reference[:STEPS], rel=1e-5)
    step = f"checkpoints/step_{STEPS}"
    assert shard_names(out / step) == shard_names(sft_reference / step)

    train_on_two_nodes(multi, data, out, "mn-sft-resume", RESUMED_STEPS)
    summary = json.loads((out / "logs" / "summary.json").read_text())
    assert (summary["resumed_from_step"], summary["final_step"]) == (STEPS, RESUMED_STEPS)
    assert losses(out) == pytest.approx(reference, rel=1e-5)


GRPO = ["++grpo.num_prompts_per_step=4", "++grpo.num_generations_per_prompt=2", "++policy.train_global_batch_size=8",
        "++policy.train_micro_batch_size=2", "++policy.generation.max_new_tokens=8",
        "++policy.max_total_sequence_length=160", "++grpo.max_num_steps=2", "++checkpointing.enabled=false"]  # fmt: skip


@pytest.mark.timeout(600)
def test_two_node_grpo_equals_two_processes_on_one_node(multi, data, tmp_path):
    """Each rank samples its share of the prompt groups from seeded streams (per step and data-parallel rank), so
    where the ranks run does not change rollouts, rewards or the update."""
    model, _ = data
    train = write_jsonl(tmp_path / "problems.jsonl", arith("train")[:32])
    reference = two_processes_one_node("grpo", model, train, tmp_path / "one_node", GRPO)
    record = on_two_nodes(train_grpo, multi, model, train, tmp_path / "two_nodes", "mn-grpo", GRPO)
    assert len(set(job_nodes(record.external_id))) == 2
    keys = ("train/loss", "train/reward", "train/generation_lengths", "train/global_valid_seqs")
    ours, theirs = (
        [[row[key] for key in keys] for row in read_metrics(path) if "train/loss" in row]
        for path in (tmp_path / "two_nodes", reference)
    )
    assert len(ours) == 2 and ours[0][3] == 8  # both ranks' rollouts counted
    assert ours == [pytest.approx(row, rel=1e-5) for row in theirs]


def test_more_nodes_than_the_partition_has_is_refused_before_queueing(multi, data, infra, tmp_path):
    model, train = data
    result = run_ns("train", "sft", "--cluster", "slurm_multi", "--config_dir", str(multi), "--expname", "mn-too-many",
                    "--num_nodes", "4", "--hf_model", model, "--training_data", train, "--output_dir",
                    str(tmp_path / "out"), "++policy.train_global_batch_size=8")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    partition = infra["SKILLS_INFRA_MULTI_PARTITION"]
    assert result.stderr.strip() == (f"error: job 'sft' asks for 4 nodes; partition {partition!r} of cluster "
                                     "'slurm_multi' has 3 (sinfo)")  # fmt: skip
    assert not Store().has_experiment("mn-too-many")
    assert "mn-too-many" not in subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout


def processes(marker: str) -> list[str]:
    """Processes whose command line holds `marker`, on every node: the container nodes' processes are visible in
    the host's process table (a container has its own PID namespace, not its own host)."""
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


def test_cancel_of_a_three_node_job_leaves_no_process_on_any_node(multi):
    marker = f"sleep {random.randint(5000, 9999)}"
    run_ns("run_cmd", "--cluster", "slurm_multi", "--config_dir", str(multi), "--expname", "mn-cancel",
           "--num_nodes", "3", marker, check=True)  # fmt: skip
    for _ in range(60):
        if len([line for line in processes(marker) if line.split(None, 1)[1] == marker]) == 3:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the job never ran one {marker!r} per node: {processes(marker)}")
    run_ns("cancel", "mn-cancel", check=True)
    for _ in range(30):
        if not processes(marker):
            break
        time.sleep(1)
    assert processes(marker) == []
    (record,) = Store().jobs("mn-cancel")
    assert record.state is JobState.CANCELLED
