"""GRPO math against hand-computed values: advantages, KL estimators, the clipped loss and its normalization,
the config checks, and tools/check_metrics."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from skills_cli.common.errors import UserError  # noqa: E402
from skills_cli.common.overrides import load_config  # noqa: E402
from skills_cli.training import check_metrics  # noqa: E402
from skills_cli.training.algorithms.grpo.config import GRPOConfig, check_grpo_layout  # noqa: E402
from skills_cli.training.algorithms.grpo.loss import (  # noqa: E402
    LossTerms,
    clipped_pg_loss,
    group_advantages,
    kl_estimate,
)
from skills_cli.training.components.logprobs import token_logprobs  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# ---- advantages ------------------------------------------------------------------------------------------------


def test_leave_one_out_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])  # one group of 4
    # baselines: mean of the other three = [1/3, 2/3, 2/3, 1/3]; unbiased std of the group = sqrt(1/3)
    std = math.sqrt(1 / 3)
    expected = [(1 - 1 / 3) / std, (0 - 2 / 3) / std, (0 - 2 / 3) / std, (1 - 1 / 3) / std]
    got = group_advantages(rewards, 4, leave_one_out=True, normalize=True, eps=0.0)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_plain_mean_advantages_without_normalization():
    got = group_advantages(torch.tensor([3.0, 1.0, 2.0, 2.0]), 2, leave_one_out=False, normalize=False)
    assert got.tolist() == pytest.approx([1.0, -1.0, 0.0, 0.0])


def test_zero_variance_groups_get_zero_advantage_not_nan():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    got = group_advantages(rewards, 3)
    assert torch.isfinite(got).all()
    assert got[:6].tolist() == [0.0] * 6  # all-correct and all-wrong groups teach nothing
    assert got[6] > 0 > got[7]


def test_advantages_refuse_singleton_groups():
    with pytest.raises(ValueError, match="at least 2"):
        group_advantages(torch.tensor([1.0, 0.0]), 1)


# ---- KL ----------------------------------------------------------------------------------------------------------


def test_kl_estimators_by_hand():
    curr, ref = torch.tensor([-1.0]), torch.tensor([-1.5])  # log r = ref - curr = -0.5
    assert kl_estimate(curr, ref, "k1").item() == pytest.approx(0.5)
    assert kl_estimate(curr, ref, "k2").item() == pytest.approx(0.125)
    assert kl_estimate(curr, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)


def test_kl_clamps_input_and_output():
    curr, ref = torch.tensor([0.0]), torch.tensor([-100.0])
    # k3 with log r clamped to -20: exp(-20) - 1 + 20 ~= 19, then clamped to 10
    assert kl_estimate(curr, ref, "k3", input_clamp=20, output_clamp=10).item() == pytest.approx(10.0)
    assert kl_estimate(curr, ref, "k3", input_clamp=20, output_clamp=None).item() == pytest.approx(19.0, abs=1e-6)


def test_kl_is_zero_for_identical_policies():
    logprobs = torch.tensor([-0.3, -2.0, -5.0])
    assert kl_estimate(logprobs, logprobs.clone()).abs().max().item() == 0.0


# ---- logprobs and loss -------------------------------------------------------------------------------------------


def test_token_logprobs_apply_the_temperature():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    labels = torch.tensor([[0, -100]])
    got = token_logprobs(logits, labels, temperature=2.0)
    expected = 1.0 - math.log(math.exp(1.0) + 2)  # logits / 2 = [1, 0, 0]
    assert got[0, 0].item() == pytest.approx(expected)
    assert got[0, 1].item() == 0.0  # ignored position


def fixture_batch():
    """Two sequences of 2 and 1 response tokens (row 1 padded), with hand-picked logprobs."""
    curr = torch.tensor([[math.log(0.5), math.log(0.3)], [math.log(0.9), 0.0]])
    prev = torch.tensor([[math.log(0.4), math.log(0.3)], [math.log(0.6), 0.0]])
    gen = prev.clone()
    ref = torch.tensor([[math.log(0.4), math.log(0.2)], [math.log(0.9), 0.0]])
    adv = torch.tensor([[1.0, 1.0], [-2.0, -2.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    seq_weight = torch.tensor([[0.5, 0.5], [1.0, 1.0]])
    return curr, prev, gen, ref, adv, mask, seq_weight


def test_clipped_loss_equals_hand_computation():
    curr, prev, gen, ref, adv, mask, seq_weight = fixture_batch()
    terms = LossTerms(ratio_clip_min=0.2, ratio_clip_max=0.2, kl_penalty=0.1)
    loss, metrics = clipped_pg_loss(curr, prev, gen, ref, adv, mask, seq_weight, terms, global_count=3)
    # token 1: r = 0.5/0.4 = 1.25, A = 1: max(-1.25, -1.2) = -1.2 (clipped)
    # token 2: r = 1, A = 1: -1
    # token 3: r = 0.9/0.6 = 1.5, A = -2: max(3.0, 2.4) = 3.0 (unclipped: the pessimistic side)
    pg = [-1.2, -1.0, 3.0]

    def k3(c, r):
        return math.exp(r - c) - 1 - (r - c)

    kls = [k3(math.log(0.5), math.log(0.4)), k3(math.log(0.3), math.log(0.2)), k3(math.log(0.9), math.log(0.9))]
    expected = sum(p + 0.1 * k for p, k in zip(pg, kls, strict=True)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert metrics["pg_clipfrac"] == pytest.approx(1.0)  # only token 1 is clipped
    assert metrics["probs_ratio_max"] == pytest.approx(1.5)
    assert metrics["probs_ratio_clamped_max"] == pytest.approx(1.2)
    assert metrics["token_mult_prob_error"] == pytest.approx(3.0)  # gen == prev: exp(0) per token
    assert metrics["num_tokens"] == 3


def test_sequence_level_loss_by_hand():
    curr, prev, gen, ref, adv, mask, seq_weight = fixture_batch()
    terms = LossTerms(token_level_loss=False)
    loss, _ = clipped_pg_loss(curr, prev, gen, None, adv, mask, seq_weight, terms, global_count=2)
    assert loss.item() == pytest.approx(((-1.2 - 1.0) / 2 + 3.0) / 2, rel=1e-5)


def test_dual_clip_bounds_negative_advantage_losses():
    curr, prev, gen, ref, adv, mask, seq_weight = fixture_batch()
    terms = LossTerms(ratio_clip_c=1.2)
    loss, _ = clipped_pg_loss(curr, prev, gen, None, adv, mask, seq_weight, terms, global_count=3)
    assert loss.item() == pytest.approx((-1.2 - 1.0 + min(3.0, 2.0 * 1.2)) / 3, rel=1e-5)


def test_importance_sampling_correction_is_truncated():
    curr, prev, gen, ref, adv, mask, seq_weight = fixture_batch()
    gen = prev - torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # weight exp(prev - gen) = 3 on token 1
    terms = LossTerms(importance_sampling_correction=True, importance_sampling_max=2.0)
    loss, metrics = clipped_pg_loss(curr, prev, gen, None, adv, mask, seq_weight, terms, global_count=3)
    assert loss.item() == pytest.approx((-1.2 * 2.0 - 1.0 + 3.0) / 3, rel=1e-5)
    assert metrics["sampling_importance_ratio"] == pytest.approx(3.0 + 1 + 1)


def test_micro_batch_split_does_not_change_loss_or_gradient():
    """Summing the per-micro-batch losses (each over the global count) equals the one-batch loss, gradients too."""
    torch.manual_seed(0)
    rows, length = 6, 5
    logits = torch.randn(rows, length, 11, requires_grad=True)
    labels = torch.randint(0, 11, (rows, length))
    labels[torch.rand(rows, length) < 0.3] = -100
    mask = (labels != -100).long()
    prev = token_logprobs(logits.detach() + 0.05 * torch.randn(rows, length, 11), labels)
    adv = torch.randn(rows, 1).expand(rows, length)
    seq_weight = torch.ones(rows, length)
    terms = LossTerms(kl_penalty=0.05)
    count = float(mask.sum())

    def loss_of(index):
        curr = token_logprobs(logits[index], labels[index])
        return clipped_pg_loss(curr, prev[index], prev[index], prev[index] - 0.1, adv[index], mask[index],
                               seq_weight[index], terms, count)[0]  # fmt: skip

    whole = loss_of(slice(None))
    (grad_whole,) = torch.autograd.grad(whole, logits)
    parts = [loss_of(slice(i, i + 2)) for i in range(0, rows, 2)]
    (grad_parts,) = torch.autograd.grad(sum(parts), logits)
    assert sum(p.item() for p in parts) == pytest.approx(whole.item(), rel=1e-6)
    assert torch.allclose(grad_parts, grad_whole, atol=1e-7)


# ---- config checks -----------------------------------------------------------------------------------------------


def grpo_config(**overrides) -> GRPOConfig:
    return load_config(GRPOConfig, [f"++{k}={v}" for k, v in overrides.items()], where="grpo")


def test_fewer_than_two_generations_are_refused():
    with pytest.raises(UserError, match="at least 2 generations"):
        grpo_config(**{"grpo.num_generations_per_prompt": 1})


def test_rollout_batch_must_split_into_global_batches():
    config = grpo_config(**{"grpo.num_prompts_per_step": 3, "grpo.num_generations_per_prompt": 4,
                            "policy.train_global_batch_size": 8})  # fmt: skip
    with pytest.raises(
        UserError, match=r"\(3 prompts x 4 generations = 12\).*valid global batch sizes: 1, 2, 3, 4, 6, 12"
    ):
        check_grpo_layout(config, world_size=1)


def test_prompts_must_split_over_data_parallel_ranks():
    config = grpo_config(**{"grpo.num_prompts_per_step": 3, "grpo.num_generations_per_prompt": 4,
                            "policy.train_global_batch_size": 12, "policy.train_micro_batch_size": 2})  # fmt: skip
    with pytest.raises(UserError, match="divisible by the data-parallel size 2"):
        check_grpo_layout(config, world_size=2)
    assert check_grpo_layout(config, world_size=1) == 1


def test_unknown_loss_key_names_the_close_one():
    with pytest.raises(UserError, match="did you mean 'reference_policy_kl_penalty'"):
        grpo_config(**{"loss_fn.reference_policy_kl_penality": 0.1})


# ---- check_metrics ---------------------------------------------------------------------------------------------


def write_metrics(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_check_metrics_passes_and_fails(tmp_path, capsys):
    path = write_metrics(tmp_path / "metrics.json", {
        "train/token_mult_prob_error": {"1": 1.01, "2": 1.02, "3": 1.2},
        "train/reward": {"1": 0.1, "2": 0.3, "3": 0.4},
    })  # fmt: skip
    assert check_metrics.check(path, ['median(data["train/token_mult_prob_error"]) < 1.05',
                                      'last(data["train/reward"]) > first(data["train/reward"])'])  # fmt: skip
    assert not check_metrics.check(path, ['max(data["train/token_mult_prob_error"]) < 1.05'])
    out = capsys.readouterr().out
    assert "FAIL  max(data" in out and "PASS  median(data" in out


def test_check_metrics_rejects_nan(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"train/loss": {"1": 0.5, "2": float("nan")}})
    assert not check_metrics.check(path, [])
    assert check_metrics.check(path, [], allow_nonfinite=True)


def test_check_metrics_reads_jsonl_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.0}\n')
    assert check_metrics.check(path, ['last(data["loss"]) < first(data["loss"])', 'len(data["loss"]) == 2'])


def test_check_metrics_unknown_metric_suggests_close_names(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"train/reward": {"1": 0.1}})
    with pytest.raises(UserError, match="did you mean 'train/reward'"):
        check_metrics.check(path, ['max(data["train/rewards"]) > 0'])


def test_check_metrics_script_exit_statuses(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"train/reward": {"1": 0.1, "2": 0.5}})
    script = ROOT / "tools" / "check_metrics.py"

    def run(*checks):
        return subprocess.run([sys.executable, str(script), str(path), *checks], capture_output=True, text=True)

    assert run('max(data["train/reward"]) > 0.4').returncode == 0
    assert run('max(data["train/reward"]) > 0.9').returncode == 1
    failed = run('max(data["nope"]) > 0')
    assert failed.returncode == 2 and failed.stderr.startswith("error: no metric 'nope'")


def test_the_math_reward_pays_only_boxed_answers_unless_told_otherwise():
    """Evaluation reads prose answers and last numbers too; a reward that did would pay a policy for dropping
    the format the prompt asks for (and for ending on any number)."""
    from skills_cli.training.algorithms.grpo.config import MathEnvConfig
    from skills_cli.training.algorithms.grpo.data import math_reward

    boxed, prose = "So the total is \\boxed{12}.", "So the total is 12."
    assert math_reward(boxed, "12", truncated=False, config=MathEnvConfig()) == 1.0
    assert math_reward(prose, "12", truncated=False, config=MathEnvConfig()) == 0.0
    assert math_reward(prose, "12", truncated=False, config=MathEnvConfig(answer_format="any")) == 1.0
    assert math_reward("\\boxed{13}", "12", truncated=False, config=MathEnvConfig(answer_format="any")) == 0.0
