"""DPO: the losses against hand-computed values (DPO, label smoothing, IPO, SimPO, the SFT term), preference data
(identical and overlong pairs dropped and counted, a missing key named), micro-batch / packing / reference-mode
invariance, exact resume, and learning on `arith` (the margin and held-out preferences rise).

The helpers here (`arith_pairs`, `pair_config`, `global_batch_result`) also serve tests/test_rm_train.py."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys

import pytest
import torch
from arith_models import FLOAT32, SEQUENCE, warmed_model
from safetensors.torch import load_file
from test_sft_checkpoint import assert_same_weights
from test_sft_support import assert_prefetched_steps_match_inline, read_metrics, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.training.algorithms.dpo.config import DPOConfig
from skills_cli.training.algorithms.dpo.loss import DPOTerms, dpo_loss
from skills_cli.training.algorithms.dpo.pairs import LaunchedPairs
from skills_cli.training.algorithms.dpo.trainer import DPOTrainer, run
from skills_cli.training.components.data import IGNORE_INDEX
from skills_cli.training.components.model import ATTENTION_ENV, VARLEN_ATTENTION
from skills_cli.training.components.parallel import decoder_layers, distributed_session
from skills_cli.training.components.preferences import (
    PreferenceDataConfig,
    last_token_values,
    load_preference_dataset,
    pair_micro_batches,
    per_sequence_sums,
)
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id

GLOBAL_BATCH = 8  # pairs
MEGATRON = ("++backend=megatron", "++policy.megatron_cfg.enabled=true", "++policy.dtensor_cfg.enabled=false")


def arith_pair(row: dict, rng: random.Random) -> dict:
    """chosen: the row's correct solution; rejected: the same solution with a wrong product."""
    a, b = (int(x) for x in row["problem"].removeprefix("What is ").removesuffix("?").split(" * "))
    wrong = a * b + rng.choice([d for d in range(-10, 11) if d and a * b + d >= 0])
    return {"prompt": row["problem"], "chosen": row["solution"],
            "rejected": f"{a} * {b} = {wrong}. The answer is \\boxed{{{wrong}}}."}  # fmt: skip


def arith_pairs(rows: list[dict], per_row: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [arith_pair(row, rng) for row in rows for _ in range(per_row)]


def small_pairs(count: int = 16) -> list[dict]:
    """Text and chat rows of different lengths."""
    rows = []
    for i in range(count):
        a, b = i % 7, i // 2
        if i % 2:
            rows.append({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{a}*{b}?"}],
                         "chosen": [{"role": "assistant", "content": f"{a} * {b} = {a * b}"}],
                         "rejected": [{"role": "assistant", "content": "no idea " * (i % 4 + 1)}]})  # fmt: skip
        else:
            rows.append({"prompt": f"What is {a}*{b}?", "chosen": f"{a * b}", "rejected": f"{a * b + 1}" * (i % 3 + 1)})
    return rows


def pair_overrides(loop: str, model: str, train: str, output_dir, *overrides: str) -> list[str]:
    """A small CPU run's keys (global batch 8 pairs, micro-batch 2, lr 1e-3, float32); `overrides` win."""
    return [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={output_dir}",
            f"++policy.train_global_batch_size={GLOBAL_BATCH}", "++policy.train_micro_batch_size=2",
            "++policy.max_total_sequence_length=128", "++policy.optimizer.kwargs.lr=1e-3", FLOAT32,
            "++policy.optimizer.kwargs.weight_decay=0.0", f"++{loop}.max_num_steps=4", *overrides]  # fmt: skip


def pair_config(config_class, loop: str, model: str, train: str, output_dir, *overrides: str):
    return load_config(config_class, pair_overrides(loop, model, train, output_dir, *overrides), where=loop)


def global_batch_result(trainer_class, config) -> tuple[dict, dict]:
    """The metrics of the first 8 pairs as one global batch, and the gradients it leaves."""
    with distributed_session() as dist:
        trainer = trainer_class(config, dist)
        trainer.policy.zero_grad()
        stats = trainer.run_global_batch(trainer.train_data.pairs[:GLOBAL_BATCH], "train", train=True)
        grads = {
            name: p.grad.full_tensor().clone() for name, p in trainer.model.named_parameters() if p.grad is not None
        }
    return stats, grads


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "pairs.jsonl", small_pairs())


# ---- the loss ------------------------------------------------------------------------------------------------


def torch_pairs(policy, reference, counts):
    import torch

    return (torch.tensor(policy, dtype=torch.float64), torch.tensor(reference, dtype=torch.float64),
            torch.tensor(counts, dtype=torch.float64))  # fmt: skip


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


POLICY, REFERENCE, COUNTS = [[-3.0, -5.0], [-4.0, -2.0]], [[-3.5, -4.5], [-4.0, -3.0]], [[2.0, 4.0], [4.0, 1.0]]


def test_dpo_sigmoid_loss_and_rewards_by_hand():
    terms = DPOTerms(beta=0.5)
    out = dpo_loss(*torch_pairs(POLICY, REFERENCE, COUNTS), terms)
    # pair 0: d_c = 0.5, d_r = -0.5, h = 1; pair 1: d_c = 0, d_r = 1, h = -1
    assert out["loss"].tolist() == pytest.approx([-log_sigmoid(0.5), -log_sigmoid(-0.5)])
    assert out["rewards_chosen"].tolist() == pytest.approx([0.25, 0.0])
    assert out["rewards_rejected"].tolist() == pytest.approx([-0.25, 0.5])
    assert out["margin"].tolist() == pytest.approx([0.5, -0.5])
    assert out["accuracy"].tolist() == [1.0, 0.0]


def test_label_smoothing_average_log_probs_and_sft_term_by_hand():
    terms = DPOTerms(beta=0.5, label_smoothing=0.1, average_log_probs=True, sft_average_log_probs=False,
                     preference_weight=2.0, sft_weight=0.3)  # fmt: skip
    out = dpo_loss(*torch_pairs(POLICY, REFERENCE, COUNTS), terms)
    # per token: pair 0 d_c = 0.5/2, d_r = -0.5/4, h = 0.375; pair 1 d_c = 0, d_r = 1/1, h = -1
    expected = []
    for h, chosen_logprob in ((0.375, -3.0), (-1.0, -4.0)):
        preference = -0.9 * log_sigmoid(0.5 * h) - 0.1 * log_sigmoid(-0.5 * h)
        expected.append(2.0 * preference + 0.3 * -chosen_logprob)
    assert out["loss"].tolist() == pytest.approx(expected)
    assert out["sft_loss"].tolist() == pytest.approx([3.0, 4.0])


def test_ipo_loss_by_hand():
    out = dpo_loss(*torch_pairs(POLICY, REFERENCE, COUNTS), DPOTerms(beta=0.5, kind="ipo"))
    assert out["loss"].tolist() == pytest.approx([(1 - 1.0) ** 2, (-1 - 1.0) ** 2])


def test_simpo_ignores_the_reference_and_normalizes_by_length():
    terms = DPOTerms(beta=2.0, kind="simpo", simpo_gamma=0.5, label_smoothing=0.2)
    out = dpo_loss(*torch_pairs(POLICY, [[99.0, -99.0], [7.0, 7.0]], COUNTS), terms)
    # mean logprobs: pair 0 (-1.5, -1.25), pair 1 (-1, -2); rewards = 2 x those
    assert out["rewards_chosen"].tolist() == pytest.approx([-3.0, -2.0])
    logits = [(-3.0 + 2.5) - 0.5, (-2.0 + 4.0) - 0.5]
    assert out["loss"].tolist() == pytest.approx([-0.8 * log_sigmoid(x) - 0.2 * log_sigmoid(-x) for x in logits])


# ---- data ------------------------------------------------------------------------------------------------------


def test_identical_and_overlong_pairs_are_dropped_and_counted(tmp_path, caplog):
    tokenizer = load_tokenizer(tiny_model())
    rows = [*small_pairs(4), {"prompt": "x", "chosen": "same", "rejected": "same"},
            {"prompt": "y", "chosen": "a", "rejected": "b " * 200}]  # fmt: skip
    dataset = load_preference_dataset(write_jsonl(tmp_path / "p.jsonl", rows), tokenizer, PreferenceDataConfig(), 128)
    assert (len(dataset.pairs), dataset.num_identical_pairs_dropped, dataset.num_overlong_pairs_dropped) == (4, 1, 1)
    assert "dropped 1 of 6 pairs whose chosen and rejected are identical" in caplog.text
    pair = dataset.pairs[0]  # the prompt is never trained: the completions' masks start after the shared prompt
    prompt_tokens = pair.chosen.loss_mask.index(1)
    assert pair.chosen.input_ids[:prompt_tokens] == pair.rejected.input_ids[:prompt_tokens]
    assert sum(pair.rejected.loss_mask) and pair.rejected.loss_mask.index(1) == prompt_tokens
    with pytest.raises(UserError, match="no usable preference pairs .*2 with identical"):
        load_preference_dataset(write_jsonl(tmp_path / "same.jsonl", rows[4:5] * 2), tokenizer,
                                PreferenceDataConfig(), 128)  # fmt: skip
    with pytest.raises(UserError, match=r"m.jsonl:2: missing field 'rejected'"):
        load_preference_dataset(write_jsonl(tmp_path / "m.jsonl", [rows[0], {"prompt": "p", "chosen": "c"}]),
                                tokenizer, PreferenceDataConfig(), 128)  # fmt: skip


@pytest.mark.parametrize("packing", [None, 96])
def test_a_stream_without_padding_reads_the_same_sums_and_last_tokens(tmp_path, packing):
    """The varlen path drops padding (`drop_padding`): the readers must map the shorter stream onto the same
    sequences as the (rows, length) layout."""
    tokenizer = load_tokenizer(tiny_model())
    dataset = load_preference_dataset(write_jsonl(tmp_path / "p.jsonl", small_pairs(6)), tokenizer,
                                      PreferenceDataConfig(), 128)  # fmt: skip
    batch = pair_micro_batches(dataset.pairs, 4, pad_id(tokenizer), packing)[0]
    real = batch.real_token_mask()
    assert batch.drop_padding and not bool(real.all())  # there is padding to drop
    per_token = torch.randn(batch.input_ids.shape, generator=torch.Generator().manual_seed(0))
    full_sums, stream_sums = per_sequence_sums(batch, per_token), per_sequence_sums(batch, per_token[real][None])
    torch.testing.assert_close(stream_sums, full_sums)
    lengths = torch.tensor([[len(p.chosen), len(p.rejected)] for p in batch.pairs], dtype=torch.float32)
    assert per_sequence_sums(batch, real.float()[real][None]).tolist() == lengths.tolist()
    full_last, stream_last = last_token_values(batch, per_token), last_token_values(batch, per_token[real][None])
    assert stream_last.tolist() == full_last.tolist()
    assert len(set(full_last.reshape(-1).tolist())) == 2 * len(batch.pairs)  # distinct positions were read
    # logits at the labelled positions alone (`logits_at_targets`): the model is asked for those, and the sums
    # read them as the full layout's sums over the completion tokens
    batch.logits_at_targets = True
    inputs, labels = batch.model_inputs(VARLEN_ATTENTION, None, "cpu", select_logits=True)
    labelled = batch.labels[real] != IGNORE_INDEX
    assert inputs["logits_to_keep"].tolist() == torch.nonzero(labelled).reshape(-1).tolist()
    assert labels.tolist() == [batch.labels[real][labelled].tolist()] and 0 < labels.numel() < int(real.sum())
    targets_only = per_sequence_sums(batch, per_token[real][labelled][None])
    torch.testing.assert_close(targets_only, per_sequence_sums(batch, per_token * (batch.labels != IGNORE_INDEX)))
    assert "logits_to_keep" not in batch.model_inputs(VARLEN_ATTENTION, None, "cpu")[0]  # a model that cannot


@pytest.mark.parametrize("reference", ["precomputed", "on_the_fly"])
def test_varlen_logits_at_the_completion_tokens_alone_give_the_full_logits_step(pairs_file, tmp_path, monkeypatch,
                                                                                reference):  # fmt: skip
    """On the varlen path (the GPU's; its CPU reference kernel here) DPO's policy and reference compute logits at
    the completion tokens alone: the loss, SFT term, margin (0: the reference is the policy) and gradients are
    those of the SDPA path's full logits."""
    options = ("++policy.sequence_packing.enabled=true", "++policy.train_micro_batch_size=2",
               "++dpo.sft_loss_weight=0.5", f"++dpo.reference_logprobs={reference}")  # fmt: skip
    masked = global_batch_result(DPOTrainer, pair_config(DPOConfig, "dpo", tiny_model(), pairs_file,
                                                         tmp_path / "sdpa", *options))  # fmt: skip
    monkeypatch.setenv(ATTENTION_ENV, VARLEN_ATTENTION)
    varlen = global_batch_result(DPOTrainer, pair_config(DPOConfig, "dpo", tiny_model(), pairs_file,
                                                         tmp_path / "varlen", *options))  # fmt: skip
    assert varlen[0]["margin"] == pytest.approx(0, abs=1e-6)
    assert_same_results({"sdpa": masked, "varlen": varlen}, ("loss", "sft_loss", "margin", "num_pairs"))


def test_the_run_summary_reports_dropped_pairs(tmp_path):
    rows = [*small_pairs(), {"prompt": "x", "chosen": "same", "rejected": "same"}]
    train = write_jsonl(tmp_path / "p.jsonl", rows)
    summary = run(pair_config(DPOConfig, "dpo", tiny_model(), train, tmp_path / "run", "++dpo.max_num_steps=1",
                              "++checkpointing.enabled=false"))  # fmt: skip
    assert (summary["num_train_pairs"], summary["num_train_identical_pairs_dropped"]) == (16, 1)


# ---- invariance and resume ---------------------------------------------------------------------------------------

LAYOUTS = {
    "micro1": ["++policy.train_micro_batch_size=1"],
    "micro4": ["++policy.train_micro_batch_size=4"],
    "packed": ["++policy.train_micro_batch_size=1", "++policy.sequence_packing.enabled=true"],
    "packed_rows2": [
        "++policy.train_micro_batch_size=2",
        "++policy.sequence_packing.enabled=true",
        "++policy.max_total_sequence_length=96",
    ],  # fmt: skip
}


def assert_same_results(results: dict, metrics: tuple[str, ...]) -> None:
    reference_stats, reference_grads = next(iter(results.values()))
    for name, (stats, grads) in results.items():
        for metric in metrics:
            assert stats[metric] == pytest.approx(reference_stats[metric], abs=1e-5), (name, metric)
        worst = max((grads[key] - reference_grads[key]).abs().max().item() for key in reference_grads)
        assert worst < 1e-5, f"{name}: gradients differ by {worst}"


def test_micro_batch_size_packing_and_reference_mode_do_not_change_loss_or_gradients(pairs_file, tmp_path):
    layouts = {**LAYOUTS, "on_the_fly": ["++policy.train_micro_batch_size=4", "++dpo.reference_logprobs=on_the_fly"]}
    results = {name: global_batch_result(DPOTrainer, pair_config(DPOConfig, "dpo", tiny_model(), pairs_file,
                                                                  tmp_path / name, "++dpo.sft_loss_weight=0.5", *extra))
               for name, extra in layouts.items()}  # fmt: skip
    stats = results["micro1"][0]
    # at the start the policy is its own reference: every implicit reward is 0, the loss is log 2 + the SFT term
    assert stats["margin"] == 0 and stats["loss"] == pytest.approx(math.log(2) + 0.5 * stats["sft_loss"], abs=1e-5)
    assert_same_results(results, ("loss", "sft_loss", "margin", "num_pairs"))


def fsdp_layer_units(trainer) -> int:
    return sum(type(layer).__name__.startswith("FSDP") for layer in decoder_layers(trainer.model))


def test_compile_scope_stack_makes_one_fsdp_unit_that_trains_as_the_per_layer_units(pairs_file, tmp_path, caplog):
    """policy.dtensor_cfg.compile_scope=stack on one rank: FSDP wraps the root alone (so the stack can compile as
    one graph on GPUs), which must not change what is trained; with activation checkpointing it stays per layer."""
    stack = "++policy.dtensor_cfg.compile_scope=stack"
    config = pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path / "layers")
    results = {"layers": global_batch_result(DPOTrainer, config)}
    with distributed_session() as dist:
        trainer = DPOTrainer(pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path / "probe", stack), dist)
        assert fsdp_layer_units(trainer) == 0
        checkpointed = pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path / "probe2", stack,
                                   "++policy.dtensor_cfg.activation_checkpointing=true")  # fmt: skip
        with caplog.at_level("INFO"):
            assert fsdp_layer_units(DPOTrainer(checkpointed, dist)) == len(decoder_layers(trainer.model)) > 0
        assert "compile_scope=stack does not apply with activation_checkpointing" in caplog.text
    results["stack"] = global_batch_result(DPOTrainer, pair_config(DPOConfig, "dpo", tiny_model(), pairs_file,
                                                                   tmp_path / "stack", stack))  # fmt: skip
    assert_same_results(results, ("loss", "margin", "num_pairs"))


def dpo_on_two_ranks(pairs_file, output, *overrides: str) -> list[dict]:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
            "skills_cli.training.algorithms.dpo",
            *pair_overrides("dpo", tiny_model(), pairs_file, output, "++dpo.max_num_steps=2",
                            "++dpo.reference_logprobs=on_the_fly", "++checkpointing.enabled=false", *overrides)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return read_metrics(output)


def test_an_on_the_fly_reference_sharded_over_two_ranks_gives_the_whole_references_steps(pairs_file, tmp_path):
    """reference.sharded: the on-the-fly reference split over two data-parallel ranks (FSDP2) computes the whole
    reference's sums, so the losses, margins, grad norms and weights are the same; packed micro-batches leave the
    ranks unequal counts, which the sharded reference's forwards even out."""
    whole = dpo_on_two_ranks(pairs_file, tmp_path / "whole", "++policy.sequence_packing.enabled=true")
    sharded = dpo_on_two_ranks(pairs_file, tmp_path / "sharded", "++policy.sequence_packing.enabled=true",
                               "++reference.sharded=true")  # fmt: skip
    keys = ("train/loss", "train/margin", "train/accuracy", "train/grad_norm")
    assert [row["step"] for row in sharded] == [1, 2] and whole[1]["train/margin"] != 0  # the policy left its reference
    for ours, theirs in zip(sharded, whole, strict=True):
        assert {k: ours[k] for k in keys} == pytest.approx({k: theirs[k] for k in keys}, rel=1e-5, abs=1e-7)
    shards = [json.loads((tmp_path / name / "logs" / "summary.json").read_text())["reference_shards"]
              for name in ("sharded", "whole")]  # fmt: skip
    assert shards == [2, 1]
    left, right = (load_file(str(tmp_path / name / "final_hf" / "model.safetensors")) for name in ("sharded", "whole"))
    assert all((left[name] - right[name]).abs().max() < 1e-6 for name in right)


RESUME_OPTIONS = ("++dpo.max_num_steps=4", "++dpo.max_num_epochs=4", "++checkpointing.save_period=2",
                  "++policy.scheduler.name=cosine", "++policy.sequence_packing.enabled=true", "++dpo.val_period=2")  # fmt: skip
TIMING = ("step_time_s", "tokens_per_sec_per_gpu", "peak_memory_gib")


def resume_config(config_class, loop, pairs_file, output, options):
    return pair_config(config_class, loop, tiny_model(), pairs_file, output, f"++data.val_data={pairs_file}", *options)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def assert_resume_reproduces_the_run(config_class, loop, run_function, pairs_file, tmp_path, options) -> None:
    """4 steps straight vs 2 steps, then a resume from step 2: the same metrics (bit for bit) and weights."""
    straight = tmp_path / "straight"
    run_function(resume_config(config_class, loop, pairs_file, straight, options))
    resumed = tmp_path / "resumed"
    shutil.copytree(straight / "checkpoints" / "step_2", resumed / "checkpoints" / "step_2")
    summary = run_function(resume_config(config_class, loop, pairs_file, resumed, options))
    assert summary["resumed_from_step"] == 2
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(straight))[2:]
    assert_same_weights(resumed / "final_hf", straight / "final_hf")


def test_resume_reproduces_the_run_step_for_step(pairs_file, tmp_path):
    assert_resume_reproduces_the_run(DPOConfig, "dpo", run, pairs_file, tmp_path, RESUME_OPTIONS)


def test_each_step_trains_on_the_micro_batches_built_during_the_previous_update(pairs_file, tmp_path, monkeypatch):
    """A step builds the next step's micro-batches while the device updates the weights (`_prefetch_next`); the
    next step trains on those, across an epoch boundary too, with the same metrics as building them inline."""

    def config(prefetch: bool):
        return pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path / str(prefetch),
                           "++checkpointing.enabled=false", "++dpo.max_num_epochs=2",
                           "++policy.sequence_packing.enabled=true")  # fmt: skip

    assert_prefetched_steps_match_inline(DPOTrainer, config, [0, 0, 1, 1], monkeypatch)


def test_validation_builds_its_micro_batches_once_and_reads_the_current_weights(pairs_file, tmp_path, monkeypatch):
    """Every validation runs the same pairs: their micro-batches are built at the first and reused; the figures
    still follow the weights (a step in between changes them, an unchanged model repeats them exactly)."""
    config = pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path, "++checkpointing.enabled=false",
                         f"++data.val_data={pairs_file}", "++policy.sequence_packing.enabled=true")  # fmt: skip
    with distributed_session() as dist:
        trainer = DPOTrainer(config, dist)
        built, build = [], trainer.micro_batches
        monkeypatch.setattr(trainer, "micro_batches", lambda pairs: (built.append(len(pairs)), build(pairs))[1])
        first, again = trainer.validate(), trainer.validate()
        trainer.train_step()
        after_step = trainer.validate()
    assert first == again and first["validation/loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert after_step["validation/margin"] != first["validation/margin"]
    # validation's once; then the step's own and, during its update, the next step's (never validation's again)
    assert built == [int(first["validation/num_pairs"]), GLOBAL_BATCH, GLOBAL_BATCH]


def test_a_step_queues_the_weight_update_before_reading_its_metrics(pairs_file, tmp_path, monkeypatch):
    """Reading a step's metrics waits for the device; the update is queued first, so the device goes from the
    last backward straight into the optimizer's kernels instead of idling while the host reads and launches."""
    config = pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, tmp_path, "++checkpointing.enabled=false")
    with distributed_session() as dist:
        trainer = DPOTrainer(config, dist)
        order, update = [], trainer.policy.optimizer_step_async
        monkeypatch.setattr(trainer.policy, "optimizer_step_async", lambda *a, **k: (order.append("update"),
                                                                                     update(*a, **k))[1])  # fmt: skip
        monkeypatch.setattr(LaunchedPairs, "means", lambda self, read=LaunchedPairs.means: (order.append("metrics"),
                                                                                           read(self))[1])  # fmt: skip
        row = trainer.train_step()
    assert order == ["update", "metrics"]
    assert row["train/num_pairs"] == GLOBAL_BATCH and row["train/loss"] == pytest.approx(math.log(2), abs=1e-3)


@pytest.mark.parametrize("packing,reference", [(False, "precomputed"), (True, "on_the_fly")],
                         ids=["padded", "packed-on-the-fly"])  # fmt: skip
def test_megatron_backend_takes_the_dtensor_steps(pairs_file, tmp_path, packing, reference):
    """The same pairs, weights and reference (precomputed, or a frozen HF copy beside a megatron policy) on both
    policy backends: the same DPO losses, margins and accuracies over two optimizer steps (megatron's packed rows
    carry both sides of each pair too)."""
    pytest.importorskip("megatron.core")
    rows = {}
    for backend, extra in (("dtensor", ()), ("megatron", MEGATRON)):
        out = tmp_path / backend
        run(pair_config(DPOConfig, "dpo", tiny_model(), pairs_file, out, *extra, "++dpo.max_num_steps=2",
                        f"++policy.sequence_packing.enabled={str(packing).lower()}", "++checkpointing.enabled=false",
                        f"++dpo.reference_logprobs={reference}"))  # fmt: skip
        rows[backend] = [row for row in read_metrics(out) if "train/loss" in row]
    assert len(rows["megatron"]) == len(rows["dtensor"]) == 2
    for ours, theirs in zip(rows["megatron"], rows["dtensor"], strict=True):
        for key in ("train/loss", "train/margin", "train/rewards_chosen", "train/grad_norm"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key
        # accuracy counts margins > 0: at the start every margin is 0 (the policy is its own reference) up to the
        # rounding between megatron's model and the frozen HF copy (~1e-8), whose sign it would count
        if abs(theirs["train/margin"]) > 1e-4:
            assert ours["train/accuracy"] == theirs["train/accuracy"]


# ---- learning --------------------------------------------------------------------------------------------------


@pytest.mark.timeout(900)  # may build the warmed arith model first (minutes on a busy CPU)
def test_dpo_raises_the_margin_and_held_out_preferences_of_a_warmed_model(tmp_path):
    warmed = warmed_model()
    rows = list(warmed["rows"])
    random.Random(0).shuffle(rows)
    train = write_jsonl(tmp_path / "train.jsonl", arith_pairs(rows[:80], 2))
    held_out = write_jsonl(tmp_path / "held_out.jsonl", arith_pairs(rows[80:], 2, seed=1))  # problems not trained on
    config = load_config(DPOConfig, [
        f"++policy.model_name={warmed['model']}", f"++data.train_data={train}", f"++data.val_data={held_out}",
        f"++output_dir={tmp_path / 'dpo'}", SEQUENCE, FLOAT32, "++checkpointing.enabled=false",
        "++policy.train_global_batch_size=16", "++policy.train_micro_batch_size=16",
        "++policy.optimizer.kwargs.lr=3e-3", "++policy.optimizer.kwargs.weight_decay=0.0",
        "++dpo.reference_policy_kl_penalty=0.1", "++dpo.max_num_steps=60", "++dpo.max_num_epochs=20",
        "++dpo.val_period=4",
    ], where="dpo")  # fmt: skip
    run(config)
    rows = read_metrics(tmp_path / "dpo")
    margins = [r["train/margin"] for r in rows]
    val = [(r["validation/margin"], r["validation/accuracy"]) for r in rows if "validation/margin" in r]
    shown = " ".join(f"{m:.2f}" for m in margins)
    assert statistics.fmean(margins[-10:]) > statistics.fmean(margins[:10]) + 1.0, shown
    assert statistics.fmean(r["train/accuracy"] for r in rows[-10:]) > 0.8
    first, last = val[:3], val[-3:]
    assert statistics.fmean(m for m, _ in last) > statistics.fmean(m for m, _ in first) + 0.3, val
    assert statistics.fmean(a for _, a in last) > statistics.fmean(a for _, a in first) + 0.05, val
