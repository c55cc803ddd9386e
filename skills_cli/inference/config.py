"""Typed configuration of the generation program (`python -m skills_cli.inference.generate ++key=value`).

Torch-free and launcher-free: the pipeline imports this module to validate `++` overrides before anything
is submitted, and the in-job program loads the same classes.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded

# The kinds of server are the pipeline's registry (`skills_cli.pipeline.servers`), which this in-job layer
# cannot import: the launcher checks `--server_type` against it, and here the one kind that changes what the
# client does is the external API (no job key, only parameters the official API accepts).
EXTERNAL_API_KIND = "openai"
# The variable the official OpenAI SDK reads its key from: an external API's key unless ++server.api_key_env
# names another. Unlike a named one it may be unset (an API that needs no key).
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PORT_ENV = "SKILLS_SERVER_PORT"  # set per job by the launcher: the self-hosted server's free port
# No model has a context anywhere near 10M tokens: a larger generation budget is a typo (an extra digit or two).
MAX_TOKENS_TO_GENERATE = 10_000_000
# Each in-flight request is an open socket and a coroutine in the client (and a sequence the server must
# schedule): beyond 100k the client runs out of file descriptors long before the server is any busier.
MAX_CONCURRENT_REQUESTS = 100_000
HOST_ENV = "SKILLS_CLI_HEAD_NODE"  # set by the launcher in multi-node jobs: where the server's head runs
RUN_DIR_ENV = "SKILLS_CLI_RUN_DIR"  # per-job scratch dir; a self-hosted server leaves server.log/.exit there
# Server kinds whose chat endpoint continues a final assistant message (`continue_final_message`), which code
# execution needs on the chat endpoint; any kind can continue on the text endpoint.
CHAT_CONTINUATION_KINDS = ("vllm", "sglang", "hf")


@dataclass(frozen=True)
class InferenceConfig:
    """Sampling parameters sent with every request."""

    endpoint_type: Literal["chat", "text"] = "chat"
    temperature: float = bounded(0.0, ge=0)
    top_p: float = bounded(0.95, gt=0, le=1)
    top_k: int = bounded(-1, ge=1, also=(-1, 0), why="-1 or 0: no top-k cut")
    min_p: float = bounded(0.0, ge=0, le=1)
    random_seed: int | None = bounded(None, ge=0)
    tokens_to_generate: int | None = bounded(None, ge=1, le=MAX_TOKENS_TO_GENERATE,
                                             why="no model's context is anywhere near 10M tokens")  # fmt: skip
    stop: list[str] = field(default_factory=list)
    logprobs: bool = False
    top_logprobs: int | None = bounded(None, ge=0)
    timeout: float = bounded(14400.0, gt=0)
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.min_p < 0:
            raise UserError("inference: need temperature >= 0, 0 < top_p <= 1 and min_p >= 0")
        if self.tokens_to_generate is not None and self.tokens_to_generate < 1:
            raise UserError("inference.tokens_to_generate must be >= 1")
        if self.timeout <= 0:
            raise UserError("inference.timeout must be > 0 seconds")


@dataclass(frozen=True)
class ServerConfig:
    """Where the model server is. Host and port default to the launcher's per-job values."""

    server_type: str = "hf"  # a server kind's name (validated by the launcher against its registry)
    host: str | None = None
    port: int | None = bounded(None, ge=1, le=65535)
    base_url: str | None = None
    model: str = "model"
    api_key_env: str | None = None
    tokenizer: str | None = None
    startup_timeout: float = bounded(900.0, gt=0)

    def __post_init__(self) -> None:
        if not self.server_type.strip():
            raise UserError("server.server_type must not be empty (it names a server kind)")
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            # never echo the value: a key pasted here by mistake must not reach a log or a terminal
            raise UserError("server.api_key_env must be the NAME of an environment variable (letters, digits "
                            "and _, e.g. OPENAI_API_KEY) that holds the key, not the key itself")  # fmt: skip

    @property
    def is_external_api(self) -> bool:
        """An external API (not the job's own server): it gets no job key and no non-standard parameters."""
        return self.server_type == EXTERNAL_API_KIND

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (ending in /v1)."""
        if self.base_url:
            return self.base_url.rstrip("/")
        host = self.host or os.environ.get(HOST_ENV) or "127.0.0.1"
        port = self.port or int(os.environ.get(PORT_ENV) or 5000)
        return f"http://{host}:{port}/v1"

    @property
    def key_variable(self) -> str | None:
        """The environment variable holding the key sent to the server: `api_key_env`, else OPENAI_API_KEY
        for an external API; None for a self-hosted server (the client sends the job's own key)."""
        return self.api_key_env or (DEFAULT_API_KEY_ENV if self.is_external_api else None)

    def api_key(self) -> str | None:
        """The key from this process's environment. A variable named by `api_key_env` must be set (checked
        before any request); the default OPENAI_API_KEY may be unset (then no key is sent)."""
        name = self.key_variable
        value = os.environ.get(name, "").strip() if name else ""
        if value:
            return value
        if self.api_key_env:
            raise UserError(f"server.api_key_env={name}: environment variable {name} is not set (or is empty) "
                            "in this job's environment; export it where you run ns")  # fmt: skip
        return None


@dataclass(frozen=True)
class CodeExecutionConfig:
    """Tool-integrated reasoning (`++code_execution=true`): the model's code blocks run in the sandbox and their
    output is fed back before it goes on (see `code_execution.py`)."""

    code_begin: str = "```python\n"
    code_end: str = "```\n"  # also the stop string that hands a finished block to the sandbox
    output_begin: str = "```output\n"
    output_end: str = "```\n"
    max_code_executions: int = bounded(8, ge=0)  # per sample; then one last turn without execution
    timeout: float = bounded(10.0, gt=0)  # seconds per execution
    memory_mb: int = bounded(1024, ge=16)
    max_output_characters: int = bounded(1000, ge=1)  # longer output is cut, with a marker saying so
    sandbox_url: str | None = None  # None: the job's sandbox ($SKILLS_SANDBOX_HOST/PORT)
    sandbox_startup_timeout: float = bounded(120.0, gt=0)
    # how long a sample waits for a free sandbox session (the service caps how many are open at once)
    session_wait: float = bounded(600.0, gt=0)

    def __post_init__(self) -> None:
        for name in ("code_begin", "code_end", "output_begin", "output_end"):
            if not getattr(self, name):
                raise UserError(f"code_execution_config.{name} must not be empty")
        if self.code_end in self.code_begin:
            raise UserError("code_execution_config.code_end must not occur in code_begin (it is the stop string "
                            "that ends a block)")  # fmt: skip


@dataclass(frozen=True)
class GenerateConfig:
    input_file: str
    output_file: str
    prompt_config: str
    prompt_template: str | None = None
    system_message: str | None = None
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    max_concurrent_requests: int = bounded(512, ge=1, le=MAX_CONCURRENT_REQUESTS,
                                           why="each request is an open socket and a coroutine")  # fmt: skip
    max_retries: int = bounded(6, ge=0)
    parse_reasoning: bool = False
    thinking_begin: str = "<think>"
    thinking_end: str = "</think>"
    generation_key: str = "generation"
    num_chunks: int = bounded(1, ge=1)
    chunk_id: int = bounded(0, ge=0)
    max_samples: int = bounded(-1, ge=1, also=(-1,), why="-1: all rows")
    rerun_done: bool = False
    # an input that may legitimately hold no rows (the judge's requests when every answer was decided without
    # it): the output is then empty; otherwise an empty input is an error
    allow_empty_input: bool = False
    dry_run: bool = False
    progress: bool | None = None
    code_execution: bool = False
    code_execution_config: CodeExecutionConfig = field(default_factory=CodeExecutionConfig)

    def __post_init__(self) -> None:
        if self.max_concurrent_requests < 1:
            raise UserError("max_concurrent_requests must be >= 1")
        if not 0 <= self.chunk_id < max(self.num_chunks, 1):
            raise UserError(f"chunk_id {self.chunk_id} is outside 0..{self.num_chunks - 1}")
        if self.inference.endpoint_type == "text" and not (self.prompt_template or self.server.tokenizer):
            raise UserError("endpoint_type=text needs ++prompt_template=NAME or ++server.tokenizer=PATH "
                            "(the client renders the chat itself)")  # fmt: skip
        if self.prompt_template and self.inference.endpoint_type == "chat":
            # a named template means the client renders the conversation: use the text endpoint
            object.__setattr__(self, "inference", _with(self.inference, endpoint_type="text"))


def check_code_execution(config: GenerateConfig) -> None:
    """Code execution continues the model's own text after each output block: on the text endpoint any server
    can, on the chat endpoint only those that continue a final assistant message."""
    if not config.code_execution:
        return
    if config.inference.logprobs:
        raise UserError("++code_execution=true cannot return logprobs (a generation is several requests)")
    kind = config.server.server_type
    if config.inference.endpoint_type == "chat" and kind not in CHAT_CONTINUATION_KINDS:
        raise UserError(f"++code_execution=true on the chat endpoint needs a server that continues an assistant "
                        f"message ({', '.join(CHAT_CONTINUATION_KINDS)}); server_type {kind} does not: use the "
                        "text endpoint (++prompt_template=NAME or ++server.tokenizer=PATH)")  # fmt: skip


def _with(config: InferenceConfig, **changes: Any) -> InferenceConfig:
    from dataclasses import replace

    return replace(config, **changes)


def done_marker(output_file: str) -> str:
    return f"{output_file}.done"


def async_side_file(output_file: str) -> str:
    """Finished samples land here first (one line each, with their input position), then get ordered."""
    return f"{output_file}-async"
