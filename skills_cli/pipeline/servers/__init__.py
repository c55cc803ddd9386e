"""Model servers as background commands of a job: one `ServerKind` per module (vLLM, SGLang, TensorRT-LLM,
our embedded `hf` server, and `openai`, an external API that is never hosted), all in `SERVER_KINDS`.

A new kind is a new module here (or a plugin module, see `skills_cli/common/registry.py`) that registers a
`ServerKind`; `--server_type` offers every registered name (`server_kind_choices`).
"""

from skills_cli.pipeline.servers.base import (
    API_KEY,
    PORT,
    SERVER_KINDS,
    ServerKind,
    ServerSpec,
    logged,
    server_command,
    server_kind_choices,
)

__all__ = ["API_KEY", "PORT", "SERVER_KINDS", "ServerKind", "ServerSpec", "logged", "server_command",
           "server_kind_choices"]  # fmt: skip
