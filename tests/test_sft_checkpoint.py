"""Checkpoints: exact resume (mid-epoch, at an epoch boundary, after a deadline stop), the atomic layout and
retention, refusing another model's checkpoint, and checkpoint averaging."""

from __future__ import annotations

import json
import shutil
import time

import pytest
from test_sft_support import conversation_rows, read_metrics, sft_config, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.training import average_checkpoints
from skills_cli.training.algorithms.sft.trainer import run
from skills_cli.training.components.checkpoint import load_model_weights, step_checkpoints
from skills_cli.training.trainer import DEADLINE_ENV

# 20 samples, global batch 8: 2 steps per epoch (the tail of 4 is dropped), 6 steps = 3 epochs.
RUN_OPTIONS = ("++sft.max_num_steps=6", "++sft.max_num_epochs=5", "++checkpointing.save_period=2",
               "++checkpointing.keep_last_k=2", "++policy.scheduler.name=cosine", "++policy.scheduler.warmup_steps=2",
               "++policy.sequence_packing.enabled=true", "++policy.train_micro_batch_size=1")  # fmt: skip


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", conversation_rows(20))


def config_for(train_file, output_dir, *extra):
    return sft_config(tiny_model(), train_file, output_dir, *RUN_OPTIONS, *extra)


@pytest.fixture(scope="module")
def reference(train_file, tmp_path_factory):
    """The uninterrupted run."""
    output = tmp_path_factory.mktemp("reference")
    run(config_for(train_file, output))
    return output


def same_steps(got: list[dict], expected: list[dict]) -> None:
    """Bit-identical loss curve (CPU is deterministic), not merely close."""
    keys = ("step", "epoch", "loss", "grad_norm", "lr", "num_valid_tokens")
    assert [{k: row[k] for k in keys} for row in got] == [{k: row[k] for k in keys} for row in expected]


def test_layout_and_retention(reference):
    checkpoints = step_checkpoints(reference / "checkpoints")
    assert [step for step, _ in checkpoints] == [4, 6]  # saved at 2, 4, 6; keep_last_k=2
    step_6 = checkpoints[-1][1]
    assert (step_6 / "dcp" / ".metadata").is_file() and (step_6 / "rng" / "rank_0.pt").is_file()
    state = json.loads((step_6 / "trainer_state.json").read_text())
    assert (state["step"], state["epoch"], state["index"]) == (6, 2, 16)
    assert not list((reference / "checkpoints").glob("tmp_step_*"))


def test_resume_at_an_epoch_boundary_continues_step_for_step(reference, train_file, tmp_path):
    """step_4 ends epoch 1: the resumed run must start epoch 2, neither repeating nor skipping it."""
    shutil.copytree(reference / "checkpoints" / "step_4", tmp_path / "checkpoints" / "step_4")
    (tmp_path / "checkpoints" / "tmp_step_5").mkdir()  # an interrupted save: deleted, never resumed from
    (tmp_path / "checkpoints" / "step_5").mkdir()  # no trainer_state.json: incomplete, ignored
    summary = run(config_for(train_file, tmp_path))
    assert summary["resumed_from_step"] == 4
    same_steps(read_metrics(tmp_path), read_metrics(reference)[4:])
    assert not (tmp_path / "checkpoints" / "tmp_step_5").exists()
    assert_same_weights(tmp_path / "final_hf", reference / "final_hf")


def test_deadline_stop_then_resume_reproduces_the_run(reference, train_file, tmp_path, monkeypatch):
    """With the deadline inside the safety margin the run saves after its first step and exits cleanly; the
    rerun resumes mid-epoch and the whole metrics.jsonl equals the uninterrupted run's."""
    monkeypatch.setenv(DEADLINE_ENV, str(time.time() + 600))
    config = config_for(train_file, tmp_path, "++checkpointing.save_before_deadline_seconds=900")
    summary = run(config)
    assert summary["status"] == "stopped_before_deadline" and summary["final_step"] == 1
    assert [step for step, _ in step_checkpoints(tmp_path / "checkpoints")] == [1]
    assert not (tmp_path / "final_hf").exists()
    monkeypatch.delenv(DEADLINE_ENV)
    assert run(config)["status"] == "finished"
    same_steps(read_metrics(tmp_path), read_metrics(reference))


def test_refuses_to_resume_another_models_checkpoint(reference, train_file, tmp_path):
    shutil.copytree(reference / "checkpoints" / "step_6", tmp_path / "checkpoints" / "step_6")
    other = sft_config(tiny_model(seed=1), train_file, tmp_path, *RUN_OPTIONS)  # same shapes, other weights
    with pytest.raises(UserError, match="was written for another model"):
        run(other)


def assert_same_weights(first, second) -> None:
    from safetensors.torch import load_file

    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def test_average_checkpoints(reference, tmp_path):
    import torch
    from safetensors.torch import load_file

    checkpoints = reference / "checkpoints"
    code = average_checkpoints.main([str(checkpoints), "--last", "2", "--output_dir", str(tmp_path / "avg")])
    assert code == 0
    template = average_checkpoints.empty_state_dict(tiny_model())
    four = load_model_weights(checkpoints / "step_4", {k: torch.empty_like(v) for k, v in template.items()})
    six = load_model_weights(checkpoints / "step_6", {k: torch.empty_like(v) for k, v in template.items()})
    averaged = load_file(str(tmp_path / "avg" / "model.safetensors"))
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (four[name] + six[name]) / 2, atol=1e-7), name
    # averaging one checkpoint reproduces the final export of the run exactly
    average_checkpoints.main([str(checkpoints / "step_6"), "--output_dir", str(tmp_path / "one")])
    assert_same_weights(tmp_path / "one", reference / "final_hf")


def test_average_refuses_incomplete_checkpoints(tmp_path, capsys):
    (tmp_path / "step_3").mkdir()
    assert average_checkpoints.main([str(tmp_path / "step_3"), "--output_dir", str(tmp_path / "o")]) == 2
    assert "not a complete training checkpoint" in capsys.readouterr().err


def test_a_job_starting_after_the_run_finished_does_nothing(train_file, tmp_path):
    """A `--dependent_jobs` copy that starts once the run is done: no training step, no second export, and
    summary.json keeps the finished run's summary (it used to be replaced by an empty one)."""
    run_dir = tmp_path / "run"
    assert run(config_for(train_file, run_dir))["status"] == "finished"
    summary_before = (run_dir / "logs" / "summary.json").read_text()
    export_time = (run_dir / "final_hf" / "model.safetensors").stat().st_mtime_ns
    metrics_before = (run_dir / "logs" / "metrics.jsonl").read_text()
    summary = run(config_for(train_file, run_dir))
    assert (
        summary == {k: v for k, v in json.loads(summary_before).items() if k not in ("kind", "version")}
        and summary["status"] == "finished"
    )
    assert (run_dir / "logs" / "summary.json").read_text().strip() == summary_before.strip()
    assert (run_dir / "logs" / "metrics.jsonl").read_text() == metrics_before
    assert (run_dir / "final_hf" / "model.safetensors").stat().st_mtime_ns == export_time
    # without its export the run is not finished: the copy exports (and nothing else)
    shutil.rmtree(run_dir / "final_hf")
    summary = run(config_for(train_file, run_dir))
    assert summary["resumed_from_step"] == 6 and (run_dir / "final_hf" / "model.safetensors").is_file()
    assert (run_dir / "logs" / "metrics.jsonl").read_text() == metrics_before


def test_export_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    import torch
    from transformers import PreTrainedModel

    from skills_cli.training.components.export import save_hf_model

    out = tmp_path / "out"
    out.mkdir()
    weights = {name: torch.zeros_like(t) for name, t in average_checkpoints.empty_state_dict(tiny_model()).items()}

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed mid-export")

    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedModel, "save_pretrained", killed)
        with pytest.raises(KeyboardInterrupt):
            save_hf_model(weights, tiny_model(), out / "export", torch.float32)
    assert not (out / "export").exists()  # only the hidden staging directory, replaced by the next try
    save_hf_model(weights, tiny_model(), out / "export", torch.float32)
    assert (out / "export" / "model.safetensors").is_file() and (out / "export" / "tokenizer.json").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["export"]
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("keep")  # a directory with the user's files is written into
    save_hf_model(weights, tiny_model(), out / "mine", torch.float32)
    assert (out / "mine" / "notes.txt").read_text() == "keep" and (out / "mine" / "config.json").is_file()


def test_a_resume_keeps_the_optimizer_kernels_this_machine_chose(tmp_path):
    """The optimizer's state comes from the checkpoint; how its update runs (fused / foreach kernels) stays as
    built here: torch restores every param-group key, so a checkpoint saved with the foreach kernels (before AdamW
    was fused on GPUs, or on another machine) switched a fused optimizer back."""
    import torch

    from skills_cli.training.components.checkpoint import load_checkpoint, save_checkpoint
    from skills_cli.training.components.parallel import distributed_session

    with distributed_session():
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        saved = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=True)
        model(torch.randn(2, 4)).sum().backward()
        saved.step()
        path = save_checkpoint(tmp_path, 1, model, saved, {"step": 1}, keep_last_k=1)
        model.zero_grad(set_to_none=True)  # as at a run's start: torch fills a fresh optimizer's state only then
        resumed = torch.optim.AdamW(model.parameters(), lr=0.1, foreach=False)
        load_checkpoint(path, model, resumed)
    assert resumed.param_groups[0]["foreach"] is False and saved.param_groups[0]["foreach"] is True
    for parameter in model.parameters():
        assert torch.equal(resumed.state[parameter]["exp_avg"], saved.state[parameter]["exp_avg"])
        assert resumed.state[parameter]["exp_avg"].abs().sum() > 0
