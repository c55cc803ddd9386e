"""DPO's math on per-pair sequence log-probabilities: the preference losses, the SFT term, the implicit rewards.

Pure torch on (pairs, 2) tensors (column 0 the chosen side, 1 the rejected one), so the unit tests check them
against hand-computed values. With `average_log_probs` a sequence's log-probability is its per-token mean
(NeMo-RL's `preference_average_log_probs`), else its sum over the completion tokens. beta is NeMo-RL's
`reference_policy_kl_penalty`; d = log pi(y|x) - log pi_ref(y|x) for each side, h = d_chosen - d_rejected:

    dpo    (sigmoid)   -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)        eps: label smoothing
                       (conservative DPO; eps = 0 is the DPO paper's loss)
    ipo                (h - 1 / (2 beta))^2                                            (IPO, Azar et al.)
    simpo              -(1 - eps) log sigmoid(beta m - gamma) - eps log sigmoid(-(beta m - gamma)),
                       m = mean log pi(chosen) - mean log pi(rejected): no reference, always length-normalized

The implicit reward of a side is beta d (SimPO: beta x its mean log-probability); the margin is chosen minus
rejected and a pair counts as correct (accuracy) when it is > 0. The SFT term is the chosen side's negative
log-likelihood (per token with `sft_average_log_probs`). A pair's loss is preference_weight x preference +
sft_weight x SFT; the trainer sums it over a micro-batch's pairs and divides by the global batch's pair count.
"""

from __future__ import annotations

from dataclasses import dataclass

from skills_cli.training.components.preferences import CHOSEN, REJECTED


@dataclass(frozen=True)
class DPOTerms:
    """Hyper-parameters of the loss (a torch-free copy of the `dpo.*` keys the math needs)."""

    beta: float = 0.05
    kind: str = "dpo"  # "dpo" | "ipo" | "simpo"
    label_smoothing: float = 0.0
    simpo_gamma: float = 0.5
    average_log_probs: bool = False
    sft_average_log_probs: bool = False
    preference_weight: float = 1.0
    sft_weight: float = 0.0

    @classmethod
    def from_config(cls, dpo) -> DPOTerms:
        sft_average = (
            dpo.preference_average_log_probs if dpo.sft_average_log_probs is None else dpo.sft_average_log_probs
        )
        return cls(dpo.reference_policy_kl_penalty, dpo.preference_loss, dpo.label_smoothing, dpo.simpo_gamma,
                   dpo.preference_average_log_probs, sft_average, dpo.preference_loss_weight, dpo.sft_loss_weight)  # fmt: skip

    @property
    def uses_reference(self) -> bool:
        return self.kind != "simpo" and self.preference_weight > 0


def smoothed_sigmoid_loss(logits, label_smoothing: float):
    """-(1 - eps) log sigmoid(x) - eps log sigmoid(-x), elementwise."""
    import torch.nn.functional as F

    return -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def preference_loss(policy, reference, counts, terms: DPOTerms):
    """(per-pair preference loss (pairs,), implicit rewards (pairs, 2)) from summed sequence log-probabilities
    `policy` and `reference` and completion token `counts`, all (pairs, 2)."""
    if terms.kind == "simpo":
        rewards = terms.beta * policy / counts.clamp(min=1)
        logits = rewards[:, CHOSEN] - rewards[:, REJECTED] - terms.simpo_gamma
        return smoothed_sigmoid_loss(logits, terms.label_smoothing), rewards
    if terms.average_log_probs:
        policy, reference = policy / counts.clamp(min=1), reference / counts.clamp(min=1)
    ratios = policy - reference
    h = ratios[:, CHOSEN] - ratios[:, REJECTED]
    if terms.kind == "ipo":
        loss = (h - 1 / (2 * terms.beta)) ** 2
    elif terms.kind == "dpo":
        loss = smoothed_sigmoid_loss(terms.beta * h, terms.label_smoothing)
    else:
        raise ValueError(f"unknown preference loss {terms.kind!r} (dpo, ipo or simpo)")
    return loss, terms.beta * ratios


def sft_loss(policy, counts, terms: DPOTerms):
    """(pairs,) negative log-likelihood of the chosen side (per token with `sft_average_log_probs`)."""
    nll = -policy[:, CHOSEN]
    return nll / counts[:, CHOSEN].clamp(min=1) if terms.sft_average_log_probs else nll


def dpo_loss(policy, reference, counts, terms: DPOTerms) -> dict:
    """Per-pair tensors: `loss` (the weighted total), `preference_loss`, `sft_loss`, `rewards_chosen`,
    `rewards_rejected`, `margin` and `accuracy` (1.0 where the margin is > 0)."""
    preference, rewards = preference_loss(policy, reference, counts, terms)
    sft = sft_loss(policy, counts, terms)
    margin = rewards[:, CHOSEN] - rewards[:, REJECTED]
    return {"loss": terms.preference_weight * preference + terms.sft_weight * sft, "preference_loss": preference,
            "sft_loss": sft, "rewards_chosen": rewards[:, CHOSEN], "rewards_rejected": rewards[:, REJECTED],
            "margin": margin, "accuracy": (margin > 0).float()}  # fmt: skip
