"""The SFT loss: token negative log-likelihood summed over valid tokens, normalized by a global count.

Each micro-batch contributes `sum(NLL over its valid tokens) / N`, where N is the number of valid tokens in
the whole global batch, counted over all micro-batches and all data-parallel ranks (one all-reduce before
the first micro-batch). The micro-batch losses therefore add up to exactly the global token-mean loss, and
their gradients to its gradient, whatever the micro-batch size, packing or DP layout (NeMo-RL's
`global_normalization_factor`). Dividing per micro-batch instead would weight a token of a short micro-batch
more than one of a long micro-batch.

How it is computed: the vocabulary is large (Qwen's 151,936 ids), so the logits of one micro-batch are
gigabytes, and the textbook `cross_entropy(logits.float(), ...)` writes an fp32 copy of them, then fp32
log-probabilities, then an fp32 gradient that is cast back: some 26 bytes of memory traffic per logit and
three extra logit-sized buffers. Here the forward pass computes only each token's log-sum-exp (fp32, one
number per token) and the NLL; backward recomputes `(softmax - onehot) x scale x incoming gradient` from the
logits and that log-sum-exp in one pass, in the logits' dtype. On GPUs both are compiled (torch.compile fuses
each into one or two kernels that keep fp32 values in registers: by count, some 8 bytes of traffic per logit in
all, and no buffer beyond the gradient itself). On CPU they run eagerly, in row chunks (slow on a GPU: with
compilation off, this loss made a 0.5B step ~15% slower than the textbook one on an H100). The result equals
`cross_entropy(logits.float(), labels, reduction="sum")` and its gradient up to fp32 rounding.
`SKILLS_CLI_SFT_COMPILE=0` runs them eagerly on GPUs too.
"""

from __future__ import annotations

import functools

from skills_cli.training.components.data import IGNORE_INDEX
from skills_cli.training.components.model import compile_enabled

EAGER_CHUNK_ROWS = 1024  # rows per eager pass: bounds the fp32 temporaries to rows x vocab x a few floats


def token_nll_sum(logits, labels):
    """Sum of -log p(label) over positions whose label is not IGNORE_INDEX; computed in float32."""
    return scaled_token_nll(logits, labels, 1.0)


def normalized_loss(logits, labels, global_valid_tokens: float):
    """This micro-batch's share of the global-batch loss (0 when the global batch has nothing to train)."""
    return scaled_token_nll(logits, labels, 1.0 / max(global_valid_tokens, 1.0))


def scaled_token_nll(logits, labels, scale: float):
    """`scale` x the summed token NLL of `logits` (..., vocab) against `labels` (...), a float32 scalar."""
    import torch

    vocab = logits.shape[-1]
    flat_logits, flat_labels = logits.reshape(-1, vocab), labels.reshape(-1)
    # a tensor, not a Python float: a compiled kernel would be specialised (recompiled) on each new value
    scale_tensor = torch.full((), scale, dtype=torch.float32, device=logits.device)
    if torch.is_grad_enabled() and logits.requires_grad:
        return _token_nll_function().apply(flat_logits, flat_labels, scale_tensor)
    with torch.no_grad():
        return _forward(flat_logits, flat_labels, scale_tensor)[0]


def _forward(logits, labels, scale):
    """(scale x summed NLL, per-token log-sum-exp in fp32) of 2D logits."""
    import torch

    if compile_enabled(logits.device):
        return compiled_kernel("forward", _lse_and_nll)(logits, labels, scale)
    lse = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    for start in range(0, logits.shape[0], EAGER_CHUNK_ROWS):
        end = start + EAGER_CHUNK_ROWS
        nll, lse[start:end] = _lse_and_nll(logits[start:end], labels[start:end], scale)
        total = total + nll
    return total, lse


def _backward(logits, labels, lse, scale):
    """d(scale x summed NLL)/d(logits) in the logits' dtype (`scale` already times the incoming gradient)."""
    import torch

    if compile_enabled(logits.device):
        return compiled_kernel("backward", _logits_grad)(logits, labels, lse, scale)
    grad = torch.empty_like(logits)
    for start in range(0, logits.shape[0], EAGER_CHUNK_ROWS):
        end = start + EAGER_CHUNK_ROWS
        grad[start:end] = _logits_grad(logits[start:end], labels[start:end], lse[start:end], scale)
    return grad


def _lse_and_nll(logits, labels, scale):
    import torch

    x = logits.float()
    valid = labels != IGNORE_INDEX
    lse = torch.logsumexp(x, dim=-1)
    picked = x.gather(1, torch.where(valid, labels, 0)[:, None]).squeeze(1)
    return ((lse - picked) * valid.float()).sum() * scale, lse


def _logits_grad(logits, labels, lse, scale):
    import torch

    valid = labels != IGNORE_INDEX
    onehot = torch.arange(logits.shape[1], device=logits.device)[None, :] == torch.where(valid, labels, 0)[:, None]
    grad = (torch.exp(logits.float() - lse[:, None]) - onehot.float()) * (valid.float() * scale)[:, None]
    return grad.to(logits.dtype)


_COMPILED: dict = {}


def compiled_kernel(name: str, function):
    """`function` compiled once per name, its first (token) dimension dynamic from the first call."""
    import torch

    if name not in _COMPILED:
        compiled = torch.compile(function)

        def tokens_dynamic(*tensors):
            # the token count differs between micro-batches (SFT's varlen stream drops padding): symbolic from
            # the first compilation, not after a recompilation at the first micro-batch of another size
            for tensor in tensors:
                if tensor.dim() >= 1:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
            return compiled(*tensors)

        _COMPILED[name] = tokens_dynamic
    return _COMPILED[name]


@functools.cache
def _token_nll_function():
    """The autograd function, built on first use (importing this module must not import torch)."""
    import torch

    class TokenNLL(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, labels, scale):
            nll, lse = _forward(logits, labels, scale)
            ctx.save_for_backward(logits, labels, lse, scale)
            return nll

        @staticmethod
        def backward(ctx, grad_output):
            logits, labels, lse, scale = ctx.saved_tensors
            return _backward(logits, labels, lse, scale * grad_output), None, None

    return TokenNLL
