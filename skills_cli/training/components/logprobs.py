"""Per-token log-probabilities of the labels, log p(label_t) under softmax(logits / temperature), with their gradient.

GRPO, PPO and distillation ratios, DPO's sequence log-probabilities and the logprob checks all need them. The
textbook `logits.float().log_softmax(-1).gather(...)` writes an fp32 copy of a micro-batch's logits and an fp32
log-softmax of them (each 4 bytes x tokens x 151,936 ids for Qwen), and autograd keeps the log-softmax for backward:
at 0.5B with ~90k tokens a step that is tens of GiB and most of the step's memory traffic. As the SFT loss does
(`loss.py`), the forward pass here keeps one fp32 log-sum-exp per token, and backward recomputes

    d logp_t / d logits_t,v = (onehot(label_t)_v - softmax(logits_t / T)_v) / T

from the logits and that log-sum-exp in one pass, in the logits' dtype, times the incoming per-token gradient. On
GPUs both passes are compiled (one or two fused kernels, token count dynamic); on CPU they run eagerly in row chunks.
The values equal the textbook ones up to fp32 rounding; positions whose label is `ignore_index` give 0 and no
gradient.
"""

from __future__ import annotations

import functools

from skills_cli.training.components.data import IGNORE_INDEX
from skills_cli.training.components.loss import EAGER_CHUNK_ROWS, compiled_kernel
from skills_cli.training.components.model import compile_enabled


def token_logprobs(logits, labels, temperature: float = 1.0, ignore_index: int = IGNORE_INDEX):
    """Float32 log p(label) of `logits` (..., vocab) at `labels` (...), shaped like `labels`; 0 where ignored.

    The temperature matters: rollouts were sampled from the tempered distribution, so ratios and the comparison
    with the generation logprobs must use it too (NeMo-RL PR #935 was this bug)."""
    import torch

    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_labels = torch.where(labels == ignore_index, IGNORE_INDEX, labels).reshape(-1)
    # a tensor, not a Python float: a compiled kernel would be specialised (recompiled) on each new value
    inverse_t = torch.full((), 1.0 / temperature, dtype=torch.float32, device=logits.device)
    if torch.is_grad_enabled() and logits.requires_grad:
        values = _token_logprob_function().apply(flat_logits, flat_labels, inverse_t)
    else:
        with torch.no_grad():
            values = _forward(flat_logits, flat_labels, inverse_t)[0]
    return values.reshape(labels.shape)


def _forward(logits, labels, inverse_t):
    """(per-token log-probabilities, per-token log-sum-exp of the tempered logits), both fp32, of 2D logits."""
    import torch

    if compile_enabled(logits.device):
        return compiled_kernel("logprobs_forward", _logprobs_and_lse)(logits, labels, inverse_t)
    values = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    lse = torch.empty_like(values)
    for start in range(0, logits.shape[0], EAGER_CHUNK_ROWS):
        end = start + EAGER_CHUNK_ROWS
        values[start:end], lse[start:end] = _logprobs_and_lse(logits[start:end], labels[start:end], inverse_t)
    return values, lse


def _backward(logits, labels, lse, inverse_t, grad_values):
    """d(sum_t grad_values_t x logp_t)/d(logits), in the logits' dtype."""
    import torch

    if compile_enabled(logits.device):
        return compiled_kernel("logprobs_backward", _logits_grad)(logits, labels, lse, inverse_t, grad_values)
    grad = torch.empty_like(logits)
    for start in range(0, logits.shape[0], EAGER_CHUNK_ROWS):
        rows = slice(start, start + EAGER_CHUNK_ROWS)
        grad[rows] = _logits_grad(logits[rows], labels[rows], lse[rows], inverse_t, grad_values[rows])
    return grad


def _logprobs_and_lse(logits, labels, inverse_t):
    import torch

    x = logits.float() * inverse_t
    valid = labels != IGNORE_INDEX
    lse = torch.logsumexp(x, dim=-1)
    picked = x.gather(1, torch.where(valid, labels, 0)[:, None]).squeeze(1)
    return torch.where(valid, picked - lse, 0.0), lse


def _logits_grad(logits, labels, lse, inverse_t, grad_values):
    import torch

    valid = labels != IGNORE_INDEX
    onehot = torch.arange(logits.shape[1], device=logits.device)[None, :] == torch.where(valid, labels, 0)[:, None]
    softmax = torch.exp(logits.float() * inverse_t - lse[:, None])
    scale = torch.where(valid, grad_values.float(), 0.0) * inverse_t
    return ((onehot.float() - softmax) * scale[:, None]).to(logits.dtype)


@functools.cache
def _token_logprob_function():
    """The autograd function, built on first use (importing this module must not import torch)."""
    import torch

    class TokenLogprobs(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, labels, inverse_t):
            values, lse = _forward(logits, labels, inverse_t)
            ctx.save_for_backward(logits, labels, lse, inverse_t)
            return values

        @staticmethod
        def backward(ctx, grad_values):
            logits, labels, lse, inverse_t = ctx.saved_tensors
            return _backward(logits, labels, lse, inverse_t, grad_values.contiguous()), None, None

    return TokenLogprobs
