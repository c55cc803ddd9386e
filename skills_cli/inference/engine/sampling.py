"""Token sampling for the torch engine: counter-based random numbers and one-uniform inverse-CDF sampling.

Random numbers. Every draw is a pure function of (row key, counter): the row key hashes (call seed, request
index) on the host, the counter is the number of tokens the request has generated so far, and the device
hashes the pair into one uniform in (0, 1). No generator state lives on the device, so a CUDA graph can draw
numbers without host help, and a request's tokens do not depend on which slot, wave or batch it ran in.
The hash is a 32-bit integer mixer (xor-shift / multiply, the "lowbias32" constants) evaluated in int64 with
the multiply split into 16-bit halves, so no product ever overflows on any backend.

Sampling. Given the uniform u of a row, the token is the first index whose cumulative probability reaches
u times the total mass (inverse CDF). Without top_k / top_p the CDF runs over the vocabulary in id order (no
sort: one softmax and one cumsum per step); with filtering the probabilities are sorted in descending order,
masked to the top_k tokens and to the shortest prefix whose mass reaches top_p (the first token always
stays), and the CDF runs over the kept ones. Greedy is argmax (first index on ties, as HF does).

Logprobs are log_softmax(logits / T) of the chosen token, T = 1 when greedy; see params.py.
"""

from __future__ import annotations

import torch

from skills_cli.inference.engine.params import GOLDEN, M32, MIX1, MIX2, combine, mix32

_UNIFORM_SCALE = 2.0**-24

GREEDY, SAMPLE, FILTERED = "greedy", "sample", "filtered"


def _mul32(values: torch.Tensor, constant: int) -> torch.Tensor:
    """(values * constant) mod 2**32 for int64 values in [0, 2**32), without int64 overflow."""
    low = values * (constant & 0xFFFF)
    high = ((values * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & M32


def mix32_tensor(values: torch.Tensor) -> torch.Tensor:
    """`mix32` elementwise on an int64 tensor; bit-identical to the Python version."""
    values = values ^ (values >> 16)
    values = _mul32(values, MIX1)
    values = values ^ (values >> 15)
    values = _mul32(values, MIX2)
    return values ^ (values >> 16)


def uniform_host(key: int, counter: int) -> float:
    """The uniform the device draws for (key, counter); for tests and documentation."""
    bits = combine(key, mix32(((counter & M32) + GOLDEN) & M32))
    return ((bits >> 8) + 0.5) * _UNIFORM_SCALE


def uniforms(keys: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """One float32 uniform in (0, 1) per row, from int64 row keys and counters."""
    bits = mix32_tensor(((keys ^ mix32_tensor(((counters & M32) + GOLDEN) & M32)) + GOLDEN) & M32)
    return ((bits >> 8).to(torch.float32) + 0.5) * _UNIFORM_SCALE


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per row, the first column whose running sum reaches u * row total (probs need not be normalised)."""
    cdf = torch.cumsum(probs, dim=-1)
    target = u.unsqueeze(-1) * cdf[:, -1:]
    index = (cdf < target).sum(dim=-1)
    return index.clamp_(max=probs.shape[-1] - 1)


def sample(
    logits: torch.Tensor,
    u: torch.Tensor,
    mode: str,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (int64 [rows]) and their logprobs (float32 [rows]) from float32 logits [rows, vocab].

    `temperature` (float32 [1]) is the divisor for logprobs and sampling (1 when greedy); `top_k` (int64 [1],
    the vocabulary size for "no limit") and `top_p` (float32 [1]) matter only in FILTERED mode. All three are
    tensors so that a captured CUDA graph reads their current values.
    """
    scaled = logits / temperature
    normaliser = torch.logsumexp(scaled, dim=-1, keepdim=True)
    if mode == GREEDY:
        tokens = torch.argmax(logits, dim=-1)
        chosen = scaled.gather(1, tokens.unsqueeze(1))
    elif mode == SAMPLE:
        tokens = _inverse_cdf(torch.exp(scaled - normaliser), u)
        chosen = scaled.gather(1, tokens.unsqueeze(1))
    elif mode == FILTERED:
        ordered, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.exp(ordered - normaliser)
        ranks = torch.arange(probs.shape[-1], device=probs.device)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        keep = (ranks.unsqueeze(0) < top_k) & (mass_before < top_p)
        picked = _inverse_cdf(probs * keep, u).unsqueeze(1)
        tokens = order.gather(1, picked).squeeze(1)
        chosen = ordered.gather(1, picked)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return tokens, (chosen - normaliser).squeeze(1)
