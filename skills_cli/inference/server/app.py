"""The HTTP face of the hf server: aiohttp handlers for the OpenAI endpoints, the API-key and error
middlewares, and `serve`, which runs them next to the engine's worker thread.

Handlers validate and tokenize (openai_requests), submit one job per prompt to the engine and await the
worker's answers, then shape the response (responses). With `handler_cancellation`, a client that goes
away cancels its handler, which cancels its requests, so their rows leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

from skills_cli.inference.engine.params import Generation, SamplingParams
from skills_cli.inference.server.auth import bearer_matches
from skills_cli.inference.server.openai_requests import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    RequestError,
    chat_request,
    check_model_name,
    completion_request,
    reject_unknown_fields,
    reject_unsupported_options,
)
from skills_cli.inference.server.responses import chat_response, completion_response

if TYPE_CHECKING:
    from skills_cli.inference.server.batching import Engine


class OpenAIServer:
    """The HTTP face of an Engine: request validation, tokenization, response schemas."""

    def __init__(
        self, engine: Engine, served_model_name: str, api_key: str | None = None, aliases: frozenset[str] = frozenset()
    ):
        import copy

        # The worker thread decodes with engine.tokenizer while handlers encode here: separate objects, so a
        # Rust tokenizer is never borrowed from two threads at once ("Already borrowed").
        self.engine, self.tokenizer = engine, copy.deepcopy(engine.tokenizer)
        self.served_model_name, self.aliases = served_model_name, aliases
        self.api_key = api_key
        self.created = int(time.time())

    def app(self):
        from aiohttp import web

        middlewares = [self._auth_middleware()] if self.api_key else []
        app = web.Application(middlewares=[*middlewares, self._error_middleware()], client_max_size=64 * 1024**2)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.completions)
        return app

    def _json(self, payload: dict, status: int = 200):
        from aiohttp import web

        return web.json_response(payload, status=status)

    def _auth_middleware(self):
        """Every endpoint but the health check needs the key; the health check says nothing about the model."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            if request.path == "/health" or bearer_matches(request.headers.get("Authorization"), self.api_key):
                return await handler(request)
            error = RequestError(
                "Incorrect or missing API key: send `Authorization: Bearer <key>` with this job's key",
                status=401,
            )
            body = error.body()
            body["error"]["code"] = "invalid_api_key"  # what OpenAI's API answers; clients map 401 to auth errors
            return self._json(body, status=401)

        return middleware

    def _error_middleware(self):
        """Every failure leaves as OpenAI-style JSON: RequestError with its status, anything else as a 500."""
        from aiohttp import web

        @web.middleware
        async def middleware(request, handler):
            try:
                return await handler(request)
            except RequestError as error:
                self.engine.count(bad_requests=1)
                return self._json(error.body(), status=error.status)
            except web.HTTPException:
                raise
            except Exception as error:  # anything else is our fault: say so in the same schema
                # the details (which may name files on this machine) go to the server's log, not to the client
                traceback.print_exc(file=sys.stderr)
                body = {
                    "error": {
                        "message": f"internal server error ({type(error).__name__}); see the server log",
                        "type": "server_error",
                        "param": None,
                        "code": None,
                    }
                }
                return self._json(body, status=500)

        return middleware

    async def health(self, request):
        return self._json({"status": "ok"})

    async def models(self, request):
        card = {
            "id": self.served_model_name,
            "object": "model",
            "created": self.created,
            "owned_by": "skills-cli",
            "max_model_len": self.engine.max_context,
        }
        return self._json({"object": "list", "data": [card]})

    async def metrics(self, request):
        return self._json(self.engine.metrics_snapshot())

    async def _body(self, request, allowed: set[str]) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError("request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        reject_unknown_fields(body, allowed)
        check_model_name(body, self.served_model_name, self.aliases)
        reject_unsupported_options(body)
        return body

    async def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        """Submit one request per prompt and wait; a client that goes away cancels them."""
        from skills_cli.inference.engine.scheduler import requests_for

        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in prompts]

        def resolver(future):
            def resolve(result):
                if not future.done():
                    (future.set_exception if isinstance(result, BaseException) else future.set_result)(result)

            return lambda result: loop.call_soon_threadsafe(resolve, result)

        requests = requests_for(prompts, params, [resolver(future) for future in futures])
        for request in requests:
            self.engine.submit(request)
        try:
            results = await asyncio.gather(*futures)
        except BaseException:  # cancelled (client gone) or one prompt failed: the others need not run on
            for request in requests:
                request.cancelled = True
            raise
        self.engine.count(requests_served=1)
        return results

    async def chat_completions(self, request):
        body = await self._body(request, CHAT_FIELDS)
        prompt_ids, params = chat_request(body, self.tokenizer, self.engine.max_context)
        (generation,) = await self._generate([prompt_ids], params)
        return self._json(chat_response(self.tokenizer, self.served_model_name, generation))

    async def completions(self, request):
        body = await self._body(request, COMPLETION_FIELDS)
        prompts, params = completion_request(body, self.tokenizer, self.engine.max_context)
        generations = await self._generate(prompts, params)
        return self._json(completion_response(self.tokenizer, self.served_model_name, generations))


async def serve(
    engine: Engine,
    sock: socket.socket,
    served_model_name: str,
    api_key: str | None = None,
    aliases: frozenset[str] = frozenset(),
) -> None:
    from aiohttp import web

    worker = threading.Thread(target=engine.run_forever, name="hf-server-engine", daemon=True)
    worker.start()
    # handler_cancellation: a client that disconnects cancels its handler, which cancels its requests (freeing rows)
    server = OpenAIServer(engine, served_model_name, api_key, aliases)
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    await web.SockSite(runner, sock, shutdown_timeout=1.0).start()
    host, port = sock.getsockname()[:2]
    print(
        f"hf_server: ready: serving {served_model_name} on http://{host}:{port} (device {engine.device}, "
        f"max_batch_size {engine.max_batch_size}, max context {engine.max_context}, "
        f"{'API key required' if api_key else 'no API key'})",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    engine.stop()
    await runner.cleanup()
