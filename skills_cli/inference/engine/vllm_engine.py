"""`VllmEngine`: a colocated vLLM `LLM` behind the same interface as `TorchEngine`.

    engine = VllmEngine.from_pretrained(path, max_batch_size=64, max_seq_len=4096, gpu_memory_utilization=0.5)
    results = engine.generate(prompts, SamplingParams(max_new_tokens=512, seed=0))  # list[Generation]
    engine.sleep()          # vLLM sleep level 1: weights to CPU, KV cache discarded
    engine.wake()           # everything back on the GPU
    engine.load_weights(state_dict)  # refit from HF-named tensors

vLLM is imported only when an engine is built (a missing vLLM is a UserError, never an ImportError at
import time), so this module can be imported and its pure parts tested anywhere.

How the mapping works (`vllm_request_kwargs`, pure):
  * max_new_tokens -> max_tokens; temperature / top_p / min_p unchanged; top_k 0 ("no limit") -> -1, the value
    every vLLM version accepts for "disabled"; stop_token_ids and ignore_eos unchanged;
  * seed: request i gets its own vLLM seed `row_key(seed, i)`, so, as with the torch engine, a request's
    tokens depend on (seed, i) only; a call seed of None draws one seed from the OS for the call;
  * logprobs=0 asks vLLM for the sampled token's logprob alone; detokenize=False skips text work.
The engine is built with `logprobs_mode="processed_logprobs"` where the installed vLLM has it, i.e.
log-softmax after temperature (and after top-k/top-p, where vLLM renormalises over the kept tokens: with
filtering on, that differs from the torch engine's unfiltered log_softmax(logits / T)). Older vLLMs return
raw logprobs (temperature 1); the engine says so in `logprobs_are_raw`.

Refit: `load_weights` hands (name, tensor) pairs to the model's own `load_weights` inside the worker, via
`LLM.apply_model` where vLLM has it, else via the in-process driver worker, then resets the prefix cache so
no cached KV of the old weights is reused. Tensors are passed by reference, which needs the engine core in
this process: `from_pretrained` sets VLLM_ENABLE_V1_MULTIPROCESSING=0 unless the caller set it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
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


def import_vllm():
    """The vllm module, or a UserError that says how to get it."""
    try:
        import vllm
    except ImportError as error:
        raise UserError(
            f"the vLLM rollout engine needs vllm, which is not importable here ({error}); "
            "install it with `pip install 'skills-cli[vllm]'` on a CUDA machine, or use TorchEngine"
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


class VllmEngine:
    """generate / load_weights / sleep / wake over a vLLM `LLM` created with enable_sleep_mode=True."""

    def __init__(self, llm, logprobs_are_raw: bool = False):
        self.llm = llm
        self.logprobs_are_raw = logprobs_are_raw
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
        """A colocated vLLM engine: sleep mode on, no tokenizer needed (token ids in and out)."""
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        vllm = import_vllm()
        arguments = {
            "model": str(path),
            "dtype": dtype,
            "max_num_seqs": max_batch_size,
            "max_model_len": max_seq_len,
            "gpu_memory_utilization": gpu_memory_utilization,
            "enable_sleep_mode": True,
            "skip_tokenizer_init": True,
            "seed": seed,
            "logprobs_mode": "processed_logprobs",
            **llm_kwargs,
        }
        try:
            return cls(vllm.LLM(**arguments))
        except TypeError as error:  # a vLLM without logprobs_mode
            if "logprobs_mode" not in str(error) or "logprobs_mode" in llm_kwargs:
                raise
            arguments.pop("logprobs_mode")
            return cls(vllm.LLM(**arguments), logprobs_are_raw=True)

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
        """Load HF-named tensors through the vLLM model's own `load_weights` (it handles fused q/k/v etc.)."""
        if self.asleep:
            raise UserError("wake() the engine before load_weights(): sleeping weights live in vLLM's CPU backup")
        items = list(weights.items() if isinstance(weights, Mapping) else weights)

        def load(model):
            model.load_weights(weights=items)

        if hasattr(self.llm, "apply_model"):
            self.llm.apply_model(load)
        else:
            load(self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.model)
        self.llm.reset_prefix_cache()
        return len(items)

    def sleep(self) -> None:
        """Level 1: weights backed up to CPU, KV cache discarded."""
        if not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
