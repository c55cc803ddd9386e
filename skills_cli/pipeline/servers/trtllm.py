"""`trtllm`: TensorRT-LLM's `trtllm-serve` on an engine folder (what `ns convert --convert_to trtllm` builds), on
one node. It has no API key option, so it only ever listens on 127.0.0.1 (where only the job's own client, on the
same node, reaches it)."""

from __future__ import annotations

from skills_cli.pipeline.servers.base import PORT, SERVER_KINDS, ServerKind, ServerSpec


def trtllm_argv(spec: ServerSpec, python: str) -> list[str]:
    # since TensorRT-LLM 1.0 trtllm-serve loads models with its PyTorch backend unless told otherwise, and that
    # backend cannot load engines; a user's own `--backend` in the server args comes later and wins
    return ["trtllm-serve", spec.model, "--backend", "tensorrt", "--host", spec.bind_host, "--port", PORT,
            "--tp_size", str(spec.gpus), *spec.args]  # fmt: skip


# so it may only listen where the job's own client is
NO_API_KEY = (
    "trtllm-serve has no API key option, so it only listens on 127.0.0.1 (use vllm or sglang to serve other machines)"
)

SERVER_KINDS.register(ServerKind("trtllm", trtllm_argv, min_gpus=1, loopback_only=NO_API_KEY))
