"""The embedded transformers server, run as a real subprocess on a tiny model: OpenAI schemas, greedy outputs
that match HF `generate`, stop strings, seeds, logprobs, batching under concurrency, 400s and fast failures."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("aiohttp")

from skills_cli.inference.model_loading import load_tokenizer  # noqa: E402
from skills_cli.inference.tiny_model import build_tiny_model  # noqa: E402

SERVER = [sys.executable, "-m", "skills_cli.inference.server.hf_server"]
REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 90


def server_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Client:
    def __init__(self, base: str):
        self.base = base

    def request(self, method: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def get(self, path: str) -> dict:
        status, body = self.request("GET", path)
        assert status == 200, body
        return body

    def post(self, path: str, body: dict) -> dict:
        status, answer = self.request("POST", path, body)
        assert status == 200, answer
        return answer

    def complete(self, prompt, **options) -> dict:
        return self.post("/v1/completions", {"prompt": prompt, **options})

    def chat(self, content: str, **options) -> dict:
        return self.post("/v1/chat/completions", {"messages": [{"role": "user", "content": content}], **options})


def wait_for_health(process: subprocess.Popen, base: str, stderr_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}: {stderr_path.read_text()}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused until the model is loaded (documented behaviour)
            pass
        time.sleep(0.2)
    pytest.fail(f"server not healthy after {timeout} s: {stderr_path.read_text()}")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", arch="llama")


@pytest.fixture(scope="module")
def launched(model_dir, tmp_path_factory):
    """The server process, started but not waited for (loading overlaps the start-up failure tests); served as
    "tiny". On teardown SIGTERM must stop it cleanly."""
    port = free_port()
    stderr_path = tmp_path_factory.mktemp("server") / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            SERVER
            + [
                "--model",
                str(model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--served_model_name",
                "tiny",
                "--max_batch_size",
                "64",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=server_env(),
        )
    state = {"base": f"http://127.0.0.1:{port}", "port": port, "process": process, "stderr": stderr_path}
    try:
        yield state
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            returncode = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    if state.get("ready"):  # SIGTERM while still loading is the default death; once serving, a clean exit
        assert returncode == 0, stderr_path.read_text()


@pytest.fixture(scope="module")
def server(launched):
    wait_for_health(launched["process"], launched["base"], launched["stderr"], START_TIMEOUT)
    assert "hf_server: ready: serving tiny on http://127.0.0.1:" in launched["stderr"].read_text()
    launched["ready"] = True
    return {**launched, "client": Client(launched["base"])}


@pytest.fixture(scope="module")
def client(server) -> Client:
    return server["client"]


@pytest.fixture(scope="module")
def reference(model_dir):
    """The same model in-process, for what HF `generate` says the greedy continuation is."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(model_dir)).eval(), load_tokenizer(model_dir)


def hf_greedy_text(reference, prompt_ids: list[int], max_new_tokens: int) -> str:
    import torch

    model, tokenizer = reference
    prompt = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens, do_sample=False
        )
    return tokenizer.decode(output[0, len(prompt_ids) :].tolist(), skip_special_tokens=True)


PROMPTS = [
    "What is 1+1?",
    "Compute 345 * 6, then subtract 1000 and tell me the answer.",
    "Hi",
    "Question: 7-2",
    "The answer is \\boxed{",
    "x",
]


# -- start-up failures -------------------------------------------------------------------------------------------


def run_server_expecting_failure(args: list[str], limit: float = 20) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(SERVER + args, capture_output=True, text=True, timeout=limit, env=server_env())
    return result, time.monotonic() - started


def test_missing_model_path_fails_fast(tmp_path):
    missing = tmp_path / "no-such-model"
    result, seconds = run_server_expecting_failure(["--model", str(missing), "--port", str(free_port())])
    assert result.returncode != 0 and seconds < 20
    assert result.stderr.strip() == f"hf_server: cannot load model from {missing}: no such directory"


@pytest.mark.parametrize(
    ("files", "cause"),
    [({}, "no weights (*.safetensors or *.bin) in it"), ({"model.safetensors": "x"}, "no tokenizer files")],
)
def test_incomplete_model_directory_fails_fast(tmp_path, files, cause):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name, text in {"config.json": '{"model_type": "llama"}', **files}.items():
        (broken / name).write_text(text)
    result, seconds = run_server_expecting_failure(["--model", str(broken), "--port", str(free_port())])
    assert result.returncode != 0 and seconds < 20
    assert result.stderr.strip().startswith(f"hf_server: cannot load model from {broken}: {cause}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_corrupt_weights_fail_with_one_line(tmp_path, model_dir, launched):
    """Passes the cheap checks, so transformers itself fails: one line, after torch's import time.
    (`launched`: the shared server loads meanwhile.)"""
    broken = tmp_path / "corrupt"
    shutil.copytree(model_dir, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    result, _ = run_server_expecting_failure(["--model", str(broken), "--port", str(free_port())], limit=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0
    assert len(lines) == 1 and lines[0].startswith(f"hf_server: cannot load model from {broken}: "), result.stderr


def test_busy_port_fails_fast(server, model_dir):
    result, seconds = run_server_expecting_failure(["--model", str(model_dir), "--port", str(server["port"])])
    assert result.returncode != 0 and seconds < 20
    assert result.stderr.strip().startswith(f"hf_server: cannot listen on 127.0.0.1:{server['port']}: ")
    assert "Address already in use" in result.stderr


# -- endpoints and schemas -------------------------------------------------------------------------------------


def test_health_and_models(client):
    assert client.get("/health") == {"status": "ok"}
    models = client.get("/v1/models")
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["tiny"] and models["data"][0]["max_model_len"] == 2048


def test_chat_completion_schema_and_prompt_accounting(client, model_dir):
    answer = client.chat("What is 2+2?", max_tokens=5, temperature=0)
    assert answer["object"] == "chat.completion" and answer["id"].startswith("chatcmpl-")
    assert answer["model"] == "tiny" and isinstance(answer["created"], int)
    (choice,) = answer["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["logprobs"] is None
    assert choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    tokenizer = load_tokenizer(model_dir)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], tokenize=False, add_generation_prompt=True
    )
    assert usage["prompt_tokens"] == len(tokenizer.encode(rendered, add_special_tokens=False))
    assert 1 <= usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_accepts_content_parts(client):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]
    as_parts = client.post(
        "/v1/chat/completions", {"messages": [{"role": "user", "content": parts}], "max_tokens": 4, "temperature": 0}
    )
    as_text = client.chat("What is 2+2?", max_tokens=4, temperature=0)
    assert as_parts["choices"][0]["message"] == as_text["choices"][0]["message"]
    assert as_parts["usage"] == as_text["usage"]


def test_completions_schema_with_a_list_of_prompts(client):
    answer = client.complete(["What is 1+1?", "Hi"], max_tokens=4, temperature=0)
    assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
    assert [c["index"] for c in answer["choices"]] == [0, 1]
    assert all(isinstance(c["text"], str) and c["finish_reason"] in ("stop", "length") for c in answer["choices"])
    singles = [client.complete(p, max_tokens=4, temperature=0) for p in ("What is 1+1?", "Hi")]
    assert [c["text"] for c in answer["choices"]] == [s["choices"][0]["text"] for s in singles]
    assert answer["usage"]["prompt_tokens"] == sum(s["usage"]["prompt_tokens"] for s in singles)
    assert answer["usage"]["completion_tokens"] == sum(s["usage"]["completion_tokens"] for s in singles)


# -- generation semantics --------------------------------------------------------------------------------------


def test_greedy_matches_hf_generate_and_repeats(client, reference):
    tokenizer = reference[1]
    for prompt in PROMPTS[:3]:
        first = client.complete(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
        second = client.complete(prompt, max_tokens=12, temperature=0)["choices"][0]["text"]
        assert first == second
        assert first == hf_greedy_text(reference, tokenizer.encode(prompt), 12)


def test_max_tokens_is_respected(client):
    for max_tokens in (1, 3, 17):
        answer = client.complete("What is 1+1?", max_tokens=max_tokens, temperature=1.0, seed=5, ignore_eos=True)
        assert answer["usage"]["completion_tokens"] == max_tokens
        assert answer["choices"][0]["finish_reason"] == "length"
        capped = client.chat("Hi", max_tokens=max_tokens, temperature=0)
        assert capped["usage"]["completion_tokens"] <= max_tokens


def test_stop_strings_cut_the_text_and_finish_with_stop(client):
    full = client.complete("Question: 7-2", max_tokens=24, temperature=1.0, seed=11, ignore_eos=True)
    text = full["choices"][0]["text"]
    # two plain characters from inside the continuation (not from a partially decoded multi-byte character)
    stop = next(
        text[i : i + 2] for i in range(4, len(text) - 1) if text[i : i + 2].isascii() and text[i : i + 2].strip()
    )
    cut = client.complete("Question: 7-2", max_tokens=24, temperature=1.0, seed=11, ignore_eos=True, stop=stop)
    choice = cut["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["text"] == text[: text.index(stop)] and stop not in choice["text"]
    assert cut["usage"]["completion_tokens"] < 24
    listed = client.complete(
        "Question: 7-2", max_tokens=24, temperature=1.0, seed=11, ignore_eos=True, stop=["never appears", stop]
    )
    assert listed["choices"][0]["text"] == choice["text"]


def test_seeded_sampling_is_reproducible(client):
    options = {"max_tokens": 16, "temperature": 1.0, "top_p": 0.95, "ignore_eos": True}
    texts = {seed: client.complete("What is 1+1?", seed=seed, **options)["choices"][0]["text"] for seed in (1, 2, 3)}
    assert client.complete("What is 1+1?", seed=2, **options)["choices"][0]["text"] == texts[2]
    assert len(set(texts.values())) > 1  # different seeds, different samples


def test_top_k_one_is_greedy(client):
    greedy = client.complete("Hi", max_tokens=10, temperature=0)["choices"][0]["text"]
    assert client.complete("Hi", max_tokens=10, temperature=1.5, top_k=1)["choices"][0]["text"] == greedy
    assert client.complete("Hi", max_tokens=10, temperature=1.0, min_p=1.0)["choices"][0]["text"] == greedy


def test_chat_logprobs_shape(client):
    answer = client.chat("What is 2+2?", max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = answer["choices"][0]["logprobs"]["content"]
    assert len(content) == answer["usage"]["completion_tokens"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert entry["logprob"] <= 0 and entry["bytes"] == list(entry["token"].encode())
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True)
        assert entry["logprob"] == pytest.approx(tops[0])  # greedy picks the most likely token
    assert "".join(entry["token"] for entry in content).startswith(answer["choices"][0]["message"]["content"][:1])


def test_completion_logprobs_shape(client):
    answer = client.complete("What is 1+1?", max_tokens=5, temperature=1.0, seed=3, logprobs=2, ignore_eos=True)
    logprobs = answer["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 5
    assert all(lp <= 0 for lp in logprobs["token_logprobs"])
    # vLLM's semantics: the 2 best and the sampled token (first) when it is not among them
    assert all(1 <= len(top) <= 3 for top in logprobs["top_logprobs"])
    assert [next(iter(top)) for top in logprobs["top_logprobs"]] == logprobs["tokens"]
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"]) and logprobs["text_offset"][0] == 0


# -- batching --------------------------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_and_answered_like_single_ones(client):
    """24 concurrent greedy requests of different lengths and budgets join and leave one running batch; each
    must get exactly what it gets alone (left padding, cache merging and trimming are invisible)."""
    jobs = [(PROMPTS[i % len(PROMPTS)], 4 + (i * 5) % 23) for i in range(24)]
    alone = {job: client.complete(job[0], max_tokens=job[1], temperature=0)["choices"][0]["text"] for job in set(jobs)}
    before = client.get("/metrics")
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: client.complete(job[0], max_tokens=job[1], temperature=0), jobs))
    assert [a["choices"][0]["text"] for a in answers] == [alone[job] for job in jobs]
    deadline = time.monotonic() + 10  # the worker retires the last rows just after answering them
    while (metrics := client.get("/metrics"))["active_sequences"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics["max_batch_size_seen"] > 1
    assert metrics["requests_served"] >= before["requests_served"] + len(jobs)
    assert metrics["tokens_generated"] >= before["tokens_generated"] + sum(
        a["usage"]["completion_tokens"] for a in answers
    )
    assert metrics["tokens_per_second"] > 0 and metrics["active_sequences"] == 0 and metrics["queued_sequences"] == 0


def test_mixed_sampling_parameters_in_one_batch(client):
    """Per-row sampling: greedy, seeded and filtered requests sharing a batch each behave as they do alone."""
    requests = [
        {"temperature": 0},
        {"temperature": 1.0, "seed": 42},
        {"temperature": 0.7, "top_k": 5, "seed": 7},
        {"temperature": 1.2, "top_p": 0.5, "min_p": 0.05, "seed": 9},
    ] * 4
    common = {"prompt": "What is 1+1?", "max_tokens": 12, "ignore_eos": True}
    alone = [client.post("/v1/completions", {**common, **r})["choices"][0]["text"] for r in requests[:4]]
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(lambda r: client.post("/v1/completions", {**common, **r}), requests))
    assert [a["choices"][0]["text"] for a in together] == alone * 4


def test_a_client_that_goes_away_cancels_its_generation(server):
    """The row is dropped, not generated to the end: it never counts as finished."""
    client = server["client"]
    before = client.get("/metrics")
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=0.5)
    body = {"prompt": "Hi", "max_tokens": 2000, "temperature": 1.0, "ignore_eos": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    with pytest.raises(TimeoutError):
        connection.getresponse()
    connection.close()
    assert_one_sequence_cancelled(client, before)


def assert_one_sequence_cancelled(client, before: dict) -> None:
    """Within 15 s the batch is empty again, one more sequence was cancelled and none more finished."""
    deadline = time.monotonic() + 15
    while (metrics := client.get("/metrics"))["active_sequences"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metrics["active_sequences"] == 0
    assert metrics["sequences_cancelled"] == before["sequences_cancelled"] + 1
    assert metrics["sequences_finished"] == before["sequences_finished"]


def test_a_stream_reader_that_goes_away_cancels_its_generation(server):
    """Streamed tokens arrive while the sequence runs; closing the stream drops the row."""
    client = server["client"]
    before = client.get("/metrics")
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    body = {"prompt": "Hi", "max_tokens": 2000, "temperature": 1.0, "ignore_eos": True, "stream": True}
    connection.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/event-stream")
    first = response.readline()
    assert first.startswith(b"data: {") and json.loads(first[6:])["choices"][0]["finish_reason"] is None
    connection.close()
    assert_one_sequence_cancelled(client, before)


# -- bad requests ------------------------------------------------------------------------------------------------

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("/v1/chat/completions", {**CHAT, "bogus": 1}, "Unrecognized request argument supplied: bogus"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": "ten"}, "'max_tokens' must be an integer"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": True}, "'max_tokens' must be an integer"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, "'max_tokens' must be >= 1"),
        ("/v1/chat/completions", {**CHAT, "temperature": -1}, "'temperature' must be >= 0"),
        ("/v1/chat/completions", {**CHAT, "top_p": 0}, "'top_p' must be > 0"),
        ("/v1/chat/completions", {**CHAT, "n": 2, "temperature": 0}, "n must be 1 when using greedy sampling"),
        ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, "only be set when 'stream'"),
        ("/v1/chat/completions", {**CHAT, "stop": 5}, "'stop' must be"),
        ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "requires 'logprobs': true"),
        ("/v1/chat/completions", {**CHAT, "frequency_penalty": 2.5}, "'frequency_penalty' must be >= -2.0"),
        ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, "'response_format'"),
        ("/v1/chat/completions", {**CHAT, "logit_bias": {"999": 1}}, "token id 999 is outside 0..335"),
        ("/v1/chat/completions", {"messages": []}, "'messages' must be a non-empty list"),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, "must be an object with a string 'role'"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 5000}, "maximum context length (2048 tokens)"),
        ("/v1/completions", {"prompt": "x " * 2100, "max_tokens": 2}, "maximum context length is 2048 tokens"),
        ("/v1/completions", {"prompt": 5}, "'prompt' must be a string, a list of strings, or token ids"),
        ("/v1/completions", {"prompt": [1, 400]}, "'prompt' token ids must be integers between 0 and 335"),
        ("/v1/completions", {"prompt": ""}, "'prompt' must not be empty"),
        ("/v1/completions", {"prompt": "x", "logprobs": 50}, "'logprobs' must be between 0 and 20"),
        ("/v1/completions", {"prompt": "x", "n": 2, "best_of": 1}, "'best_of' (1) must be >= 'n' (2)"),
        ("/v1/completions", {"prompt": "x", "suffix": "y"}, "'suffix' (fill-in-the-middle) is not supported"),
    ],
)
def test_bad_requests_get_400_with_an_openai_error(client, path, body, fragment):
    status, answer = client.request("POST", path, body)
    assert status == 400, answer
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error" and fragment in answer["error"]["message"]


def test_invalid_json_and_wrong_model_name(client):
    status, answer = client.request("POST", "/v1/completions", raw=b"{not json")
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    status, answer = client.request("POST", "/v1/completions", {"prompt": "x", "model": "other"})
    assert status == 404 and "`other` does not exist" in answer["error"]["message"]
    assert client.complete("x", model="tiny", max_tokens=1)["model"] == "tiny"


def test_server_stays_healthy_after_bad_requests(client):
    assert client.get("/metrics")["bad_requests"] > 0
    assert client.complete("Hi", max_tokens=2, temperature=0)["usage"]["completion_tokens"] >= 1


def test_importing_the_server_module_imports_no_torch():
    probe = "import sys, skills_cli.inference.server.hf_server; print(sorted({'torch', 'transformers', 'aiohttp'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=server_env())
    assert result.stdout.strip() == "[]"
