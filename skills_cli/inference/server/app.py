"""The HTTP face of the hf server: aiohttp handlers for the OpenAI endpoints, the API-key and error
middlewares, and `serve`, which runs them next to the engine's worker thread.

Handlers validate and tokenize (openai_requests), submit one engine request per generated sequence (each
prompt best_of or n times) and await the worker's answers, then shape the response (responses) or stream
it (streaming). With `handler_cancellation`, a client that goes
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
from dataclasses import replace
from typing import TYPE_CHECKING

from skills_cli.common.bearer import bearer_matches
from skills_cli.inference.engine.params import Generation, SamplingParams
from skills_cli.inference.server.openai_requests import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    ModelLimits,
    ParsedRequest,
    chat_request,
    completion_request,
)
from skills_cli.inference.server.request_fields import RequestError, check_model_name, reject_unknown_fields
from skills_cli.inference.server.responses import Choice, chat_response, completion_response, stop_reason, usage
from skills_cli.inference.server.streaming import ChunkShapes, StreamWriter, pump

if TYPE_CHECKING:
    from skills_cli.inference.server.batching import Engine


def best_choices(group: list[Generation], n: int) -> list[Generation]:
    """The n of a prompt's best_of generations with the highest mean token logprob (all of them, in order,
    when best_of == n)."""
    if len(group) == n:
        return group
    return sorted(group, key=lambda g: -sum(g.logprobs) / max(1, len(g.logprobs)))[:n]


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
        return body

    @property
    def limits(self) -> ModelLimits:
        return ModelLimits(self.engine.max_context, self.engine.vocab_size)

    async def _run(self, submissions: list) -> list:
        """Submit engine jobs (each built around its completion callback) and await their results; a client
        that goes away, or one job that fails, cancels the rest."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in submissions]

        def resolver(future):
            def resolve(result):
                if not future.done():
                    (future.set_exception if isinstance(result, BaseException) else future.set_result)(result)

            return lambda result: loop.call_soon_threadsafe(resolve, result)

        jobs = [make(resolver(future)) for make, future in zip(submissions, futures, strict=True)]
        for job in jobs:
            self.engine.submit(job)
        try:
            return await asyncio.gather(*futures)
        except BaseException:
            for job in jobs:
                job.cancelled = True
            raise

    async def _generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Generation]:
        from skills_cli.inference.engine.scheduler import requests_for

        # requests_for gives prompt i the random stream (seed, i); built once so every prompt keeps its index
        requests = requests_for(prompts, params, [None] * len(prompts))

        def submission(request):
            def make(on_done):
                request.on_done = on_done
                return request

            return make

        results = await self._run([submission(r) for r in requests])
        self.engine.count(requests_served=1)
        return results

    async def _echoes(self, parsed: ParsedRequest) -> list[Choice | None]:
        """Per prompt, the echoed prompt (text, and its logprobs when asked for); None without echo."""
        if not parsed.echo:
            return [None] * len(parsed.prompts)
        scores = [None] * len(parsed.prompts)
        if parsed.params.logprobs:
            from skills_cli.inference.server.batching import ScoreJob

            jobs = [lambda done, p=p: ScoreJob(list(p), parsed.params.top_logprobs, done) for p in parsed.prompts]
            scores = await self._run(jobs)
        texts = [self.tokenizer.decode(list(p), skip_special_tokens=True) for p in parsed.prompts]
        return [
            Choice(Generation(), None, p, text, score)
            for p, text, score in zip(parsed.prompts, texts, scores, strict=True)
        ]

    def _finish(self, generation: Generation, params: SamplingParams) -> tuple[str, str | int | None]:
        return generation.finish_reason, stop_reason(self.tokenizer, generation, params, self.engine.eos_ids)

    async def _choices(self, parsed: ParsedRequest) -> tuple[list[Choice], dict]:
        """Every returned choice (prompt-major: prompt i's choices are i*n .. i*n+n-1) and the usage."""
        expanded = [list(prompt) for prompt in parsed.prompts for _ in range(parsed.best_of)]
        echoes = await self._echoes(parsed)
        generations = await self._generate(expanded, parsed.params)
        choices = []
        for i, echo in enumerate(echoes):
            for generation in best_choices(generations[i * parsed.best_of : (i + 1) * parsed.best_of], parsed.n):
                reason = self._finish(generation, parsed.params)[1]
                choices.append(
                    replace(echo, generation=generation, stop_reason=reason) if echo else Choice(generation, reason)
                )
        prompt_tokens = sum(map(len, parsed.prompts))
        return choices, usage(prompt_tokens, sum(len(g.token_ids) for g in generations))

    async def chat_completions(self, request):
        body = await self._body(request, CHAT_FIELDS)
        parsed = chat_request(body, self.tokenizer, self.limits)
        top_n = parsed.params.top_logprobs
        if parsed.stream:
            return await self._stream(request, parsed, ChunkShapes(True, self.tokenizer, self.served_model_name, top_n))
        choices, counts = await self._choices(parsed)
        return self._json(chat_response(self.tokenizer, self.served_model_name, choices, counts, top_n))

    async def completions(self, request):
        body = await self._body(request, COMPLETION_FIELDS)
        parsed = completion_request(body, self.tokenizer, self.limits)
        if parsed.stream:
            return await self._stream(request, parsed, ChunkShapes(False, self.tokenizer, self.served_model_name, 0))
        choices, counts = await self._choices(parsed)
        return self._json(completion_response(self.tokenizer, self.served_model_name, choices, counts))

    async def _stream(self, request, parsed: ParsedRequest, shapes: ChunkShapes):
        """Answer with server-sent events (streaming.py); errors found before the first byte stay plain 400s."""
        from aiohttp import web

        from skills_cli.inference.engine.scheduler import requests_for

        echoes = await self._echoes(parsed)
        prompts = [list(prompt) for prompt in parsed.prompts for _ in range(parsed.n)]
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def reporter(kind: str, index: int):
            return lambda *payload: loop.call_soon_threadsafe(events.put_nowait, (kind, index, *payload))

        callbacks = [reporter("done", i) for i in range(len(prompts))]
        requests = requests_for(prompts, parsed.params, callbacks)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        writer = StreamWriter(response, shapes, parsed, lambda g: self._finish(g, parsed.params))
        await writer.open(echoes)
        for index, engine_request in enumerate(requests):
            self.engine.watch(engine_request, reporter("progress", index))
            self.engine.submit(engine_request)
        try:
            await pump(writer, events, len(requests))
            await writer.close(sum(map(len, parsed.prompts)))
        except Exception as error:  # after the first byte the status is sent: report in the stream itself
            await writer.fail(error)
        finally:  # whether finished, failed, or cancelled by a client that went away
            for engine_request in requests:
                engine_request.cancelled = True
                self.engine.unwatch(engine_request)
        self.engine.count(requests_served=1)
        await response.write_eof()
        return response


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
