"""The reward model's Bradley-Terry loss on per-pair scores, pure torch (checked against hand-computed values).

For a pair with scores r_c (chosen) and r_r (rejected), both read at each sequence's last non-pad token (where
the exported `AutoModelForSequenceClassification` reads them), and the row's margin m (0 without a margin column):

    loss = -log sigmoid(r_c - r_r - m) + c (r_c + r_r)^2        c: rm.center_rewards_coefficient (TRL's)

The margin metric is r_c - r_r and a pair is ranked right (accuracy) when it is > 0.
"""

from __future__ import annotations

from skills_cli.training.components.preferences import CHOSEN, REJECTED


def bradley_terry_loss(scores, margins, center_rewards_coefficient: float = 0.0) -> dict:
    """Per-pair tensors from `scores` (pairs, 2) and `margins` (pairs,): `loss`, `rewards_chosen`,
    `rewards_rejected`, `margin` and `accuracy`."""
    import torch.nn.functional as F

    chosen, rejected = scores[:, CHOSEN], scores[:, REJECTED]
    loss = -F.logsigmoid(chosen - rejected - margins)
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * (chosen + rejected) ** 2
    margin = chosen - rejected
    return {"loss": loss, "rewards_chosen": chosen, "rewards_rejected": rejected, "margin": margin,
            "accuracy": (margin > 0).float()}  # fmt: skip
