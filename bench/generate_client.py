"""Generation client throughput: our generation program against an instant OpenAI-compatible stub, plus the
embedded hf server's tokens/s on a tiny model. JSON out.

    .venv/bin/python bench/generate_client.py [--samples 20000] [--concurrency 512] [--out FILE]
                                              [--hf_server] [--hf_requests 32] [--hf_tokens 64] [--hf_repeats 3]
                                              [--no_client]

The stub is a measuring instrument only: it answers every chat request at once with a fixed completion, so
the client's own cost (prompt building, HTTP, JSON, durable side-file writes, final ordered output) is what
is timed. The client is pinned to one core and the stub to the other. Target: >= 1,500 samples/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STUB = r"""
import json, sys
from aiohttp import web
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "stub",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "The answer is \\boxed{42}."},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}}).encode()
async def chat(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
async def models(request):
    return web.json_response({"object": "list", "data": [{"id": "stub", "object": "model"}]})
app = web.Application()
app.router.add_post("/v1/chat/completions", chat)
app.router.add_get("/v1/models", models)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def bench_client(samples: int, concurrency: int) -> dict:
    from skills_cli.common.overrides import load_config
    from skills_cli.inference.config import GenerateConfig
    from skills_cli.inference.generate import run

    port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(port)])
    try:
        os.sched_setaffinity(stub.pid, {1} if os.cpu_count() > 1 else {0})
        os.sched_setaffinity(0, {0})
        wait_port(port)
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "in.jsonl"
            data.write_text(
                "".join(json.dumps({"problem": f"What is {i} + {i}?", "id": i}) + "\n" for i in range(samples))
            )
            config = load_config(GenerateConfig, [
                f"++input_file={data}", f"++output_file={tmp}/out.jsonl", "++prompt_config=generic/math",
                f"++server.port={port}", f"++max_concurrent_requests={concurrency}", "++progress=false",
            ])  # fmt: skip
            cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            run(config)
            wall = time.perf_counter() - wall0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            lines = sum(1 for _ in open(f"{tmp}/out.jsonl"))
    finally:
        stub.terminate()
        stub.wait()
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert lines == samples, f"expected {samples} output rows, got {lines}"
    return {"samples": samples, "concurrency": concurrency, "wall_s": round(wall, 3),
            "samples_per_s": round(samples / wall, 1), "client_cpu_s_per_sample": round(cpu / samples, 6),
            "target_samples_per_s": 1500, "meets_target": samples / wall >= 1500}  # fmt: skip


async def _hf_requests(port: int, requests: int, tokens: int) -> tuple[int, float]:
    import aiohttp

    body = {"messages": [{"role": "user", "content": "What is 2+3?"}], "max_tokens": tokens,
            "temperature": 1.0, "seed": 0, "ignore_eos": True}  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def one(i: int) -> int:
            async with session.post(f"http://127.0.0.1:{port}/v1/chat/completions", json={**body, "seed": i}) as r:
                data = await r.json()
                return data["usage"]["completion_tokens"]

        start = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(requests)))
        return sum(counts), time.perf_counter() - start


def bench_hf_server(requests: int, tokens: int, repeats: int = 3) -> dict:
    from skills_cli.inference.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_model(Path(tmp) / "tiny")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "skills_cli.inference.server.hf_server", "--model", str(model),
                                   "--port", str(port), "--device", "cpu"], stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_port(port, 120)
            results = {}
            for concurrency in (1, requests):
                # the best of a few rounds: a shared machine's noise only ever slows a round down
                rounds = [asyncio.run(_hf_requests(port, concurrency, tokens)) for _ in range(repeats)]
                generated, seconds = min(rounds, key=lambda r: r[1] / r[0])
                results[f"concurrency_{concurrency}"] = {"requests": concurrency, "tokens": generated,
                                                         "seconds": round(seconds, 3),
                                                         "tokens_per_s": round(generated / seconds, 1)}  # fmt: skip
        finally:
            server.terminate()
            server.wait()
    return {"model": "tiny llama (hidden 64, 2 layers)", "max_tokens": tokens, "best_of": repeats, **results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--hf_server", action="store_true", help="also measure the embedded hf server")
    parser.add_argument("--hf_requests", type=int, default=32)
    parser.add_argument("--hf_tokens", type=int, default=64)
    parser.add_argument("--hf_repeats", type=int, default=3, help="rounds per concurrency level (the best counts)")
    parser.add_argument("--no_client", action="store_true", help="skip the client-vs-stub measurement")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = {"benchmark": "generate_client", "python": platform.python_version(), "cpus": os.cpu_count()}
    if not args.no_client:
        report["client_vs_instant_stub"] = bench_client(args.samples, args.concurrency)
    if args.hf_server:
        os.sched_setaffinity(0, set(range(os.cpu_count())))
        report["hf_server_cpu"] = bench_hf_server(args.hf_requests, args.hf_tokens, args.hf_repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
