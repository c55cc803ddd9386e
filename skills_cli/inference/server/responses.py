"""Generations into OpenAI response bodies: the envelope with usage, the choices, and both logprobs shapes
(chat's `content` entries, completions' parallel lists). Pure Python; the tokenizer turns ids into text."""

from __future__ import annotations

import time
import uuid

from skills_cli.inference.engine.params import Generation


def response(prefix: str, kind: str, model: str, choices: list, generations: list[Generation]) -> dict:
    """The envelope every completion answer shares; usage counts every generated token, eos included."""
    prompt_tokens = sum(g.prompt_tokens for g in generations)
    completion_tokens = sum(len(g.token_ids) for g in generations)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def chat_response(tokenizer, model: str, generation: Generation) -> dict:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": generation.text},
        "logprobs": chat_logprobs(tokenizer, generation),
        "finish_reason": generation.finish_reason,
    }
    return response("chatcmpl", "chat.completion", model, [choice], [generation])


def completion_response(tokenizer, model: str, generations: list[Generation]) -> dict:
    choices = [
        {"index": i, "text": g.text, "logprobs": completion_logprobs(tokenizer, g), "finish_reason": g.finish_reason}
        for i, g in enumerate(generations)
    ]
    return response("cmpl", "text_completion", model, choices, generations)


def _token_text(tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)


def chat_logprobs(tokenizer, generation: Generation) -> dict | None:
    if generation.token_logprobs is None:
        return None

    def entry(token_id, logprob):
        text = _token_text(tokenizer, token_id)
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

    content = [
        {**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
        for t in generation.token_logprobs
    ]
    return {"content": content}


def completion_logprobs(tokenizer, generation: Generation) -> dict | None:
    if generation.token_logprobs is None:
        return None
    entries = generation.token_logprobs
    tokens = [_token_text(tokenizer, t.token_id) for t in entries]
    offsets, offset = [], 0
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [t.logprob for t in entries],
        "top_logprobs": [{_token_text(tokenizer, i): lp for i, lp in t.top} for t in entries],
        "text_offset": offsets,
    }
