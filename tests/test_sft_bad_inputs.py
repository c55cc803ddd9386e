"""Bad SFT inputs fail before training with one actionable line (exit status 2 from the CLI)."""

from __future__ import annotations

import shutil

import pytest
from test_sft_support import conversation_rows, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.training.algorithms.sft.config import SFTConfig
from skills_cli.training.algorithms.sft.trainer import main
from skills_cli.training.components.parallel import check_tensor_parallel
from skills_cli.training.config import check_parallel_layout


@pytest.fixture
def train_file(tmp_path):
    return write_jsonl(tmp_path / "train.jsonl", conversation_rows(16))


def fails(capsys, *args: str) -> str:
    """Run the CLI in-process; it must exit 2 and print one `error:` line. Returns that line."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def base_args(model: str, train: str, tmp_path) -> list[str]:
    return [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={tmp_path / 'run'}",
            "++policy.train_global_batch_size=8", "++sft.max_num_steps=1"]  # fmt: skip


def test_missing_model_path(capsys, train_file, tmp_path):
    message = fails(capsys, *base_args(str(tmp_path / "no-model"), train_file, tmp_path))
    assert "policy.model_name: no HF model at" in message and "no-model" in message
    assert "policy.model_name is required" in fails(capsys, f"++data.train_data={train_file}",
                                                    f"++output_dir={tmp_path}")  # fmt: skip


def test_model_saved_without_its_tokenizer(capsys, train_file, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model(), model, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja", "special_tokens*"))
    message = fails(capsys, *base_args(str(model), train_file, tmp_path))
    assert f"tokenizer: no tokenizer files in {model}" in message and "policy.tokenizer" in message
    missing = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), f"++policy.tokenizer={tmp_path / 'tok'}")
    assert f"tokenizer: no directory at {tmp_path / 'tok'}" in missing


def test_missing_field_names_file_and_row(capsys, tmp_path):
    rows = conversation_rows(9)
    rows[6] = {"input": "What is 1+1?"}
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    message = fails(capsys, *base_args(tiny_model(), train, tmp_path))
    assert f"{train}:7: missing field 'output'" in message


def test_global_batch_not_divisible_by_micro_batch_times_data_parallel(capsys, train_file, tmp_path):
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++policy.train_micro_batch_size=3")
    assert "train_global_batch_size=8 is not divisible by train_micro_batch_size=3" in message
    config = load_config(SFTConfig, ["++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=4"])
    assert check_parallel_layout(config, world_size=2) == 2  # 8 = 4 x 2
    with pytest.raises(UserError, match="data-parallel size 4; valid micro-batch sizes: 1, 2"):
        check_parallel_layout(config, world_size=4)


def test_tensor_parallel_size_must_divide_the_heads(capsys, train_file, tmp_path):
    from transformers import AutoConfig

    model_config = AutoConfig.from_pretrained(tiny_model())  # 2 attention heads, 2 KV heads
    check_tensor_parallel(model_config, 2)
    with pytest.raises(UserError, match="tensor_parallel_size=4 does not divide the model's num_attention_heads=2"):
        check_tensor_parallel(model_config, 4)
    model_config.num_attention_heads = 4  # grouped-query attention: 4 heads share 2 KV heads
    with pytest.raises(UserError, match="tensor_parallel_size=4 does not divide the model's num_key_value_heads=2"):
        check_tensor_parallel(model_config, 4)
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path),
                    "++policy.dtensor_cfg.tensor_parallel_size=2")  # fmt: skip
    assert "1 GPUs cannot be split into model-parallel groups of 2" in message


def test_fewer_samples_than_a_global_batch(capsys, train_file, tmp_path):
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++policy.train_global_batch_size=32")
    assert "has 16 samples, fewer than policy.train_global_batch_size=32" in message


def test_validation_needs_val_data(capsys, train_file, tmp_path):
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++sft.val_period=5")
    assert "need data.val_data" in message


def test_tensorboard_enabled_but_missing(capsys, train_file, tmp_path, monkeypatch):
    import sys

    # None in sys.modules is Python's way of making a module unimportable (tensorboard is installed in CI)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++logger.tensorboard_enabled=true")
    assert "tensorboard is not installed" in message


def test_bad_deadline_and_unknown_keys(capsys, train_file, tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLS_CLI_DEADLINE", "tomorrow")
    assert "SKILLS_CLI_DEADLINE must be unix seconds" in fails(capsys, *base_args(tiny_model(), train_file, tmp_path))
    monkeypatch.delenv("SKILLS_CLI_DEADLINE")
    assert "unknown key 'max_steps'" in fails(capsys, *base_args(tiny_model(), train_file, tmp_path),
                                              "++sft.max_steps=3")  # fmt: skip


def test_tracker_mode_and_validation_batch_are_checked(capsys, train_file, tmp_path):
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++logger.swanlab.mode=online")
    assert "logger.swanlab.mode: 'online' is not one of 'cloud', 'local', 'offline', 'disabled'" in message
    message = fails(capsys, *base_args(tiny_model(), train_file, tmp_path), "++sft.val_global_batch_size=0")
    assert "sft.val_global_batch_size=0: give a positive number of samples" in message
