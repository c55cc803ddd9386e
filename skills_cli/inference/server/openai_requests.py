"""OpenAI request bodies into a `ParsedRequest`: prompt ids, `SamplingParams`, and how many choices to make and
return, each field checked (request_fields) and refused with an OpenAI-style error. Pure Python, no torch.

Beyond OpenAI's fields this takes vLLM's common extensions (top_k, min_p, repetition_penalty, ignore_eos,
stop_token_ids). What vLLM does and this server cannot (guided decoding through `response_format`, a FIM
`suffix`) is refused with a 400 naming the field rather than silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.inference.engine.params import SamplingParams
from skills_cli.inference.server.request_fields import (
    RequestError,
    get_bool,
    get_float,
    get_int,
    get_logit_bias,
    get_stop,
    get_token_ids,
    is_int,
    present,
)

MAX_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions endpoint

COMMON_FIELDS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "stop_token_ids",
    "n",
    "stream",
    "stream_options",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "repetition_penalty",
    "logit_bias",
    "ignore_eos",
    "response_format",
}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "logprobs", "top_logprobs", "max_completion_tokens", "chat_template_kwargs",
                               "add_generation_prompt", "continue_final_message"}  # fmt: skip
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "logprobs", "echo", "best_of", "suffix"}


@dataclass(frozen=True)
class ModelLimits:
    """What a request is checked against: the context size and the vocabulary (token ids, logit_bias)."""

    max_context: int
    vocab_size: int


@dataclass(frozen=True)
class ParsedRequest:
    """A validated request: each prompt is generated `best_of` times and the `n` best are returned (best:
    highest mean token logprob; best_of == n returns them all, in order)."""

    prompts: tuple[tuple[int, ...], ...]
    params: SamplingParams
    n: int = 1
    best_of: int = 1
    echo: bool = False
    stream: bool = False
    include_usage: bool = False


def fit_context(prompt_tokens: int, max_tokens: int, max_context: int, where: str, name: str = "max_tokens") -> int:
    """max_tokens within the context, as vLLM does: more than the context itself, or a prompt that leaves no
    room, is an error; otherwise the tokens the prompt leaves over cap it."""
    if max_tokens > max_context:
        raise RequestError(
            f"'{name}' ({max_tokens}) cannot be greater than the model's maximum context length ({max_context} "
            "tokens); request fewer output tokens",
            name,
        )
    if prompt_tokens >= max_context:
        raise RequestError(
            f"This model's maximum context length is {max_context} tokens, and the {where} has {prompt_tokens}: "
            f"no room to generate. Please shorten the {where}.",
            "messages" if where == "messages" else "prompt",
        )
    return min(max_tokens, max_context - prompt_tokens)


def reject_unsupported_options(body: dict) -> None:
    """Options vLLM implements and this server does not, unless at their neutral value."""
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise RequestError(
            '\'response_format\' other than {"type": "text"} (guided JSON decoding) is not supported by this '
            "server; use vLLM for structured outputs",
            "response_format",
        )
    if present(body, "user") and not isinstance(body["user"], str):
        raise RequestError("'user' must be a string", "user")


def _stream_options(body: dict, stream: bool) -> bool:
    """Whether the stream ends with a usage chunk; stream_options without streaming is an error (as vLLM)."""
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise RequestError("'stream_options' can only be set when 'stream' is true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage", "continuous_usage_stats"}:
        raise RequestError("'stream_options' must be an object with 'include_usage' (true/false)", "stream_options")
    if get_bool(options, "continuous_usage_stats", False):
        raise RequestError("'stream_options.continuous_usage_stats' is not supported by this server", "stream_options")
    return get_bool(options, "include_usage", False)


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


def completion_prompts(body: dict, tokenizer, vocab_size: int) -> list[list[int]]:
    """`prompt` as token ids: a string, a list of strings, a list of token ids, or a list of such lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(is_int(t) for t in prompt)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise RequestError("'prompt' must be a string, a list of strings, or token ids", "prompt")
    prompts = []
    for item in prompt:
        if isinstance(item, str):
            prompts.append(tokenizer.encode(item))
        elif isinstance(item, list) and all(is_int(t) and 0 <= t < vocab_size for t in item):
            prompts.append(list(item))
        else:
            raise RequestError(f"'prompt' token ids must be integers between 0 and {vocab_size - 1}", "prompt")
    if not all(prompts):
        raise RequestError("'prompt' must not be empty", "prompt")
    return prompts


def _penalties(body: dict, vocab_size: int) -> dict[str, Any]:
    return {
        "presence_penalty": get_float(body, "presence_penalty", 0.0, minimum=-2.0, maximum=2.0),
        "frequency_penalty": get_float(body, "frequency_penalty", 0.0, minimum=-2.0, maximum=2.0),
        "repetition_penalty": get_float(body, "repetition_penalty", 1.0, minimum=0.0, exclusive_minimum=True),
        "logit_bias": get_logit_bias(body, vocab_size),
    }


def sampling_params(body: dict, max_tokens: int, top_logprobs: int | None, vocab_size: int) -> SamplingParams:
    """The sampling fields shared by both endpoints; `top_logprobs` None: no logprobs asked for."""
    try:
        return SamplingParams(
            max_new_tokens=max_tokens,
            temperature=get_float(body, "temperature", 1.0, minimum=0.0),
            top_p=get_float(body, "top_p", 1.0, minimum=0.0, maximum=1.0, exclusive_minimum=True),
            # -1 is vLLM's spelling of "no top-k"; 0 is HF's
            top_k=max(0, get_int(body, "top_k", 0, minimum=-1)),
            min_p=get_float(body, "min_p", 0.0, minimum=0.0, maximum=1.0),
            seed=get_int(body, "seed", None),
            stop=get_stop(body),
            stop_token_ids=get_token_ids(body, "stop_token_ids", vocab_size),
            logprobs=top_logprobs is not None,
            top_logprobs=top_logprobs or 0,
            ignore_eos=get_bool(body, "ignore_eos", False),
            **_penalties(body, vocab_size),
        )
    except UserError as error:  # a value the field checks above let through (e.g. an infinite temperature)
        raise RequestError(str(error)) from None


def _max_tokens(body: dict, names: tuple[str, ...], default: int) -> int:
    """The first of `names` the body sets (newer spellings first), else `default`."""
    for name in names:
        value = get_int(body, name, None, minimum=1)
        if value is not None:
            return value
    return default


def _choices(body: dict, params: SamplingParams, stream: bool) -> tuple[int, int]:
    """(n, best_of): several samples of a greedy request would all be the same, so vLLM refuses them; so do we."""
    n = get_int(body, "n", 1, minimum=1, maximum=128)
    best_of = get_int(body, "best_of", n, minimum=1, maximum=128)
    if best_of < n:
        raise RequestError(f"'best_of' ({best_of}) must be >= 'n' ({n})", "best_of")
    if params.greedy and best_of > 1:
        name = "n" if n > 1 else "best_of"
        raise RequestError(f"{name} must be 1 when using greedy sampling, got {body[name]}", name)
    if stream and best_of > n:
        raise RequestError("'best_of' greater than 'n' cannot be streamed", "best_of")
    return n, best_of


def _parsed(body: dict, prompts: list[list[int]], params: SamplingParams, echo: bool = False) -> ParsedRequest:
    stream = get_bool(body, "stream", False)
    include_usage = _stream_options(body, stream)
    n, best_of = _choices(body, params, stream)
    return ParsedRequest(tuple(map(tuple, prompts)), params, n, best_of, echo, stream, include_usage)


def _chat_top_logprobs(body: dict) -> int | None:
    logprobs = get_bool(body, "logprobs", False)
    top_logprobs = get_int(body, "top_logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS)
    if top_logprobs and not logprobs:
        raise RequestError("'top_logprobs' requires 'logprobs': true", "top_logprobs")
    return top_logprobs if logprobs else None


def _template_kwargs(body: dict, tokenizer) -> dict:
    """The extra chat-template arguments, once the model is known to have a template."""
    template_kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        raise RequestError("'chat_template_kwargs' must be an object", "chat_template_kwargs")
    if not tokenizer.chat_template:
        raise RequestError("this model has no chat template; use /v1/completions", "messages")
    return template_kwargs


def _continuation(body: dict, messages: list[dict[str, Any]]) -> dict[str, bool]:
    """vLLM's extension, which tool-integrated reasoning uses: `continue_final_message` renders the last
    (assistant) message open, so the model goes on writing it; `add_generation_prompt` false adds no new turn."""
    add = get_bool(body, "add_generation_prompt", True)
    continue_final = get_bool(body, "continue_final_message", False)
    if add and continue_final:
        raise RequestError("'continue_final_message' needs 'add_generation_prompt': false", "continue_final_message")
    if continue_final and messages[-1].get("role") != "assistant":
        raise RequestError("'continue_final_message' needs the last message to be the assistant's", "messages")
    return {"add_generation_prompt": add, "continue_final_message": continue_final}


def _render_chat(tokenizer, messages: list[dict[str, Any]], template_kwargs: dict) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **template_kwargs)
    except Exception as error:  # the template itself rejected the conversation (e.g. roles out of order)
        raise RequestError(f"cannot apply the chat template: {error}", "messages") from None


def chat_request(body: dict, tokenizer, limits: ModelLimits) -> ParsedRequest:
    """A validated /v1/chat/completions body."""
    reject_unsupported_options(body)
    messages = chat_messages(body)
    template_kwargs = {**_template_kwargs(body, tokenizer), **_continuation(body, messages)}
    top_logprobs = _chat_top_logprobs(body)
    text = _render_chat(tokenizer, messages, template_kwargs)
    prompt_ids = tokenizer.encode(text, add_special_tokens=False)
    names = ("max_completion_tokens", "max_tokens")
    name = next((n for n in names if present(body, n)), "max_tokens")
    max_tokens = _max_tokens(body, names, default=limits.max_context)
    max_tokens = fit_context(len(prompt_ids), max_tokens, limits.max_context, "messages", name)
    return _parsed(body, [prompt_ids], sampling_params(body, max_tokens, top_logprobs, limits.vocab_size))


def completion_request(body: dict, tokenizer, limits: ModelLimits) -> ParsedRequest:
    """A validated /v1/completions body."""
    reject_unsupported_options(body)
    if present(body, "suffix"):
        raise RequestError("'suffix' (fill-in-the-middle) is not supported by this server", "suffix")
    prompts = completion_prompts(body, tokenizer, limits.vocab_size)
    top_logprobs = get_int(body, "logprobs", None, minimum=0, maximum=MAX_TOP_LOGPROBS)
    max_tokens = _max_tokens(body, ("max_tokens",), default=COMPLETIONS_DEFAULT_MAX_TOKENS)
    fit_context(max(map(len, prompts)), max_tokens, limits.max_context, "prompt")
    # each prompt's sequences stop at the context's end anyway (the scheduler caps them): one params for all
    params = sampling_params(body, max_tokens, top_logprobs, limits.vocab_size)
    return _parsed(body, prompts, params, echo=get_bool(body, "echo", False))
