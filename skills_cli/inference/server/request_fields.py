"""Typed access to the fields of an OpenAI request body (pure Python): each getter returns the field's value
or its default, and raises `RequestError` (an OpenAI-style 400 naming the field) for a wrong type or range."""

from __future__ import annotations

import json
from typing import Any


class RequestError(Exception):
    """A request the client must fix; rendered as an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


def present(body: dict, name: str) -> bool:
    """OpenAI clients send null for options they leave unset; treat null as absent."""
    return body.get(name) is not None


def is_int(value) -> bool:
    # bool is an int subclass in Python; `"max_tokens": true` is a client bug, not 1
    return isinstance(value, int) and not isinstance(value, bool)


def get_int(body: dict, name: str, default: int | None, minimum: int | None = None, maximum: int | None = None):
    if not present(body, name):
        return default
    value = body[name]
    if not is_int(value):
        raise RequestError(f"'{name}' must be an integer, got {json.dumps(value)}", name)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise RequestError(f"'{name}' must be {bounds}, got {value}", name)
    return value


def get_float(
    body: dict, name: str, default: float, minimum: float, maximum: float | None = None, exclusive_minimum: bool = False
) -> float:
    if not present(body, name):
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


def get_bool(body: dict, name: str, default: bool) -> bool:
    if not present(body, name):
        return default
    if not isinstance(body[name], bool):
        raise RequestError(f"'{name}' must be true or false, got {json.dumps(body[name])}", name)
    return body[name]


def get_stop(body: dict) -> tuple[str, ...]:
    if not present(body, "stop"):
        return ()
    stop = body["stop"]
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("'stop' must be a non-empty string or a list of non-empty strings", "stop")
    return tuple(stops)


def get_token_ids(body: dict, name: str, vocab_size: int) -> tuple[int, ...]:
    """A list of token ids, each in 0..vocab_size-1."""
    if not present(body, name):
        return ()
    ids = body[name]
    if not isinstance(ids, list) or not all(is_int(t) and 0 <= t < vocab_size for t in ids):
        raise RequestError(f"'{name}' must be a list of token ids between 0 and {vocab_size - 1}", name)
    return tuple(ids)


LOGIT_BIAS_LIMIT = 100.0  # OpenAI's documented range; vLLM clamps to it


def get_logit_bias(body: dict, vocab_size: int) -> tuple[tuple[int, float], ...]:
    """OpenAI's {"token id": bias} map as sorted (id, bias) pairs, each bias clamped to [-100, 100]."""
    if not present(body, "logit_bias"):
        return ()
    bias = body["logit_bias"]
    problem = "'logit_bias' must map token ids (as strings) to numbers"
    if not isinstance(bias, dict):
        raise RequestError(problem, "logit_bias")
    pairs = []
    for key, value in bias.items():
        if not str(key).isdigit() or isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise RequestError(f"{problem}, got {json.dumps({key: value})}", "logit_bias")
        if int(key) >= vocab_size:
            raise RequestError(f"'logit_bias' token id {key} is outside 0..{vocab_size - 1}", "logit_bias")
        pairs.append((int(key), max(-LOGIT_BIAS_LIMIT, min(LOGIT_BIAS_LIMIT, float(value)))))
    return tuple(sorted(pairs))


def reject_unknown_fields(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])


def check_model_name(body: dict, served_model_name: str, aliases: frozenset[str] = frozenset()) -> None:
    """`aliases`: other names the client may use (the `--model` path the server was started with)."""
    if present(body, "model") and body["model"] != served_model_name and body["model"] not in aliases:
        raise RequestError(
            f"The model `{body['model']}` does not exist; this server serves `{served_model_name}`",
            "model",
            status=404,
            kind="not_found_error",
        )
