"""`TorchEngine`: in-process batched generation for GRPO rollouts over an HF Llama / Qwen2 / Qwen3 model.

    engine = TorchEngine.from_pretrained(path, device=None, dtype=None, max_batch_size=64, max_seq_len=4096)
    results = engine.generate(prompts, SamplingParams(max_new_tokens=512, temperature=1.0, seed=0))
    engine.load_weights(state_dict)      # refit: HF-named tensors copied in place
    engine.sleep(); engine.wake()        # free / re-create the KV cache (and offload the weights)

`generate` submits every prompt to the shared generation core (scheduler.Scheduler: continuous refill of
`max_batch_size` cache slots, the one sampler and stop rule) and steps it until all are done, over the
compact backend (compact_backend.CompactBackend: our forward, a static slot KV cache of `max_seq_len`
tokens per slot, CUDA graphs on a CUDA device). Results keep input order. See params.py for what logprobs
and finish reasons mean and how seeds work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from skills_cli.common.errors import UserError
from skills_cli.inference.engine.compact_backend import CompactBackend
from skills_cli.inference.engine.params import Generation, SamplingParams, check_prompts, check_token_only
from skills_cli.inference.engine.scheduler import Scheduler, requests_for
from skills_cli.inference.engine.stopping import eos_token_ids


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


def _check_positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return value


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
        parameter = next(model.parameters())
        self.device, self.dtype = parameter.device, parameter.dtype
        self.max_batch_size = _check_positive("max_batch_size", max_batch_size)
        self.max_seq_len = _check_positive("max_seq_len", max_seq_len)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit and max_seq_len > limit:
            raise UserError(f"max_seq_len {max_seq_len} exceeds the model's max_position_embeddings {limit}")
        self.prefill_tokens = _check_positive("prefill_tokens", prefill_tokens)
        self.eos_token_ids = eos_token_ids(model)
        self.use_cuda_graphs = self.device.type == "cuda" if use_cuda_graphs is None else use_cuda_graphs
        if self.use_cuda_graphs and self.device.type != "cuda":
            raise UserError("use_cuda_graphs needs the model on a CUDA device")
        self.backend = CompactBackend(model, self.max_batch_size, self.max_seq_len, self.use_cuda_graphs,
                                      self.prefill_tokens)  # fmt: skip
        self.decoder = self.backend.decoder
        self.scheduler = Scheduler(self.backend, self.decoder.vocab_size, self.device, self.eos_token_ids)
        self._offloaded = False
        self.asleep = False

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

    # ----- memory: cache and graphs --------------------------------------------------------------------------

    @property
    def cache(self):
        """The KV cache (None while asleep)."""
        return self.backend.cache

    @property
    def graphs(self) -> dict:
        """The captured decode steps, by (sampling modes, rows, length)."""
        return self.backend.graphs

    def kv_cache_bytes(self) -> int:
        return self.backend.kv_cache_bytes()

    def sleep(self, offload_weights: bool = True) -> None:
        """Free the KV cache and graphs; with offload_weights (and a CUDA model) move the weights to CPU too."""
        if self.asleep:
            return
        self.backend.free()
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
        self.backend.allocate()
        self.asleep = False

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
        check_token_only(params, "TorchEngine")
        prompts = check_prompts(prompts, self.decoder.vocab_size, self.max_seq_len)
        results: list[Generation | None] = [None] * len(prompts)
        callbacks = [lambda result, i=index: results.__setitem__(i, result) for index in range(len(prompts))]
        for request in requests_for(prompts, params, callbacks):
            self.scheduler.submit(request)
        try:
            with torch.inference_mode():
                while self.scheduler.has_work:
                    self.scheduler.step()
        except BaseException as error:  # e.g. out of memory: leave no half-run requests for the next call
            self.scheduler.fail_all(error)
            raise
        return results
