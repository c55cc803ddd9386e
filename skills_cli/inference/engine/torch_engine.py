"""`TorchEngine`: in-process batched generation for GRPO rollouts over an HF Llama / Qwen2 / Qwen3 model.

    engine = TorchEngine.from_pretrained(path, device=None, dtype=None, max_batch_size=64, max_seq_len=4096)
    results = engine.generate(prompts, SamplingParams(max_new_tokens=512, temperature=1.0, seed=0))
    engine.load_weights(state_dict)      # refit: HF-named tensors copied in place
    engine.sleep(); engine.wake()        # free / re-create the KV cache (and offload the weights)

Scheduling. The engine owns `max_batch_size` cache slots of `max_seq_len` tokens. Prompts wait in input
order; whenever slots are free, waiting prompts are prefilled into the lowest free slots (grouped by
length, at most `prefill_tokens` padded tokens per forward) and join the running batch, so a request that
stops early hands its slot to the next prompt at once (continuous refill, not waves). Each decode step
runs the lowest `rows` slots, `rows` the smallest power of two (or max_batch_size) covering every busy
slot, and attends over the first `length` cache positions, `length` the smallest power of two >= 64 (or
max_seq_len) covering every busy row: short batches do not pay for the full cache.

CUDA graphs. On a CUDA device each (sampling mode, rows, length) decode step is captured once in a CUDA
graph, lazily, and replayed afterwards: embedding, all layers, LM head, the random draw, sampling and the
state update (next input token, position, counter) run as one graph launch; the host then reads back one
small [rows, 2] tensor (tokens, logprobs) to record results and check stops. Graphs share one memory
pool and read the parameters in place, so `load_weights` needs no re-capture; `sleep` drops them.

Results keep input order. See params.py for what logprobs and finish reasons mean and how seeds work.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import torch

from skills_cli.common.errors import UserError
from skills_cli.inference.engine import sampling
from skills_cli.inference.engine.forward import CompactDecoder, KVCache
from skills_cli.inference.engine.params import (
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    SamplingParams,
    check_prompts,
    resolve_seed,
    row_key,
    stop_ids,
)

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


def eos_token_ids(model) -> frozenset[int]:
    """EOS ids from the model's generation config and config (either may hold an int or a list)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return frozenset(ids)


def resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} was asked for but torch sees no CUDA device")
    return device


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
             "float32": torch.float32, "fp32": torch.float32}  # fmt: skip
    if dtype not in names:
        raise UserError(f"dtype must be one of {', '.join(names)}, not {dtype!r}")
    return names[dtype]


class _Batch:
    """Host-side bookkeeping of one `generate` call: which request sits in which slot, and what it produced."""

    def __init__(self, prompts: list[list[int]], params: SamplingParams, slots: int, max_seq_len: int, stops):
        self.prompts = prompts
        self.params = params
        self.seed = resolve_seed(params.seed)
        self.stops = np.array(sorted(stops), dtype=np.int64)
        self.results: list[Generation | None] = [None] * len(prompts)
        self.waiting = deque(range(len(prompts)))
        self.free = list(range(slots))  # a heap: the lowest free slot first keeps busy slots packed low
        self.request = np.full(slots, -1, dtype=np.int64)
        self.position = np.zeros(slots, dtype=np.int64)  # where the slot's next input token goes
        self.count = np.zeros(slots, dtype=np.int64)
        self.limit = np.zeros(slots, dtype=np.int64)
        self.tokens = np.zeros((slots, params.max_new_tokens), dtype=np.int64)
        self.logprobs = np.zeros((slots, params.max_new_tokens), dtype=np.float32)
        self.max_seq_len = max_seq_len

    def take(self, slots_wanted: int) -> list[tuple[int, int]]:
        """(slot, request) pairs for as many waiting requests as there are free slots."""
        pairs = []
        while self.free and self.waiting and len(pairs) < slots_wanted:
            pairs.append((heapq.heappop(self.free), self.waiting.popleft()))
        return pairs

    def start(self, slot: int, request: int) -> None:
        prompt_length = len(self.prompts[request])
        self.request[slot] = request
        self.position[slot] = prompt_length
        self.count[slot] = 0
        self.limit[slot] = min(self.params.max_new_tokens, self.max_seq_len - prompt_length)

    def record(self, slots: np.ndarray, tokens: np.ndarray, logprobs: np.ndarray) -> None:
        """Append one token to each of `slots` (the first token comes from prefill, the rest from decode)."""
        self.tokens[slots, self.count[slots]] = tokens
        self.logprobs[slots, self.count[slots]] = logprobs
        self.count[slots] += 1

    def finish_done(self, slots: np.ndarray, tokens: np.ndarray) -> None:
        """Retire the slots whose newest token is a stop token or that reached their limit."""
        stopped = np.isin(tokens, self.stops)
        done = stopped | (self.count[slots] >= self.limit[slots])
        for slot, reason_stop in zip(slots[done].tolist(), stopped[done].tolist(), strict=True):
            count = int(self.count[slot])
            self.results[int(self.request[slot])] = Generation(
                token_ids=self.tokens[slot, :count].tolist(),
                logprobs=self.logprobs[slot, :count].tolist(),
                finish_reason=FINISH_STOP if reason_stop else FINISH_LENGTH,
            )
            self.request[slot] = -1
            heapq.heappush(self.free, slot)

    def busy(self) -> np.ndarray:
        return np.nonzero(self.request >= 0)[0]


class TorchEngine:
    """Batched sampling with per-row positions, continuous refill and (on CUDA) graph-captured decode steps."""

    def __init__(
        self,
        model,
        max_batch_size: int = 64,
        max_seq_len: int = 4096,
        use_cuda_graphs: bool | None = None,
        prefill_tokens: int = 16384,
    ):
        """Wrap an HF causal LM that is already on its device and dtype (the engine never copies its weights)."""
        self.model = model.eval()
        self.decoder = CompactDecoder(model)
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.max_batch_size = self._check_positive("max_batch_size", max_batch_size)
        self.max_seq_len = self._check_positive("max_seq_len", max_seq_len)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and max_seq_len > limit:
            raise UserError(f"max_seq_len {max_seq_len} exceeds the model's max_position_embeddings {limit}")
        self.prefill_tokens = self._check_positive("prefill_tokens", prefill_tokens)
        self.eos_token_ids = eos_token_ids(model)
        self.use_cuda_graphs = self.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        if self.use_cuda_graphs and self.device.type != "cuda":
            raise UserError("use_cuda_graphs needs the model on a CUDA device")
        self.row_buckets = power_of_two_buckets(1, self.max_batch_size)
        self.length_buckets = power_of_two_buckets(min(MIN_LENGTH_BUCKET, self.max_seq_len), self.max_seq_len)
        self._offloaded = False
        self._allocate()

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device=None,
        dtype=None,
        max_batch_size: int = 64,
        max_seq_len: int = 4096,
        **kwargs,
    ) -> TorchEngine:
        """Load an HF checkpoint directory; device None = CUDA if present, dtype None = bf16 on CUDA, fp32 on CPU."""
        from transformers import AutoModelForCausalLM

        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{path} is not a Hugging Face model directory (no config.json)")
        device = resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=resolve_dtype(dtype, device))
        return cls(model.to(device), max_batch_size=max_batch_size, max_seq_len=max_seq_len, **kwargs)

    @staticmethod
    def _check_positive(name: str, value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be an integer >= 1, got {value!r}")
        return value

    # ----- memory: cache, state, graphs --------------------------------------------------------------------

    def _allocate(self) -> None:
        """The KV cache, the rope tables and the static decode-state buffers every graph reads and writes."""
        slots, device = self.max_batch_size, self.device
        self.cache = KVCache(self.decoder.num_layers, slots, self.decoder.num_kv_heads, self.max_seq_len,
                             self.decoder.head_dim, self.dtype, device)  # fmt: skip
        with torch.inference_mode():
            self.rope = self.decoder.rope_tables(self.max_seq_len, device, self.dtype)
        self.input_ids = torch.zeros(slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=device)
        self.keys = torch.zeros(slots, dtype=torch.long, device=device)
        self.counters = torch.zeros(slots, dtype=torch.long, device=device)
        self.step_out = torch.zeros(slots, 2, dtype=torch.float32, device=device)
        self.temperature = torch.ones(1, dtype=torch.float32, device=device)
        self.top_k = torch.zeros(1, dtype=torch.long, device=device)
        self.top_p = torch.ones(1, dtype=torch.float32, device=device)
        self.graphs: dict[tuple[str, int, int], torch.cuda.CUDAGraph] = {}
        self._graph_pool = None
        self.asleep = False

    def kv_cache_bytes(self) -> int:
        d = self.decoder
        return KVCache.bytes_needed(d.num_layers, self.max_batch_size, d.num_kv_heads, self.max_seq_len,
                                    d.head_dim, self.dtype)  # fmt: skip

    def sleep(self, offload_weights: bool = True) -> None:
        """Free the KV cache and graphs; with offload_weights (and a CUDA model) move the weights to CPU too."""
        if self.asleep:
            return
        self.graphs.clear()
        self._graph_pool = None
        self.cache = self.rope = None
        if offload_weights and self.device.type == "cuda":
            self.model.to("cpu")
            self._offloaded = True
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.asleep = True

    def wake(self) -> None:
        """Bring the weights back (if offloaded) and re-create the KV cache; graphs are re-captured on demand."""
        if not self.asleep:
            return
        if self._offloaded:
            self.model.to(self.device)
            self._offloaded = False
        self._allocate()

    # ----- refit -------------------------------------------------------------------------------------------

    def load_weights(self, weights: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy HF-named tensors (a state dict, or (name, tensor) pairs; any device/dtype) into the model in place.

        A partial set is fine (refit in buckets); an unknown name or a wrong shape is a UserError and nothing
        is copied. Tied weights (lm_head / embed_tokens) may come under either name. Returns the count copied.
        Works asleep too (the copies land in the offloaded weights).
        """
        items = list(weights.items() if isinstance(weights, Mapping) else weights)
        targets = dict(self.model.named_parameters(remove_duplicate=False))
        targets.update(self.model.named_buffers(remove_duplicate=False))
        unknown = [name for name, _ in items if name not in targets]
        if unknown:
            example = next(iter(targets))
            raise UserError(
                f"load_weights: {len(unknown)} unknown tensor name(s), e.g. {unknown[:3]}; names look like {example!r}"
            )
        for name, tensor in items:
            if tuple(tensor.shape) != tuple(targets[name].shape):
                raise UserError(
                    f"load_weights: {name} has shape {tuple(tensor.shape)}, the model's is {tuple(targets[name].shape)}"
                )
        with torch.no_grad():
            for name, tensor in items:
                targets[name].copy_(tensor)
        return len(items)

    # ----- generation --------------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One Generation per prompt (token-id lists), in input order."""
        if self.asleep:
            raise UserError("the engine is asleep; call wake() before generate()")
        if not isinstance(params, SamplingParams):
            raise UserError(f"params must be a SamplingParams, got {type(params).__name__}")
        prompts = check_prompts(prompts, self.decoder.vocab_size, self.max_seq_len)
        if not prompts:
            return []
        batch = _Batch(prompts, params, self.max_batch_size, self.max_seq_len, stop_ids(params, self.eos_token_ids))
        mode = self._set_sampling(params)
        with torch.inference_mode():
            while True:
                self._admit(batch, mode)
                busy = batch.busy()
                if busy.size == 0:
                    if not batch.waiting:
                        break
                    continue
                self._decode(batch, mode, busy)
        return batch.results

    def _set_sampling(self, params: SamplingParams) -> str:
        """Write the call's sampling scalars into the tensors the graphs read; return the sampling mode."""
        self.temperature.fill_(params.temperature if params.temperature > 0 else 1.0)
        self.top_k.fill_(params.top_k if params.top_k > 0 else self.decoder.vocab_size)
        self.top_p.fill_(params.top_p)
        if params.greedy:
            return sampling.GREEDY
        return sampling.FILTERED if params.filtered else sampling.SAMPLE

    def _admit(self, batch: _Batch, mode: str) -> None:
        """Prefill waiting prompts into free slots until one of the two runs out (first tokens may finish rows)."""
        while batch.free and batch.waiting:
            pairs = batch.take(len(batch.free))
            pairs.sort(key=lambda pair: len(batch.prompts[pair[1]]))
            for group in self._prefill_groups(batch, pairs):
                self._prefill(batch, mode, group)

    def _prefill_groups(self, batch: _Batch, pairs: list[tuple[int, int]]):
        """Length-sorted pairs cut into groups whose padded size (rows x longest prompt) stays within prefill_tokens."""
        group: list[tuple[int, int]] = []
        for pair in pairs:
            width = len(batch.prompts[pair[1]])  # ascending, so the newest is the longest
            if group and (len(group) + 1) * width > self.prefill_tokens:
                yield group
                group = []
            group.append(pair)
        if group:
            yield group

    def _prefill(self, batch: _Batch, mode: str, group: list[tuple[int, int]]) -> None:
        slots = [slot for slot, _ in group]
        requests = [request for _, request in group]
        lengths = [len(batch.prompts[r]) for r in requests]
        width = max(lengths)
        padded = [batch.prompts[r] + [0] * (width - len(batch.prompts[r])) for r in requests]
        device = self.device
        slots_t = torch.tensor(slots, dtype=torch.long, device=device)
        lengths_t = torch.tensor(lengths, dtype=torch.long, device=device)
        ids = torch.tensor(padded, dtype=torch.long, device=device)
        keys = torch.tensor([row_key(batch.seed, r) for r in requests], dtype=torch.long, device=device)
        logits = self.decoder.prefill(self.cache, self.rope, slots_t, ids, lengths_t)
        first = torch.zeros_like(keys)
        tokens, logprobs = sampling.sample(logits, sampling.uniforms(keys, first), mode, self.temperature,
                                           self.top_k, self.top_p)  # fmt: skip
        self.input_ids[slots_t] = tokens
        self.positions[slots_t] = lengths_t
        self.keys[slots_t] = keys
        self.counters[slots_t] = 1
        for slot, request in group:
            batch.start(slot, request)
        slots_np = np.array(slots, dtype=np.int64)
        tokens_np = tokens.cpu().numpy()
        batch.record(slots_np, tokens_np, logprobs.float().cpu().numpy())
        batch.finish_done(slots_np, tokens_np)

    def _decode(self, batch: _Batch, mode: str, busy: np.ndarray) -> None:
        rows = bucket_for(self.row_buckets, int(busy[-1]) + 1)
        length = bucket_for(self.length_buckets, int(batch.position[busy].max()) + 1)
        if self.use_cuda_graphs:
            self._graph(mode, rows, length).replay()
        else:
            self._step(mode, rows, length)
        out = self.step_out[:rows].cpu().numpy()
        batch.position[busy] += 1
        tokens = out[busy, 0].astype(np.int64)
        batch.record(busy, tokens, out[busy, 1])
        batch.finish_done(busy, tokens)

    def _step(self, mode: str, rows: int, length: int) -> None:
        """One decode step of the first `rows` slots, state updated in place (what a graph captures)."""
        logits = self.decoder.decode(self.cache, self.rope, self.input_ids[:rows], self.positions[:rows], length)
        draws = sampling.uniforms(self.keys[:rows], self.counters[:rows])
        tokens, logprobs = sampling.sample(logits, draws, mode, self.temperature, self.top_k, self.top_p)
        self.input_ids[:rows].copy_(tokens)
        self.positions[:rows].add_(1)
        self.counters[:rows].add_(1)
        self.step_out[:rows, 0].copy_(tokens)
        self.step_out[:rows, 1].copy_(logprobs)

    def _graph(self, mode: str, rows: int, length: int):
        """The captured step for this shape, capturing it (after one warm-up run that leaves the state as it was)."""
        key = (mode, rows, length)
        if key in self.graphs:
            return self.graphs[key]
        state = (self.input_ids, self.positions, self.counters, self.step_out)
        saved = [tensor.clone() for tensor in state]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step(mode, rows, length)  # warm-up: lazy library init happens outside the capture
        torch.cuda.current_stream().wait_stream(side)
        for tensor, copy in zip(state, saved, strict=True):
            tensor.copy_(copy)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            self._step(mode, rows, length)
        self._graph_pool = graph.pool()
        self.graphs[key] = graph
        return graph
