"""Generations into OpenAI response bodies: the envelope with usage, the choices with `stop_reason`, echo, and
both logprobs shapes with vLLM's semantics (chat's `content` entries, completions' parallel lists). Pure
Python; the tokenizer turns ids into text.

Logprobs as vLLM reports them: each position's alternatives are the sampled token first, then the best
tokens by rank, without repeats. Completions' `logprobs=k` returns all of them (up to k+1 entries, so
`logprobs=0` gives the sampled token alone); chat's `top_logprobs=k` returns the first k.
"""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass
from importlib import metadata

from skills_cli.inference.engine.params import FINISH_STOP, Generation, SamplingParams, TokenLogprob


def _fingerprint() -> str:
    try:
        return f"skills-cli-hf-{metadata.version('skills-cli')}"
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "skills-cli-hf"


SYSTEM_FINGERPRINT = _fingerprint()


@dataclass
class Choice:
    """One returned choice: its generation, why it stopped, and the prompt when echoed.

    `prompt_logprobs`: with echo and logprobs, the prompt's tokens after the first with their logprobs."""

    generation: Generation
    stop_reason: str | int | None = None
    prompt_ids: tuple[int, ...] = ()
    echo_text: str = ""
    prompt_logprobs: list[TokenLogprob] | None = None


def stop_reason(tokenizer, generation: Generation, params: SamplingParams, eos_ids: frozenset[int]):
    """vLLM's `stop_reason`: the stop string or stop token id that ended the sequence; None for EOS or a limit."""
    if generation.finish_reason != FINISH_STOP or not generation.token_ids:
        return None
    last = generation.token_ids[-1]
    if last in eos_ids and not params.ignore_eos:
        return None
    if last in params.stop_token_ids:
        return last
    # a stop string: the generation's text is the decoded text cut right before it
    text = tokenizer.decode(generation.token_ids, skip_special_tokens=True)
    return next((stop for stop in params.stop if text.startswith(stop, len(generation.text or ""))), None)


def usage(prompt_tokens: int, generated_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": generated_tokens,
        "total_tokens": prompt_tokens + generated_tokens,
    }


def envelope(request_id: str, kind: str, model: str, created: int) -> dict:
    return {"id": request_id, "object": kind, "created": created, "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT}  # fmt: skip


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def chat_response(tokenizer, model: str, choices: list[Choice], usage_counts: dict, top_n: int) -> dict:
    body = [
        {
            "index": index,
            "message": {"role": "assistant", "content": choice.generation.text},
            "logprobs": chat_logprobs(tokenizer, choice.generation.token_logprobs, top_n),
            "finish_reason": choice.generation.finish_reason,
            "stop_reason": choice.stop_reason,
        }
        for index, choice in enumerate(choices)
    ]
    answer = envelope(new_id("chatcmpl"), "chat.completion", model, int(time.time()))
    return {**answer, "choices": body, "usage": usage_counts}


def completion_response(tokenizer, model: str, choices: list[Choice], usage_counts: dict) -> dict:
    body = [
        {
            "index": index,
            "text": choice.echo_text + choice.generation.text,
            "logprobs": completion_logprobs(tokenizer, choice),
            "finish_reason": choice.generation.finish_reason,
            "stop_reason": choice.stop_reason,
        }
        for index, choice in enumerate(choices)
    ]
    answer = envelope(new_id("cmpl"), "text_completion", model, int(time.time()))
    return {**answer, "choices": body, "usage": usage_counts}


def token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def alternatives(entry: TokenLogprob) -> list[tuple[int, float]]:
    """The sampled token, then the best tokens by rank, each once (vLLM's order)."""
    return [(entry.token_id, entry.logprob)] + [(t, lp) for t, lp in entry.top if t != entry.token_id]


def chat_logprobs(tokenizer, entries: list[TokenLogprob] | None, top_n: int) -> dict | None:
    if entries is None:
        return None

    def item(token_id, logprob):
        text = token_text(tokenizer, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [
        {**item(t.token_id, t.logprob), "top_logprobs": [item(i, lp) for i, lp in alternatives(t)[:top_n]]}
        for t in entries
    ]
    return {"content": content}


def completion_top(tokenizer, entry: TokenLogprob) -> dict[str, float]:
    """Completions' {text: logprob} of a position's alternatives; where two tokens decode to the same text
    (e.g. both incomplete UTF-8), the first keeps the key, so the sampled token's entry is its own."""
    top: dict[str, float] = {}
    for token_id, logprob in alternatives(entry):
        top.setdefault(token_text(tokenizer, token_id), logprob)
    return top


def completion_logprobs_lists(tokenizer, positions: list[tuple[int, TokenLogprob | None]], first_offset: int) -> dict:
    """The parallel lists for (token id, its logprobs or None) positions (None: the echoed prompt's first
    token, which has no logprob), text offsets counted from `first_offset`."""
    tokens = [token_text(tokenizer, token_id) for token_id, _ in positions]
    return {
        "tokens": tokens,
        "token_logprobs": [e.logprob if e is not None else None for _, e in positions],
        "top_logprobs": [completion_top(tokenizer, e) if e is not None else None for _, e in positions],
        "text_offset": list(itertools.accumulate((len(t) for t in tokens[:-1]), initial=first_offset)),
    }


def echo_positions(choice: Choice) -> list[tuple[int, TokenLogprob | None]]:
    """The echoed prompt's positions: its first token has no logprob, the others their scores."""
    return [(choice.prompt_ids[0], None)] + [(e.token_id, e) for e in choice.prompt_logprobs or ()]


def completion_logprobs(tokenizer, choice: Choice) -> dict | None:
    entries = choice.generation.token_logprobs
    if entries is None:
        return None
    positions = [(e.token_id, e) for e in entries]
    if choice.prompt_logprobs is not None:
        positions = echo_positions(choice) + positions
    return completion_logprobs_lists(tokenizer, positions, 0)
