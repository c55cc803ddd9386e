"""PPO's metrics under verl's names (`compute_data_metrics` and the actor's / critic's update metrics), global
over the data-parallel ranks: critic/score, critic/rewards, critic/advantages, critic/returns, critic/values
(mean, max, min over sequences or valid tokens), critic/vf_explained_var, response_length/*, prompt_length/*,
actor/pg_loss, actor/pg_clipfrac, actor/ppo_kl, actor/entropy, actor/grad_norm, actor/lr (and actor/kl_loss,
actor/kl_coef with the KL in the loss). They sit next to GRPO's `train/*` in the same row."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Targets:
    """The critic's targets of a step (returns per response token, per rollout) and its data metrics."""

    returns: list[list[float]]
    metrics: dict


def global_stats(named: dict[str, list[float]], group, device) -> dict:
    """`name/mean`, `name/max`, `name/min` of each list of values, over every data-parallel rank's values."""
    import torch

    names = list(named)
    sums = torch.tensor([[sum(named[n]), len(named[n])] for n in names], dtype=torch.float64, device=device)
    extremes = torch.tensor([[min(named[n], default=math.inf), -max(named[n], default=-math.inf)] for n in names],
                            dtype=torch.float64, device=device)  # fmt: skip
    torch.distributed.all_reduce(sums, group=group)
    torch.distributed.all_reduce(extremes, op=torch.distributed.ReduceOp.MIN, group=group)
    out = {}
    for name, (total, count), (low, negated_high) in zip(names, sums.tolist(), extremes.tolist(), strict=True):
        out |= {f"{name}/mean": total / count if count else None, f"{name}/max": -negated_high if count else None,
                f"{name}/min": low if count else None}  # fmt: skip
    return out


def data_metrics(rollouts, rewards: list[list[float]], returns: list[list[float]], values: list[list[float]],
                 group, device) -> dict:  # fmt: skip
    """verl's data metrics of a step (advantages are the rollouts' token advantages, after whitening)."""
    valid = [r.loss_multiplier > 0 for r in rollouts]

    def tokens(per_rollout):
        return [value for keep, values in zip(valid, per_rollout, strict=True) if keep for value in values]

    named = {
        "critic/score": [r.reward for r in rollouts],
        "critic/rewards": [sum(rw) for rw in rewards],
        "critic/advantages": tokens([r.token_advantages for r in rollouts]),
        "critic/returns": tokens(returns),
        "critic/values": tokens(values),
        "response_length": [float(len(r.response_ids)) for r in rollouts],
        "prompt_length": [float(len(r.prompt_ids)) for r in rollouts],
    }
    out = global_stats(named, group, device)
    out["response_length/clip_ratio"] = global_stats({"clip": [float(r.truncated) for r in rollouts]}, group,
                                                     device)["clip/mean"]  # fmt: skip
    out["critic/vf_explained_var"] = explained_variance(named["critic/returns"], named["critic/values"], group, device)
    return out


def explained_variance(returns: list[float], values: list[float], group, device) -> float | None:
    """1 - Var(returns - values) / Var(returns) over every rank's valid tokens (None when Var(returns) is 0)."""
    import torch

    gaps = [g - v for g, v in zip(returns, values, strict=True)]
    sums = torch.tensor([sum(returns), sum(g * g for g in returns), sum(gaps), sum(d * d for d in gaps), len(gaps)],
                        dtype=torch.float64, device=device)  # fmt: skip
    torch.distributed.all_reduce(sums, group=group)
    total, squares, gap_total, gap_squares, count = sums.tolist()
    if count == 0:
        return None
    variance = squares / count - (total / count) ** 2
    gap_variance = gap_squares / count - (gap_total / count) ** 2
    return 1.0 - gap_variance / variance if variance > 1e-12 else None


def mean_over_passes(passes: list[dict]) -> dict:
    """One row from the metrics of several passes (PPO epochs): means, but minima and maxima of the extremes
    and the learning rate of the first pass."""
    out = {}
    for key in passes[0]:
        values = [p[key] for p in passes if p.get(key) is not None]
        if not values:
            out[key] = None
        elif key.endswith("_min"):
            out[key] = min(values)
        elif key.endswith("_max"):
            out[key] = max(values)
        elif key.endswith("/lr"):
            out[key] = values[0]
        else:
            out[key] = statistics.fmean(values)
    return out


def actor_diagnostics(logits, labels, batch, temperature: float, on_policy: bool, loss, metrics: dict, terms,
                      global_count: float):  # fmt: skip
    """One micro-batch's sums, on its device: [policy-gradient share of the loss (the loss less the KL-loss
    term, token-level), entropy, old-to-current KL (prev - curr logprob), valid tokens]."""
    import torch

    with torch.no_grad():
        logprobs = (logits.float() / temperature).log_softmax(-1)
        entropy = -(logprobs.exp() * logprobs).sum(-1)
        safe_labels = torch.where(labels >= 0, labels, torch.zeros_like(labels))
        curr = logprobs.gather(-1, safe_labels.unsqueeze(-1)).squeeze(-1)
        mask = batch.loss_mask.reshape(labels.shape).to(logits.device)
        prev = curr if on_policy else batch.prev_logprobs.reshape(labels.shape).to(logits.device)
        pg_share = loss.detach() - terms.kl_penalty * metrics["kl"] / max(global_count, 1.0)
        return torch.stack([pg_share.double(), (entropy * mask).sum().double(), ((prev - curr) * mask).sum().double(),
                            mask.sum().double()])  # fmt: skip


def actor_metrics(extras: list, optimizer_steps: int, train: dict, terms, group, device) -> dict:
    """verl's actor/* metrics of a step from the micro-batches' diagnostics (all ranks) and GRPO's train/*."""
    import torch

    sums = torch.stack(extras).sum(0).to(device) if extras else torch.zeros(4, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(sums, group=group)
    pg_total, entropy, ppo_kl, tokens = sums.tolist()
    tokens = max(tokens, 1.0)
    out = {"actor/pg_loss": pg_total / max(optimizer_steps, 1), "actor/pg_clipfrac": train.get("train/pg_clipfrac"),
           "actor/ppo_kl": ppo_kl / tokens, "actor/entropy": entropy / tokens,
           "actor/grad_norm": train.get("train/grad_norm"), "actor/lr": train.get("train/lr")}  # fmt: skip
    if terms.kl_penalty > 0:
        out |= {"actor/kl_loss": train.get("train/kl"), "actor/kl_coef": terms.kl_penalty}
    return out
