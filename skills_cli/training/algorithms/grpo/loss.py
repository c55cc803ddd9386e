"""GRPO's math: group advantages, the KL estimators, and the clipped policy-gradient loss with its diagnostics.

All functions are pure torch on tensors, so the unit tests can check them against hand-computed values.

Advantages (NeMo-RL `calculate_baseline_and_std_per_prompt`): rewards arrive grouped, `group_size` consecutive
samples per prompt. The baseline is the mean of the group's *other* rewards (leave-one-out, the default) or the
plain group mean; the advantage is `reward - baseline`, divided by the group's standard deviation (Bessel
corrected) only where it is positive: a group whose samples all got the same reward has nothing to compare and
gets advantage 0, never a division by ~0.

Loss (NeMo-RL `ClippedPGLossFn`), per response token t with the current, old ("prev", recomputed by the trainer
before the update) and generation logprobs of the sampled token:
    r_t  = exp(curr_t - prev_t)
    pg_t = max(-A * r_t, -A * clip(r_t, 1 - eps_low, 1 + eps_high))      (dual clip: min(pg_t, -A * c) when A < 0)
    pg_t *= w_t = min(exp(prev_t - gen_t), T)   only with importance-sampling correction (truncated at T)
    kl_t = beta * k3(ref_t - curr_t)            clamped in and out; 0 (and no reference pass) when beta == 0
Token-level normalization sums (pg_t + kl_t) over the valid tokens of a micro-batch and divides by the number of
valid tokens of the whole optimizer batch over all ranks, so micro-batch losses add up to the global token mean
whatever the micro-batch size or data-parallel layout. Sequence-level normalization weights each token by
1/len(sequence) and divides by the global number of sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

# Diagnostics summed over valid tokens (divided by the global token count when logged), and extremes.
SUM_METRICS = ("pg_clipfrac", "kl", "probs_ratio", "probs_ratio_clamped", "approx_entropy", "token_mult_prob_error",
               "gen_kl_error", "sampling_importance_ratio")  # fmt: skip
MIN_METRICS = ("probs_ratio_min", "probs_ratio_clamped_min")
MAX_METRICS = ("probs_ratio_max", "probs_ratio_clamped_max")


def group_advantages(rewards, group_size: int, leave_one_out: bool = True, normalize: bool = True,
                     eps: float = 1e-6):  # fmt: skip
    """Per-sample advantages of `rewards` (1D, groups of `group_size` consecutive samples); float32."""
    import torch

    if group_size < 2:
        raise ValueError("advantages need at least 2 samples per group")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    grouped = rewards.float().reshape(-1, group_size)
    total = grouped.sum(dim=1, keepdim=True)
    if leave_one_out:
        baseline = (total - grouped) / (group_size - 1)
    else:
        baseline = total / group_size
    advantages = grouped - baseline
    if normalize:
        std = grouped.std(dim=1, keepdim=True)  # unbiased (Bessel)
        advantages = torch.where(std > 0, advantages / (std + eps), advantages)
    return advantages.reshape(-1)


def kl_estimate(curr, ref, kind: str = "k3", input_clamp: float | None = 20.0, output_clamp: float | None = 10.0):
    """Per-token estimate of KL(curr || ref) from samples of curr: k1 = -log r, k2 = (log r)^2 / 2,
    k3 = r - 1 - log r, with log r = ref - curr (k3 is unbiased and never negative)."""
    import torch

    log_ratio = ref - curr
    if input_clamp is not None:
        log_ratio = log_ratio.clamp(-input_clamp, input_clamp)
    if kind == "k1":
        kl = -log_ratio
    elif kind == "k2":
        kl = log_ratio.square() / 2
    elif kind == "k3":
        kl = torch.exp(log_ratio) - 1 - log_ratio
    else:
        raise ValueError(f"unknown KL estimator {kind!r} (k1, k2 or k3)")
    if output_clamp is not None:
        kl = kl.clamp(-output_clamp, output_clamp)
    return kl


@dataclass(frozen=True)
class LossTerms:
    """Hyper-parameters of the loss (a torch-free copy of `LossConfig`'s fields the math needs)."""

    ratio_clip_min: float = 0.2
    ratio_clip_max: float = 0.2
    ratio_clip_c: float | None = None
    kl_penalty: float = 0.0
    kl_type: str = "k3"
    kl_input_clamp: float | None = 20.0
    kl_output_clamp: float | None = 10.0
    token_level_loss: bool = True
    importance_sampling_correction: bool = False
    importance_sampling_max: float | None = 2.0
    on_policy_kl_approximation: bool = False

    @classmethod
    def from_config(cls, loss_config) -> LossTerms:
        return cls(loss_config.ratio_clip_min, loss_config.ratio_clip_max, loss_config.ratio_clip_c,
                   loss_config.reference_policy_kl_penalty, loss_config.reference_policy_kl_type,
                   loss_config.kl_input_clamp_value, loss_config.kl_output_clamp_value, loss_config.token_level_loss,
                   loss_config.use_importance_sampling_correction, loss_config.truncated_importance_sampling_ratio,
                   loss_config.use_on_policy_kl_approximation)  # fmt: skip


def clipped_pg_loss(curr, prev, gen, ref, advantages, mask, seq_weight, terms: LossTerms, global_count: float):
    """This micro-batch's share of the optimizer batch's loss, and its diagnostics (sums over valid tokens).

    All tensors have the same (rows, length) shape, aligned with the labels: `mask` is 1 on the tokens that
    train, `advantages` is each token's sequence advantage, `seq_weight` 1/len(sequence) on its tokens (used for
    sequence-level normalization), `ref` may be None when the KL penalty is 0. `global_count` is the global
    number of valid tokens (token-level) or sequences (sequence-level) of the optimizer batch.
    """
    import torch

    mask = mask.float()
    ratio = torch.exp(curr - prev)
    clamped = ratio.clamp(1 - terms.ratio_clip_min, 1 + terms.ratio_clip_max)
    loss_unclipped, loss_clipped = -advantages * ratio, -advantages * clamped
    pg = torch.maximum(loss_unclipped, loss_clipped)
    if terms.ratio_clip_c is not None:
        pg = torch.where(advantages < 0, torch.minimum(pg, -advantages * terms.ratio_clip_c), pg)
    is_weight = torch.nan_to_num(torch.exp(prev - gen)).detach()
    if terms.importance_sampling_correction:
        weight = (
            is_weight if terms.importance_sampling_max is None else is_weight.clamp(max=terms.importance_sampling_max)
        )
        pg = pg * weight
    per_token = pg
    kl = torch.zeros_like(curr)
    if terms.kl_penalty > 0:
        if ref is None:
            raise ValueError("a KL penalty needs reference logprobs")
        kl = kl_estimate(curr, ref, terms.kl_type, terms.kl_input_clamp, terms.kl_output_clamp)
        if terms.on_policy_kl_approximation:
            kl = kl * torch.exp(curr - gen).detach()
        per_token = per_token + terms.kl_penalty * kl
    weights = mask if terms.token_level_loss else mask * seq_weight
    loss = (per_token * weights).sum() / max(global_count, 1.0)
    metrics = _diagnostics(curr.detach(), prev, gen, ratio.detach(), clamped.detach(),
                           (loss_clipped > loss_unclipped).float(), kl.detach(), mask)  # fmt: skip
    return loss, metrics


def _diagnostics(curr, prev, gen, ratio, clamped, clipped, kl, mask) -> dict:
    """Sums over valid tokens (and extremes) of what NeMo-RL logs, as 0-dim tensors on the logits' device: the
    trainer reads them back once per step (a `float()` here would stall the host after every forward, leaving
    the GPU idle while the backward pass is launched). Extremes over no valid token are +inf / -inf."""
    import torch

    def total(values):
        return (values * mask).sum()

    valid = mask > 0

    def extreme(values, fn, empty: float):
        return fn(torch.where(valid, values, torch.full_like(values, empty)))

    log_gap = prev - gen  # trainer's logprob minus the generation engine's, per token
    return {
        "pg_clipfrac": total(clipped),
        "kl": total(kl),
        "probs_ratio": total(ratio),
        "probs_ratio_clamped": total(clamped),
        # -log p under samples from the generation policy, importance-weighted to the current one
        "approx_entropy": total(-curr * torch.exp(curr - gen)),
        "token_mult_prob_error": total(torch.exp(log_gap.abs())),
        # KL(generation || trainer) estimated from the generated tokens (k3: unbiased, non-negative)
        "gen_kl_error": total(torch.exp(log_gap) - 1 - log_gap),
        "sampling_importance_ratio": total(torch.exp(log_gap)),
        "probs_ratio_min": extreme(ratio, torch.amin, float("inf")),
        "probs_ratio_max": extreme(ratio, torch.amax, float("-inf")),
        "probs_ratio_clamped_min": extreme(clamped, torch.amin, float("inf")),
        "probs_ratio_clamped_max": extreme(clamped, torch.amax, float("-inf")),
        "num_tokens": mask.sum(),
    }
