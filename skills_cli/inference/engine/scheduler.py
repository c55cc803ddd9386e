"""The one generation core: continuous batching of requests over a decode backend's cache slots.

    scheduler = Scheduler(backend, vocab_size, device, eos_ids, tokenizer=None)
    scheduler.submit(Request(prompt_ids, params, key, on_done))   # any time, from the owning thread
    while scheduler.has_work:
        scheduler.step()                                          # on_done(Generation) as requests finish

`TorchEngine.generate` is "submit all, step until done"; the hf server's worker thread submits what its HTTP
handlers queue and steps while anything runs. A backend (compact_backend.CompactBackend for the model
families our own forward reproduces, hf_backend.HFBackend for any HF causal LM) owns the KV cache and the
forward; everything else is here and in the modules it uses, once: sampling (sampling.SlotState),
parameters and results (params), and when a request ends (stopping).

A request with penalties (penalties.py) is sampled by the scheduler from its penalised logits (the backend's
step then stops at the logits); a batch without any costs nothing extra.

Each step admits waiting requests into free slots (lowest first, grouped by length, at most the backend's
`prefill_tokens` padded tokens per prefill) and samples their first tokens, then runs one decode step over
every busy slot, so a request that ends hands its slot to the next one at once. Request i of a call samples
from random stream `key` = row_key(seed, i), so its tokens depend on neither its slot nor its batch-mates.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from skills_cli.inference.engine import sampling
from skills_cli.inference.engine.params import (
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    SamplingParams,
    TokenLogprob,
    resolve_seed,
    row_key,
)
from skills_cli.inference.engine.penalties import apply_penalties, needs_penalties
from skills_cli.inference.engine.stopping import final_text, stop_ids, text_before_stop


@dataclass
class Request:
    """One prompt to complete; `on_done` gets its Generation (or the exception that failed it)."""

    prompt: list[int]
    params: SamplingParams
    key: int  # the random stream: row_key(seed, index)
    on_done: Callable[[Generation | BaseException], None]
    cancelled: bool = False


def requests_for(prompts: list[list[int]], params: SamplingParams, callbacks: list[Callable]) -> list[Request]:
    """One request per prompt of a call; prompt i draws from stream (seed, i), the seed the OS's if None."""
    seed = resolve_seed(params.seed)
    pairs = zip(prompts, callbacks, strict=True)
    return [Request(list(prompt), params, row_key(seed, i), done) for i, (prompt, done) in enumerate(pairs)]


class Scheduler:
    """Slots, waiting requests and per-slot results over one backend; not thread safe (one owning thread)."""

    def __init__(self, backend, vocab_size: int, device, eos_ids: frozenset[int], tokenizer=None):
        self.backend, self.eos_ids, self.tokenizer = backend, eos_ids, tokenizer
        slots, length = backend.slots, backend.max_seq_len
        self.state = sampling.SlotState(slots, vocab_size, device)
        self.waiting: deque[Request] = deque()
        self.free = list(range(slots))  # a heap: the lowest free slot first keeps busy slots packed low
        self.requests: list[Request | None] = [None] * slots
        self.stop_sets: list[frozenset[int]] = [frozenset()] * slots
        self.token_logprobs: list[list[TokenLogprob]] = [[] for _ in range(slots)]
        self.prompt_length = np.zeros(slots, dtype=np.int64)
        self.count = np.zeros(slots, dtype=np.int64)
        self.limit = np.zeros(slots, dtype=np.int64)
        self.mode = np.zeros(slots, dtype=np.int64)
        self.occupied = np.zeros(slots, dtype=bool)
        self.wants_logprobs = np.zeros(slots, dtype=bool)
        self.penalised = np.zeros(slots, dtype=bool)
        self.has_stop_strings = np.zeros(slots, dtype=bool)
        self.stop_table = np.full((slots, 1), -1, dtype=np.int64)  # each slot's stop ids, padded with -1
        self.tokens = np.zeros((slots, length), dtype=np.int64)
        self.logprobs = np.zeros((slots, length), dtype=np.float32)
        self.max_rows_seen = 0

    # -- the owner's interface --------------------------------------------------------------------------------

    def submit(self, request: Request) -> None:
        self.waiting.append(request)

    @property
    def active(self) -> int:
        return len(self.requests) - len(self.free)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting) or self.active > 0

    def step(self) -> None:
        """Admit what fits, then one decode step of every busy slot."""
        self._admit()
        busy = self.busy()
        if busy.size:
            self.max_rows_seen = max(self.max_rows_seen, int(busy.size))
            self._decode(busy)

    def busy(self) -> np.ndarray:
        return np.nonzero(self.occupied)[0]

    def drop_cancelled(self) -> int:
        """Free the slots of cancelled requests and forget cancelled waiting ones; returns how many ran."""
        cancelled = [slot for slot, r in enumerate(self.requests) if r is not None and r.cancelled]
        self.waiting = deque(r for r in self.waiting if not r.cancelled)
        self._free_slots(cancelled)
        return len(cancelled)

    def fail_all(self, error: BaseException) -> None:
        """Fail every running and waiting request with `error` and start afresh (after a failed forward)."""
        failed = [r for r in self.requests if r is not None] + list(self.waiting)
        self.waiting.clear()
        self._free_slots([slot for slot, r in enumerate(self.requests) if r is not None])
        self.backend.reset()
        for request in failed:
            request.on_done(error)

    # -- admission --------------------------------------------------------------------------------------------

    def _admit(self) -> None:
        """Prefill waiting requests into free slots until one of the two runs out (first tokens may end some)."""
        while self.free and self.waiting:
            pairs = []
            while self.free and self.waiting:
                pairs.append((heapq.heappop(self.free), self.waiting.popleft()))
            pairs.sort(key=lambda pair: len(pair[1].prompt))
            for group in self._prefill_groups(pairs):
                self._prefill(group)

    def _prefill_groups(self, pairs: list[tuple[int, Request]]):
        """Length-sorted pairs cut into groups whose padded size (rows x longest prompt) stays within budget."""
        group: list[tuple[int, Request]] = []
        for pair in pairs:
            width = len(pair[1].prompt)  # ascending, so the newest is the longest
            if group and (len(group) + 1) * width > self.backend.prefill_tokens:
                yield group
                group = []
            group.append(pair)
        if group:
            yield group

    def _start(self, slot: int, request: Request) -> None:
        params = request.params
        self.requests[slot] = request
        self.occupied[slot] = True
        self.wants_logprobs[slot] = params.logprobs
        self.penalised[slot] = needs_penalties(params)
        self.has_stop_strings[slot] = bool(params.stop)
        self.prompt_length[slot] = len(request.prompt)
        self.count[slot] = 0
        self.limit[slot] = min(params.max_new_tokens, self.backend.max_seq_len - len(request.prompt))
        self.mode[slot] = sampling.MODES.index(sampling.mode_of(params))
        self.token_logprobs[slot] = []
        stops = stop_ids(params, self.eos_ids)
        self.stop_sets[slot] = stops
        if len(stops) > self.stop_table.shape[1]:
            self.stop_table = np.pad(self.stop_table, ((0, 0), (0, len(stops) - self.stop_table.shape[1])),
                                     constant_values=-1)  # fmt: skip
        self.stop_table[slot] = -1
        self.stop_table[slot, : len(stops)] = sorted(stops)

    def _prefill(self, group: list[tuple[int, Request]]) -> None:
        slots = [slot for slot, _ in group]
        for slot, request in group:
            self._start(slot, request)
        self.state.start(slots, [r.params for _, r in group], [r.key for _, r in group])
        self.max_rows_seen = max(self.max_rows_seen, self.active)
        logits = self.backend.prefill(slots, [r.prompt for _, r in group])
        index = torch.tensor(slots, dtype=torch.long, device=logits.device)
        slots_np, rows = np.array(slots, dtype=np.int64), np.arange(len(slots))
        if self.penalised[slots_np].any():
            logits = self._sample_penalised(slots_np, logits, rows)
        else:
            self.state.sample(logits, index, self._modes(slots_np))
        out = self.state.step_out[index].cpu().numpy()
        self._record(slots_np, out, logits, rows)

    # -- decoding and results ---------------------------------------------------------------------------------

    def _modes(self, slots: np.ndarray) -> tuple[str, ...]:
        return tuple(sampling.MODES[code] for code in np.unique(self.mode[slots]).tolist())

    def _decode(self, busy: np.ndarray) -> None:
        positions = self.prompt_length[busy] + self.count[busy] - 1  # where each slot's input token goes
        penalised = bool(self.penalised[busy].any())  # then the backend stops at the logits and we sample
        logits, rows = self.backend.decode(busy, positions, self.state, () if penalised else self._modes(busy))
        if penalised:
            logits, rows = self._sample_penalised(busy, logits, rows), np.arange(busy.size)
        out = self.state.step_out[: int(busy[-1]) + 1].cpu().numpy()[busy]
        self._record(busy, out, logits, rows)

    def _sample_penalised(self, slots: np.ndarray, logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Sample `slots` (logits row rows[i] is slots[i]'s) from their logits after penalties; returns the raw
        rows in slot order: reported logprobs are of the logits before penalties (vLLM's default
        `raw_logprobs`), sampling logprobs of the penalised ones the token was drawn from."""
        raw = logits[torch.as_tensor(rows, device=logits.device)]
        requests = [self.requests[slot] for slot in slots.tolist()]
        outputs = [self.tokens[slot, : self.count[slot]].tolist() for slot in slots.tolist()]
        penalised = apply_penalties(raw.to(torch.float32, copy=True), [r.prompt for r in requests], outputs,
                                    [r.params for r in requests])  # fmt: skip
        self.state.sample(penalised, torch.as_tensor(slots, device=logits.device), self._modes(slots))
        return raw

    def _record(self, slots: np.ndarray, out: np.ndarray, logits: torch.Tensor, rows: np.ndarray) -> None:
        """Append each slot's new token (out[i] = (token, logprob); logits row rows[i]), then end the done ones."""
        tokens = out[:, 0].astype(np.int64)
        self.tokens[slots, self.count[slots]] = tokens
        self.logprobs[slots, self.count[slots]] = out[:, 1]
        self.count[slots] += 1
        wanting = np.nonzero(self.wants_logprobs[slots])[0]
        if wanting.size:
            self._record_raw_logprobs(slots[wanting], tokens[wanting], logits, rows[wanting])
        self._finish_done(slots, tokens)

    def _record_raw_logprobs(self, slots: np.ndarray, tokens: np.ndarray, logits, rows: np.ndarray) -> None:
        top_n = max(self.requests[slot].params.top_logprobs for slot in slots.tolist())
        index = torch.as_tensor(rows, device=logits.device)
        chosen_ids = torch.as_tensor(tokens, device=logits.device)
        chosen, top = sampling.raw_logprobs(logits[index], chosen_ids, top_n)
        chosen = chosen.tolist()
        top_values, top_ids = (top.values.tolist(), top.indices.tolist()) if top is not None else ([], [])
        for i, slot in enumerate(slots.tolist()):
            n = self.requests[slot].params.top_logprobs
            best = tuple(zip(top_ids[i][:n], top_values[i][:n], strict=True)) if n else ()
            self.token_logprobs[slot].append(TokenLogprob(int(tokens[i]), chosen[i], best))

    def _finish_done(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """End the slots whose newest token is a stop token, completes a stop string, or reaches the limit,
        in that order of precedence (see stopping.py), vectorised over the batch."""
        stopped = (self.stop_table[slots] == tokens[:, None]).any(axis=1)
        done = stopped | (self.count[slots] >= self.limit[slots])
        texts: dict[int, str] = {}
        for i in np.nonzero(self.has_stop_strings[slots] & ~stopped)[0].tolist():
            text = self._text_before_stop(int(slots[i]))
            if text is not None:
                texts[i], done[i], stopped[i] = text, True, True
        ended = [
            (int(slots[i]), FINISH_STOP if stopped[i] else FINISH_LENGTH, texts.get(i)) for i in np.nonzero(done)[0]
        ]
        if ended:
            results = [self._generation(slot, reason, text) for slot, reason, text in ended]
            self._free_slots([slot for slot, _, _ in ended])
            for request, generation in results:
                request.on_done(generation)

    def _text_before_stop(self, slot: int) -> str | None:
        ids = self.tokens[slot, : self.count[slot]].tolist()
        return text_before_stop(self.tokenizer, ids, self.requests[slot].params.stop)

    def _generation(self, slot: int, reason: str, text: str | None) -> tuple[Request, Generation]:
        request, count = self.requests[slot], int(self.count[slot])
        token_ids = self.tokens[slot, :count].tolist()
        if text is None and self.tokenizer is not None:
            text = final_text(self.tokenizer, token_ids, reason, self.stop_sets[slot])
        generation = Generation(
            token_ids=token_ids,
            logprobs=self.logprobs[slot, :count].tolist(),
            finish_reason=reason,
            text=text,
            prompt_tokens=len(request.prompt),
            token_logprobs=self.token_logprobs[slot] if request.params.logprobs else None,
        )
        return request, generation

    def _free_slots(self, slots: list[int]) -> None:
        if not slots:
            return
        for slot in slots:
            self.requests[slot] = None
            self.occupied[slot] = False
            heapq.heappush(self.free, slot)
        self.backend.release(slots)
