"""Token sampling for every torch-backed engine: counter-based random numbers and one-uniform inverse-CDF
sampling. The rollout engine samples a whole call with one mode (inside its CUDA graphs); the hf server's
engine mixes requests of different modes in one batch (`sample_rows`), each row sampled exactly as alone.

Random numbers. Every draw is a pure function of (row key, counter): the row key hashes (call seed, request
index) on the host, the counter is the number of tokens the request has generated so far, and the device
hashes the pair into one uniform in (0, 1). No generator state lives on the device, so a CUDA graph can draw
numbers without host help, and a request's tokens do not depend on which slot, wave or batch it ran in.
The hash is a 32-bit integer mixer (xor-shift / multiply, the "lowbias32" constants) evaluated in int64 with
the multiply split into 16-bit halves, so no product ever overflows on any backend.

Sampling. Given the uniform u of a row, the token is the first index whose cumulative probability reaches
u times the total mass (inverse CDF). Without top_k / top_p the CDF runs over the vocabulary in id order (no
sort: one softmax and one cumsum per step); with filtering the probabilities are sorted in descending order,
masked to the top_k tokens, to the shortest prefix whose mass reaches top_p (the first token always
stays) and to the tokens at least min_p times as likely as the first, and the CDF runs over the kept ones.
Greedy is argmax (first index on ties, as HF does). On CUDA, greedy and unfiltered rows go through one
streaming Triton kernel (cuda_kernels.sample_plain: the same rule over the model-dtype logits, no float32
[rows, vocab] intermediates); the torch code here is the CPU path and that kernel's reference.

Logprobs are log_softmax(logits / T) of the chosen token, T = 1 when greedy; see params.py. `raw_logprobs`
gives what the OpenAI API reports instead: log_softmax(logits), and the most likely alternatives.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from skills_cli.inference.engine.params import GOLDEN, M32, MIX1, MIX2, SamplingParams, combine, mix32

_UNIFORM_SCALE = 2.0**-24

GREEDY, SAMPLE, FILTERED = "greedy", "sample", "filtered"
MODES = (GREEDY, SAMPLE, FILTERED)  # a row's mode on the device is its index here


@functools.cache
def cuda_kernels_for(device: torch.device):
    """The Triton kernels module on a CUDA device where Triton imports, else None (the torch paths run)."""
    if device.type != "cuda":
        return None
    try:
        from skills_cli.inference.engine import cuda_kernels
    except ImportError:
        return None
    return cuda_kernels


def mode_of(params: SamplingParams) -> str:
    """The sampling path of a request: argmax, the full softmax, or the filtered (sorted) one."""
    if params.greedy:
        return GREEDY
    return FILTERED if params.filtered else SAMPLE


def sampling_scalars(params: SamplingParams, vocab_size: int) -> tuple[float, int, float, float]:
    """(temperature, top_k, top_p, min_p) as the sampler reads them: temperature 1 when greedy (the logprob
    divisor), top_k the vocabulary size for "no limit"."""
    temperature = params.temperature if params.temperature > 0 else 1.0
    return temperature, params.top_k if params.top_k > 0 else vocab_size, params.top_p, params.min_p


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


def _mix32_array(values: np.ndarray) -> np.ndarray:
    """`mix32` elementwise on a uint64 array of values < 2**32 (products stay below 2**64: exact)."""
    values = values ^ (values >> np.uint64(16))
    values = (values * np.uint64(MIX1)) & np.uint64(M32)
    values = values ^ (values >> np.uint64(15))
    values = (values * np.uint64(MIX2)) & np.uint64(M32)
    return values ^ (values >> np.uint64(16))


def uniforms_array(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """`uniforms` computed by numpy, bit-identical: on a CPU device a few array operations cost far less than
    the ~50 small tensor operations of the graph-safe version."""
    m32, golden = np.uint64(M32), np.uint64(GOLDEN)
    keys, counters = keys.astype(np.uint64), counters.astype(np.uint64)
    bits = _mix32_array(((keys ^ _mix32_array(((counters & m32) + golden) & m32)) + golden) & m32)
    return ((bits >> np.uint64(8)).astype(np.float32) + np.float32(0.5)) * np.float32(_UNIFORM_SCALE)


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
    min_p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next tokens (int64 [rows]) and their logprobs (float32 [rows]) from float32 logits [rows, vocab].

    `temperature` (float32) is the divisor for logprobs and sampling (1 when greedy); `top_k` (int64, the
    vocabulary size for "no limit"), `top_p` and `min_p` (float32) matter only in FILTERED mode. Each is [1]
    (one value for the batch) or [rows, 1]; all are tensors so that a captured CUDA graph reads their
    current values.
    """
    scaled = logits.float() / temperature
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
        if min_p is not None:  # sorted, so column 0 holds each row's most likely token
            keep &= probs >= min_p * probs[:, :1]
        picked = _inverse_cdf(probs * keep, u).unsqueeze(1)
        tokens = order.gather(1, picked).squeeze(1)
        chosen = ordered.gather(1, picked)
    else:
        raise ValueError(f"unknown sampling mode {mode!r}")
    return tokens, (chosen - normaliser).squeeze(1)


def sample_rows(
    logits: torch.Tensor,
    u: torch.Tensor,
    modes: tuple[str, ...],
    row_modes: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`sample` for rows of several modes: `modes` those present, `row_modes` each row's (an index into
    MODES). Every present mode runs over the batch and each row keeps its own mode's result, so a row's token
    never depends on its batch-mates; with one mode this is `sample` itself. No host sync (graph-safe).
    On CUDA, greedy and full-softmax rows take the streaming Triton kernel (cuda_kernels.sample_plain)."""
    kernels = cuda_kernels_for(logits.device)
    if kernels is not None and FILTERED not in modes:
        return kernels.sample_plain(logits, u, temperature, row_modes)
    tokens, logprobs = sample(logits, u, modes[0], temperature, top_k, top_p, min_p)
    for mode in modes[1:]:
        mine = row_modes == MODES.index(mode)
        other_tokens, other_logprobs = sample(logits, u, mode, temperature, top_k, top_p, min_p)
        tokens = torch.where(mine, other_tokens, tokens)
        logprobs = torch.where(mine, other_logprobs, logprobs)
    return tokens, logprobs


class SlotState:
    """The per-slot sampling state every decode backend's step reads and writes, on the model's device.

    Static buffers (never re-allocated), so a captured CUDA graph can read and update them: the next input
    token, the random stream key and counter, the sampling parameters ([slots, 1]) and mode, and `step_out`
    ([slots, 2]: token, logprob), which the host reads back after a step.
    """

    def __init__(self, slots: int, vocab_size: int, device):
        self.vocab_size = vocab_size

        def zeros(*shape, dtype=torch.long):
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.input_ids, self.keys, self.counters, self.row_modes = (
            zeros(slots),
            zeros(slots),
            zeros(slots),
            zeros(slots),
        )
        # idle slots decode too (their results are dropped): neutral parameters keep their numbers finite
        self.temperature, self.top_p = (
            zeros(slots, 1, dtype=torch.float32) + 1,
            zeros(slots, 1, dtype=torch.float32) + 1,
        )
        self.top_k, self.min_p = zeros(slots, 1) + vocab_size, zeros(slots, 1, dtype=torch.float32)
        self.step_out = zeros(slots, 2, dtype=torch.float32)

    def start(self, slots: list[int], params: list[SamplingParams], keys: list[int]) -> None:
        """Set up `slots` for new requests: their parameters, streams, counters at 0."""
        device = self.input_ids.device
        index = torch.tensor(slots, dtype=torch.long, device=device)
        scalars = list(zip(*(sampling_scalars(p, self.vocab_size) for p in params), strict=True))
        for tensor, values in zip((self.temperature, self.top_k, self.top_p, self.min_p), scalars, strict=True):
            tensor[index] = torch.tensor(values, dtype=tensor.dtype, device=device).unsqueeze(1)
        self.row_modes[index] = torch.tensor([MODES.index(mode_of(p)) for p in params], device=device)
        self.keys[index] = torch.tensor(keys, dtype=torch.long, device=device)
        self.counters[index] = 0

    def row_parameters(self, rows) -> tuple[torch.Tensor, ...]:
        """(keys, modes, temperature, top_k, top_p, min_p) of `rows`; constant while the rows hold the same
        requests, so a backend whose rows are not a slice can gather them once per batch change."""
        return tuple(t[rows] for t in (self.keys, self.row_modes, self.temperature, self.top_k, self.top_p, self.min_p))

    def sample(self, logits: torch.Tensor, rows, modes: tuple[str, ...], parameters=None) -> torch.Tensor:
        """Sample the next token of `rows` (a slice or slot-index tensor; logits row i is rows' i-th slot),
        make it the next input, advance the counters and write `step_out`. Returns the tokens."""
        keys, row_modes, temperature, top_k, top_p, min_p = parameters or self.row_parameters(rows)
        counters = self.counters[rows]
        if keys.device.type == "cpu":
            u = torch.from_numpy(uniforms_array(keys.numpy(), counters.numpy()))
        else:
            u = uniforms(keys, counters)
        tokens, logprobs = sample_rows(logits, u, modes, row_modes, temperature, top_k, top_p, min_p)
        self.input_ids[rows] = tokens
        self.counters[rows] = counters + 1
        self.step_out[rows] = torch.stack([tokens.to(torch.float32), logprobs], dim=1)
        return tokens


def raw_logprobs(logits: torch.Tensor, tokens: torch.Tensor, top_n: int):
    """log_softmax(logits) of `tokens` ([rows]) and the `top_n` best (values, ids) per row (None when 0)."""
    logprobs = logits.float().log_softmax(dim=-1)
    chosen = logprobs.gather(1, tokens[:, None]).squeeze(1)
    return chosen, (logprobs.topk(top_n, dim=-1) if top_n else None)
