"""The sandbox service: `python -m skills_cli.sandbox.server --port P [--host 127.0.0.1] [--workers N]`.

HTTP API (JSON bodies; every route but /health needs `Authorization: Bearer $SKILLS_SANDBOX_API_KEY` when that
variable is set in the service's environment):

    GET    /health                 {"status": "ok", "workers", "sessions", "isolation": {layer: bool}}
    POST   /run                    {"code", "stdin", "limits"} -> Execution
    POST   /sessions               {"limits"} -> {"session": id}            (429 when all slots are taken)
    POST   /sessions/<id>/run      {"code", "timeout"} -> Execution
    DELETE /sessions/<id>          -> {"closed": true}                      (404 when unknown)

Runs beyond --workers wait for a free worker. SIGTERM (or SIGINT) kills every running program and exits 0.
Logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from dataclasses import asdict, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from skills_cli.common.bearer import bearer_matches
from skills_cli.sandbox.client import DEFAULT_HOST, SANDBOX_KEY_ENV, SANDBOX_PORT_ENV, Limits, sandbox_error
from skills_cli.sandbox.isolation import LAYER_SWITCHES, UidPool, detect
from skills_cli.sandbox.runner import Launcher
from skills_cli.sandbox.sessions import SessionLimitReached, Sessions

log = logging.getLogger("skills_cli.sandbox")

MAX_BODY_BYTES = 32 * 1024 * 1024
LIMIT_BOUNDS = {"timeout": (0.01, 3600.0), "memory_mb": (16, 1 << 20), "max_output_bytes": (0, 1 << 26),
                "max_processes": (1, 4096)}  # fmt: skip


class BadRequest(ValueError):
    """A request the service cannot act on (HTTP 400 with this message)."""


def parse_limits(raw) -> Limits:
    """Limits from a request body, each field checked for type and range."""
    raw = raw or {}
    if not isinstance(raw, dict) or set(raw) - {f.name for f in fields(Limits)}:
        raise BadRequest(f"limits must be an object with fields {[f.name for f in fields(Limits)]}")
    values = {}
    for name, value in raw.items():
        low, high = LIMIT_BOUNDS[name]
        kind = float if name == "timeout" else int
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise BadRequest(f"limits.{name} must be a number in [{low}, {high}], got {value!r}")
        values[name] = kind(value)
    return Limits(**values)


def text_field(body: dict, name: str, required: bool = True) -> str:
    value = body.get(name, None if required else "")
    if not isinstance(value, str):
        raise BadRequest(f"`{name}` must be a string")
    return value


class Service:
    """What the handlers share: the launcher (stateless runs), the sessions, the key."""

    def __init__(self, launcher: Launcher, sessions: Sessions, workers: int, api_key: str | None):
        self.launcher = launcher
        self.sessions = sessions
        self.workers = workers
        self.api_key = api_key

    def health(self) -> dict:
        return {"status": "ok", "workers": self.workers, "sessions": len(self.sessions),
                "max_sessions": self.sessions.max_sessions, "isolation": self.launcher.isolation.report()}  # fmt: skip

    def handle(self, method: str, parts: list[str], body: dict) -> tuple[int, dict]:
        if method == "POST" and parts == ["run"]:
            limits = parse_limits(body.get("limits"))
            return 200, asdict(self.launcher.run(text_field(body, "code"), limits, text_field(body, "stdin", False)))
        if method == "POST" and parts == ["sessions"]:
            try:
                return 200, {"session": self.sessions.open(parse_limits(body.get("limits")))}
            except SessionLimitReached as error:
                return 429, {"error": str(error)}
        if method == "POST" and len(parts) == 3 and parts[0] == "sessions" and parts[2] == "run":
            timeout = body.get("timeout")
            if timeout is not None:
                timeout = parse_limits({"timeout": timeout}).timeout
            return 200, asdict(self.sessions.run(parts[1], text_field(body, "code"), timeout))
        if method == "DELETE" and len(parts) == 2 and parts[0] == "sessions":
            if self.sessions.close(parts[1]):
                return 200, {"closed": True}
            return 404, {"error": f"no open session {parts[1]}"}
        return 404, {"error": f"no route {method} /{'/'.join(parts)}"}


class Handler(BaseHTTPRequestHandler):
    service: Service  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (the http.server naming)
        if self.path.rstrip("/") == "/health":
            self.reply(200, self.service.health())
        else:
            self.dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        key = self.service.api_key
        if key and not bearer_matches(self.headers.get("Authorization"), key):
            self.read_body(limit=0)
            self.reply(401, {"error": "missing or wrong API key (Authorization: Bearer ...)"})
            return
        try:
            body = self.read_body()
            status, answer = self.service.handle(method, [p for p in self.path.split("?")[0].split("/") if p], body)
        except BadRequest as error:
            status, answer = 400, {"error": str(error)}
        except Exception as error:  # the service stays up; the caller gets a sandbox_error for this request
            log.exception("sandbox: %s %s failed", method, self.path)
            status, answer = 500, asdict(sandbox_error(f"the sandbox failed: {type(error).__name__}: {error}"))
        self.reply(status, answer)

    def read_body(self, limit: int = MAX_BODY_BYTES) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            self.close_connection = True
            if limit:
                raise BadRequest(f"request body over {limit} bytes")
            return {}
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as error:
            raise BadRequest(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def reply(self, status: int, answer: dict) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        log.debug("sandbox: " + format, *args)


class SandboxHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the listen backlog: many graders connect at once (the default 5 drops some)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skills_cli.sandbox.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get(SANDBOX_PORT_ENV) or 0) or None)
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default: loopback only)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs run at once")
    parser.add_argument("--max_sessions", type=int, default=16)
    parser.add_argument("--session_idle_timeout", type=float, default=600.0, help="seconds before an idle one closes")
    parser.add_argument("--uid_base", type=int, default=None,
                        help="first uid runs execute as, when root (default: a random block of high uids)")  # fmt: skip
    parser.add_argument("--python", default=sys.executable, help="interpreter for the untrusted code")
    parser.add_argument("--disable_layers", default="", help=f"comma-separated, of {','.join(LAYER_SWITCHES)}")
    args = parser.parse_args(argv)
    args.disable_layers = frozenset(name for name in args.disable_layers.split(",") if name)
    if args.disable_layers - set(LAYER_SWITCHES):
        parser.error(f"--disable_layers: unknown {sorted(args.disable_layers - set(LAYER_SWITCHES))}")
    if not args.port:
        parser.error(f"--port is required (or ${SANDBOX_PORT_ENV})")
    if args.workers < 1 or args.max_sessions < 0 or args.session_idle_timeout <= 0:
        parser.error("--workers must be >= 1, --max_sessions >= 0 and --session_idle_timeout > 0")
    return args


def make_server(args: argparse.Namespace, work_root: str) -> tuple[ThreadingHTTPServer, Service]:
    isolation = detect(args.python, args.uid_base, args.disable_layers)
    first_uid = isolation.uid_base
    run_uids = UidPool(first_uid, args.workers)
    session_uids = UidPool(None if first_uid is None else first_uid + args.workers, args.max_sessions)
    launcher = Launcher(isolation, work_root, run_uids)
    sessions = Sessions(launcher, session_uids, args.max_sessions, args.session_idle_timeout)
    service = Service(launcher, sessions, args.workers, os.environ.get(SANDBOX_KEY_ENV) or None)
    handler = type("SandboxHandler", (Handler,), {"service": service})
    server = SandboxHTTPServer((args.host, args.port), handler)
    return server, service


def serve(args: argparse.Namespace) -> int:
    work_root = tempfile.mkdtemp(prefix="skills-sandbox-")
    os.chmod(work_root, 0o711)  # the runs' uids may enter their own directory, never list the others
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    try:
        server, service = make_server(args, work_root)
        threading.Thread(target=server.serve_forever, daemon=True, name="http").start()
        log.info(
            "sandbox listening on http://%s:%d (%d workers; working directories under %s)",
            args.host,
            args.port,
            args.workers,
            work_root,
        )
        stop.wait()
        log.info("sandbox: stopping (killing running programs)")
        service.launcher.kill_all()
        service.sessions.close_all()
        server.shutdown()
        server.server_close()
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    return serve(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
