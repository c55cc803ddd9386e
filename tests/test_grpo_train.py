"""GRPO end to end on CPU with a tiny model: the functional smoke (metrics.json that check_metrics accepts, the
NeMo-RL metric names, validation tables, HF export), micro-batch invariance of a whole step, exact resume, two
data-parallel ranks under torchrun, and bad inputs that fail before the model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sft_support import tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.evaluation.benchmarks.arith import generate as arith
from skills_cli.training import check_metrics
from skills_cli.training.algorithms.grpo.config import GRPOConfig
from skills_cli.training.algorithms.grpo.trainer import run

ROOT = Path(__file__).resolve().parent.parent
NEMO_RL_CHECKS = [  # seed 004's pass criteria, as NeMo-RL's functional tests write them
    'median(data["train/token_mult_prob_error"]) < 1.05',
    'min(data["train/probs_ratio_clamped_min"]) > 0.79',
    'max(data["train/probs_ratio_clamped_max"]) < 1.21',
]


def problems(tmp_path: Path) -> tuple[str, str]:
    train = write_jsonl(tmp_path / "train.jsonl", arith("train")[:32])
    val = write_jsonl(tmp_path / "val.jsonl", arith("test")[:6])
    return train, val


def grpo_config(output_dir: Path, train: str, *overrides: str) -> GRPOConfig:
    base = [f"++policy.model_name={tiny_model()}", f"++data.train_data={train}", f"++output_dir={output_dir}",
            "++grpo.num_prompts_per_step=4", "++grpo.num_generations_per_prompt=4",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=4",
            "++policy.generation.max_new_tokens=12", "++policy.max_total_sequence_length=160",
            "++policy.optimizer.kwargs.lr=1e-3", "++grpo.max_num_steps=2", "++loss_fn.reference_policy_kl_penalty=0.05"]  # fmt: skip
    return load_config(GRPOConfig, [*base, *overrides], where="grpo")


def rows_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    train, val = problems(root)
    config = grpo_config(root / "run", train, f"++data.val_data={val}", "++grpo.val_period=1",
                         "++grpo.val_at_start=true", "++logger.val_generations_to_log=3",
                         "++logger.tensorboard_enabled=true", "++checkpointing.save_period=1",
                         "++env.reward_function=grpo_rewards:digit_count")  # fmt: skip
    return {"root": root / "run", "summary": run(config)}


def test_smoke_writes_metrics_that_check_metrics_accepts(smoke, capsys):
    metrics = smoke["root"] / "logs" / "metrics.json"
    assert check_metrics.check(metrics, NEMO_RL_CHECKS)
    series = check_metrics.load_metrics(metrics)
    assert sorted(series["train/loss"]) == [1, 2]
    assert sorted(series["validation/accuracy"]) == [0, 1, 2]  # val_at_start, then every step


def test_smoke_logs_the_nemo_rl_metric_names(smoke):
    rows = rows_of(smoke["root"])
    assert [row["step"] for row in rows] == [0, 1, 2]  # step 0: validation before training
    step = rows[2]
    for name in ("train/loss", "train/reward", "train/advantages/mean", "train/advantages/min", "train/advantages/max",
                 "train/token_mult_prob_error", "train/gen_kl_error", "train/sampling_importance_ratio",
                 "train/kl_penalty", "train/pg_clipfrac", "train/approx_entropy", "train/generation_lengths",
                 "train/fraction_of_samples_properly_ended", "train/grad_norm", "train/lr",
                 "timing/train/generation", "timing/train/policy_and_reference_logprobs", "timing/train/policy_training",
                 "timing/train/refit", "timing/train/total", "performance/tokens_per_sec_per_gpu"):  # fmt: skip
        assert name in step, name
    assert step["train/generation_lengths"] <= 12
    assert step["train/token_mult_prob_error"] == pytest.approx(1.0, abs=1e-3)  # same fp32 weights in both engines
    assert step["train/kl_penalty"] > 0  # the second step's policy differs from the reference
    assert 0 < step["train/reward"] < 1 and step["train/advantages/max"] > 0 > step["train/advantages/min"]
    assert step["timing/train/total"] >= step["timing/train/generation"] > 0


def test_smoke_summary_tables_checkpoints_and_export(smoke):
    import torch
    from transformers import AutoModelForCausalLM

    summary = json.loads((smoke["root"] / "logs" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["final_step"] == 2
    assert summary["optimizer_steps_per_step"] == 2  # 16 rollouts / global batch 8
    table = [
        json.loads(line) for line in (smoke["root"] / "logs" / "validation_generations.jsonl").read_text().splitlines()
    ]
    assert [row["step"] for row in table] == [0] * 3 + [1] * 3 + [2] * 3
    assert {"prompt", "response", "expected_answer", "reward"} <= set(table[0])
    assert (smoke["root"] / "logs" / "tensorboard").is_dir()
    assert sorted(p.name for p in (smoke["root"] / "checkpoints").iterdir()) == ["step_1", "step_2"]
    exported = AutoModelForCausalLM.from_pretrained(str(smoke["root"] / "final_hf"), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    changed = [
        not torch.equal(a, b) for a, b in zip(exported.state_dict().values(), base.state_dict().values(), strict=True)
    ]
    assert any(changed)  # training moved the weights


def final_weights(run_dir: Path) -> dict:
    return final_weights_of(run_dir / "final_hf")


def final_weights_of(model_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


@pytest.mark.parametrize("ignore_eos", [False, True])
def test_ignore_eos_runs_every_rollout_to_max_new_tokens(tmp_path, ignore_eos):
    """The SFT-warmed model stops some rollouts at EOS before 24 tokens; with ignore_eos none stops."""
    from arith_models import warmed_model

    warmed = warmed_model()
    run(load_config(GRPOConfig, [
        f"++policy.model_name={warmed['model']}", f"++data.train_data={warmed['problems']}",
        f"++data.prompt_config={warmed['prompt']}", f"++output_dir={tmp_path}", "++grpo.num_prompts_per_step=4",
        "++grpo.num_generations_per_prompt=4", "++policy.train_global_batch_size=16",
        "++policy.generation.max_new_tokens=24", "++grpo.max_num_steps=1", "++checkpointing.enabled=false",
        f"++policy.generation.ignore_eos={str(ignore_eos).lower()}",
    ], where="grpo"))  # fmt: skip
    (row,) = rows_of(tmp_path)
    if ignore_eos:
        assert row["train/generation_lengths"] == 24
    else:
        assert row["train/generation_lengths"] < 23  # 21.4 here: some rollouts end at EOS


def test_micro_batch_size_does_not_change_the_update(tmp_path):
    import torch

    train, _ = problems(tmp_path)
    runs = {}
    for micro in (1, 4):
        out = tmp_path / f"micro{micro}"
        run(grpo_config(out, train, f"++policy.train_micro_batch_size={micro}", "++grpo.max_num_steps=1",
                        "++checkpointing.enabled=false"))  # fmt: skip
        runs[micro] = (rows_of(out)[0], final_weights(out))
    (row1, weights1), (row4, weights4) = runs[1], runs[4]
    assert row1["train/loss"] == pytest.approx(row4["train/loss"], rel=1e-5, abs=1e-7)
    for name in weights1:
        assert torch.allclose(weights1[name], weights4[name], atol=1e-6), name


@pytest.mark.parametrize("variant", ["packed", "packed_flattened", "padded_flattened"])
def test_packing_and_flattened_rows_do_not_change_the_update(tmp_path, monkeypatch, variant):
    """Packed rollouts (several per row, positions restarting, attention inside each) and the flattened layout
    the GPU's varlen attention hands the loss (forced here on CPU: the same offsets, a block-causal mask) take
    the padded run's step: the prev-logprob pass (off-policy ratio), the reference pass and the update."""
    from skills_cli.training.components.model import ATTENTION_ENV, VARLEN_ATTENTION

    train, _ = problems(tmp_path)
    common = ["++grpo.max_num_steps=1", "++checkpointing.enabled=false", "++loss_fn.force_on_policy_ratio=false"]
    padded = tmp_path / "padded"
    run(grpo_config(padded, train, "++policy.sequence_packing.enabled=false", "++policy.train_micro_batch_size=4",
                    *common))  # fmt: skip
    if variant.endswith("flattened"):
        monkeypatch.setenv(ATTENTION_ENV, VARLEN_ATTENTION)
    extra = ["++policy.sequence_packing.enabled=true", "++policy.train_micro_batch_size=1",
             "++policy.logprob_batch_size=2"] if variant.startswith("packed") else [
        "++policy.sequence_packing.enabled=false", "++policy.train_micro_batch_size=4"]  # fmt: skip
    other = tmp_path / variant
    run(grpo_config(other, train, *extra, *common))
    (row, weights), (row_other, weights_other) = (rows_of(padded)[0], final_weights(padded)), (
        rows_of(other)[0], final_weights(other))  # fmt: skip
    for name in ("train/loss", "train/kl", "train/token_mult_prob_error", "train/probs_ratio", "train/grad_norm"):
        assert row_other[name] == pytest.approx(row[name], rel=1e-4, abs=1e-7), name
    assert row_other["train/global_valid_toks"] == row["train/global_valid_toks"]
    # the updates agree up to Adam's amplification of fp32 rounding in near-zero gradients (its first steps are
    # ~lr x sign(g)): relative L2 of the two weight changes
    start = final_weights_of(tiny_model())
    for name in weights:
        change, change_other = weights[name] - start[name], weights_other[name] - start[name]
        assert float((change - change_other).norm() / change.norm()) < 2e-2, name


def test_packed_rows_hold_several_rollouts_at_their_label_positions():
    from skills_cli.training.algorithms.grpo.rollout import Rollout, micro_batches, response_values
    from skills_cli.training.components.data import IGNORE_INDEX

    rollouts = [Rollout((1, 2, 3), [4, 5], [-0.1, -0.2], False, "1", advantage=1.0),
                Rollout((6, 7), [8, 9, 10], [-0.3, -0.4, -0.5], False, "2", advantage=-1.0),
                Rollout((11,), [12], [-0.6], True, "3", advantage=0.5)]  # fmt: skip
    (batch,) = micro_batches(rollouts, 1, pad_id=0, pack_capacity=12)
    assert batch.input_ids.shape == (1, 12)
    # first-fit-decreasing: the 5-token rollouts share the row with the 2-token one, in input order
    assert batch.input_ids[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert [i for i, x in enumerate(batch.labels[0].tolist()) if x != IGNORE_INDEX] == [2, 3, 6, 7, 8, 10]
    assert [i for i, x in enumerate(batch.loss_mask[0].tolist()) if x] == [2, 3, 6, 7, 8, 10]
    assert batch.advantages[0, 6].item() == -1.0 and batch.generation_logprobs[0, 10].item() == pytest.approx(-0.6)
    values = response_values(batch, batch.generation_logprobs.reshape(1, -1))  # flattened, as varlen hands it
    assert values == [pytest.approx(r.generation_logprobs) for r in batch.rollouts]
    assert [r.expected_answer for r in batch.rollouts] == ["1", "2", "3"]


def test_resume_continues_the_uninterrupted_run(tmp_path):
    train, _ = problems(tmp_path)
    whole = tmp_path / "whole"
    run(grpo_config(whole, train, "++grpo.max_num_steps=3", "++checkpointing.save_period=1"))
    split = tmp_path / "split"
    run(grpo_config(split, train, "++grpo.max_num_steps=1", "++checkpointing.save_period=1"))
    summary = run(grpo_config(split, train, "++grpo.max_num_steps=3", "++checkpointing.save_period=1"))
    assert summary["resumed_from_step"] == 1
    keys = ("train/loss", "train/reward", "train/generation_lengths", "train/kl_penalty")
    expected = [{k: row[k] for k in keys} for row in rows_of(whole)]
    got = [{k: row[k] for k in keys} for row in rows_of(split)]
    assert [row["step"] for row in rows_of(split)] == [1, 2, 3]
    for a, b in zip(got, expected, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-7)


def grpo_on_two_ranks(train: str, out: Path, *overrides: str) -> list[dict]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            "skills_cli.training.algorithms.grpo", f"++policy.model_name={tiny_model()}", f"++data.train_data={train}",
            f"++output_dir={out}", "++grpo.num_prompts_per_step=4", "++grpo.num_generations_per_prompt=2",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2",
            "++policy.generation.max_new_tokens=8", "++policy.max_total_sequence_length=160", "++grpo.max_num_steps=2",
            "++checkpointing.enabled=false", "++loss_fn.reference_policy_kl_penalty=0.05",
            "++policy.optimizer.kwargs.lr=1e-3", "++env.reward_function=grpo_rewards:digit_count", *overrides]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return rows_of(out)


def test_two_data_parallel_ranks_under_torchrun_with_a_whole_or_a_sharded_reference(tmp_path):
    """Two data-parallel ranks; reference.sharded splits the reference model over them (FSDP2, gathered per
    layer for each forward): the same KL, losses and grad norms as a whole reference on each rank."""
    train, _ = problems(tmp_path)
    whole = grpo_on_two_ranks(train, tmp_path / "whole")
    assert [row["step"] for row in whole] == [1, 2]
    assert whole[0]["train/global_valid_seqs"] == 8  # both ranks' rollouts counted
    assert check_metrics.check(tmp_path / "whole" / "logs" / "metrics.json", NEMO_RL_CHECKS)
    sharded = grpo_on_two_ranks(train, tmp_path / "sharded", "++reference.sharded=true")
    keys = ("train/loss", "train/kl_penalty", "train/grad_norm", "train/reward")
    assert whole[1]["train/kl_penalty"] > 0  # the reference is in use after the first update
    for ours, theirs in zip(sharded, whole, strict=True):
        assert {k: ours[k] for k in keys} == pytest.approx({k: theirs[k] for k in keys}, rel=1e-5, abs=1e-7)
    shards = [json.loads((tmp_path / name / "logs" / "summary.json").read_text())["reference_shards"]
              for name in ("sharded", "whole")]  # fmt: skip
    assert shards == [2, 1]


# ---- bad input ---------------------------------------------------------------------------------------------------


def test_dataset_without_expected_answers_is_refused(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"problem": "What is 1 + 1?", "solution": "2"}])
    with pytest.raises(UserError, match=r"train.jsonl line 1: no expected answer in field 'expected_answer'"):
        run(grpo_config(tmp_path / "out", train))


def test_reward_function_that_fails_to_import_is_refused(tmp_path):
    train, _ = problems(tmp_path)
    with pytest.raises(UserError, match=r"cannot import 'no_such_reward_module': ModuleNotFoundError"):
        run(grpo_config(tmp_path / "out", train, "++env.reward_function=no_such_reward_module:score"))


def test_custom_reward_function_is_used(tmp_path, monkeypatch):
    (tmp_path / "my_reward.py").write_text("def score(response, expected, truncated):\n    return 0.25\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    train, _ = problems(tmp_path)
    run(grpo_config(tmp_path / "out", train, "++env.reward_function=my_reward:score", "++grpo.max_num_steps=1",
                    "++checkpointing.enabled=false"))  # fmt: skip
    row = rows_of(tmp_path / "out")[0]
    assert row["train/reward"] == 0.25 and row["train/advantages/max"] == 0.0  # equal rewards: no advantage


def test_too_few_problems_for_a_step(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", arith("train")[:3])
    with pytest.raises(UserError, match="3 usable problems, fewer than grpo.num_prompts_per_step=4"):
        run(grpo_config(tmp_path / "out", train))


def test_grpo_refuses_an_sft_checkpoint_directory(tmp_path):
    from test_sft_support import conversation_rows, sft_config

    from skills_cli.training.algorithms.sft.trainer import run as run_sft

    data = write_jsonl(tmp_path / "sft.jsonl", conversation_rows(8))
    run_sft(sft_config(tiny_model(), data, tmp_path / "out", "++sft.max_num_steps=1", "++checkpointing.save_period=1",
                       f"++checkpointing.checkpoint_dir={tmp_path / 'out' / 'checkpoints'}"))  # fmt: skip
    train, _ = problems(tmp_path)
    with pytest.raises(UserError, match="not GRPO's"):
        run(grpo_config(tmp_path / "out", train))


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_megatron_backend_takes_the_same_first_step_as_dtensor(tmp_path, packing):
    """Same weights, same rollouts (the engine samples from the HF weights with the same seed): the megatron
    policy's first GRPO update has the dtensor policy's loss and diagnostics, and check_metrics accepts it; with
    packed rollouts too (megatron's own packed-row attention masks)."""
    pytest.importorskip("megatron.core")
    train, _ = problems(tmp_path)
    rows = {}
    batching = ["++policy.sequence_packing.enabled=true", "++policy.train_micro_batch_size=1"] if packing else [
        "++policy.sequence_packing.enabled=false"]  # fmt: skip
    for backend in ("dtensor", "megatron"):
        extra = (
            ["++policy.megatron_cfg.enabled=true", "++policy.dtensor_cfg.enabled=false"]
            if backend == "megatron"
            else []
        )
        out = tmp_path / backend
        run(grpo_config(out, train, f"++backend={backend}", *extra, *batching, "++grpo.max_num_steps=1",
                        "++checkpointing.enabled=false", "++env.reward_function=grpo_rewards:digit_count"))  # fmt: skip
        rows[backend] = rows_of(out)[0]
        assert check_metrics.check(out / "logs" / "metrics.json", NEMO_RL_CHECKS)
    for key in ("train/reward", "train/loss", "train/token_mult_prob_error", "train/approx_entropy"):
        assert rows["megatron"][key] == pytest.approx(rows["dtensor"][key], rel=1e-4, abs=1e-6), key


def test_lora_grpo_trains_adapters_and_exports_merged_weights(tmp_path):
    """LoRA on the dtensor policy: the base weights stay frozen in the optimizer, the engine gets merged weights
    (mult-prob error stays ~1), and the HF export is the base model plus the folded-in adapters."""
    import torch
    from transformers import AutoModelForCausalLM

    pytest.importorskip("peft")
    train, _ = problems(tmp_path)
    out = tmp_path / "lora"
    run(grpo_config(out, train, "++policy.lora_cfg.enabled=true", "++policy.lora_cfg.dim=4", "++grpo.max_num_steps=2",
                    "++policy.optimizer.kwargs.lr=1e-2", "++checkpointing.enabled=false",
                    "++env.reward_function=grpo_rewards:digit_count"))  # fmt: skip
    assert check_metrics.check(out / "logs" / "metrics.json", NEMO_RL_CHECKS)
    exported = AutoModelForCausalLM.from_pretrained(str(out / "final_hf"), dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32).state_dict()
    assert set(exported) == set(base)  # plain HF names: no adapter or base_layer leftovers
    changed = {name for name in base if not torch.equal(exported[name], base[name])}
    assert changed and all(name.endswith("proj.weight") for name in changed)  # only adapted projections moved
    assert not any("norm" in name or "embed" in name for name in changed)


def test_lora_is_refused_on_megatron(tmp_path):
    train, _ = problems(tmp_path)
    with pytest.raises(UserError, match="lora_cfg.enabled=true is supported on backend=dtensor only"):
        run(grpo_config(tmp_path / "out", train, "++backend=megatron", "++policy.megatron_cfg.enabled=true",
                        "++policy.dtensor_cfg.enabled=false", "++policy.lora_cfg.enabled=true"))  # fmt: skip


def test_merged_lora_weights_equal_peft_merge_and_unload():
    import torch
    from transformers import AutoModelForCausalLM

    pytest.importorskip("peft")
    from skills_cli.training.components.lora import apply_lora, merged_state_dict
    from skills_cli.training.config import LoRAConfig

    model = apply_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32), LoRAConfig(dim=4, alpha=8)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_" in name:
                parameter.normal_(0, 0.1)  # peft starts B at 0: make the adapters do something
    ours = merged_state_dict(model.state_dict(), 8 / 4)
    reference = model.merge_and_unload().state_dict()
    assert set(ours) == set(reference)
    for name, tensor in reference.items():
        assert torch.allclose(ours[name], tensor, atol=1e-6), name


def test_lora_target_module_typo_names_the_real_ones():
    import torch
    from transformers import AutoModelForCausalLM

    pytest.importorskip("peft")
    from skills_cli.training.components.lora import apply_lora
    from skills_cli.training.config import LoRAConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    with pytest.raises(UserError, match="no module named qproj"):
        apply_lora(model, LoRAConfig(target_modules=["qproj"]))


def test_on_policy_shortcut_gives_the_recomputed_update(tmp_path):
    """One optimizer step per rollout batch: skipping the old-logprob pass (ratio exactly 1) updates the weights
    exactly as recomputing the old logprobs does."""
    import torch

    train, _ = problems(tmp_path)
    runs = {}
    for name, force in (("auto", "null"), ("recompute", "false")):
        out = tmp_path / name
        run(grpo_config(out, train, "++policy.train_global_batch_size=16", f"++loss_fn.force_on_policy_ratio={force}",
                        "++grpo.max_num_steps=1", "++checkpointing.enabled=false",
                        "++env.reward_function=grpo_rewards:digit_count"))  # fmt: skip
        runs[name] = (rows_of(out)[0], final_weights(out))
    (auto, weights_auto), (recompute, weights_recompute) = runs["auto"], runs["recompute"]
    assert auto["train/loss"] == pytest.approx(recompute["train/loss"], rel=1e-5, abs=1e-7)
    assert auto["train/probs_ratio_max"] == 1.0  # no pass: prev is the current logprob itself
    for name in weights_auto:
        assert torch.allclose(weights_auto[name], weights_recompute[name], atol=1e-6), name


def test_a_job_starting_after_the_run_finished_does_nothing(tmp_path):
    """As for SFT: a `--dependent_jobs` copy after the end neither trains nor exports again."""
    train, _ = problems(tmp_path)
    config = grpo_config(tmp_path / "run", train, "++checkpointing.save_period=1")
    first = run(config)
    logs = tmp_path / "run" / "logs"
    before = {name: (logs / name).read_text() for name in ("summary.json", "metrics.json", "metrics.jsonl")}
    export_time = (tmp_path / "run" / "final_hf" / "model.safetensors").stat().st_mtime_ns
    again = run(config)
    assert again == first and again["status"] == "finished" and again["final_step"] == 2
    assert {name: (logs / name).read_text() for name in before} == before
    assert (tmp_path / "run" / "final_hf" / "model.safetensors").stat().st_mtime_ns == export_time
