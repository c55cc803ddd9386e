"""The inference engine core: token ids in, sampled token ids + logprobs + finish reasons out.

    from skills_cli.inference.engine import SamplingParams, TorchEngine
    engine = TorchEngine.from_pretrained(path, max_batch_size=64, max_seq_len=4096)
    results = engine.generate(prompts, SamplingParams(max_new_tokens=512, temperature=1.0, seed=0))

One core serves every in-process use: `scheduler.Scheduler` (continuous batching over cache slots) with
the one sampler (sampling.py), parameters and results (params.py) and stop rule (stopping.py), over a
decode backend: `compact_backend` (our forward, static slot KV cache, CUDA graphs) or `hf_backend` (any HF
causal LM through its own forward); on CUDA the compact decode step runs Triton kernels (cuda_kernels.py:
attention over each row's own length, streaming sampling, RMSNorm, RoPE + cache write). `TorchEngine` (torch_engine.py, GRPO rollouts) drives it with the
compact backend; the hf server (inference/server) drives it from its worker thread. `VllmEngine`
(vllm_engine.py) adapts a colocated vLLM `LLM` to TorchEngine's interface. Engines are imported lazily,
so importing this package (e.g. for `SamplingParams`) pulls in neither torch nor vLLM.
"""

from __future__ import annotations

from skills_cli.inference.engine.params import FINISH_LENGTH, FINISH_STOP, Generation, SamplingParams

__all__ = ["FINISH_LENGTH", "FINISH_STOP", "Generation", "SamplingParams", "TorchEngine", "VllmEngine"]


def __getattr__(name: str):
    if name == "TorchEngine":
        from skills_cli.inference.engine.torch_engine import TorchEngine

        return TorchEngine
    if name == "VllmEngine":
        from skills_cli.inference.engine.vllm_engine import VllmEngine

        return VllmEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
