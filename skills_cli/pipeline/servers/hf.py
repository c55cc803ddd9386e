"""`hf`: our embedded transformers server (`skills_cli.inference.server.hf_server`), in our own image.

It reads `$SKILLS_SERVER_API_KEY` itself (and refuses to start on a set but empty one). CPU without GPUs.
"""

from __future__ import annotations

from skills_cli.pipeline.servers.base import PORT, SERVER_KINDS, ServerKind, ServerSpec


def hf_argv(spec: ServerSpec, python: str) -> list[str]:
    device = "cuda" if spec.gpus else "cpu"
    return [python, "-m", "skills_cli.inference.server.hf_server", "--model", spec.model, "--host", spec.bind_host,
            "--port", PORT, "--device", device, *spec.args]  # fmt: skip


SERVER_KINDS.register(ServerKind("hf", hf_argv, own_image=False))
