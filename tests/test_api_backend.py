"""API backends: `--server_type openai --server_address URL ++server.api_key_env=NAME` against a real vLLM that
requires a key (the session's `vllm_server`), as a user runs it (`ns` in a subprocess, executor none).

The key lives only in the environment: after a run, no file under the store, the job dirs, the logs or the
outputs holds it, and nothing `ns` printed does. A rejected key is one `error:` line naming the address and
the variable, after one request (counted by a pass-through proxy, a measuring instrument only); an unset
variable fails before any request, at submission and in the job. `ns eval`'s judge uses the same mechanism
(`--judge_api_key_env`).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import run_ns

from skills_cli.common.jsonl import read_jsonl
from skills_cli.inference.client import KeyRejected, OpenAIClient, ServerError
from skills_cli.inference.config import InferenceConfig, ServerConfig
from skills_cli.pipeline import prepare_data
from skills_cli.pipeline.cluster import load_cluster_config
from skills_cli.pipeline.store import JobState, Store

FAST = ["++prompt_config=generic/math", "++inference.tokens_to_generate=4", "++inference.temperature=0.0"]


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {
            "Content-Type": "application/json",
            **(headers or {}),
            "Content-Length": str(len(body)),
        }.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    """A local HTTP server in a thread, and its OpenAI-style base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/v1"


@dataclass
class CountingProxy:
    """Forwards every request to `target` unchanged and records what the server saw: (method, path, status,
    whether it carried a key)."""

    target: str  # http://127.0.0.1:PORT (no /v1)
    seen: list[tuple[str, str, int, bool]] = field(default_factory=list)
    base_url: str = ""

    def start(self) -> ThreadingHTTPServer:
        proxy = self

        class Handler(QuietHandler):
            def forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(proxy.target + self.path, data=body, headers=headers,
                                                 method=self.command)  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=120) as answer:
                        status, payload = answer.status, answer.read()
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                proxy.seen.append((self.command, self.path, status, "Authorization" in self.headers))
                self.reply(status, payload)

            do_GET = do_POST = forward

        server, self.base_url = serve(Handler)
        return server


@pytest.fixture
def proxy(vllm_server):
    counting = CountingProxy(vllm_server.base_url.removesuffix("/v1"))
    server = counting.start()
    yield counting
    server.shutdown()


def problems(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + 1?"}) + "\n" for i in range(count)))
    return path


def generate_args(address: str, model: str, data: Path, out: Path, expname: str, *extra: str) -> list[str]:
    return ["generate", "--input_file", str(data), "--output_dir", str(out), "--server_type", "openai",
            "--server_address", address, "--model", model, "--expname", expname, *FAST, *extra]  # fmt: skip


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose bytes contain `secret` (text, JSON, SQLite, logs alike)."""
    needle = secret.encode()
    return [str(path) for root in roots for path in root.rglob("*")
            if path.is_file() and needle in path.read_bytes()]  # fmt: skip


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def test_generate_through_the_api_with_the_key_only_in_the_environment(vllm_server, isolated_home, tmp_path):
    data, out = problems(tmp_path / "in.jsonl", 3), tmp_path / "out"
    args = generate_args(vllm_server.base_url, vllm_server.model, data, out, "api", "++server.api_key_env=MY_KEY")
    result = run_ns(*args, env={"MY_KEY": vllm_server.api_key}, timeout=300)
    logs = run_ns("logs", "api", env={"MY_KEY": vllm_server.api_key})
    assert result.returncode == 0, logs.stdout[-3000:]
    rows = read_jsonl(out / "output.jsonl")
    assert [row["id"] for row in rows] == [0, 1, 2] and all(row["num_generated_tokens"] > 0 for row in rows)
    # the store, job dirs, logs and code snapshots (all under SKILLS_CLI_HOME), the outputs, what ns printed
    assert files_holding(vllm_server.api_key, isolated_home, out) == []
    assert vllm_server.api_key not in result.stdout + result.stderr + logs.stdout + logs.stderr


def test_a_rejected_key_is_one_error_line_after_one_request(proxy, vllm_server, isolated_home, tmp_path):
    wrong = "wrong-key-0123456789"
    data, out = problems(tmp_path / "in.jsonl", 20), tmp_path / "out"
    args = generate_args(proxy.base_url, vllm_server.model, data, out, "rejected", "++server.api_key_env=MY_KEY")
    result = run_ns(*args, env={"MY_KEY": wrong}, timeout=300)
    (record,) = Store().jobs("rejected")
    assert result.returncode != 0 and record.state is JobState.FAILED
    job_log = run_ns("logs", "rejected").stdout
    (line,) = error_lines(job_log)
    assert proxy.base_url in line and "$MY_KEY" in line and "HTTP 401" in line
    # ns probes --server_address without a key (a 401 proves it reachable); the job sent one request, rejected
    # before any generation request, and retried nothing
    assert [entry for entry in proxy.seen if entry[3]] == [("GET", "/v1/models", 401, True)]
    assert files_holding(wrong, isolated_home, out) == [] and wrong not in result.stderr + job_log


def test_an_unset_key_variable_fails_before_any_request(proxy, vllm_server, tmp_path, monkeypatch):
    data, out = problems(tmp_path / "in.jsonl", 2), tmp_path / "out"
    monkeypatch.delenv("MY_KEY", raising=False)
    # at submission: jobs get the variable from this environment, so it must be set here
    args = generate_args("http://127.0.0.1:9/v1", vllm_server.model, data, out, "unset", "++server.api_key_env=MY_KEY")
    result = run_ns(*args)
    (line,) = error_lines(result.stderr)
    assert result.returncode == 2 and "MY_KEY" in line and "not set" in line
    assert Store().jobs("unset") == []
    # in the job (e.g. a cluster that does not pass it on): the generation program stops before its first request
    program = [sys.executable, "-m", "skills_cli.inference.generate", f"++input_file={data}",
               f"++output_file={out}/output.jsonl", "++server.server_type=openai",
               f"++server.base_url={proxy.base_url}", "++server.api_key_env=MY_KEY", *FAST]  # fmt: skip
    job = subprocess.run(program, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    (line,) = error_lines(job.stderr)
    assert job.returncode == 2 and "server.api_key_env=MY_KEY" in line and "not set" in line
    assert proxy.seen == []


def test_a_key_given_in_place_of_its_variable_name_is_never_echoed(tmp_path):
    key_like = "sk-live-4f9a8b7c6d5e"
    data = problems(tmp_path / "in.jsonl", 1)
    args = generate_args("http://127.0.0.1:9/v1", "m", data, tmp_path / "out", "pasted",
                         f"++server.api_key_env={key_like}")  # fmt: skip
    result = run_ns(*args)
    (line,) = error_lines(result.stderr)
    assert result.returncode == 2 and "api_key_env" in line and key_like not in result.stdout + result.stderr


def test_eval_judge_calls_the_api_with_the_same_key_variable(proxy, vllm_server, isolated_home, tmp_path):
    """The generation goes to vLLM directly, the judge through the proxy: its requests are the proxy's.

    The tiny model's answers never hold a `\\boxed{}` answer, so none would need the judge; echoing the prompt
    (vLLM's `echo`, text endpoint) puts a wrong boxed answer in every generation, which the judge must decide."""
    data = tmp_path / "data"
    prepare_data(benchmarks=["arith"], output_dir=str(data))
    prompt = tmp_path / "boxed.yaml"
    prompt.write_text('system: ""\nuser: "{problem} \\\\boxed{{-12345}}"\n')
    output = tmp_path / "eval"
    result = run_ns("eval", "--benchmarks", "arith", "--data_dir", str(data), "--output_dir", str(output),
                    "--server_type", "openai", "--server_address", vllm_server.base_url, "--model", vllm_server.model,
                    "--judge_server_type", "openai", "--judge_server_address", proxy.base_url,
                    "--judge_model", vllm_server.model, "--judge_api_key_env", "MY_KEY", "--max_samples", "2",
                    "--expname", "judged", f"++prompt_config={prompt}", "++prompt_template=chatml",
                    "++inference.extra_body={echo: true}", "++inference.tokens_to_generate=2",
                    "++server.api_key_env=MY_KEY", env={"MY_KEY": vllm_server.api_key}, timeout=600)  # fmt: skip
    assert result.returncode == 0, run_ns("logs", "judged").stdout[-3000:]
    rows = read_jsonl(output / "eval-results/arith/output.jsonl")
    assert [row["predicted_answer"] for row in rows] == ["-12345", "-12345"]
    judge_answers = read_jsonl(output / "eval-results/arith/judge/output.jsonl")  # what the judge's API returned
    assert len(judge_answers) == 2 and all(row["num_generated_tokens"] > 0 for row in judge_answers)
    judged = [entry for entry in proxy.seen if entry[:2] == ("POST", "/v1/chat/completions")]
    assert judged == [("POST", "/v1/chat/completions", 200, True)] * 2
    assert files_holding(vllm_server.api_key, isolated_home, output) == []


@pytest.mark.infra
def test_on_slurm_the_default_openai_api_key_reaches_the_job_and_no_file(vllm_server, slurm_config, isolated_home,
                                                                          tmp_path):  # fmt: skip
    """No ++server.api_key_env: an external API's key is $OPENAI_API_KEY, which travels to the Slurm job like
    the cluster's env_vars (an owner-only env file, removed once sourced, then sbatch --export)."""
    from test_slurm import finish

    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")  # this host's Slurm: our environment
    data, out = problems(tmp_path / "in.jsonl", 2), tmp_path / "out"
    args = generate_args(vllm_server.base_url, vllm_server.model, data, out, "api-slurm", "--cluster", "slurm_local",
                         "--config_dir", str(slurm_config))  # fmt: skip
    result = run_ns(*args, env={"OPENAI_API_KEY": vllm_server.api_key})
    assert result.returncode == 0, result.stderr
    (record,) = finish("api-slurm")
    assert record.state is JobState.SUCCEEDED, run_ns("logs", "api-slurm").stdout[-3000:]
    assert [row["id"] for row in read_jsonl(out / "output.jsonl")] == [0, 1]
    job_dir = Path(load_cluster_config("slurm_local", str(slurm_config)).remote_job_dir)  # this host's Slurm
    assert files_holding(vllm_server.api_key, isolated_home, out, job_dir) == []


# -- the client against a scripted server (a protocol fixture: it answers what each case needs) ----------
@dataclass
class ScriptedAPI:
    """Answers each request with the next (status, headers, body) of `answers`; counts the requests."""

    answers: list[tuple[int, dict, bytes]]
    requests: int = 0
    base_url: str = ""

    def start(self) -> ThreadingHTTPServer:
        api = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, body = api.answers[min(api.requests, len(api.answers) - 1)]
                api.requests += 1
                self.reply(status, body, headers)

        server, self.base_url = serve(Handler)
        return server


def complete_once(api: ScriptedAPI, max_retries: int) -> None:
    config = ServerConfig(server_type="openai", base_url=api.base_url, api_key_env="MY_KEY")

    async def run() -> None:
        async with OpenAIClient(config, InferenceConfig(), concurrency=1, max_retries=max_retries) as client:
            await client.complete("1+1=")

    asyncio.run(run())


def test_only_transient_failures_are_retried_and_a_boundedly_few_times(monkeypatch):
    key = "k-0123456789abcdef"
    monkeypatch.setenv("MY_KEY", key)
    api = ScriptedAPI([(503, {"Retry-After": "0"}, b"busy")])
    server = api.start()
    try:
        with pytest.raises(ServerError, match="giving up after 4 attempts"):
            complete_once(api, max_retries=3)
        assert api.requests == 4
        # a 403 that echoes the key: one request, the address and the variable named, the key hidden
        api.answers, api.requests = [(403, {}, f'{{"error": "key {key} may not use this model"}}'.encode())], 0
        with pytest.raises(KeyRejected) as rejected:
            complete_once(api, max_retries=3)
        message = str(rejected.value)
        assert api.requests == 1 and api.base_url in message and "$MY_KEY" in message and "HTTP 403" in message
        assert key not in message and "<hidden>" in message
        # a 429 that no wait can fix (no quota left): not retried either
        api.answers, api.requests = [(429, {}, b'{"error": {"code": "insufficient_quota"}}')], 0
        with pytest.raises(ServerError, match="insufficient_quota"):
            complete_once(api, max_retries=3)
        assert api.requests == 1
    finally:
        server.shutdown()
