"""The fast decode backend: `CompactDecoder` (our forward over the HF modules) with a static slot KV cache and,
on CUDA, every decode step captured in a CUDA graph. For the model families `check_supported` accepts.

Each decode step runs the lowest `rows` slots, `rows` the smallest power of two (or the slot count) covering
every busy slot, and attends over the first `length` cache positions, `length` the smallest power of two
>= 64 (or max_seq_len) covering every busy row: short batches do not pay for the full cache.

CUDA graphs. Each (sampling modes, rows, length) step is captured once, lazily, and replayed afterwards:
embedding, all layers, LM head, the random draw, sampling and the state update (next input token, position,
counter) run as one graph launch (a step with no modes stops at the logits: the scheduler applies penalties and
samples); the host then reads back one small [rows, 2] tensor (tokens, logprobs).
Graphs share one memory pool and read the parameters in place, so a weight refit needs no re-capture;
`free` drops them.
"""

from __future__ import annotations

import numpy as np
import torch

from skills_cli.inference.engine.forward import CompactDecoder, KVCache
from skills_cli.inference.engine.sampling import SlotState

MIN_LENGTH_BUCKET = 64


def power_of_two_buckets(smallest: int, largest: int) -> list[int]:
    """smallest, 2*smallest, ... below `largest`, then `largest` itself."""
    buckets, size = [], smallest
    while size < largest:
        buckets.append(size)
        size *= 2
    return buckets + [largest]


def bucket_for(buckets: list[int], needed: int) -> int:
    """The smallest bucket >= needed (buckets ascending; the last one always fits by construction)."""
    for size in buckets:
        if size >= needed:
            return size
    return buckets[-1]


class CompactBackend:
    """Prefill into cache slots and bucketed, optionally graph-captured decode steps over the lowest slots."""

    def __init__(self, model, slots: int, max_seq_len: int, use_cuda_graphs: bool, prefill_tokens: int):
        self.decoder = CompactDecoder(model)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.slots, self.max_seq_len, self.prefill_tokens = slots, max_seq_len, prefill_tokens
        self.use_cuda_graphs = use_cuda_graphs
        self.row_buckets = power_of_two_buckets(1, slots)
        self.length_buckets = power_of_two_buckets(min(MIN_LENGTH_BUCKET, max_seq_len), max_seq_len)
        self.allocate()

    # ----- memory --------------------------------------------------------------------------------------------

    def allocate(self) -> None:
        """The KV cache, the rope tables and the slot positions every graph reads and writes."""
        d = self.decoder
        self.cache = KVCache(d.num_layers, self.slots, d.num_kv_heads, self.max_seq_len, d.head_dim, self.dtype,
                             self.device)  # fmt: skip
        with torch.inference_mode():
            self.rope = d.rope_tables(self.max_seq_len, self.device, self.dtype)
        self.positions = torch.zeros(self.slots, dtype=torch.long, device=self.device)
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.graph_logits: dict[tuple, torch.Tensor] = {}
        self._graph_pool = None

    def free(self) -> None:
        """Drop the KV cache, rope tables and graphs (`allocate` makes them again)."""
        self.graphs.clear()
        self.graph_logits.clear()
        self._graph_pool = None
        self.cache = self.rope = None

    def kv_cache_bytes(self) -> int:
        d = self.decoder
        return KVCache.bytes_needed(d.num_layers, self.slots, d.num_kv_heads, self.max_seq_len, d.head_dim,
                                    self.dtype)  # fmt: skip

    # ----- the backend interface -------------------------------------------------------------------------------

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Run right-padded prompts into `slots`; logits [len(slots), vocab] (model dtype) at each last token."""
        lengths = [len(prompt) for prompt in prompts]
        width = max(lengths)
        padded = [prompt + [0] * (width - len(prompt)) for prompt in prompts]
        slots_t = torch.tensor(slots, dtype=torch.long, device=self.device)
        lengths_t = torch.tensor(lengths, dtype=torch.long, device=self.device)
        ids = torch.tensor(padded, dtype=torch.long, device=self.device)
        logits = self.decoder.prefill(self.cache, self.rope, slots_t, ids, lengths_t)
        self.positions[slots_t] = lengths_t
        return logits

    def decode(self, busy: np.ndarray, positions: np.ndarray, state: SlotState, modes: tuple[str, ...]):
        """One sampled step of the lowest slots covering `busy`; (logits [rows, vocab], each busy slot's row).
        With no `modes` the step only computes the logits and the caller samples (penalties)."""
        rows = bucket_for(self.row_buckets, int(busy[-1]) + 1)
        length = bucket_for(self.length_buckets, int(positions.max()) + 1)
        if self.use_cuda_graphs:
            key = (modes, rows, length)
            self._graph(state, key).replay()
            return self.graph_logits[key], busy
        return self._step(state, modes, rows, length), busy

    def release(self, slots: list[int]) -> None:
        """Nothing to do: a freed slot's cache row is overwritten by the next prefill into it."""

    def reset(self) -> None:
        """Nothing to do: slot contents are rewritten on admission."""

    # ----- the step and its graphs -------------------------------------------------------------------------------

    def _step(self, state: SlotState, modes: tuple[str, ...], rows: int, length: int) -> torch.Tensor:
        """One decode step of the first `rows` slots, state updated in place (what a graph captures)."""
        logits = self.decoder.decode(self.cache, self.rope, state.input_ids[:rows], self.positions[:rows], length)
        if modes:
            state.sample(logits, slice(0, rows), modes)
        self.positions[:rows].add_(1)
        return logits

    def _graph(self, state: SlotState, key: tuple):
        """The captured step for this key, capturing it (after one warm-up run that leaves the state as it was)."""
        if key in self.graphs:
            return self.graphs[key]
        modes, rows, length = key
        buffers = (state.input_ids, self.positions, state.counters, state.step_out)
        saved = [tensor.clone() for tensor in buffers]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(state, modes, rows, length)  # warm-up: lazy library init happens outside the capture
        torch.cuda.current_stream().wait_stream(side)
        for tensor, copy in zip(buffers, saved, strict=True):
            tensor.copy_(copy)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            self.graph_logits[key] = self._step(state, modes, rows, length)
        self._graph_pool = graph.pool()
        self.graphs[key] = graph
        return graph
