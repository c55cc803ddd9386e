"""A training algorithm added from outside the package: a plugin (written here, in tmp_path) registers a toy
algorithm built on the shared trainer skeleton and components, and `ns train toy` runs it end to end."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from conftest import run_ns

from skills_cli.common.artifacts import TRAINING_SERIES, TRAINING_SUMMARY, read_json_artifact

PLUGIN = '''
"""Registers the toy algorithm (torch-free: `ns` imports it before submission)."""
from dataclasses import dataclass, field

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.config import DataConfig, PolicyConfig, TrainerConfig, check_parallel_layout


@dataclass(frozen=True)
class ToyLoopConfig:
    steps: int = 2
    rows: int = 2  # the same first rows of the data, every step


@dataclass(frozen=True)
class ToyConfig(TrainerConfig):
    toy: ToyLoopConfig = field(default_factory=ToyLoopConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)


ALGORITHMS.register(Algorithm(name="toy", config_class=ToyConfig, check_layout=check_parallel_layout,
                              module="toy_trainer", help="Toy: next-token loss on the first rows, toy.steps times."))
'''

TRAINER = '''
"""The toy algorithm's in-job program: the shared skeleton does paths, resume, saves, metrics and export."""
import sys

from toy_plugin import ToyConfig

from skills_cli.training.components.batching import make_micro_batches
from skills_cli.training.components.data import load_sft_dataset
from skills_cli.training.components.loss import normalized_loss
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id
from skills_cli.training.config import check_parallel_layout
from skills_cli.training.policy import build_policy
from skills_cli.training.trainer import Trainer, check_common_config, main_for


class ToyTrainer(Trainer):
    algorithm = "toy"

    def build(self):
        config = self.config
        check_common_config(config)
        self.dp_size = check_parallel_layout(config, self.dist.world_size)
        tokenizer = load_tokenizer(self.tokenizer_dir)
        data = load_sft_dataset(config.data.train_data, tokenizer, config.data, config.policy.max_total_sequence_length)
        self.batches = make_micro_batches(data.samples[: config.toy.rows], config.toy.rows, pad_id(tokenizer), None)
        self.total_steps = config.toy.steps
        self.policy = build_policy(config.policy, self.dist, self.total_steps, backend=config.backend, seed=0)

    def train_step(self):
        valid = sum(batch.num_valid_tokens for batch in self.batches)

        def loss_fn(logits, labels, _batch):
            loss = normalized_loss(logits, labels, valid)
            return loss, {"loss": loss}

        self.policy.zero_grad()
        results = self.policy.forward_backward(self.batches, loss_fn, train=True)
        self.policy.optimizer_step(self.config.policy.max_grad_norm)
        self.policy.scheduler_step()
        self.step += 1
        return {"step": self.step, "loss": sum(float(r["loss"]) for r in results)}


sys.exit(main_for(ToyTrainer, ToyConfig)())
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The plugin on PYTHONPATH and named in $SKILLS_CLI_PLUGINS (inherited by `ns` and its local jobs)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (plugins / "toy_trainer.py").write_text(textwrap.dedent(TRAINER))
    monkeypatch.setenv("PYTHONPATH", ":".join(filter(None, [str(plugins), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv("SKILLS_CLI_PLUGINS", "toy_plugin")
    return plugins


def toy_inputs(tmp_path):
    from skills_cli.inference.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    data = tmp_path / "toy.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"{i} + {i} = {2 * i}."}]} for i in range(4)]  # fmt: skip
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ["--hf_model", str(model), "--training_data", str(data)]


TOY_FLAGS = ["++policy.train_global_batch_size=2", "++policy.train_micro_batch_size=2",
             "++policy.max_total_sequence_length=128", "++policy.optimizer.kwargs.lr=3e-3",
             "++checkpointing.save_period=2"]  # fmt: skip


def test_a_plugin_algorithm_trains_end_to_end_through_ns(tmp_path, toy_plugin):
    out = tmp_path / "toy-run"
    run_ns("train", "toy", *toy_inputs(tmp_path), "--output_dir", str(out), "--expname", "toy-local",
           *TOY_FLAGS, "++toy.steps=3", check=True, timeout=600)  # fmt: skip
    rows = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert rows[-1]["loss"] < rows[0]["loss"]  # the same batch three times: it is learned
    saved = sorted(path.name for path in (out / "checkpoints").iterdir())
    assert saved == ["step_2", "step_3"]
    state = json.loads((out / "checkpoints" / "step_3" / "trainer_state.json").read_text())
    assert state["algorithm"] == "toy" and state["config"]["toy"]["steps"] == 3
    kind, summary = read_json_artifact(out / "logs" / "summary.json")
    assert kind is TRAINING_SUMMARY and summary["status"] == "finished" and summary["final_step"] == 3
    kind, series = read_json_artifact(out / "logs" / "metrics.json")
    assert kind is TRAINING_SERIES and series["loss"] == {str(row["step"]): row["loss"] for row in rows}
    assert (out / "final_hf" / "config.json").is_file()


def test_a_typo_in_a_toy_key_fails_before_submission(tmp_path, toy_plugin):
    out = tmp_path / "toy-typo"
    result = run_ns("train", "toy", *toy_inputs(tmp_path), "--output_dir", str(out), "--expname", "toy-typo",
                    *TOY_FLAGS, "++toy.stpes=3")  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "stpes" in errors[0] and "did you mean 'steps'" in errors[0], result.stderr
    assert not out.exists()  # nothing ran
    assert "toy" in run_ns("train", "--help").stdout


def test_a_plugin_algorithm_has_a_python_api_function(tmp_path, toy_plugin, isolated_home):
    import skills_cli.pipeline as api
    from skills_cli.common.errors import UserError

    train_toy = api.train_toy  # built from the registry on first use, like `ns train toy`
    assert train_toy.__name__ == "train_toy"
    with pytest.raises(UserError, match="stpes"):  # the same validation as the CLI, before anything is queued
        train_toy(ctx=api.wrap_arguments("++toy.stpes=3"), hf_model=str(tmp_path), training_data=str(tmp_path / "x"),
                  output_dir=str(tmp_path / "out"), expname="toy-api")  # fmt: skip
    with pytest.raises(AttributeError):
        api.train_nope  # noqa: B018
