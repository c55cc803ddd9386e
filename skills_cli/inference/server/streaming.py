"""Server-sent events for `stream=true`, as vLLM and OpenAI send them: one chunk per choice as its text grows,
the finish reason in a choice's last chunk, with `stream_options.include_usage` a last chunk of usage and no
choices, then `data: [DONE]`. A failure after the stream began is one `data: {"error": ...}` event.

Text deltas come from the engine's progress reports (batching.Engine.watch): the decoded text so far, less
a tail that may still change: an incomplete UTF-8 character, and with stop strings the last
(longest stop - 1) characters, which could be the start of a stop string the next token completes (the
final text is cut before it). The finished generation's text settles the rest.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from dataclasses import dataclass

from skills_cli.inference.engine.params import Generation, TokenLogprob
from skills_cli.inference.server.openai_requests import ParsedRequest
from skills_cli.inference.server.request_fields import RequestError
from skills_cli.inference.server.responses import (
    Choice,
    chat_logprobs,
    completion_logprobs_lists,
    echo_positions,
    envelope,
    new_id,
    usage,
)

REPLACEMENT = "\ufffd"  # what a decoder shows for the bytes of a character that is not complete yet


@dataclass
class ChoiceStream:
    """What one streamed choice has sent so far."""

    index: int
    holdback: int  # characters kept back while a stop string may be forming
    text_offset: int = 0  # characters of echoed prompt sent before the generated text
    text: str = ""
    tokens: int = 0
    logprobs_sent: int = 0

    def settled_text(self, tokenizer, token_ids: list[int]) -> str:
        text = tokenizer.decode(token_ids, skip_special_tokens=True).rstrip(REPLACEMENT)
        return text[: max(0, len(text) - self.holdback)]

    def delta(self, text: str) -> str:
        """The part of `text` not sent yet (nothing when an earlier decode does not prefix it any more)."""
        if not text.startswith(self.text):
            return ""
        new, self.text = text[len(self.text) :], text
        return new


class ChunkShapes:
    """The two endpoints' chunk layouts; `top_n` is chat's `top_logprobs`."""

    def __init__(self, chat: bool, tokenizer, model: str, top_n: int):
        self.chat, self.tokenizer, self.top_n = chat, tokenizer, top_n
        kind = "chat.completion.chunk" if chat else "text_completion"
        self.envelope = envelope(new_id("chatcmpl" if chat else "cmpl"), kind, model, int(time.time()))

    def chunk(self, index: int, text: str, entries, offset: int, finish: tuple | None = None) -> dict:
        """One choice's chunk: new `text`, the TokenLogprobs of its new tokens (None: not asked for), and
        (finish_reason, stop_reason) in its last chunk."""
        reason, stop_reason = finish or (None, None)
        if self.chat:
            logprobs = chat_logprobs(self.tokenizer, entries, self.top_n) if entries is not None else None
            choice = {"index": index, "delta": {"content": text}, "logprobs": logprobs, "finish_reason": reason}
        else:
            logprobs = (
                completion_logprobs_lists(self.tokenizer, [(e.token_id, e) for e in entries], offset)
                if entries is not None
                else None
            )
            choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}
        if finish is not None:
            choice["stop_reason"] = stop_reason
        return {**self.envelope, "choices": [choice]}

    def opening(self, index: int, echo: Choice | None) -> dict | None:
        """A choice's first chunk: chat's assistant role; the echoed prompt of a completion."""
        if self.chat:
            choice = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                      "finish_reason": None}  # fmt: skip
            return {**self.envelope, "choices": [choice]}
        if echo is None:
            return None
        positions = echo_positions(echo) if echo.prompt_logprobs is not None else None
        logprobs = completion_logprobs_lists(self.tokenizer, positions, 0) if positions else None
        choice = {"index": index, "text": echo.echo_text, "logprobs": logprobs, "finish_reason": None}
        return {**self.envelope, "choices": [choice]}

    def usage_chunk(self, counts: dict) -> dict:
        return {**self.envelope, "choices": [], "usage": counts}


def event(payload: dict | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


class StreamWriter:
    """Turns the engine's progress and results for one request's choices into SSE chunks."""

    def __init__(self, response, shapes: ChunkShapes, parsed: ParsedRequest, finish_of):
        self.response, self.shapes, self.parsed = response, shapes, parsed
        self.finish_of = finish_of  # Generation -> (finish_reason, stop_reason)
        longest = max(map(len, parsed.params.stop), default=0)
        choices = len(parsed.prompts) * parsed.n
        self.streams = [ChoiceStream(i, max(0, longest - 1)) for i in range(choices)]
        self.completion_tokens = 0

    async def open(self, echoes: list[Choice | None]) -> None:
        for stream in self.streams:
            opening = self.shapes.opening(stream.index, echoes[stream.index // self.parsed.n])
            if opening is not None:
                await self.response.write(event(opening))
                stream.text_offset = len(opening["choices"][0].get("text", ""))

    def _new_entries(self, stream: ChoiceStream, entries: list[TokenLogprob] | None):
        if entries is None:
            return None
        new, stream.logprobs_sent = entries[stream.logprobs_sent :], len(entries)
        return new

    async def progress(self, index: int, token_ids: list[int], entries) -> None:
        stream = self.streams[index]
        if len(token_ids) <= stream.tokens:
            return
        stream.tokens = len(token_ids)
        offset = stream.text_offset + len(stream.text)
        text = stream.delta(stream.settled_text(self.shapes.tokenizer, token_ids))
        new_entries = self._new_entries(stream, entries)
        if text or new_entries:
            await self.response.write(event(self.shapes.chunk(index, text, new_entries, offset)))

    async def finish(self, index: int, generation: Generation) -> None:
        stream = self.streams[index]
        self.completion_tokens += len(generation.token_ids)
        offset = stream.text_offset + len(stream.text)
        final = generation.text or ""
        text = final[len(stream.text) :] if final.startswith(stream.text) else ""
        entries = self._new_entries(stream, generation.token_logprobs)
        finish = self.finish_of(generation)
        await self.response.write(event(self.shapes.chunk(index, text, entries, offset, finish)))

    async def close(self, prompt_tokens: int) -> None:
        if self.parsed.include_usage:
            await self.response.write(event(self.shapes.usage_chunk(usage(prompt_tokens, self.completion_tokens))))
        await self.response.write(event("[DONE]"))

    async def fail(self, error: BaseException) -> None:
        failure = error if isinstance(error, RequestError) else None
        if failure is None:  # our fault: the details go to the server's log, as for a plain request's 500
            traceback.print_exception(error, file=sys.stderr)
        message = failure.message if failure else f"generation failed ({type(error).__name__}); see the server log"
        body = {"error": {"message": message, "type": failure.kind if failure else "server_error",
                          "param": failure.param if failure else None, "code": None}}  # fmt: skip
        await self.response.write(event(body))
        await self.response.write(event("[DONE]"))


async def pump(writer: StreamWriter, events: asyncio.Queue, choices: int) -> None:
    """Write the engine's reports as they arrive until every choice has finished."""
    finished = 0
    while finished < choices:
        kind, index, *payload = await events.get()
        if kind == "progress":
            await writer.progress(index, *payload)
        elif isinstance(payload[0], BaseException):
            raise payload[0]
        else:
            await writer.finish(index, payload[0])
            finished += 1
