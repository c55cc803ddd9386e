"""A scripted OpenAI-compatible server for protocol tests: it answers /v1/completions and /v1/chat/completions
with fixed texts, in order, per sample, honours `stop` and `max_tokens`, and records every request, so a test
asserts what a client sent. It measures the client's loop, not a model.

A sample is found by a marker text that occurs in its prompt (or in its messages). One "token" is one
character. Like vLLM, a stop string cuts the text before it (kept only with `include_stop=True`, vLLM's
`include_stop_str_in_output`) and is named in `stop_reason` (left out with `name_stop_reason=False`, as OpenAI
and TensorRT-LLM answer). A request no script matches, or one past its script's end, gets HTTP 400.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Turn:
    text: str
    finish_reason: str
    stop_reason: str | None


def play(text: str, stops: list[str], max_tokens: int | None, include_stop: bool) -> Turn:
    """What a server that would generate `text` returns under these stop strings and this token limit."""
    hits = [(text.find(stop), stop) for stop in stops if stop and stop in text]
    end, stop = min(hits) if hits else (len(text), None)
    if max_tokens is not None and max_tokens < end:
        return Turn(text[:max_tokens], "length", None)
    if stop is None:
        return Turn(text, "stop", None)
    return Turn(text[: end + len(stop)] if include_stop else text[:end], "stop", stop)


class ScriptedServer:
    """`scripts`: marker -> the texts its sample's requests get, in order. Use as a context manager; `url` is
    the OpenAI base URL (…/v1) and `requests` the (path, body) of every request received."""

    def __init__(self, scripts: dict[str, list[str]], include_stop: bool = False, name_stop_reason: bool = True):
        self.scripts = scripts
        self.include_stop, self.name_stop_reason = include_stop, name_stop_reason
        self.requests: list[tuple[str, dict]] = []
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def bodies(self, marker: str) -> list[dict]:
        """The request bodies of the sample with this marker, in order."""
        return [body for _, body in self.requests if marker in prompt_text(body)]

    def __enter__(self) -> ScriptedServer:
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def answer(self, path: str, body: dict) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((path, body))
            marker = next((m for m in self.scripts if m in prompt_text(body)), None)
            if marker is None:
                return 400, {"error": {"message": "no script matches this prompt"}}
            turn = self._turns.get(marker, 0)
            self._turns[marker] = turn + 1
        if turn >= len(self.scripts[marker]):
            return 400, {"error": {"message": f"the script of {marker!r} has only {turn} turns"}}
        stops = body.get("stop") or []
        played = play(self.scripts[marker][turn], [stops] if isinstance(stops, str) else stops,
                      body.get("max_tokens"), self.include_stop)  # fmt: skip
        return 200, self.response(path, played)

    def response(self, path: str, turn: Turn) -> dict:
        choice: dict = {"index": 0, "finish_reason": turn.finish_reason, "logprobs": None}
        if path.endswith("chat/completions"):
            choice["message"] = {"role": "assistant", "content": turn.text}
        else:
            choice["text"] = turn.text
        if self.name_stop_reason:
            choice["stop_reason"] = turn.stop_reason
        usage = {"prompt_tokens": 1, "completion_tokens": len(turn.text), "total_tokens": 1 + len(turn.text)}
        return {"id": "scripted", "object": "text_completion", "model": "model", "choices": [choice], "usage": usage}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._send(200, {"object": "list", "data": [{"id": "model", "object": "model"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self._send(*server.answer(self.path, body))

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # quiet: the test reads `requests`
                pass

        return Handler


def prompt_text(body: dict) -> str:
    """A request's prompt as text: the completion prompt, or the messages' contents joined."""
    if "messages" in body:
        return "\n".join(str(message.get("content", "")) for message in body["messages"])
    return str(body.get("prompt", ""))
