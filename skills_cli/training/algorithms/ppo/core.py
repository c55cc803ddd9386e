"""PPO's math, as verl's `core_algos` defines it: token-level rewards, GAE, whitening, the clipped value loss and
the KL controllers. Pure functions (lists of floats or torch tensors), so the unit tests check them against
hand-computed values.

Per response token t of one rollout (T tokens), with the critic's values v_t (the value of the state before
token t is sampled) and the KL estimate kl_t of the actor against the reference:
    r_t     = -beta * kl_t            (+ score at t = T - 1)          beta = 0 without KL in the reward
    delta_t = r_t + gamma * v_{t+1} - v_t                             v_T = 0 (the episode ends)
    A_t     = delta_t + gamma * lam * A_{t+1}                         A_T = 0
    R_t     = A_t + v_t                                               (the critic's target)
The advantages are then whitened over every valid token of the step (all data-parallel ranks): mean 0,
unbiased variance 1.
Value loss (verl `compute_value_loss`), per token, with the rollout's values v_t and the critic's new ones v'_t:
    0.5 * max((v'_t - R_t)^2, (clip(v'_t, v_t - c, v_t + c) - R_t)^2)
summed over valid tokens and divided by the optimizer batch's global valid-token count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def token_rewards(score: float, kl: list[float] | None, beta: float, length: int) -> list[float]:
    """The reward of each of `length` response tokens: -beta x KL per token, plus the score at the last one."""
    rewards = [-beta * value for value in kl] if kl is not None and beta else [0.0] * length
    if rewards:
        rewards[-1] += score
    return rewards


def gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> tuple[list[float], list[float]]:
    """Generalized advantage estimation over one response: (advantages, returns), one per token."""
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    returns = [a + v for a, v in zip(advantages, values, strict=True)]
    return advantages, returns


def whiten(values: list[float], total: float, squares: float, count: float, eps: float = 1e-8) -> list[float]:
    """`values` shifted and scaled by the mean and unbiased variance of a population given by its sum, sum of
    squares and count (gathered over every rank)."""
    if count < 2:
        return [v - total / max(count, 1.0) for v in values]
    mean = total / count
    variance = max(squares - count * mean * mean, 0.0) / (count - 1)
    scale = 1.0 / math.sqrt(variance + eps)
    return [(v - mean) * scale for v in values]


def clipped_value_loss(vpreds, old_values, returns, mask, cliprange: float, global_count: float):
    """This micro-batch's share of the value loss (see the module docstring) and its diagnostics: sums over
    valid tokens of the clipped fraction and of the new values, and the token count (0-dim tensors)."""
    import torch

    mask = mask.float()
    clipped = old_values + (vpreds - old_values).clamp(-cliprange, cliprange)
    unclipped_loss, clipped_loss = (vpreds - returns).square(), (clipped - returns).square()
    per_token = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
    loss = (per_token * mask).sum() / max(global_count, 1.0)
    metrics = {"vf_clipfrac": ((clipped_loss > unclipped_loss).float() * mask).sum().detach(),
               "vpred": (vpreds.detach() * mask).sum(), "num_tokens": mask.sum()}  # fmt: skip
    return loss, metrics


@dataclass
class KLController:
    """The KL coefficient of the reward (verl's Fixed/AdaptiveKLController): `update` after each step with the
    step's mean KL per sequence and its number of sequences; fixed keeps `value`."""

    value: float
    adaptive: bool = False
    target: float = 0.1
    horizon: int = 10000

    @classmethod
    def from_config(cls, kl_ctrl) -> KLController:
        return cls(kl_ctrl.kl_coef, kl_ctrl.type == "adaptive", kl_ctrl.target_kl, kl_ctrl.horizon)

    def update(self, current_kl: float, num_sequences: int) -> None:
        if not self.adaptive:
            return
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * num_sequences / self.horizon
