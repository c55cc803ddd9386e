"""Real vLLM (its CPU build, in its own environment) behind `ns`: generation with chunks and seeds against a running
server, `ns eval` with a server each job hosts, a server whose engine dies mid-run (the job fails naming vLLM's
own error; a rerun loses and duplicates nothing), and the same server in Docker and in a Slurm job's container.

A vLLM start costs ~50 s on two cores: the session shares one `ns start_server` (conftest `vllm_server`), and each
other test starts exactly the servers it is about."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, SMALL_KV_CACHE, local_vllm_config, run_ns, vllm_python, write_config

from skills_cli.common.artifacts import read_json_artifact
from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.store import JobState, Store

# each vLLM start costs ~50 s on two idle cores, several times that on busy ones
pytestmark = pytest.mark.timeout(1500)
FAST = ["++prompt_config=generic/math", "++inference.tokens_to_generate=16", "++inference.temperature=0.7"]
KEY_ENV = "SHARED_VLLM_KEY"


@pytest.fixture(autouse=True)
def small_kv_cache(monkeypatch):
    for name, value in SMALL_KV_CACHE.items():
        monkeypatch.setenv(name, value)


def problems(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + {i + 1}?"}) + "\n" for i in range(count)))
    return path


def generate_args(data: Path, out: Path, model: str, expname: str, *extra: str) -> list[str]:
    return ["generate", "--input_file", str(data), "--output_dir", str(out), "--model", model, "--expname", expname,
            *FAST, *extra]  # fmt: skip


def test_chunks_and_seeds_against_a_running_vllm_server(vllm_server, tmp_path):
    data, out = problems(tmp_path / "in.jsonl", 12), tmp_path / "out"
    result = run_ns(*generate_args(data, out, vllm_server.model, "chunks", "--server_type", "vllm",
                                   "--server_address", vllm_server.base_url, "--num_chunks", "2",
                                   "--num_random_seeds", "2", f"++server.api_key_env={KEY_ENV}"),
                    env={KEY_ENV: vllm_server.api_key}, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {seed: read_jsonl(out / f"output-rs{seed}.jsonl") for seed in (0, 1)}
    for rows in runs.values():
        assert [row["id"] for row in rows] == list(range(12))  # both chunks merged, in input order
        assert all(row["generation"] for row in rows)
    # seeds reach vLLM: two seeds sample differently at temperature 0.7
    assert [row["generation"] for row in runs[0]] != [row["generation"] for row in runs[1]]


def test_eval_hosts_vllm_and_grades_every_seed(tmp_path):
    from skills_cli.inference.tiny_model import build_tiny_model

    model = str(build_tiny_model(tmp_path / "tiny"))
    config = local_vllm_config(tmp_path / "configs")
    data = tmp_path / "data"
    run_ns("prepare_data", "arith", "--output_dir", str(data), check=True)
    result = run_ns("eval", "--cluster", "local_vllm", "--config_dir", str(config.parent), "--model", model,
                    "--server_type", "vllm", "--server_gpus", "0", "--benchmarks", "arith:2", "--data_dir", str(data),
                    "--max_samples", "6", "--output_dir", str(tmp_path / "eval"), "--expname", "veval", "--num_jobs",
                    "1", "++inference.tokens_to_generate=8", timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, metrics = read_json_artifact(tmp_path / "eval" / "metrics.json")
    assert metrics["arith"]["pass@2"]["num_entries"] == 6
    (generation,) = [r for r in Store().jobs("veval") if r.name == "generate"]
    server_log = (Path(generation.work_dir) / "server.log").read_text()
    assert "vLLM" in server_log or "vllm" in server_log  # vLLM served it, not our hf server
    assert server_log.count("Starting vLLM server") == 1  # one server for both seeds


def engine_core_of(model: str) -> int:
    """The pid of the engine process of the vLLM server that serves `model` (a child of its API server)."""
    servers = {p.name for p in Path("/proc").iterdir() if p.name.isdigit() and model in cmdline(p)
               and "vllm.entrypoints.openai.api_server" in cmdline(p)}  # fmt: skip
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and "EngineCore" in cmdline(entry) and parent(entry) in servers:
            return int(entry.name)
    raise AssertionError(f"no vLLM engine process serves {model}")


def cmdline(entry: Path) -> str:
    try:
        return (entry / "cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
    except OSError:
        return ""


def parent(entry: Path) -> str:
    try:
        status = (entry / "status").read_text()
    except OSError:
        return ""
    return next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")


def test_engine_death_fails_the_job_with_vllms_reason_and_a_rerun_resumes(tmp_path):
    from skills_cli.inference.tiny_model import build_tiny_model

    model = str(build_tiny_model(tmp_path / "tiny"))
    config = local_vllm_config(tmp_path / "configs")
    data, out = problems(tmp_path / "in.jsonl", 60), tmp_path / "out"
    hosted = ["--cluster", "local_vllm", "--config_dir", str(config.parent), "--server_type", "vllm", "--server_gpus",
              "0", "++max_concurrent_requests=2"]  # fmt: skip
    args = generate_args(data, out, model, "vdeath", *hosted)
    first = subprocess.Popen([sys.executable, "-m", "skills_cli", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    side = out / "output.jsonl-async"
    deadline = time.time() + 600
    while time.time() < deadline and (not side.exists() or len(side.read_text().splitlines()) < 5):
        time.sleep(0.5)
    assert side.exists(), "generation never started"
    os.kill(engine_core_of(model), 9)  # the engine dies as under the OOM killer; its API server lives on a while
    _, stderr = first.communicate(timeout=300)
    assert first.returncode != 0
    (record,) = Store().jobs("vdeath")
    assert record.state is JobState.FAILED
    logs = run_ns("logs", "vdeath").stdout
    assert "the model server" in logs, logs[-3000:]
    reason = "\n".join(logs[logs.rindex("the model server") :].splitlines()[:14])  # the client's error
    assert "EngineDeadError" in reason or "EngineCore" in reason, reason
    assert "nanobind" not in reason and "leaked" not in reason  # its reason, not its shutdown noise
    partial = len(side.read_text().splitlines())
    assert 5 <= partial < 60 and not (out / "output.jsonl").exists()
    again = run_ns(*generate_args(data, out, model, "vdeath2", *hosted), timeout=900)  # a new server
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["id"] for row in read_jsonl(out / "output.jsonl")] == list(range(60))  # each once, in order


@pytest.fixture(scope="session")
def vllm_image(infra) -> str:
    """The vLLM server image, built locally from the vLLM environment on the infrastructure's Debian image."""
    vllm_python()
    result = subprocess.run(["bash", str(REPO / "scripts/server_image.sh"), "vllm", infra["SKILLS_INFRA_IMAGE"]],
                            capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def container_generation(tmp_path: Path, cluster: str, config_dir: Path, expname: str) -> list[dict]:
    """`ns generate` with a hosted CPU vLLM on `cluster`; the output rows."""
    from skills_cli.inference.tiny_model import build_tiny_model

    model = str(build_tiny_model(tmp_path / "tiny"))
    data, out = problems(tmp_path / "in.jsonl", 4), tmp_path / "out"
    result = run_ns(*generate_args(data, out, model, expname, "--cluster", cluster, "--config_dir", str(config_dir),
                                   "--server_type", "vllm", "--server_gpus", "0"), timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    store = Store()  # Slurm submissions return once queued
    records = wait(store.jobs(expname), store, timeout=900, poll=2.0)
    assert all(r.state is JobState.SUCCEEDED for r in records), run_ns("logs", expname).stdout[-3000:]
    return read_jsonl(out / "output.jsonl")


# The vLLM image also serves as `main` here: our programs need aiohttp, PyYAML and Jinja2, which it has (vLLM
# needs them too) and the bare Debian image of the infrastructure has not; our code comes with each job.
CONTAINERS = "containers:\n  main: {image}\n  vllm: {image}\n"


@pytest.mark.infra
def test_vllm_in_docker(vllm_image, config_dir, tmp_path):
    write_config(config_dir, "docker_vllm", "executor: local\n" + CONTAINERS.format(image=vllm_image)
                 + f'mounts: ["{tmp_path}:{tmp_path}"]\nenv_vars: [VLLM_CPU_KVCACHE_SPACE]\n')  # fmt: skip
    assert [row["id"] for row in container_generation(tmp_path, "docker_vllm", config_dir, "vdocker")] == [0, 1, 2, 3]


@pytest.mark.infra
def test_vllm_as_a_container_of_a_slurm_job(vllm_image, slurm_config, tmp_path):
    text = (slurm_config / "slurm_docker.yaml").read_text().split("containers:")[0]
    write_config(slurm_config, "slurm_vllm", text + CONTAINERS.format(image=vllm_image)
                 + f'mounts: ["{tmp_path}:{tmp_path}"]\nenv_vars: [VLLM_CPU_KVCACHE_SPACE]\n')  # fmt: skip
    assert [row["id"] for row in container_generation(tmp_path, "slurm_vllm", slurm_config, "vslurm")] == [0, 1, 2, 3]
