"""OpenAI request bodies into prompts and `SamplingParams` (pure Python, no torch): field types and ranges,
unsupported options, the model name and the context size, each refused with an OpenAI-style error."""

from __future__ import annotations

import json
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.inference.engine.params import SamplingParams

MAX_TOP_LOGPROBS = 20
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions endpoint


class RequestError(Exception):
    """A request the client must fix; rendered as an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


# top_k, min_p, repetition_penalty and ignore_eos are vLLM's extensions of the OpenAI schema
COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "n",
    "stream",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "logprobs", "top_logprobs", "max_completion_tokens", "chat_template_kwargs"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "logprobs", "echo", "best_of", "suffix"}


def _present(body: dict, name: str) -> bool:
    """OpenAI clients send null for options they leave unset; treat null as absent."""
    return body.get(name) is not None


def _get_int(body: dict, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None):
    if not _present(body, name):
        return default
    value = body[name]
    # bool is an int subclass in Python; `"max_tokens": true` is a client bug, not 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"'{name}' must be an integer, got {json.dumps(value)}", name)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise RequestError(f"'{name}' must be {bounds}, got {value}", name)
    return value


def _get_float(
    body: dict, name: str, default: float, minimum: float, maximum: float | None = None, exclusive_minimum: bool = False
) -> float:
    if not _present(body, name):
        return default
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"'{name}' must be a number, got {json.dumps(value)}", name)
    too_low = value <= minimum if exclusive_minimum else value < minimum
    if too_low or (maximum is not None and value > maximum) or value != value:  # value != value: NaN
        low = f"> {minimum}" if exclusive_minimum else f">= {minimum}"
        raise RequestError(
            f"'{name}' must be {low}" + (f" and <= {maximum}" if maximum is not None else "") + f", got {value}", name
        )
    return float(value)


def _get_bool(body: dict, name: str, default: bool) -> bool:
    if not _present(body, name):
        return default
    if not isinstance(body[name], bool):
        raise RequestError(f"'{name}' must be true or false, got {json.dumps(body[name])}", name)
    return body[name]


def _get_stop(body: dict) -> tuple[str, ...]:
    if not _present(body, "stop"):
        return ()
    stop = body["stop"]
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    return tuple(stops)


def reject_unknown_fields(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])


def reject_unsupported_options(body: dict) -> None:
    """Known OpenAI options this server does not implement are refused unless they are at their neutral value."""
    if _get_bool(body, "stream", False):
        raise RequestError("stream=true is not supported by this server", "stream")
    if _get_int(body, "n", 1, minimum=1) != 1:
        raise RequestError("only n=1 is supported; send several requests instead", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if _get_float(body, name, 0.0, minimum=-2.0, maximum=2.0) != 0.0:
            raise RequestError(f"'{name}' is not supported by this server (only 0)", name)
    if _get_float(body, "repetition_penalty", 1.0, minimum=0.0, exclusive_minimum=True) != 1.0:
        raise RequestError("'repetition_penalty' is not supported by this server (only 1)", "repetition_penalty")
    if body.get("logit_bias"):
        raise RequestError("'logit_bias' is not supported by this server", "logit_bias")
    if _present(body, "user") and not isinstance(body["user"], str):
        raise RequestError("'user' must be a string", "user")


def check_model_name(body: dict, served_model_name: str, aliases: frozenset[str] = frozenset()) -> None:
    """`aliases`: other names the client may use (the `--model` path the server was started with)."""
    if _present(body, "model") and body["model"] != served_model_name and body["model"] not in aliases:
        raise RequestError(
            f"The model `{body['model']}` does not exist; this server serves `{served_model_name}`",
            "model",
            status=404,
            kind="not_found_error",
        )


def check_context(prompt_tokens: int, max_tokens: int, max_context: int, where: str) -> None:
    if prompt_tokens + max_tokens > max_context:
        raise RequestError(
            f"This model's maximum context length is {max_context} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {where}, {max_tokens} in the completion). "
            f"Please reduce the length of the {where} or max_tokens.",
            "max_tokens",
        )


def flatten_content(content: Any, index: int) -> str:
    """Message content as text: a string, or OpenAI's list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(part["text"] for part in content)
    raise RequestError(f"messages[{index}].content must be a string or a list of text parts", "messages")


def chat_messages(body: dict) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list", "messages")
    result = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(f"messages[{index}] must be an object with a string 'role'", "messages")
        result.append({**message, "content": flatten_content(message.get("content", ""), index)})
    return result


def completion_prompts(body: dict) -> list[str]:
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise RequestError("'prompt' must be a string or a non-empty list of strings", "prompt")
    return prompts


def sampling_params(body: dict, max_tokens: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
    """The sampling fields shared by both endpoints (max_tokens and logprobs are endpoint specific)."""
    try:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=_get_float(body, "temperature", 1.0, minimum=0.0),
            top_p=_get_float(body, "top_p", 1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
            # -1 is vLLM's spelling of "no top-k"; 0 is HF's
            top_k=max(0, _get_int(body, "top_k", 0, minimum=-1)),
            min_p=_get_float(body, "min_p", 0.0, minimum=0.0, maximum=1.0),
            seed=_get_int(body, "seed", None),
            stop=_get_stop(body),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            ignore_eos=_get_bool(body, "ignore_eos", False),
        )
    except UserError as error:  # a value the field checks above let through (e.g. an infinite temperature)
        raise RequestError(str(error)) from None


def _max_tokens(body: dict, names: tuple[str, ...], default: int) -> int:
    """The first of `names` the body sets (newer spellings first), else `default`."""
    for name in names:
        value = _get_int(body, name, None, minimum=1)
        if value is not None:
            return value
    return default


def _chat_logprobs_request(body: dict) -> tuple[bool, int]:
    logprobs = _get_bool(body, "logprobs", False)
    top_logprobs = _get_int(body, "top_logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS)
    if top_logprobs and not logprobs:
        raise RequestError("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    return logprobs, top_logprobs


def _template_kwargs(body: dict, tokenizer) -> dict:
    """The extra chat-template arguments, once the model is known to have a template."""
    template_kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        raise RequestError("'chat_template_kwargs' must be an object", "chat_template_kwargs")
    if not tokenizer.chat_template:
        raise RequestError("this model has no chat template; use /v1/completions", "messages")
    return template_kwargs


def _render_chat(tokenizer, messages: list[dict[str, Any]], template_kwargs: dict) -> str:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **template_kwargs)
    except Exception as error:  # the template itself rejected the conversation (e.g. roles out of order)
        raise RequestError(f"cannot apply the chat template: {error}", "messages") from None


def chat_request(body: dict, tokenizer, max_context: int) -> tuple[list[int], SamplingParams]:
    """A validated /v1/chat/completions body as (prompt ids, sampling parameters)."""
    messages = chat_messages(body)
    template_kwargs = _template_kwargs(body, tokenizer)
    logprobs, top_logprobs = _chat_logprobs_request(body)
    text = _render_chat(tokenizer, messages, template_kwargs)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    room = max_context - len(prompt_ids)
    max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"), default=max(room, 1))
    check_context(len(prompt_ids), max_tokens, max_context, "messages")
    return prompt_ids, sampling_params(body, max_tokens, logprobs, top_logprobs)


def completion_request(body: dict, tokenizer, max_context: int) -> tuple[list[list[int]], SamplingParams]:
    """A validated /v1/completions body as (prompt ids per prompt, sampling parameters)."""
    if _get_bool(body, "echo", False):
        raise RequestError("echo=true is not supported by this server", "echo")
    if _get_int(body, "best_of", 1, minimum=1) != 1:
        raise RequestError("only best_of=1 is supported", "best_of")
    if _present(body, "suffix"):
        raise RequestError("'suffix' is not supported by this server", "suffix")
    prompts = [tokenizer.encode(text) for text in completion_prompts(body)]
    if not all(prompts):
        raise RequestError("'prompt' must not be empty", "prompt")
    top_logprobs = _get_int(body, "logprobs", None, minimum=0, maximum=MAX_TOP_LOGPROBS)
    max_tokens = _max_tokens(body, ("max_tokens",), default=COMPLETIONS_DEFAULT_MAX_TOKENS)
    for prompt in prompts:
        check_context(len(prompt), max_tokens, max_context, "prompt")
    return prompts, sampling_params(body, max_tokens, top_logprobs is not None, top_logprobs or 0)
