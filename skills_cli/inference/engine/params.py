"""What an engine is asked for and what it returns: `SamplingParams` in, one `Generation` per prompt out.

Every engine takes and returns exactly these types: the rollout engines (`TorchEngine`, `VllmEngine`), so a
GRPO trainer can switch engines without touching its code, and the hf server's batching engine, which adds
the text-level fields (stop strings, requested logprobs). Pure Python: importing this module pulls in no torch.

Semantics shared by every engine:
  * temperature 0 (or top_k 1) is greedy decoding;
  * `logprobs[i]` is the log-probability of `token_ids[i]` under log_softmax(logits / T), T the temperature
    (T = 1 when greedy), over the whole vocabulary: top_k / top_p filtering is *not* renormalised into it
    (with neither set, it is exactly the distribution the token was drawn from);
  * generation stops after a stop token (the model's EOS ids unless `ignore_eos`, plus `stop_token_ids`);
    the stop token is the last element of `token_ids` and `finish_reason` is "stop"; otherwise it ends
    after `max_new_tokens` tokens (or at the engine's `max_seq_len`) with `finish_reason` "length";
  * min_p drops tokens less likely than min_p times the most likely one (with top_k / top_p, a filter);
  * penalties follow vLLM (engine/penalties.py): `logit_bias` is added first, then `repetition_penalty`
    divides the positive logits (multiplies the negative ones) of every token seen in the prompt or the
    output, then `frequency_penalty` x (count in the output) and `presence_penalty` x (seen in the output)
    are subtracted; the neutral values (1, 0, 0, no bias) leave the logits untouched;
  * `stop` strings and `logprobs` need a tokenizer / the raw distribution, so only the hf server's engine
    takes them; the token-only rollout engines refuse them (`check_token_only`);
  * with penalties, `logprobs[i]` is log_softmax(penalised logits / T) of the token, the distribution it was
    drawn from; the requested `logprobs` / `top_logprobs` stay those of the raw logits, before penalties and
    temperature (vLLM's default `logprobs_mode="raw_logprobs"`);
  * request i of a call draws its random numbers from a stream determined by (seed, i) alone, so the same
    call gives the same tokens again whatever the batch capacity, and different seeds give different ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from skills_cli.common.errors import UserError

FINISH_STOP = "stop"
FINISH_LENGTH = "length"

# The 32-bit integer mixer behind every random stream (xor-shift / multiply, "lowbias32" constants).
M32 = 0xFFFFFFFF
MIX1 = 0x7FEB352D
MIX2 = 0x846CA68B
GOLDEN = 0x9E3779B9  # added before each mix: the mixer maps 0 to 0, and seed 0 / request 0 must not be special


@dataclass(frozen=True)
class SamplingParams:
    """How every prompt of one `generate` call is sampled.

    seed None draws a fresh seed from the OS for the call (not reproducible).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    seed: int | None = 0
    min_p: float = 0.0
    stop: tuple[str, ...] = ()  # stop strings, checked on the decoded text (servers only)
    logprobs: bool = False  # record each token's raw logprob and its `top_logprobs` best alternatives
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit) pairs

    def __post_init__(self) -> None:
        check_sampling_params(self)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def filtered(self) -> bool:
        """True when top_k or top_p removes part of the vocabulary before sampling."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0)


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's logprob under the model's raw distribution (log_softmax of the logits, no
    temperature), and the `top_logprobs` most likely tokens of that step as (id, logprob), best first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass
class Generation:
    """One prompt's result: generated ids (stop token included), their sampling logprobs, and why it ended.

    Engines that detokenize also fill `text` (stop string and eos text removed) and `prompt_tokens`;
    `token_logprobs` is set when the request asked for logprobs.
    """

    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: str = FINISH_LENGTH
    text: str | None = None
    prompt_tokens: int = 0
    token_logprobs: list[TokenLogprob] | None = None


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sampling_params(params: SamplingParams) -> None:
    """Raise UserError naming the first field that is out of range."""
    if not _is_int(params.max_new_tokens) or params.max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be an integer >= 1, got {params.max_new_tokens!r}")
    temperature = params.temperature
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if isinstance(params.top_p, bool) or not isinstance(params.top_p, (int, float)) or not 0 < params.top_p <= 1:
        raise UserError(f"top_p must be in (0, 1], got {params.top_p!r}")
    if not _is_int(params.top_k) or params.top_k < 0:
        raise UserError(f"top_k must be an integer >= 0 (0 = no limit), got {params.top_k!r}")
    if not isinstance(params.stop_token_ids, tuple) or not all(_is_int(t) and t >= 0 for t in params.stop_token_ids):
        raise UserError(f"stop_token_ids must be a tuple of token ids >= 0, got {params.stop_token_ids!r}")
    if params.seed is not None and not _is_int(params.seed):
        raise UserError(f"seed must be an integer or None, got {params.seed!r}")
    _check_text_fields(params)
    _check_penalties(params)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_penalties(params: SamplingParams) -> None:
    """vLLM's ranges: presence and frequency penalties in [-2, 2], a repetition penalty > 0."""
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if not _is_number(value) or not -2 <= value <= 2:
            raise UserError(f"{name} must be a number in [-2, 2] (0 = none), got {value!r}")
    if not _is_number(params.repetition_penalty) or params.repetition_penalty <= 0:
        raise UserError(f"repetition_penalty must be a number > 0 (1 = none), got {params.repetition_penalty!r}")
    bias = params.logit_bias
    pairs_ok = isinstance(bias, tuple) and all(isinstance(p, tuple) and len(p) == 2 for p in bias)
    if not pairs_ok or not all(_is_int(token) and token >= 0 and _is_number(value) for token, value in bias):
        raise UserError(f"logit_bias must be a tuple of (token id >= 0, finite bias) pairs, got {bias!r}")


def _check_text_fields(params: SamplingParams) -> None:
    """The fields only a detokenizing engine uses: min_p, stop strings, logprobs."""
    if isinstance(params.min_p, bool) or not isinstance(params.min_p, (int, float)) or not 0 <= params.min_p <= 1:
        raise UserError(f"min_p must be in [0, 1], got {params.min_p!r}")
    if not isinstance(params.stop, tuple) or not all(isinstance(s, str) and s for s in params.stop):
        raise UserError(f"stop must be a tuple of non-empty strings, got {params.stop!r}")
    if not _is_int(params.top_logprobs) or params.top_logprobs < 0:
        raise UserError(f"top_logprobs must be an integer >= 0, got {params.top_logprobs!r}")


def check_token_only(params: SamplingParams, engine: str) -> None:
    """UserError when a token-only engine (no tokenizer, sampling logprobs only) is asked for text-level fields."""
    if params.stop:
        raise UserError(f"{engine} works on token ids: give stop_token_ids instead of stop strings")
    if params.logprobs:
        raise UserError(f"{engine} returns sampling logprobs only; logprobs=True needs the hf server's engine")


def check_prompts(prompts, vocab_size: int, max_seq_len: int) -> list[list[int]]:
    """The prompts as lists of ints; UserError for an empty, too long or out-of-vocabulary prompt."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise UserError("prompts must be a list of token-id lists (tokenize text first)")
    checked = []
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, (str, bytes)):
            raise UserError(f"prompt {index} is text; the engine takes token ids (tokenize it first)")
        ids = list(prompt)
        if not ids:
            raise UserError(f"prompt {index} is empty; give at least one token id")
        if not all(_is_int(t) for t in ids):
            raise UserError(f"prompt {index} must hold Python ints (token ids)")
        low, high = min(ids), max(ids)
        if low < 0 or high >= vocab_size:
            raise UserError(f"prompt {index} has token id {low if low < 0 else high}, outside 0..{vocab_size - 1}")
        if len(ids) >= max_seq_len:
            raise UserError(
                f"prompt {index} has {len(ids)} tokens; max_seq_len {max_seq_len} leaves no room to generate"
            )
        checked.append(ids)
    return checked


def resolve_seed(seed: int | None) -> int:
    """The call's seed: the given one, or 63 random bits from the OS."""
    return seed if seed is not None else int.from_bytes(os.urandom(8), "little") >> 1


def mix32(value: int) -> int:
    """The 32-bit mixer on a Python int in [0, 2**32)."""
    value ^= value >> 16
    value = (value * MIX1) & M32
    value ^= value >> 15
    value = (value * MIX2) & M32
    value ^= value >> 16
    return value


def combine(state: int, part: int) -> int:
    """Fold a 32-bit `part` into a 32-bit hash state."""
    return mix32(((state ^ part) + GOLDEN) & M32)


def row_key(seed: int, index: int) -> int:
    """The 32-bit random-stream key of request `index` of a call seeded with `seed` (ints >= 0 of any size).

    The torch engine hashes it with a per-token counter on the device; the vLLM adapter passes it as the
    request's own seed. Either way request i's stream depends on (seed, i) only.
    """
    key = combine(0, seed & M32)
    key = combine(key, (seed >> 32) & M32)
    key = combine(key, index & M32)
    return combine(key, (index >> 32) & M32)
