"""The loss and its gradients do not depend on how a global batch is cut: micro-batch size, sequence packing,
activation checkpointing, data parallelism (2 processes, gloo) and tensor parallelism (2 processes) all give
the global-batch token-mean loss and the same gradients."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from test_sft_support import (
    assert_prefetched_steps_match_inline,
    conversation_rows,
    read_metrics,
    sft_config,
    tiny_model,
    write_jsonl,
)

from skills_cli.training.algorithms.sft.trainer import LaunchedBatch, SFTTrainer
from skills_cli.training.components.data import DataPosition, next_global_batch
from skills_cli.training.components.parallel import distributed_session

GLOBAL_BATCH = list(range(8))  # the samples of the global batch under test


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", conversation_rows(32))


def loss_and_gradients(config) -> tuple[float, dict]:
    with distributed_session() as dist:
        trainer = SFTTrainer(config, dist)
        stats = trainer.forward_backward(GLOBAL_BATCH)
        grads = {name: p.grad.full_tensor().clone() for name, p in trainer.model.named_parameters()}
    return stats.loss, grads


def reference_loss(model: str, train_file: str) -> float:
    """The global-batch token-mean NLL computed directly with transformers, one sample at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from skills_cli.inference.model_loading import load_tokenizer
    from skills_cli.training.components.data import load_sft_dataset
    from skills_cli.training.config import DataConfig

    dataset = load_sft_dataset(train_file, load_tokenizer(model), DataConfig(), 256)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    total, count = 0.0, 0
    for index in GLOBAL_BATCH:
        sample = dataset.samples[index]
        logits = hf(torch.tensor([sample.input_ids])).logits[0]
        labels = torch.tensor(sample.labels())
        valid = labels != -100
        total += torch.nn.functional.cross_entropy(logits[valid], labels[valid], reduction="sum").item()
        count += int(valid.sum())
    return total / count


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_micro_batch_size_and_packing_do_not_change_loss_or_gradients(arch, train_file, tmp_path):
    model = tiny_model(arch)
    layouts = {
        "micro1": ["++policy.train_micro_batch_size=1"],
        "micro4": ["++policy.train_micro_batch_size=4"],
        "packed": ["++policy.train_micro_batch_size=1", "++policy.sequence_packing.enabled=true"],
        "packed_rows2": [
            "++policy.train_micro_batch_size=2",
            "++policy.sequence_packing.enabled=true",
            "++policy.max_total_sequence_length=128",
        ],  # fmt: skip
        "checkpointed": ["++policy.train_micro_batch_size=4", "++policy.dtensor_cfg.activation_checkpointing=true"],
    }
    results = {name: loss_and_gradients(sft_config(model, train_file, tmp_path / name, *overrides))
               for name, overrides in layouts.items()}  # fmt: skip
    reference, reference_grads = results["micro1"]
    assert reference == pytest.approx(reference_loss(model, train_file), abs=1e-5)
    for name, (loss, grads) in results.items():
        assert loss == pytest.approx(reference, abs=1e-5), name
        worst = max((grads[key] - reference_grads[key]).abs().max().item() for key in grads)
        assert worst < 1e-5, f"{name}: gradients differ by {worst}"


def test_packing_really_packs_and_checkpointing_really_recomputes(train_file, tmp_path):
    model = tiny_model()
    packed = sft_config(model, train_file, tmp_path / "p", "++policy.train_micro_batch_size=1",
                        "++policy.sequence_packing.enabled=true", "++policy.dtensor_cfg.activation_checkpointing=true")  # fmt: skip
    with distributed_session() as dist:
        trainer = SFTTrainer(packed, dist)
        calls = []
        layer = trainer.model.model.layers[0].mlp
        # a pre-hook: the recomputation stops early, once the last activation backward needs exists again
        handle = layer.register_forward_pre_hook(lambda *args: calls.append(1))
        stats = trainer.forward_backward(GLOBAL_BATCH)
        handle.remove()
    assert stats.num_micro_batches < len(GLOBAL_BATCH)  # 8 conversations share fewer rows of 256 tokens
    assert len(calls) == 2 * stats.num_micro_batches  # forward + recomputation in backward


def torchrun(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "skills_cli.training.algorithms.sft", *args]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def run_args(model: str, train: str, output_dir, *extra: str) -> list[str]:
    return [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={output_dir}",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2",
            "++policy.optimizer.kwargs.lr=1e-3", "++sft.max_num_steps=3", "++checkpointing.enabled=false", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def one_process_metrics(train_file, tmp_path_factory) -> list[dict]:
    from skills_cli.training.algorithms.sft.trainer import main

    output_dir = tmp_path_factory.mktemp("one")
    assert main(run_args(tiny_model(), train_file, output_dir)) == 0
    return read_metrics(output_dir)


LAYOUTS = {
    "dp2": [],
    "tp2": ["++policy.dtensor_cfg.tensor_parallel_size=2"],
    "tp2_sp": ["++policy.dtensor_cfg.tensor_parallel_size=2", "++policy.dtensor_cfg.sequence_parallel=true"],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_processes_match_one(layout, train_file, one_process_metrics, tmp_path):
    """DP=2 (FSDP over 2 ranks, gloo), TP=2 (DTensor column/row-wise projections) and TP=2 with sequence
    parallelism (norms and residuals sharded on the sequence) give the 1-process losses and gradient norms step
    for step, optimizer updates included."""
    extra = LAYOUTS[layout]
    torchrun(run_args(tiny_model(), train_file, tmp_path / layout, *extra))
    got = read_metrics(tmp_path / layout)
    assert [row["step"] for row in got] == [1, 2, 3]
    for mine, theirs in zip(got, one_process_metrics, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], abs=1e-5)
        assert mine["num_valid_tokens"] == theirs["num_valid_tokens"]


def test_a_step_queues_the_weight_update_before_reading_its_loss(train_file, tmp_path, monkeypatch):
    """Reading a step's loss waits for the device; the update is queued first (see DPO's twin test), and the
    loss read afterwards is the one `forward_backward` gives for the same batch."""
    config = sft_config(tiny_model(), train_file, tmp_path, "++checkpointing.enabled=false")
    with distributed_session() as dist:
        trainer = SFTTrainer(config, dist)
        first = next_global_batch(DataPosition(), len(trainer.train_data.samples), 8, config.sft.seed)
        expected = trainer.forward_backward(first).loss  # before any update: the first step's loss
        order, update = [], trainer.policy.optimizer_step_async
        monkeypatch.setattr(trainer.policy, "optimizer_step_async", lambda *a, **k: (order.append("update"),
                                                                                     update(*a, **k))[1])  # fmt: skip
        monkeypatch.setattr(LaunchedBatch, "stats", lambda self, read=LaunchedBatch.stats: (order.append("loss"),
                                                                                           read(self))[1])  # fmt: skip
        row = trainer.train_step()
    assert order == ["update", "loss"]
    assert row["num_valid_tokens"] > 0 and row["loss"] == pytest.approx(expected, rel=1e-6)


def test_each_step_trains_on_the_micro_batches_built_during_the_previous_update(train_file, tmp_path, monkeypatch):
    """A step builds the next step's micro-batches while the device updates the weights (`_prefetch_next`, as
    DPO's); the next step trains on those, across an epoch boundary too, with the same metrics as inline."""

    def config(prefetch: bool):
        return sft_config(tiny_model(), train_file, tmp_path / str(prefetch), "++checkpointing.enabled=false",
                          "++sft.max_num_steps=6", "++sft.max_num_epochs=2",
                          "++policy.sequence_packing.enabled=true")  # fmt: skip

    assert_prefetched_steps_match_inline(SFTTrainer, config, [0, 0, 0, 0, 1, 1], monkeypatch)  # 32 samples, 8 a step
