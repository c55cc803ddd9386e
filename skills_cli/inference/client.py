"""Async client for OpenAI-compatible servers (vLLM, SGLang, TensorRT-LLM, OpenAI, our `hf` server).

One aiohttp session with a connection pool sized to the concurrency; transient failures (connection
errors, HTTP 5xx, 429, 408) are retried a bounded number of times with exponential backoff (or the
server's `Retry-After`); anything else fails at once with the server's own message. A rejected key (HTTP
401/403) is never retried: it is one `KeyRejected` error naming the address and the key's variable, and
`wait_until_ready` meets it on its first `GET /models`, before any generation request is sent.
`wait_until_ready` bounds the wait for a self-hosted server and, if that server died, reports the last lines
of its log. Requests carry `Authorization: Bearer` with the key from the variable named by
`++server.api_key_env` (for an external API by default $OPENAI_API_KEY), else the job's own server key
(`$SKILLS_SERVER_API_KEY`). The key lives only in this process's memory and the request headers: messages
built from a server's answers have it replaced by `<hidden>`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.inference.config import RUN_DIR_ENV, InferenceConfig, ServerConfig
from skills_cli.inference.server.auth import job_api_key
from skills_cli.inference.server_log import log_failure_excerpt

RETRY_STATUSES = {408, 429, 500, 502, 503, 504}
AUTH_STATUSES = {401, 403}
MAX_BACKOFF = 30.0  # seconds between two attempts at most, whatever Retry-After asks
HIDDEN = "<hidden>"
# Parameters that the official OpenAI API rejects but vLLM/SGLang/TRT-LLM/hf accept in the request body.
_NON_OPENAI = ("top_k", "min_p")


class ServerError(Exception):
    """The server refused or failed a request in a way retrying will not fix (`status`: its HTTP status, if
    it answered one)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


# how servers refuse a prompt longer than the model's context (vLLM and ours: "maximum context length";
# SGLang: "longer than the model's context length"; TensorRT-LLM: "exceeds the max sequence length")
_CONTEXT_OVERFLOW = re.compile(r"context length|max(imum)? sequence length|too long", re.IGNORECASE)


def is_context_overflow(error: ServerError) -> bool:
    """A 400 saying the prompt does not fit the model's context: that sample's fault, which no retry fixes."""
    return error.status == 400 and bool(_CONTEXT_OVERFLOW.search(str(error)))


class KeyRejected(UserError):
    """The server refused the key we sent (or wants one and got none): no retry can fix it."""


@dataclass
class Completion:
    text: str
    finish_reason: str | None
    num_generated_tokens: int | None
    logprobs: Any = None
    stop_reason: Any = None  # vLLM's extension: the stop string (or token id) that ended it, where a server says


def server_exit_status() -> tuple[int, str] | None:
    """(exit code, log tail) if the job's self-hosted server has exited, else None."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return None
    exit_file = Path(run_dir) / "server.exit"
    if not exit_file.exists():
        return None
    code = exit_file.read_text().strip() or "?"
    return int(code) if code.lstrip("-").isdigit() else -1, log_failure_excerpt(Path(run_dir) / "server.log")


def request_api_key(server: ServerConfig) -> str | None:
    """The key to send: the one from `server.key_variable` if any, else this job's own server key.

    An external API (`openai`) never gets the job's key: it is meant for the job's own server only.
    """
    explicit = server.api_key()
    if explicit and any(char.isspace() or not char.isprintable() for char in explicit):
        # it could not go in a header; the message names the variable, never the value
        raise UserError(f"the value of ${server.key_variable} holds spaces or control characters: it is no API key")
    if explicit or server.is_external_api:
        return explicit
    return job_api_key()


def rejection_message(server: ServerConfig, sent_key: bool, status: int, detail: str = "") -> str:
    """What a 401/403 means for the key we sent: names the address and where the key came from."""
    variable = server.key_variable
    if variable is None:  # a self-hosted server: the job's own key
        return f"the model server at {server.url} refused this job's API key (HTTP {status}){detail}"
    if sent_key:
        return (f"the server at {server.url} rejected the API key from ${variable} (HTTP {status}){detail}; "
                "check the key (++server.api_key_env names the variable that holds it)")  # fmt: skip
    return (f"the server at {server.url} requires an API key (HTTP {status}) and none was sent: export "
            f"{variable} where you run ns, or name the variable that holds the key with ++server.api_key_env=NAME")  # fmt: skip


def retry_delay(attempt: int, retry_after: str | None) -> float:
    """Exponential backoff with jitter, or the server's `Retry-After` seconds; at most MAX_BACKOFF."""
    if retry_after and retry_after.strip().isdigit():
        return min(MAX_BACKOFF, float(retry_after))
    return min(MAX_BACKOFF, 0.5 * 2**attempt) * (0.5 + random.random())


class OpenAIClient:
    def __init__(self, server: ServerConfig, inference: InferenceConfig, concurrency: int, max_retries: int = 6):
        self.server = server
        self.inference = inference
        self.max_retries = max_retries
        self.concurrency = concurrency
        self._session = None
        self._api_key = request_api_key(server)  # a named variable that is unset fails here, before any request

    async def __aenter__(self) -> OpenAIClient:
        import aiohttp

        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency, ttl_dns_cache=300)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()

    # -- readiness ---------------------------------------------------------------------------------
    async def wait_until_ready(self, timeout: float | None = None) -> float:
        """Poll `GET /v1/models` until it answers; fail early if the server process exited."""
        import aiohttp

        timeout = self.server.startup_timeout if timeout is None else timeout
        started = time.monotonic()
        last_error = "no answer"
        while time.monotonic() - started < timeout:
            exited = server_exit_status()
            if exited:
                code, log_tail = exited
                raise UserError(
                    f"the model server exited with code {code} before it was ready; its log says:\n{log_tail}"
                )
            try:
                async with self._session.get(
                    f"{self.server.url}/models", timeout=aiohttp.ClientTimeout(total=5)
                ) as response:
                    if response.status in AUTH_STATUSES:  # waiting longer will not change the key
                        raise self._rejected(response.status, await response.read())
                    if response.status == 200 or (self.server.is_external_api and response.status < 500):
                        return time.monotonic() - started  # an API without /models still answered
                    last_error = f"HTTP {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                last_error = type(error).__name__
            await asyncio.sleep(1.0)
        run_dir = os.environ.get(RUN_DIR_ENV)
        log_tail = (
            log_failure_excerpt(Path(run_dir) / "server.log") if run_dir else "(no server log: an external server)"
        )
        raise UserError(f"the model server at {self.server.url} was not ready after {timeout:g} s ({last_error}); "
                        f"its log says:\n{log_tail}")  # fmt: skip

    # -- requests ----------------------------------------------------------------------------------
    def request_body(self, prompt: list[dict] | str, overrides: dict | None = None) -> dict:
        inference = self.inference
        body: dict[str, Any] = {"model": self.server.model, "temperature": inference.temperature,
                                "top_p": inference.top_p}  # fmt: skip
        body["messages" if isinstance(prompt, list) else "prompt"] = prompt
        if inference.tokens_to_generate is not None:
            body["max_tokens"] = inference.tokens_to_generate
        if inference.random_seed is not None:
            body["seed"] = inference.random_seed
        if inference.stop:
            body["stop"] = list(inference.stop)
        if not self.server.is_external_api:
            body["top_k"], body["min_p"] = inference.top_k, inference.min_p
        if inference.logprobs:
            if isinstance(prompt, list):
                body["logprobs"] = True
                body["top_logprobs"] = inference.top_logprobs or 0
            else:
                body["logprobs"] = inference.top_logprobs or 1
        body.update(inference.extra_body)
        body.update(overrides or {})
        return body

    async def complete(self, prompt: list[dict] | str, overrides: dict | None = None) -> Completion:
        """One completion; chat when `prompt` is a message list, text completion when it is a string.
        `overrides` replace body fields for this request only (code execution's stop strings and budget)."""
        endpoint = "chat/completions" if isinstance(prompt, list) else "completions"
        data = await self._post(endpoint, self.request_body(prompt, overrides))
        choice = data["choices"][0]
        text = choice["message"]["content"] if isinstance(prompt, list) else choice["text"]
        usage = data.get("usage") or {}
        return Completion(text or "", choice.get("finish_reason"), usage.get("completion_tokens"),
                          choice.get("logprobs"), choice.get("stop_reason"))  # fmt: skip

    async def _post(self, endpoint: str, body: dict) -> dict:
        import aiohttp

        url = f"{self.server.url}/{endpoint}"
        timeout = aiohttp.ClientTimeout(total=self.inference.timeout)
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                async with self._session.post(url, json=body, timeout=timeout) as response:
                    payload = await response.read()
                    if response.status == 200:
                        return json.loads(payload)
                    if response.status in AUTH_STATUSES:
                        raise self._rejected(response.status, payload)
                    message = self._hide(payload.decode(errors="replace"))[:500]  # hidden before cut: no partial key
                    if response.status not in RETRY_STATUSES or b"insufficient_quota" in payload:
                        # no retry can fix it
                        raise ServerError(f"HTTP {response.status} from {url}: {message}", response.status)
                    reason, retry_after = f"HTTP {response.status}", response.headers.get("Retry-After")
            except (aiohttp.ClientConnectionError, aiohttp.ServerDisconnectedError, ConnectionResetError) as error:
                reason = type(error).__name__
            except asyncio.TimeoutError:
                raise ServerError(f"no answer from {url} within {self.inference.timeout:g} s") from None
            exited = server_exit_status()
            if exited:
                raise ServerError(f"the model server stopped (exit code {exited[0]}); its log says:\n{exited[1]}")
            if attempt < self.max_retries:
                await asyncio.sleep(retry_delay(attempt, retry_after))
        raise ServerError(f"{url}: giving up after {self.max_retries + 1} attempts ({reason})")

    def _hide(self, text: str) -> str:
        """A server's answer with our key replaced (some servers and proxies echo what they were sent)."""
        return text.replace(self._api_key, HIDDEN) if self._api_key else text

    def _rejected(self, status: int, payload: bytes) -> KeyRejected:
        # a 401 says it all; a 403 may say why (a model or region the key may not use), on the same line
        detail = " ".join(self._hide(payload.decode(errors="replace")).split())[:200] if status == 403 else ""
        return KeyRejected(rejection_message(self.server, bool(self._api_key), status, f": {detail}" if detail else ""))
