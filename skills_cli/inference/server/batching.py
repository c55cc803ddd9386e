"""The hf server's engine: a worker thread that owns the model and drives the shared generation core.

HTTP handlers submit requests (`submit`, thread safe); the worker moves them into the core's scheduler
(engine/scheduler.py: continuous batching over cache slots, the one sampler, parameters and stop rule, the
same core GRPO rollouts use) and steps it while anything runs, so new requests join while others are
mid-generation. Cancelled requests (a client went away) leave the batch at the next step.

Two services beside generation, both on the worker thread (it owns the model): `watch` reports a streamed
request's tokens so far after every step (read from the scheduler's per-slot buffers), and `ScoreJob` runs
one forward over a prompt for its own logprobs (the `echo` of /v1/completions with logprobs).

The decode backend is the compact one (engine/compact_backend.py: our forward, a static slot KV cache, CUDA
graphs on a GPU), as GRPO rollouts use, when it reproduces the model and a cache of max_batch_size slots of
the full context fits in KV_CACHE_BUDGET of the memory; otherwise the general one (engine/hf_backend.py: the
model's own forward over a DynamicCache), which serves any HF causal LM with memory that follows the traffic.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from skills_cli.common.errors import UserError
from skills_cli.inference.engine import sampling
from skills_cli.inference.engine.compact_backend import CompactBackend
from skills_cli.inference.engine.forward import KVCache, check_supported
from skills_cli.inference.engine.hf_backend import HFBackend
from skills_cli.inference.engine.params import Generation, SamplingParams, TokenLogprob
from skills_cli.inference.engine.scheduler import Request, Scheduler, requests_for
from skills_cli.inference.engine.stopping import eos_token_ids


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


def max_context_length(model, tokenizer) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    length = getattr(config, "max_position_embeddings", None)
    if not length:  # no positional limit in the config: fall back to the tokenizer's, if it states a real one
        length = tokenizer.model_max_length if tokenizer.model_max_length < 10**7 else 4096
    return int(length)


def vocabulary_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)


@dataclass
class ScoreJob:
    """The logprob of each prompt token after the first under the model, with the `top_n` best alternatives
    (TokenLogprob per position); `on_done` gets the list or the exception."""

    prompt: list[int]
    top_n: int
    on_done: Any
    cancelled: bool = False


def score_prompt(model, prompt: list[int], top_n: int) -> list[TokenLogprob]:
    device = next(model.parameters()).device
    ids = torch.tensor([prompt], device=device)
    logits = model(input_ids=ids).logits[0, :-1].float()
    chosen, top = sampling.raw_logprobs(logits, ids[0, 1:], top_n)
    if top is None:
        top_values = top_ids = [[] for _ in prompt[1:]]
    else:
        top_values, top_ids = top.values.tolist(), top.indices.tolist()
    return [
        TokenLogprob(token, logprob, tuple(zip(ids_, values, strict=True)))
        for token, logprob, ids_, values in zip(prompt[1:], chosen.tolist(), top_ids, top_values, strict=True)
    ]


KV_CACHE_BUDGET = 0.25  # of the free GPU memory, or of the machine's memory on CPU
PREFILL_TOKENS = 16384  # padded prompt tokens per prefill forward at most


def _free_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def decode_backend(model, slots: int, max_context: int, pad_id: int):
    """The compact backend when it reproduces the model and its static cache fits the budget, else the HF one."""
    device = next(model.parameters()).device
    try:
        check_supported(model)
    except UserError:
        return HFBackend(model, slots, max_context, pad_id, PREFILL_TOKENS)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    needed = KVCache.bytes_needed(config.num_hidden_layers, slots, config.num_key_value_heads, max_context, head_dim,
                                  next(model.parameters()).dtype)  # fmt: skip
    if needed > KV_CACHE_BUDGET * _free_memory(device):
        return HFBackend(model, slots, max_context, pad_id, PREFILL_TOKENS)
    return CompactBackend(model, slots, max_context, device.type == "cuda", PREFILL_TOKENS)


class Engine:
    """Owns the model; `run_forever` (the worker thread) serves the submitted requests with continuous batching."""

    def __init__(self, model, tokenizer, max_batch_size: int = 64):
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.max_batch_size = max_batch_size
        self.max_context = max_context_length(model, tokenizer)
        eos_ids = self.eos_ids = eos_token_ids(model, tokenizer)
        self.vocab_size = vocabulary_size(model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos_ids, default=0)
        backend = decode_backend(model, max_batch_size, self.max_context, self.pad_id)
        self.scheduler = Scheduler(backend, self.vocab_size, self.device, eos_ids, tokenizer)
        self.metrics = EngineMetrics()
        self.started = time.time()
        self.incoming: queue.Queue[Request | ScoreJob | None] = queue.Queue()
        self.watchers: dict[int, Any] = {}  # id(request) -> progress callback, for streamed requests
        self.metrics_lock = threading.Lock()
        self._stopping = False

    # -- public, thread safe --------------------------------------------------------------------------------

    def submit(self, request: Request | ScoreJob) -> None:
        self.incoming.put(request)

    def watch(self, request: Request, on_progress) -> None:
        """Before submitting `request`: after each step that it is still running, call
        on_progress(token ids so far, their TokenLogprobs or None) on the worker thread."""
        self.watchers[id(request)] = on_progress

    def unwatch(self, request: Request) -> None:
        """Forget a watched request that was cancelled (a finished one is forgotten by the worker)."""
        self.watchers.pop(id(request), None)

    def stop(self) -> None:
        self._stopping = True
        self.incoming.put(None)  # wake a worker blocked on an empty queue

    def metrics_snapshot(self) -> dict[str, Any]:
        with self.metrics_lock:
            queued = self.incoming.qsize() + len(self.scheduler.waiting)
            return self.metrics.snapshot(self.started, self.scheduler.active, queued)

    def count(self, **increments: int) -> None:
        """Add to the metrics counters (from any thread)."""
        with self.metrics_lock:
            for name, amount in increments.items():
                setattr(self.metrics, name, getattr(self.metrics, name) + amount)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Synchronous generation on the calling thread (warm-up, in-process use); the worker must not be running."""
        results: list = [None] * len(prompts)
        callbacks = [lambda result, i=index: results.__setitem__(i, result) for index in range(len(prompts))]
        for request in requests_for(prompts, params, callbacks):
            self.submit(request)
        while any(result is None for result in results):
            self._iterate(block=False)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return results

    def run_forever(self) -> None:
        while not self._stopping:
            self._iterate(block=True)

    # -- one iteration: take what was submitted, drop what was cancelled, one scheduler step --------------------

    def _iterate(self, block: bool) -> None:
        self._take_requests(block=block and not self.scheduler.has_work)
        started = time.perf_counter()
        with torch.inference_mode():
            self.count(sequences_cancelled=self.scheduler.drop_cancelled())
            if not self.scheduler.has_work:
                return
            try:
                self.scheduler.step()
            except Exception as error:  # a failed forward must not kill the server: fail these requests, carry on
                self.scheduler.fail_all(RuntimeError(f"generation failed: {type(error).__name__}: {error}"))
            if self.watchers:
                self._report_progress()
        with self.metrics_lock:
            self.metrics.busy_seconds += time.perf_counter() - started
            self.metrics.max_batch_size_seen = max(self.metrics.max_batch_size_seen, self.scheduler.max_rows_seen)

    def _take_requests(self, block: bool) -> None:
        """Move submitted requests into the scheduler; when idle, wait for the first one (or stop())."""
        while True:
            try:
                request = self.incoming.get(timeout=0.5) if block else self.incoming.get_nowait()
            except queue.Empty:
                if block and not self._stopping:
                    continue
                return
            if request is None:  # stop() wake-up
                return
            if isinstance(request, ScoreJob):
                if not request.cancelled:
                    self._score(request)
                continue
            if not request.cancelled:
                self.count(prompt_tokens=len(request.prompt))
                self.scheduler.submit(self._counted(request))
            block = False

    def _score(self, job: ScoreJob) -> None:
        try:
            with torch.inference_mode():
                result = score_prompt(self.model, job.prompt, job.top_n)
        except Exception as error:  # as a failed generation: this request fails, the server carries on
            result = RuntimeError(f"prompt scoring failed: {type(error).__name__}: {error}")
        job.on_done(result)

    def _report_progress(self) -> None:
        """Each watched running request's tokens so far (the scheduler's slot buffers) to its watcher."""
        scheduler = self.scheduler
        for slot, request in enumerate(scheduler.requests):
            watcher = self.watchers.get(id(request)) if request is not None else None
            if watcher is not None:
                count = int(scheduler.count[slot])
                entries = list(scheduler.token_logprobs[slot]) if request.params.logprobs else None
                watcher(scheduler.tokens[slot, :count].tolist(), entries)

    def _counted(self, request: Request) -> Request:
        """The request with its completion counted in the metrics before its submitter hears of it."""
        notify = request.on_done

        def on_done(result) -> None:
            self.watchers.pop(id(request), None)
            if isinstance(result, Generation):
                self.count(sequences_finished=1, tokens_generated=len(result.token_ids))
            notify(result)

        request.on_done = on_done
        return request
