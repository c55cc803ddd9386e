"""No open model servers: the per-job API key (made at job start, sent by our client, required by the hf
server), loopback binding of single-node servers, and no absolute paths in what the server answers.

One real hf server (tiny model) serves the HTTP tests; one real `ns generate` on executor none shows where a
job's server listens and that its key stays out of files.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import run_ns, write_config
from test_hf_server import SERVER, free_port, server_env, wait_for_health

from skills_cli.common.errors import UserError
from skills_cli.inference.config import InferenceConfig, ServerConfig
from skills_cli.inference.server.auth import API_KEY_ENV, new_api_key
from skills_cli.pipeline import generate, wrap_arguments
from skills_cli.pipeline.servers import ServerSpec

KEY = new_api_key()
HEX_KEY = re.compile(r"\b[0-9a-f]{64}\b")


# -- the commands that start servers (dry runs: no server) ----------------------------------------------
SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
container_runtime: pyxis
containers: {main: /img/skills.sqsh, vllm: vllm/vllm-openai:v0.10.1.1, sglang: lmsysorg/sglang:v0.5.4,
             trtllm: nvcr.io/nvidia/tensorrt-llm/release:1.0.0}
"""


def slurm_dry_run(config_dir, server_type: str, nodes: int = 1) -> str:
    write_config(config_dir, "cluster", SLURM)
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math"), cluster="cluster", config_dir=str(config_dir),
        input_file="/w/in.jsonl", output_dir="/w/out", model="/w/model", server_type=server_type, server_gpus=8,
        server_nodes=nodes, expname=f"sec-{server_type}", dry_run=True,
    )  # fmt: skip
    return submission.dry_run_text


def server_line(text: str) -> str:
    (line,) = [line for line in text.splitlines() if "server.log" in line and " srun " in line]
    return line


@pytest.mark.parametrize("server_type", ["hf", "vllm", "sglang", "trtllm"])
def test_single_node_servers_listen_on_loopback_and_the_key_is_made_at_run_time(server_type, config_dir):
    text = slurm_dry_run(config_dir, server_type)
    line = server_line(text)
    assert "--host 127.0.0.1" in line and "0.0.0.0" not in text
    # the key is made by the job script when it runs: a command in the script, no value in it
    assert f"export {API_KEY_ENV}=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \\n')" in text
    assert not HEX_KEY.search(text)
    key_word = f'"${{{API_KEY_ENV}:?this job has no server API key}}"'
    if server_type == "vllm":  # from the environment, not argv (`ps` shows argv to everyone)
        assert f"VLLM_API_KEY={key_word} python3 -m vllm" in line and "--api-key" not in line
    if server_type == "sglang":  # SGLang has only the flag
        assert f"--api-key {key_word}" in line


@pytest.mark.parametrize("server_type", ["vllm", "sglang"])
def test_multi_node_servers_listen_on_all_interfaces_with_the_key(server_type, config_dir):
    line = server_line(slurm_dry_run(config_dir, server_type, nodes=2))
    assert "--host 0.0.0.0" in line and f"${{{API_KEY_ENV}:?" in line


def test_a_server_reachable_from_other_machines_needs_a_key_option():
    assert ServerSpec("vllm", "/m", gpus=1, host="0.0.0.0").bind_host == "0.0.0.0"
    with pytest.raises(UserError, match="trtllm-serve has no API key option"):
        ServerSpec("trtllm", "/m", gpus=1, host="0.0.0.0")
    with pytest.raises(UserError, match="must be an IP address or a host name"):
        ServerSpec("hf", "/m", host="0.0.0.0; rm -rf /")


def test_local_dry_run_announces_the_key_without_a_value(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"problem": "1 + 1"}\n')
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math"), input_file=str(tmp_path / "in.jsonl"),
        output_dir=str(tmp_path / "out"), model="/w/model", server_type="hf", expname="sec-local", dry_run=True,
    )  # fmt: skip
    text = submission.dry_run_text
    assert f"# {API_KEY_ENV} is set to a new random key when the job starts (never printed)" in text
    assert "--host 127.0.0.1" in text and not HEX_KEY.search(text)


def test_start_server_on_slurm_listens_beyond_loopback_and_keeps_the_key_in_an_owner_only_file(config_dir):
    from skills_cli.pipeline import start_server

    write_config(config_dir, "cluster", SLURM)
    handle = start_server(cluster="cluster", config_dir=str(config_dir), model="/w/model", server_type="vllm",
                          server_gpus=1, expname="srv", dry_run=True)  # fmt: skip
    text = handle.submission.dry_run_text
    assert "--host 0.0.0.0" in text and f'VLLM_API_KEY="${{{API_KEY_ENV}:?' in text
    # the key goes to an owner-only file (umask 077) by a shell builtin (printf: not visible in `ps`)
    assert "(umask 077 && printf" in text and f'"${API_KEY_ENV}" > "$SKILLS_CLI_RUN_DIR/server.key")' in text
    with pytest.raises(UserError, match="trtllm-serve has no API key option"):
        start_server(cluster="cluster", config_dir=str(config_dir), model="/w/model", server_type="trtllm",
                     server_gpus=1, expname="srv-trt", dry_run=True)  # fmt: skip


# -- the hf server -------------------------------------------------------------------------------------
def start_hf_server(model_dir: Path, stderr_path: Path, host: str, env: dict) -> subprocess.Popen:
    port = free_port()
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen([*SERVER, "--model", str(model_dir), "--host", host, "--port", str(port)],
                                   stdout=subprocess.DEVNULL, stderr=stderr, env=env)  # fmt: skip
    process.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return process


@pytest.mark.parametrize(("host", "key", "message"), [
    ("0.0.0.0", None, "refusing to listen on 0.0.0.0 without an API key"),
    ("127.0.0.1", "", f"${API_KEY_ENV} is set but empty"),
])  # fmt: skip
def test_hf_server_refuses_to_start_unprotected(tmp_path, host, key, message):
    env = {k: v for k, v in server_env().items() if k != API_KEY_ENV}
    if key is not None:
        env[API_KEY_ENV] = key
    # before any model loading: a missing model directory is never looked at
    result = subprocess.run([*SERVER, "--model", str(tmp_path / "absent"), "--host", host, "--port", "0"],
                            capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert result.returncode == 1 and result.stderr.strip() == f"hf_server: {message}" + (
        ": set $SKILLS_SERVER_API_KEY or use 127.0.0.1" if key is None else "; set it to a key or unset it"
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    from skills_cli.inference.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny-secure", arch="llama")


@pytest.fixture(scope="module")
def keyed_server(model_dir, tmp_path_factory):
    """A real hf server started like a job starts it: the key in its environment only."""
    stderr_path = tmp_path_factory.mktemp("server") / "stderr.txt"
    process = start_hf_server(model_dir, stderr_path, "127.0.0.1", {**server_env(), API_KEY_ENV: KEY})
    try:
        wait_for_health(process, process.base, stderr_path, 90)  # /health needs no key
        assert "API key required" in stderr_path.read_text()
        assert KEY not in Path(f"/proc/{process.pid}/cmdline").read_text()  # `ps` shows this to everyone
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def http(base: str, method: str, path: str, key: str | None, body: dict | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("POST", "/v1/completions", {"prompt": "1+1=", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
])  # fmt: skip
@pytest.mark.parametrize("key", [None, "wrong", f"{KEY}x"])
def test_no_or_wrong_key_gets_an_openai_shaped_401(keyed_server, method, path, body, key):
    status, text = http(keyed_server.base, method, path, key, body)
    assert status == 401
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
    assert "API key" in error["message"] and KEY not in text


def test_the_official_openai_client_works_with_the_key(keyed_server, model_dir):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{keyed_server.base}/v1", api_key=KEY)
    (model,) = client.models.list().data
    assert model.id == "tiny-secure"  # the folder's name, not its absolute path
    completion = client.completions.create(model=model.id, prompt="1+1=", max_tokens=3, temperature=0)
    assert completion.choices[0].text and completion.model == "tiny-secure"
    # a client that names the model by the path the server was started with is still served
    assert client.completions.create(model=str(model_dir), prompt="1+", max_tokens=1).model == "tiny-secure"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_server.base}/v1", api_key="wrong").models.list()


def test_no_absolute_path_in_answers(keyed_server, model_dir):
    answers = [
        http(keyed_server.base, "GET", "/v1/models", KEY),
        http(keyed_server.base, "GET", "/metrics", KEY),
        http(keyed_server.base, "POST", "/v1/completions", KEY, {"prompt": "x", "model": "other"}),
        http(keyed_server.base, "POST", "/v1/completions", KEY, {"prompt": "x", "max_tokens": 99999}),
        http(keyed_server.base, "POST", "/v1/nothing", KEY, {}),
    ]
    assert [status for status, _ in answers] == [200, 200, 404, 400, 404]
    for _, text in answers:
        assert str(model_dir) not in text and str(model_dir.parent) not in text


def test_our_client_sends_the_job_key_and_fails_fast_without_it(keyed_server, monkeypatch):
    from skills_cli.inference.client import OpenAIClient

    config = ServerConfig(server_type="hf", base_url=f"{keyed_server.base}/v1", model="tiny-secure")

    async def wait_and_complete() -> str:
        async with OpenAIClient(config, InferenceConfig(tokens_to_generate=2), concurrency=2) as client:
            await client.wait_until_ready(timeout=30)
            return (await client.complete("1+1=")).finish_reason

    monkeypatch.setenv(API_KEY_ENV, KEY)
    assert asyncio.run(wait_and_complete()) in ("stop", "length")
    monkeypatch.delenv(API_KEY_ENV)
    with pytest.raises(UserError, match="refused this job's API key"):  # at once, not after the timeout
        asyncio.run(wait_and_complete())
    # an external API never gets the job's key (it is for the job's own server)
    monkeypatch.setenv(API_KEY_ENV, KEY)
    from skills_cli.inference.client import request_api_key

    assert request_api_key(ServerConfig(server_type="openai", base_url="https://api.example.com/v1")) is None
    assert request_api_key(ServerConfig(server_type="vllm")) == KEY


# -- a real job ----------------------------------------------------------------------------------------
PROBE = textwrap.dedent("""
    import json, os, sys
    port = int(os.environ["SKILLS_SERVER_PORT"])
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in open(table).read().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:  # 0A: LISTEN
                listening.append(local.split(":")[0])
    json.dump({"listening": listening, "key": os.environ.get("SKILLS_SERVER_API_KEY", "")}, open(sys.argv[1], "w"))
""")


def test_a_generate_job_serves_on_loopback_only_with_a_key_kept_out_of_files(model_dir, tmp_path):
    """The probe runs as the job's postprocess step, while the job's server is still up."""
    (tmp_path / "in.jsonl").write_text(json.dumps({"problem": "1+1?"}) + "\n")
    (tmp_path / "probe.py").write_text(PROBE)
    seen = tmp_path / "seen.json"
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math ++inference.tokens_to_generate=4"),
        input_file=str(tmp_path / "in.jsonl"), output_dir=str(tmp_path / "out"), model=str(model_dir),
        server_type="hf", expname="sec-gen", postprocess_cmd=f"{sys.executable} {tmp_path / 'probe.py'} {seen}",
    )  # fmt: skip
    assert submission.succeeded, run_ns("logs", "sec-gen").stdout
    probe = json.loads(seen.read_text())
    assert probe["listening"] == ["0100007F"]  # 127.0.0.1, and nothing on other interfaces
    key = probe["key"]
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    (record,) = submission.records
    files = [p for p in Path(record.work_dir).rglob("*") if p.is_file()] + [
        p for p in Path(record.log_path).parent.rglob("*") if p.is_file()
    ]
    assert any(p.name == "spec.json" for p in files) and any(p.name == "server.log" for p in files)
    for path in files:
        assert key not in path.read_text(errors="replace"), path
    assert "on http://127.0.0.1:" in (Path(record.work_dir) / "server.log").read_text()
    assert "API key required" in (Path(record.work_dir) / "server.log").read_text()
