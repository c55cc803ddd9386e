"""The SFT loss: token negative log-likelihood summed over valid tokens, normalized by a global count.

Each micro-batch contributes `sum(NLL over its valid tokens) / N`, where N is the number of valid tokens in
the whole global batch, counted over all micro-batches and all data-parallel ranks (one all-reduce before
the first micro-batch). The micro-batch losses therefore add up to exactly the global token-mean loss, and
their gradients to its gradient, whatever the micro-batch size, packing or DP layout (NeMo-RL's
`global_normalization_factor`). Dividing per micro-batch instead would weight a token of a short micro-batch
more than one of a long micro-batch.
"""

from __future__ import annotations

from skills_cli.training.data import IGNORE_INDEX


def token_nll_sum(logits, labels):
    """Sum of -log p(label) over positions whose label is not IGNORE_INDEX; computed in float32."""
    import torch.nn.functional as F

    vocab = logits.shape[-1]
    return F.cross_entropy(logits.float().reshape(-1, vocab), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                           reduction="sum")  # fmt: skip


def normalized_loss(logits, labels, global_valid_tokens: float):
    """This micro-batch's share of the global-batch loss (0 when the global batch has nothing to train)."""
    return token_nll_sum(logits, labels) / max(global_valid_tokens, 1.0)
