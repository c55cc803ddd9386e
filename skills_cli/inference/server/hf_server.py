"""An OpenAI-compatible server backed by plain transformers: the default server for tests and the CPU quickstart.

    SKILLS_SERVER_API_KEY=... python -m skills_cli.inference.server.hf_server --model PATH --host 127.0.0.1 \
        --port 5000 [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16] [--max_batch_size 64] \
        [--served_model_name NAME] [--num_threads N]

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`,
`GET /metrics` (JSON counters). No streaming, n=1 only.

Access: with `$SKILLS_SERVER_API_KEY` set, every endpoint but `/health` requires `Authorization: Bearer <key>`
(else 401 with an OpenAI-style error body). The key is read from the environment, never from argv (which
other users see in `ps`). Without a key the server only listens on a loopback address. The model's id (in
`/v1/models` and responses) is `--served_model_name`, else the model directory's base name: no absolute path
leaves the server; requests may name the model by that id or by the `--model` they were started with.

Readiness: the port is bound at start-up (so "address in use" fails within a second) but only starts
listening once the model is loaded and has run a warm-up generation. Until then connections are refused;
from the first accepted connection on, `/health` answers 200. A client therefore waits for `/health` with a
timeout and treats "connection refused" as "not ready yet".

Batching: HTTP handlers put jobs on a queue; one worker thread owns the model and runs continuous batching
over at most `max_batch_size` sequences. Every iteration it runs one decode step for all active sequences,
retires finished ones, then prefills whatever is queued (left-padded, as one batch) and merges it into the
running KV cache, so new requests join while others are mid-generation. Sampling parameters are per row
(temperature, top_p, top_k, min_p). Each sequence draws one uniform number per token from its own random
stream (seeded by the request's `seed`, else by the OS) and samples by inverse CDF, so a seeded request gets
the same tokens again whatever else shares its batch (up to float rounding of differently shaped batches).

Semantics: temperature 0 is greedy. `logprobs` are of the model's raw distribution (log-softmax of the
logits before temperature and filtering), as vLLM reports them by default. Generation stops at any eos id of
the model (finish_reason "stop", the eos text is not returned), at a stop string (removed from the text,
"stop"), or after max_tokens ("length"). `completion_tokens` counts every generated token, eos included.
Unknown fields, wrong types and unsupported options (stream, n>1, penalties, logit_bias, echo, best_of,
suffix) get HTTP 400 with an OpenAI-style error body; so does a prompt plus max_tokens over the context size.

Start-up failures (bad model path, unloadable model, busy port) exit with status 1 and one line on stderr:
`hf_server: cannot load model from /x: ...`.

Requires transformers >= 4.56 (a `DynamicCache` made of `layers` with `keys`/`values`). Heavy imports happen
inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skills_cli.inference.server.auth import API_KEY_ENV, bearer_matches, is_loopback, job_api_key

MAX_TOP_LOGPROBS = 20
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for the legacy completions endpoint


# ---------------------------------------------------------------------------------------------------------
# Requests: validation into prompts + sampling parameters (pure Python; no torch)
# ---------------------------------------------------------------------------------------------------------


class RequestError(Exception):
    """A request the client must fix; rendered as an OpenAI-style error body."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.message, self.param, self.status, self.kind = message, param, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}


@dataclass(frozen=True)
class SamplingParams:
    """How one sequence is sampled. temperature 0 = greedy; top_k 0 and top_p 1 and min_p 0 = no filtering."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    ignore_eos: bool = False


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


def sampling_params(body: dict, max_tokens: int, logprobs: bool, top_logprobs: int) -> SamplingParams:
    """The sampling fields shared by both endpoints (max_tokens and logprobs are endpoint specific)."""
    return SamplingParams(
        max_tokens=max_tokens,
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


# ---------------------------------------------------------------------------------------------------------
# The engine: one worker thread, continuous batching over a left-padded KV cache
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass
class Generation:
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None


@dataclass
class Job:
    """One prompt to complete. `on_done` is called from the worker thread with a Generation or an exception."""

    prompt_ids: list[int]
    params: SamplingParams
    on_done: Callable[[Generation | BaseException], None]
    cancelled: bool = False


@dataclass
class Sequence:
    """A job while it is in the running batch."""

    job: Job
    rng: random.Random  # seeded from the request's seed, else from the OS: one uniform per sampled token
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    text: str | None = None  # set when a stop string ended it
    finish_reason: str | None = None


@dataclass
class EngineMetrics:
    requests_served: int = 0
    sequences_finished: int = 0
    sequences_cancelled: int = 0
    prompt_tokens: int = 0
    tokens_generated: int = 0
    max_batch_size_seen: int = 0
    busy_seconds: float = 0.0
    bad_requests: int = 0

    def snapshot(self, started: float, active: int, queued: int) -> dict[str, Any]:
        rate = self.tokens_generated / self.busy_seconds if self.busy_seconds else 0.0
        return {
            **self.__dict__,
            "busy_seconds": round(self.busy_seconds, 3),
            "tokens_per_second": round(rate, 1),
            "active_sequences": active,
            "queued_sequences": queued,
            "uptime_seconds": round(time.time() - started, 1),
        }


def eos_token_ids(model, tokenizer) -> set[int]:
    """Every id that ends a generation: generation_config's (often a list), the config's and the tokenizer's."""
    ids: set[int] = set()
    for value in (
        getattr(model.generation_config, "eos_token_id", None),
        model.config.eos_token_id,
        tokenizer.eos_token_id,
    ):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def max_context_length(model, tokenizer) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    length = getattr(config, "max_position_embeddings", None)
    if not length:  # no positional limit in the config: fall back to the tokenizer's, if it states a real one
        length = tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else 4096
    return int(length)


def _left_pad_time(tensor, amount: int):
    """Pad the time axis (-2 for KV [batch, heads, time, dim], -1 for masks [batch, time]) on the left."""
    import torch.nn.functional as F

    if amount == 0:
        return tensor
    pad = (amount, 0) if tensor.dim() == 2 else (0, 0, amount, 0)
    return F.pad(tensor, pad)


def merge_caches(running, joining) -> None:
    """Append `joining`'s rows to `running` (both DynamicCache), left-padding the shorter one in time."""
    import torch

    for into, extra in zip(running.layers, joining.layers, strict=True):
        length = max(into.keys.shape[-2], extra.keys.shape[-2])
        into.keys = torch.cat(
            [
                _left_pad_time(into.keys, length - into.keys.shape[-2]),
                _left_pad_time(extra.keys, length - extra.keys.shape[-2]),
            ]
        )
        into.values = torch.cat(
            [
                _left_pad_time(into.values, length - into.values.shape[-2]),
                _left_pad_time(extra.values, length - extra.values.shape[-2]),
            ]
        )


def trim_cache_left(cache, columns: int) -> None:
    """Drop the first `columns` time steps (padding no remaining row attends to)."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., columns:, :]
        layer.values = layer.values[..., columns:, :]


def select_cache_rows(cache, rows) -> None:
    for layer in cache.layers:
        layer.keys = layer.keys[rows]
        layer.values = layer.values[rows]


def filtered_probabilities(logits, temperature, top_p, top_k, min_p):
    """Per-row temperature, then top-k, top-p and min-p filtering; returns probabilities [rows, vocab]."""
    import torch

    scaled = logits / temperature[:, None]
    vocab = scaled.shape[-1]
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        ordered, order = scaled.sort(dim=-1, descending=True)
        ranks = torch.arange(vocab, device=scaled.device)
        limit = torch.where(top_k > 0, top_k, torch.full_like(top_k, vocab))
        drop = ranks[None, :] >= limit[:, None]
        ordered_probs = ordered.masked_fill(drop, float("-inf")).softmax(dim=-1)
        # keep the smallest prefix whose mass reaches top_p: drop tokens whose predecessors already reach it
        drop |= (ordered_probs.cumsum(dim=-1) - ordered_probs) >= top_p[:, None]
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = scaled.softmax(dim=-1)
    if bool((min_p > 0).any()):
        probs = probs.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, 0.0)
    return probs


def draw_tokens(probs, uniforms: list[float]):
    """Inverse-CDF sampling: row r takes the first token whose cumulative probability exceeds uniforms[r].

    One vectorised search for the whole batch, however many rows carry their own seed (a torch.Generator per
    row would cost one multinomial call per row and step). Rows may be unnormalised (min_p zeroes entries).
    """
    import torch

    cdf = probs.cumsum(dim=-1)
    targets = torch.tensor(uniforms, dtype=cdf.dtype, device=cdf.device) * cdf[:, -1]
    # right=True: the first index whose cdf is strictly above the target, so zero-probability tokens never win
    tokens = torch.searchsorted(cdf, targets[:, None], right=True).squeeze(1)
    return tokens.clamp_(max=probs.shape[-1] - 1)


class Engine:
    """Owns the model; `run_forever` (the worker thread) serves the job queue with continuous batching."""

    def __init__(self, model, tokenizer, max_batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_context = max_context_length(model, tokenizer)
        self.eos_ids = eos_token_ids(model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.pad_id = pad
        self.metrics = EngineMetrics()
        self.started = time.time()
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.metrics_lock = threading.Lock()
        self._stopping = False
        self._keeps_last_logits = self._forward_accepts("logits_to_keep")
        self._reset_batch()

    # -- public, thread safe --------------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def stop(self) -> None:
        self._stopping = True
        self.jobs.put(None)  # wake a worker blocked on an empty queue

    def metrics_snapshot(self) -> dict[str, Any]:
        with self.metrics_lock:
            return self.metrics.snapshot(self.started, len(self.rows), self.jobs.qsize())

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Synchronous generation on the calling thread (warm-up, in-process use); the worker must not be running."""
        results: list = [None] * len(prompts)
        for index, prompt in enumerate(prompts):
            self.submit(Job(prompt, params, lambda result, i=index: results.__setitem__(i, result)))
        while any(result is None for result in results):
            self._iterate(block=False)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return results

    def run_forever(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stopping:
                self._iterate(block=True)

    # -- one iteration: decode the running batch, then admit queued jobs ---------------------------------------

    def _iterate(self, block: bool) -> None:
        import torch

        with torch.inference_mode():
            joining = self._take_jobs(block=block and not self.rows)
            started = time.perf_counter()
            try:
                self._drop_cancelled()
                if self.rows:
                    self._decode_step()
                if joining:
                    self._admit(joining)
            except Exception as error:  # a failed forward must not kill the server: fail these jobs, carry on
                for job in [row.job for row in self.rows] + joining:
                    job.on_done(RuntimeError(f"generation failed: {type(error).__name__}: {error}"))
                self._reset_batch()
            if self.rows or joining:
                with self.metrics_lock:
                    self.metrics.busy_seconds += time.perf_counter() - started

    def _take_jobs(self, block: bool) -> list[Job]:
        capacity = self.max_batch_size - len(self.rows)
        jobs: list[Job] = []
        while len(jobs) < capacity:
            try:
                job = self.jobs.get(timeout=0.5) if block and not jobs else self.jobs.get_nowait()
            except queue.Empty:
                if block and not jobs and not self._stopping:
                    continue
                break
            if job is None:  # stop() wake-up
                break
            if not job.cancelled:
                jobs.append(job)
        return jobs

    def _reset_batch(self) -> None:
        self.rows: list[Sequence] = []
        self.cache = None  # DynamicCache over the rows, left-padded in time
        self.mask = None  # [rows, time] 1 = real token
        self.positions = None  # [rows] position id of the next input token
        self.next_tokens = None  # [rows] the last sampled token, the next input
        self.row_params = None

    def _forward_accepts(self, name: str) -> bool:
        import inspect

        return name in inspect.signature(self.model.forward).parameters

    def _forward(self, input_ids, mask, positions, cache):
        extra = {"logits_to_keep": 1} if self._keeps_last_logits else {}
        output = self.model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        return output.logits[:, -1, :].float()

    def _admit(self, jobs: list[Job]) -> None:
        """Prefill the joining prompts as one left-padded batch, sample their first token, merge the survivors."""
        import torch
        from transformers import DynamicCache

        length = max(len(job.prompt_ids) for job in jobs)
        ids = [[self.pad_id] * (length - len(job.prompt_ids)) + job.prompt_ids for job in jobs]
        mask = [[0] * (length - len(job.prompt_ids)) + [1] * len(job.prompt_ids) for job in jobs]
        input_ids = torch.tensor(ids, device=self.device)
        mask = torch.tensor(mask, device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(input_ids, mask, positions, cache)
        rows = [Sequence(job, random.Random(job.params.seed)) for job in jobs]
        with self.metrics_lock:
            self.metrics.prompt_tokens += sum(len(job.prompt_ids) for job in jobs)
            self.metrics.max_batch_size_seen = max(self.metrics.max_batch_size_seen, len(jobs) + len(self.rows))
        tokens = self._sample(logits, rows, self._params_tensors(rows))
        keep = self._advance(rows, tokens)
        if not keep:
            return
        index = torch.tensor(keep, device=self.device)
        select_cache_rows(cache, index)
        self._join(cache, mask[index], positions[index, -1] + 1, tokens[index], [rows[i] for i in keep])

    def _join(self, cache, mask, positions, next_tokens, rows: list[Sequence]) -> None:
        import torch

        if not self.rows:
            self.cache, self.mask, self.positions, self.next_tokens, self.rows = (
                cache,
                mask,
                positions,
                next_tokens,
                rows,
            )
        else:
            length = max(self.mask.shape[1], mask.shape[1])
            merge_caches(self.cache, cache)
            self.mask = torch.cat(
                [_left_pad_time(self.mask, length - self.mask.shape[1]), _left_pad_time(mask, length - mask.shape[1])]
            )
            self.positions = torch.cat([self.positions, positions])
            self.next_tokens = torch.cat([self.next_tokens, next_tokens])
            self.rows = self.rows + rows
        self.row_params = self._params_tensors(self.rows)

    def _decode_step(self) -> None:
        import torch

        with self.metrics_lock:
            self.metrics.max_batch_size_seen = max(self.metrics.max_batch_size_seen, len(self.rows))
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self._forward(self.next_tokens[:, None], self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        tokens = self._sample(logits, self.rows, self.row_params)
        self.next_tokens = tokens
        keep = self._advance(self.rows, tokens)
        if len(keep) < len(self.rows):
            self._retire(keep)

    def _retire(self, keep: list[int]) -> None:
        """Remove finished rows, then the leading time steps that only their padding used."""
        import torch

        if not keep:
            self._reset_batch()
            return
        index = torch.tensor(keep, device=self.device)
        select_cache_rows(self.cache, index)
        self.mask, self.positions, self.next_tokens = self.mask[index], self.positions[index], self.next_tokens[index]
        self.rows = [self.rows[i] for i in keep]
        self.row_params = self._params_tensors(self.rows)
        first_used = int(self.mask.any(dim=0).int().argmax())
        if first_used:
            trim_cache_left(self.cache, first_used)
            self.mask = self.mask[:, first_used:]

    def _drop_cancelled(self) -> None:
        keep = [i for i, row in enumerate(self.rows) if not row.job.cancelled]
        if len(keep) < len(self.rows):
            with self.metrics_lock:
                self.metrics.sequences_cancelled += len(self.rows) - len(keep)
            self._retire(keep)

    # -- sampling and bookkeeping --------------------------------------------------------------------------

    def _params_tensors(self, rows: list[Sequence]) -> dict[str, Any]:
        import torch

        def column(name, dtype):
            return torch.tensor([getattr(row.job.params, name) for row in rows], dtype=dtype, device=self.device)

        return {
            "temperature": column("temperature", torch.float32),
            "top_p": column("top_p", torch.float32),
            "top_k": column("top_k", torch.long),
            "min_p": column("min_p", torch.float32),
        }

    def _sample(self, logits, rows: list[Sequence], params: dict[str, Any]):
        """Next token per row, and (when any row asked) the raw log-probabilities for the logprobs output."""
        import torch

        tokens = logits.argmax(dim=-1)
        sampled = [i for i, row in enumerate(rows) if row.job.params.temperature > 0]
        if sampled:
            index = torch.tensor(sampled, device=logits.device)
            probs = filtered_probabilities(
                logits[index],
                params["temperature"][index],
                params["top_p"][index],
                params["top_k"][index],
                params["min_p"][index],
            )
            tokens[index] = draw_tokens(probs, [rows[i].rng.random() for i in sampled])
        wanting = [i for i, row in enumerate(rows) if row.job.params.logprobs]
        if wanting:
            self._record_logprobs(logits, tokens, rows, wanting)
        return tokens

    def _record_logprobs(self, logits, tokens, rows: list[Sequence], wanting: list[int]) -> None:
        import torch

        index = torch.tensor(wanting, device=logits.device)
        logprobs = logits[index].log_softmax(dim=-1)
        chosen = logprobs.gather(1, tokens[index][:, None]).squeeze(1).tolist()
        top_n = max(rows[i].job.params.top_logprobs for i in wanting)
        top_values, top_ids = logprobs.topk(top_n, dim=-1) if top_n else (None, None)
        chosen_ids = tokens[index].tolist()
        for position, row in enumerate(wanting):
            n = rows[row].job.params.top_logprobs
            top = list(zip(top_ids[position, :n].tolist(), top_values[position, :n].tolist(), strict=True)) if n else []
            rows[row].logprobs.append(TokenLogprob(chosen_ids[position], chosen[position], top))

    def _advance(self, rows: list[Sequence], tokens) -> list[int]:
        """Append each row's new token, finish the rows that are done; return the indices still running."""
        running = []
        for index, token in enumerate(tokens.tolist()):
            row = rows[index]
            row.token_ids.append(token)
            self._check_finished(row, token)
            if row.finish_reason is None:
                running.append(index)
            else:
                self._finish(row)
        return running

    def _check_finished(self, row: Sequence, token: int) -> None:
        params = row.job.params
        if token in self.eos_ids and not params.ignore_eos:
            row.finish_reason = "stop"
            return
        if params.stop and self._stop_string_completed(row):
            return
        if len(row.token_ids) >= params.max_tokens:
            row.finish_reason = "length"

    def _stop_string_completed(self, row: Sequence) -> bool:
        """True (and the text cut before the stop string) when the newest token completed one of the stops.

        Decoding only the last few tokens keeps this O(1) per step: a stop of L characters spans at most 4L
        bytes, so at most 4L byte-level tokens. The full text is decoded only on a hit.
        """
        stops = row.job.params.stop
        tail = self.tokenizer.decode(row.token_ids[-(4 * max(map(len, stops)) + 4) :], skip_special_tokens=True)
        if not any(stop in tail for stop in stops):
            return False
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        # no earlier step found a stop, so the first occurrence in the full text is the one just completed
        hits = [found for stop in stops if (found := text.find(stop)) >= 0]
        if not hits:  # a tail that starts mid-character can decode differently from the full text
            return False
        row.text, row.finish_reason = text[: min(hits)], "stop"
        return True

    def _finish(self, row: Sequence) -> None:
        ids = row.token_ids
        if row.text is None:
            text_ids = ids[:-1] if row.finish_reason == "stop" and ids[-1] in self.eos_ids else ids
            row.text = self.tokenizer.decode(text_ids, skip_special_tokens=True)
        generation = Generation(
            ids, row.text, row.finish_reason, len(row.job.prompt_ids), row.logprobs if row.job.params.logprobs else None
        )
        with self.metrics_lock:
            self.metrics.sequences_finished += 1
            self.metrics.tokens_generated += len(ids)
        row.job.on_done(generation)


# ---------------------------------------------------------------------------------------------------------
# HTTP: aiohttp handlers
# ---------------------------------------------------------------------------------------------------------


class OpenAIServer:
    """The HTTP face of an Engine: request validation, tokenization, response schemas."""

    def __init__(
        self, engine: Engine, served_model_name: str, api_key: str | None = None, aliases: frozenset[str] = frozenset()
    ):
        import copy

        # The worker thread decodes with engine.tokenizer while handlers encode here: separate objects, so a
        # Rust tokenizer is never borrowed from two threads at once ("Already borrowed").
        self.engine, self.tokenizer = engine, copy.deepcopy(engine.tokenizer)
        self.served_model_name, self.aliases = served_model_name, aliases
        self.api_key = api_key
        self.created = int(time.time())

    def app(self):
        from aiohttp import web

        middlewares = [self._auth_middleware()] if self.api_key else []
        app = web.Application(middlewares=[*middlewares, self._error_middleware()], client_max_size=64 * 1024**2)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        return app

    def _json(self, payload: dict, status: int = 200):
        from aiohttp import web

        return web.json_response(payload, status=status)

    def _auth_middleware(self):
        """Every endpoint but the health check needs the key; the health check says nothing about the model."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            if request.path == "/health" or bearer_matches(request.headers.get("Authorization"), self.api_key):
                return await handler(request)
            error = RequestError(
                "Incorrect or missing API key: send `Authorization: Bearer <key>` with this job's key",
                status=401,
            )
            body = error.body()
            body["error"]["code"] = "invalid_api_key"  # what OpenAI's API answers; clients map 401 to auth errors
            return self._json(body, status=401)

        return middleware

    def _error_middleware(self):
        """Every failure leaves as OpenAI-style JSON: RequestError with its status, anything else as a 500."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            try:
                return await handler(request)
            except RequestError as error:
                with self.engine.metrics_lock:
                    self.engine.metrics.bad_requests += 1
                return self._json(error.body(), status=error.status)
            except web.HTTPException:
                raise
            except Exception as error:  # anything else is our fault: say so in the same schema
                # the details (which may name files on this machine) go to the server's log, not to the client
                traceback.print_exc(file=sys.stderr)
                body = {
                    "error": {
                        "message": f"internal server error ({type(error).__name__}); see the server log",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                return self._json(body, status=500)

        return middleware

    async def health(self, request):
        return self._json({"status": "ok"})

    async def models(self, request):
        card = {
            "id": self.served_model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "skills-cli",
            "max_model_len": self.engine.max_context,
        }
        return self._json({"object": "list", "data": [card]})

    async def metrics(self, request):
        return self._json(self.engine.metrics_snapshot())

    async def _body(self, request, allowed: set[str]) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        reject_unknown_fields(body, allowed)
        check_model_name(body, self.served_model_name, self.aliases)
        reject_unsupported_options(body)
        return body

    async def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Queue one job per prompt and wait; a client that goes away cancels its jobs."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in prompts]

        def resolver(future):
            def resolve(result):
                if not future.done():
                    (future.set_exception if isinstance(result, BaseException) else future.set_result)(result)

            return lambda result: loop.call_soon_threadsafe(resolve, result)

        jobs = [Job(prompt, params, resolver(future)) for prompt, future in zip(prompts, futures, strict=True)]
        for job in jobs:
            self.engine.submit(job)
        try:
            results = await asyncio.gather(*futures)
        except BaseException:  # cancelled (client gone) or one prompt failed: the others need not run on
            for job in jobs:
                job.cancelled = True
            raise
        with self.engine.metrics_lock:
            self.engine.metrics.requests_served += 1
        return results

    def _max_tokens(self, body: dict, names: tuple[str, ...], default: int) -> int:
        for name in names:
            value = _get_int(body, name, None, minimum=1)
            if value is not None:
                return value
        return default

    async def chat_completions(self, request):
        body = await self._body(request, CHAT_FIELDS)
        messages = chat_messages(body)
        template_kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(template_kwargs, dict):
            raise RequestError("'chat_template_kwargs' must be an object", "chat_template_kwargs")
        if not self.tokenizer.chat_template:
            raise RequestError("this model has no chat template; use /v1/completions", "messages")
        logprobs = _get_bool(body, "logprobs", False)
        top_logprobs = _get_int(body, "top_logprobs", 0, minimum=0, maximum=MAX_TOP_LOGPROBS)
        if top_logprobs and not logprobs:
            raise RequestError("'top_logprobs' requires 'logprobs': true", "top_logprobs")
        try:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False, **template_kwargs
            )
        except Exception as error:  # the template itself rejected the conversation (e.g. roles out of order)
            raise RequestError(f"cannot apply the chat template: {error}", "messages") from None
        prompt_ids = self.tokenizer.encode(text, add_special_tokens=False)
        room = self.engine.max_context - len(prompt_ids)
        max_tokens = self._max_tokens(body, ("max_completion_tokens", "max_tokens"), default=max(room, 1))
        check_context(len(prompt_ids), max_tokens, self.engine.max_context, "messages")
        params = sampling_params(body, max_tokens, logprobs, top_logprobs)
        (generation,) = await self._generate([prompt_ids], params)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": generation.text},
            "logprobs": self._chat_logprobs(generation),
            "finish_reason": generation.finish_reason,
        }
        return self._json(self._response("chatcmpl", "chat.completion", [choice], [generation]))

    async def completions(self, request):
        body = await self._body(request, COMPLETION_FIELDS)
        if _get_bool(body, "echo", False):
            raise RequestError("echo=true is not supported by this server", "echo")
        if _get_int(body, "best_of", 1, minimum=1) != 1:
            raise RequestError("only best_of=1 is supported", "best_of")
        if _present(body, "suffix"):
            raise RequestError("'suffix' is not supported by this server", "suffix")
        prompts = [self.tokenizer.encode(text) for text in completion_prompts(body)]
        if not all(prompts):
            raise RequestError("'prompt' must not be empty", "prompt")
        top_logprobs = _get_int(body, "logprobs", None, minimum=0, maximum=MAX_TOP_LOGPROBS)
        max_tokens = self._max_tokens(body, ("max_tokens",), default=COMPLETIONS_DEFAULT_MAX_TOKENS)
        for prompt in prompts:
            check_context(len(prompt), max_tokens, self.engine.max_context, "prompt")
        params = sampling_params(body, max_tokens, top_logprobs is not None, top_logprobs or 0)
        generations = await self._generate(prompts, params)
        choices = [
            {"index": i, "text": g.text, "logprobs": self._completion_logprobs(g), "finish_reason": g.finish_reason}
            for i, g in enumerate(generations)
        ]
        return self._json(self._response("cmpl", "text_completion", choices, generations))

    def _response(self, prefix: str, kind: str, choices: list, generations: list[Generation]) -> dict:
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
            "model": self.served_model_name,
            "choices": choices,
            "usage": usage,
        }

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def _chat_logprobs(self, generation: Generation) -> dict | None:
        if generation.logprobs is None:
            return None

        def entry(token_id, logprob):
            text = self._token_text(token_id)
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        content = [
            {**entry(t.token_id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
            for t in generation.logprobs
        ]
        return {"content": content}

    def _completion_logprobs(self, generation: Generation) -> dict | None:
        if generation.logprobs is None:
            return None
        tokens = [self._token_text(t.token_id) for t in generation.logprobs]
        offsets, offset = [], 0
        for text in tokens:
            offsets.append(offset)
            offset += len(text)
        return {
            "tokens": tokens,
            "token_logprobs": [t.logprob for t in generation.logprobs],
            "top_logprobs": [{self._token_text(i): lp for i, lp in t.top} for t in generation.logprobs],
            "text_offset": offsets,
        }


# ---------------------------------------------------------------------------------------------------------
# Start-up: fail fast, load, warm up, listen
# ---------------------------------------------------------------------------------------------------------


class StartupError(Exception):
    """Printed as one line, `hf_server: <message>`, before exiting with status 1."""


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_local_reference(model: str) -> bool:
    """A path (absolute, relative, ~, or existing) rather than a hub id like `org/name`."""
    return Path(model).expanduser().is_absolute() or model.startswith((".", "~")) or Path(model).exists()


def check_model_reference(model: str) -> None:
    """Catch a wrong local path before spending seconds importing torch; hub ids go on to transformers."""
    if not is_local_reference(model):
        return
    path = Path(model).expanduser()
    if not path.is_dir():
        raise StartupError(f"cannot load model from {model}: no such directory")
    if not (path / "config.json").is_file():
        raise StartupError(f"cannot load model from {model}: no config.json (not a Hugging Face model directory)")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise StartupError(f"cannot load model from {model}: no weights (*.safetensors or *.bin) in it")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise StartupError(f"cannot load model from {model}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def server_api_key(host: str) -> str | None:
    """The key from the environment; refuse to listen beyond this machine without one."""
    if API_KEY_ENV in os.environ and not os.environ[API_KEY_ENV].strip():
        raise StartupError(f"${API_KEY_ENV} is set but empty; set it to a key or unset it")
    key = job_api_key()
    if key is None and not is_loopback(host):
        raise StartupError(f"refusing to listen on {host} without an API key: set ${API_KEY_ENV} or use 127.0.0.1")
    return key


def served_name(model: str) -> str:
    """A local model is served under its directory's base name (its path stays on this machine); a hub id as is."""
    return Path(model).expanduser().resolve().name if is_local_reference(model) else model


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind now so a busy port fails at once; listening starts only when the model is ready."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # allows TIME_WAIT leftovers, not a live listener
        sock.bind(address)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error}") from None
    return sock


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise StartupError("--device cuda requested but torch sees no CUDA device")
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":  # bfloat16 is fast on GPUs; on CPU it is slow and lossy, so float32
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def default_num_threads() -> int:
    """Usable CPUs minus one: the event loop (HTTP, JSON, tokenization) needs a core of its own.

    Measured on 2 cores with the tiny model: 1 torch thread gave ~2x the tokens/s of 2, because the HTTP
    thread and the torch pool otherwise fight over both cores.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - 1)


def load_engine(model: str, device: str, dtype: str, max_batch_size: int, num_threads: int) -> Engine:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from skills_cli.inference.tiny_model import load_tokenizer

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(num_threads)
    device = pick_device(device)
    try:
        tokenizer = load_tokenizer(model)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=pick_dtype(dtype, device))
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise StartupError(f"cannot load model from {model}: {type(error).__name__}: {reason}") from None
    engine = Engine(loaded.to(device).eval(), tokenizer, max_batch_size=max_batch_size)
    try:  # one short generation exercises prefill, decode and the cache surgery before we accept traffic
        engine.generate([tokenizer.encode("1+1=") or [engine.pad_id]], SamplingParams(max_tokens=2, temperature=0))
    except Exception as error:
        raise StartupError(
            f"cannot load model from {model}: warm-up generation failed: {type(error).__name__}: {error}"
        ) from None
    return engine


async def serve(
    engine: Engine,
    sock: socket.socket,
    served_model_name: str,
    api_key: str | None = None,
    aliases: frozenset[str] = frozenset(),
) -> None:
    from aiohttp import web

    worker = threading.Thread(target=engine.run_forever, name="hf-server-engine", daemon=True)
    worker.start()
    # handler_cancellation: a client that disconnects cancels its handler, which cancels its jobs (freeing rows)
    server = OpenAIServer(engine, served_model_name, api_key, aliases)
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.SockSite(runner, sock, shutdown_timeout=1.0).start()
    host, port = sock.getsockname()[:2]
    print(
        f"hf_server: ready: serving {served_model_name} on http://{host}:{port} (device {engine.device}, "
        f"max_batch_size {engine.max_batch_size}, max context {engine.max_context}, "
        f"{'API key required' if api_key else 'no API key'})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    engine.stop()
    await runner.cleanup()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skills_cli.inference.server.hf_server",
        description="OpenAI-compatible server for a Hugging Face causal LM (transformers backend).",
    )
    parser.add_argument("--model", required=True, help="model directory (or hub id when a local HF cache has it)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (printed in the ready line)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto: bfloat16 on GPU, float32 on CPU",
    )
    parser.add_argument("--max_batch_size", type=int, default=64, help="sequences decoded together at most")
    parser.add_argument(
        "--served_model_name", help="name in /v1/models and responses (default: the model directory's base name)"
    )
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: usable CPUs - 1)")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max_batch_size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        api_key = server_api_key(args.host)
        check_model_reference(args.model)
        sock = bind_socket(args.host, args.port)
        engine = load_engine(
            args.model, args.device, args.dtype, args.max_batch_size, args.num_threads or default_num_threads()
        )
    except StartupError as error:
        print(f"hf_server: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    served = args.served_model_name or served_name(args.model)
    asyncio.run(serve(engine, sock, served, api_key, aliases=frozenset({args.model})))


if __name__ == "__main__":
    main()
