"""An OpenAI-compatible server backed by plain transformers: the default server for tests and the CPU quickstart.

    SKILLS_SERVER_API_KEY=... python -m skills_cli.inference.server.hf_server --model PATH --host 127.0.0.1 \
        --port 5000 [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16] [--max_batch_size 64] \
        [--served_model_name NAME] [--num_threads N]

Endpoints: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`,
`GET /metrics` (JSON counters). OpenAI's request fields as vLLM implements them (n, best_of, streaming with
`stream_options`, stop strings and `stop_reason`, seeds, logprobs, penalties, logit_bias, echo, token-id
prompts), checked against a real vLLM by tests/test_openai_conformance.py; docs/commands/start_server.md
lists the differences.

Access: with `$SKILLS_SERVER_API_KEY` set, every endpoint but `/health` requires `Authorization: Bearer <key>`
(else 401 with an OpenAI-style error body). The key is read from the environment, never from argv (which
other users see in `ps`). Without a key the server only listens on a loopback address. The model's id (in
`/v1/models` and responses) is `--served_model_name`, else the model directory's base name: no absolute path
leaves the server; requests may name the model by that id or by the `--model` they were started with.

Readiness: the port is bound at start-up (so "address in use" fails within a second) but only starts
listening once the model is loaded and has run a warm-up generation. Until then connections are refused;
from the first accepted connection on, `/health` answers 200. A client therefore waits for `/health` with a
timeout and treats "connection refused" as "not ready yet".

Batching: HTTP handlers submit requests; one worker thread owns the model and drives the engine package's
generation core (engine/scheduler.py, the one GRPO rollouts use) over at most `max_batch_size` cache slots:
every step queued requests join free slots and all active sequences decode one token, so new requests join
while others are mid-generation. The decode backend is our compact forward (static slot KV cache, CUDA
graphs on a GPU) for Llama / Qwen2 / Qwen3 when its cache fits, else the model's own forward over a
DynamicCache (any HF causal LM); see batching.py. Sampling parameters are per row (temperature, top_p,
top_k, min_p). Each sequence draws one counter-based uniform per token from its own random stream (the
request's `seed`, else the OS's, and the prompt's index) and samples by inverse CDF, so a seeded request
gets the same tokens again whatever else shares its batch (up to float rounding of differently shaped
batches).

Modules: request_fields (typed field access, OpenAI errors), openai_requests (bodies into prompts and
SamplingParams), responses (OpenAI answers and logprobs), streaming (server-sent events), app (aiohttp
handlers, API key), startup (checks, loading, warm-up), batching (the worker thread).

Semantics: temperature 0 is greedy. `logprobs` are of the model's raw distribution (log-softmax of the
logits before temperature and filtering), as vLLM reports them by default. Generation stops at any eos id of
the model (finish_reason "stop", the eos text is not returned), at a stop string (removed from the text,
"stop"), or after max_tokens ("length"). `completion_tokens` counts every generated token, eos included.
Unknown fields, wrong types and what this server does not implement (`response_format` guided decoding,
`suffix`) get HTTP 400 with an OpenAI-style error body naming the field; so does max_tokens above the context
size (below it, the room the prompt leaves caps max_tokens, as in vLLM).

Start-up failures (bad model path, unloadable model, busy port) exit with status 1 and one line on stderr:
`hf_server: cannot load model from /x: ...`.

Requires transformers >= 4.56 (a `DynamicCache` made of `layers` with `keys`/`values`). Heavy imports happen
inside functions, so importing this module is cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from skills_cli.inference.server.startup import (
    StartupError,
    bind_socket,
    check_model_reference,
    default_num_threads,
    load_engine,
    served_name,
    server_api_key,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m skills_cli.inference.server.hf_server",
        description="OpenAI-compatible server for a Hugging Face causal LM (transformers backend).",
    )
    parser.add_argument("--model", required=True, help="model directory (or hub id when a local HF cache has it)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (printed in the ready line)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="auto: bfloat16 on GPU, float32 on CPU",
    )
    parser.add_argument("--max_batch_size", type=int, default=64, help="sequences decoded together at most")
    parser.add_argument(
        "--served_model_name", help="name in /v1/models and responses (default: the model directory's base name)"
    )
    parser.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: usable CPUs - 1)")
    args = parser.parse_args(argv)
    if args.max_batch_size < 1:
        parser.error("--max_batch_size must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        api_key = server_api_key(args.host)
        check_model_reference(args.model)
        sock = bind_socket(args.host, args.port)
        engine = load_engine(
            args.model, args.device, args.dtype, args.max_batch_size, args.num_threads or default_num_threads()
        )
    except StartupError as error:
        print(f"hf_server: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    served = args.served_model_name or served_name(args.model)
    from skills_cli.inference.server.app import serve

    asyncio.run(serve(engine, sock, served, api_key, aliases=frozenset({args.model})))


if __name__ == "__main__":
    main()
