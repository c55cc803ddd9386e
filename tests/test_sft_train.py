"""SFT training end to end on CPU: the loss goes down, metrics and validation are logged, the HF export reloads
with the trained model's logits, and trackers (wandb / swanlab offline) receive the steps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_sft_support import conversation_rows, read_metrics, sft_config, tiny_model, write_jsonl

from skills_cli.common.artifacts import TRAINING_SERIES, TRAINING_SUMMARY, read_json_artifact
from skills_cli.inference.model_loading import load_tokenizer
from skills_cli.training.algorithms.sft.trainer import SFTTrainer, main
from skills_cli.training.components.parallel import distributed_session

STEPS = 20


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """20 steps on 8 conversations repeated 4 times (plus one over-long one), validating every 5 steps."""
    import torch

    root = tmp_path_factory.mktemp("trained")
    rows = conversation_rows(8) * 4 + [{"input": "Count to many.", "output": " ".join(["12345"] * 100)}]
    train = write_jsonl(root / "train.jsonl", rows)
    val = write_jsonl(root / "val.jsonl", conversation_rows(8))
    config = sft_config(tiny_model(), train, root / "run", f"++sft.max_num_steps={STEPS}", "++sft.max_num_epochs=10",
                        f"++data.val_data={val}", "++sft.val_period=5", "++sft.val_batches=1", "++sft.val_at_start=true",
                        "++policy.max_total_sequence_length=128", "++policy.optimizer.kwargs.lr=3e-3",
                        "++policy.scheduler.name=cosine", "++policy.scheduler.warmup_steps=2",
                        "++policy.scheduler.min_lr_ratio=0.1", "++checkpointing.enabled=false")  # fmt: skip
    tokenizer = load_tokenizer(tiny_model())
    probe = torch.tensor([tokenizer.encode(tokenizer.apply_chat_template(rows[1]["messages"], tokenize=False))])
    with distributed_session() as dist:
        trainer = SFTTrainer(config, dist)
        summary = trainer.fit()
        trainer.model.eval()
        with torch.no_grad():
            logits = trainer.model(input_ids=probe).logits
    return {"root": root / "run", "summary": summary, "probe": probe, "logits": logits}


def test_loss_goes_down(trained):
    losses = [row["loss"] for row in read_metrics(trained["root"])]
    assert len(losses) == STEPS
    assert sum(losses[-3:]) / 3 < 0.65 * losses[0], losses  # 5.8 -> 3.1 with this seed


def test_metrics_lines_and_summary(trained):
    rows = read_metrics(trained["root"])
    assert [row["step"] for row in rows] == list(range(1, STEPS + 1))
    for row in rows:
        assert row["grad_norm"] > 0 and row["tokens_per_sec_per_gpu"] > 0 and row["peak_memory_gib"] > 0
        assert row["mfu"] is None  # CPU: no peak FLOPs to compare with
        assert row["num_valid_tokens"] > 0
    lrs = [row["lr"] for row in rows]
    assert lrs[:2] == pytest.approx([1.5e-3, 3e-3])  # linear warm-up over 2 steps
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:], strict=False)) and lrs[-1] == pytest.approx(
        3e-4
    )  # cosine to 10%
    assert [row["step"] for row in rows if "val_loss" in row] == [5, 10, 15, 20]
    assert sum(row["num_overlong_samples"] for row in rows) >= 1  # the long sample is drawn (and masked)
    kind, summary = read_json_artifact(trained["root"] / "logs" / "summary.json")
    assert kind is TRAINING_SUMMARY
    series_kind, series = read_json_artifact(trained["root"] / "logs" / "metrics.json")
    assert series_kind is TRAINING_SERIES and series["loss"] == {str(row["step"]): row["loss"] for row in rows}
    assert summary["status"] == "finished" and summary["final_step"] == STEPS
    assert summary["num_overlong_train_samples"] == 1
    assert summary["val_loss_at_start"] > summary["final_val_loss"]
    assert summary["final_hf_path"] == str(trained["root"] / "final_hf")


def test_export_reloads_with_the_trained_logits(trained):
    import torch
    from transformers import AutoModelForCausalLM

    export = trained["root"] / "final_hf"
    reloaded = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32)
    with torch.no_grad():
        logits = reloaded(input_ids=trained["probe"]).logits
    assert torch.allclose(logits, trained["logits"], atol=1e-5, rtol=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=trained["probe"]).logits, logits, atol=1e-3)  # it did train
    text = "<|im_start|>user\nWhat is 12+7?<|im_end|>\n"
    assert load_tokenizer(export).encode(text) == load_tokenizer(tiny_model()).encode(text)
    assert (export / "generation_config.json").is_file() and list(export.glob("*.safetensors"))


@pytest.mark.parametrize("mode_from", ["environment", "config"])
def test_trackers_offline(tmp_path, monkeypatch, mode_from):
    """wandb and swanlab offline, the mode from WANDB_MODE / SWANLAB_MODE or from logger.*.mode (with the
    environment variables unset); the config variant also writes TensorBoard events."""
    pytest.importorskip("wandb")
    pytest.importorskip("swanlab")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SWANLAB_LOG_DIR", str(tmp_path / "swanlab"))
    extra = []
    if mode_from == "environment":
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("SWANLAB_MODE", "offline")
    else:
        pytest.importorskip("tensorboard")
        monkeypatch.delenv("WANDB_MODE", raising=False)
        monkeypatch.delenv("SWANLAB_MODE", raising=False)
        extra = ["++logger.wandb.mode=offline", "++logger.swanlab.mode=offline", "++logger.tensorboard_enabled=true"]
    train = write_jsonl(tmp_path / "train.jsonl", conversation_rows(16))
    args = [f"++policy.model_name={tiny_model()}", f"++data.train_data={train}", f"++output_dir={tmp_path / 'run'}",
            "++policy.train_global_batch_size=8", "++sft.max_num_steps=2", "++checkpointing.enabled=false",
            "++logger.wandb_enabled=true", "++logger.swanlab_enabled=true", "++logger.wandb.name=sft-test",
            "++logger.swanlab.project=sft-tests", *extra]  # fmt: skip
    assert main(args) == 0
    if mode_from == "config":
        (events,) = (tmp_path / "run" / "logs" / "tensorboard").glob("events.out.tfevents.*")
        assert b"grad_norm" in events.read_bytes() and b"loss" in events.read_bytes()
    (wandb_run,) = (tmp_path / "run" / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process writes the run file; on a loaded machine it was seen holding only its header right
    # after finish() returned (once in a batch run), so wait a bounded time for the records
    deadline = time.monotonic() + 60
    while b"tokens_per_sec_per_gpu" not in wandb_run.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert b"grad_norm" in wandb_run.read_bytes() and b"tokens_per_sec_per_gpu" in wandb_run.read_bytes()
    (swanlab_run,) = (tmp_path / "swanlab").glob("run-*/run-*.swanlab")
    assert b"grad_norm" in swanlab_run.read_bytes()


@pytest.mark.parametrize("backend", ["dtensor", "megatron"])
def test_gradient_clipping_bounds_the_update(tmp_path, backend):
    """One AdamW step (lr 1e-3, no weight decay) moves each weight by about lr; with the gradients clipped to a
    total norm of 1e-12 every element is far below AdamW's eps (1e-8), so the step moves them by ~1e-7 of lr.
    The logged grad_norm is the norm before clipping, the same in both runs."""
    from safetensors.torch import load_file

    if backend == "megatron":
        pytest.importorskip("megatron.core")
    train = write_jsonl(tmp_path / "train.jsonl", conversation_rows(8))
    start = load_file(str(next(Path(tiny_model()).glob("*.safetensors"))))
    largest_change, grad_norms = {}, {}
    for clip in ("1.0", "1e-12"):
        root = tmp_path / f"clip-{clip}"
        config = sft_config(tiny_model(), train, root, "++sft.max_num_steps=1", "++checkpointing.enabled=false",
                            f"++policy.max_grad_norm={clip}", f"++backend={backend}")  # fmt: skip
        with distributed_session() as dist:
            SFTTrainer(config, dist).fit()
        grad_norms[clip] = read_metrics(root)[0]["grad_norm"]
        trained = load_file(str(root / "final_hf" / "model.safetensors"))
        largest_change[clip] = max(float((trained[k].float() - start[k].float()).abs().max()) for k in trained)
    assert grad_norms["1e-12"] == pytest.approx(grad_norms["1.0"], rel=1e-5) and grad_norms["1.0"] > 1e-3
    assert largest_change["1.0"] > 5e-4  # an unclipped-scale AdamW step
    assert largest_change["1e-12"] < 1e-8


def test_validation_batch_size(tmp_path):
    """sft.val_global_batch_size x sft.val_batches samples are validated (NeMo-RL's key): 1 batch of 2 samples
    of an 8-row file gives the loss of a file holding those 2 rows alone, not of all 8."""
    rows = conversation_rows(8, seed=3)
    train = write_jsonl(tmp_path / "train.jsonl", conversation_rows(8))
    files = {"all": write_jsonl(tmp_path / "val8.jsonl", rows), "two": write_jsonl(tmp_path / "val2.jsonl", rows[:2])}
    losses = {}
    for name, val_file, extra in (("all_batch2", "all", ["++sft.val_global_batch_size=2"]), ("two", "two", []),
                                  ("all", "all", [])):  # fmt: skip
        config = sft_config(tiny_model(), train, tmp_path / name, f"++data.val_data={files[val_file]}",
                            "++sft.val_batches=1", "++checkpointing.enabled=false", *extra)  # fmt: skip
        with distributed_session() as dist:
            losses[name] = SFTTrainer(config, dist).validate()
    assert losses["all_batch2"] == pytest.approx(losses["two"], rel=1e-6)
    assert losses["all"] != pytest.approx(losses["two"], rel=1e-3)
