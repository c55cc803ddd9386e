"""Shared fixtures: an isolated metadata store per test, and the local test infrastructure.

Tests marked `infra` need tests/infra/local_cluster.sh (Slurm + slurmdbd, sshd, dockerd). Where it is not
up they are skipped, except when SKILLS_REQUIRE_INFRA=1 (scripts/test.sh and CI set it): then its absence
is a failure, so CI can never pass by skipping the real-component tests.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INFRA_STATE = Path(os.environ.get("SKILLS_INFRA_STATE", "/tmp/skills-cli-infra"))


def benchmarks_dir() -> Path:
    """The shared benchmark mirror the tests read (never a copy in the repository): $SKILLS_BENCHMARKS_DIR,
    else ../shared/data/benchmarks next to the checkout, else the workplace's /work/shared copy."""
    candidates = [os.environ.get("SKILLS_BENCHMARKS_DIR"), REPO.parent / "shared" / "data" / "benchmarks",
                  "/work/shared/data/benchmarks"]  # fmt: skip
    for candidate in candidates:
        if candidate and (Path(candidate) / "gsm8k" / "test.jsonl").is_file():
            return Path(candidate)
    return Path(candidates[1])


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own store, logs and code snapshots, and runs from a scratch directory."""
    home = tmp_path / "skills_home"
    monkeypatch.setenv("SKILLS_CLI_HOME", str(home))
    monkeypatch.delenv("SKILLS_CLI_CONFIG_DIR", raising=False)
    monkeypatch.delenv("SKILLS_CLI_CONFIG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def _infra_env() -> dict[str, str] | None:
    path = INFRA_STATE / "env.json"
    if not path.is_file():
        return None
    env = json.loads(path.read_text())
    up = subprocess.run(["bash", str(REPO / "tests/infra/local_cluster.sh"), "status"], capture_output=True)
    return env if up.returncode == 0 else None


_INFRA = None


@pytest.fixture(scope="session")
def infra() -> dict[str, str]:
    """The local infrastructure's settings (env.json written by local_cluster.sh up)."""
    global _INFRA
    if _INFRA is None:
        _INFRA = _infra_env() or {}
    if not _INFRA:
        message = "local test infrastructure is not up (bash tests/infra/local_cluster.sh up)"
        if os.environ.get("SKILLS_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return _INFRA


@pytest.fixture
def config_dir(tmp_path) -> Path:
    directory = tmp_path / "cluster_configs"
    directory.mkdir()
    return directory


def write_config(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


def ssh_tunnel_yaml(infra: dict, job_dir: str | Path) -> str:
    """The `ssh_tunnel:` section of a cluster config for the local Slurm's login over SSH."""
    return f"""ssh_tunnel:
  host: {infra["SKILLS_INFRA_SSH_HOST"]}
  port: {infra["SKILLS_INFRA_SSH_PORT"]}
  user: {infra["SKILLS_INFRA_SSH_USER"]}
  identity: {infra["SKILLS_INFRA_SSH_KEY"]}
  job_dir: {job_dir}
  connect_timeout: 10
"""


@pytest.fixture
def slurm_config(infra, config_dir, tmp_path) -> Path:
    """Cluster configs for the local Slurm: over SSH without containers (`slurm_local`), over SSH with the
    docker runtime (`slurm_docker`), and on the 'login node' itself through a LocalTunnel (`slurm_login`)."""
    job_dir = f"/root/skills_test_jobs/{tmp_path.name}"
    tunnel = "\n" + ssh_tunnel_yaml(infra, job_dir) + f"partition: {infra['SKILLS_INFRA_PARTITION']}\n"
    write_config(config_dir, "slurm_local", "executor: slurm\n" + tunnel)
    write_config(
        config_dir,
        "slurm_docker",
        "executor: slurm\n"
        + tunnel
        + f"""container_runtime: docker
containers:
  main: {infra["SKILLS_INFRA_IMAGE"]}
""",
    )
    write_config(
        config_dir,
        "slurm_podman",
        "executor: slurm\n"
        + tunnel
        + f"""container_runtime: podman
containers:
  main: {infra["SKILLS_INFRA_IMAGE"]}
""",
    )
    write_config(
        config_dir,
        "slurm_login",
        f"""executor: slurm
job_dir: {job_dir}-login
partition: {infra["SKILLS_INFRA_PARTITION"]}
""",
    )
    return config_dir


def run_ns(
    *args: str, check: bool = False, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the real `ns` entry point in a subprocess (same interpreter)."""
    result = subprocess.run([sys.executable, "-m", "skills_cli", *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"ns {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 16 MiB tmpfs (root only), for tests of what happens when the disk fills up (ENOSPC).

    Without mount rights the test is skipped, except where the infrastructure is required (CI runs as root).
    """
    mountpoint = tmp_path / "small_disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        message = f"cannot mount a small tmpfs: {mounted.stderr.strip()}"
        if os.environ.get("SKILLS_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def fill_disk(directory: Path, leave_bytes: int = 0) -> None:
    """Fill the filesystem of `directory` until at most `leave_bytes` are free."""
    filler = directory / ".filler"
    with open(filler, "ab") as handle:
        while True:
            free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
            if free <= leave_bytes:
                break
            try:
                handle.write(b"\0" * min(4096, max(free - leave_bytes, 1)))
                handle.flush()
            except OSError:
                break


def vllm_python() -> str:
    """The interpreter of the vLLM server environment (scripts/server_env.sh vllm, built by the test command).

    Missing, the vLLM tests fail under SKILLS_REQUIRE_INFRA=1 (CI) and are skipped elsewhere."""
    path = os.environ.get("SKILLS_VLLM_PYTHON") or str(REPO / ".venv-vllm" / "bin" / "python")
    if not Path(path).is_file():
        message = f"no vLLM environment at {path} (bash scripts/server_env.sh vllm builds it)"
        if os.environ.get("SKILLS_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


# vLLM's CPU build takes a quarter of the available memory for its KV cache by default; tests run several
# servers beside each other, and a tiny model needs little
SMALL_KV_CACHE = {"VLLM_CPU_KVCACHE_SPACE": "1"}


@dataclass(frozen=True)
class RunningServer:
    """An OpenAI-compatible server started by `ns start_server` for a whole test session."""

    base_url: str  # http://127.0.0.1:PORT/v1
    api_key: str
    model: str  # the served model name
    model_dir: str
    home: str  # the SKILLS_CLI_HOME it was started with (`ns cancel` needs it)
    expname: str
    run_dir: str  # the job's run dir: server.log, server.exit


def local_vllm_config(directory: Path) -> Path:
    """executor none, with the vLLM environment of this test run as the `vllm` role's interpreter."""
    directory.mkdir(parents=True, exist_ok=True)
    return write_config(directory, "local_vllm", f"executor: none\ninterpreters:\n  vllm: {vllm_python()}\n")


def start_shared_server(root: Path, model_dir: str, *server_args: str) -> RunningServer:
    """`ns start_server` in its own store under `root`; its address, key and run dir."""
    home = root / "home"
    config = local_vllm_config(root / "configs")
    env = {"SKILLS_CLI_HOME": str(home), **SMALL_KV_CACHE}
    result = run_ns("start_server", "--cluster", "local_vllm", "--config_dir", str(config.parent), "--model",
                    model_dir, "--expname", "shared-server", *server_args, timeout=900, env=env, check=True)  # fmt: skip
    address = result.stdout.strip().splitlines()[-1]
    key_file = Path(re.search(r"export OPENAI_API_KEY=\$\(cat (\S+)\)", result.stderr).group(1))
    return RunningServer(base_url=address, api_key=key_file.read_text().strip(), model=model_dir,
                         model_dir=model_dir, home=str(home), expname="shared-server", run_dir=str(key_file.parent))  # fmt: skip


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory) -> RunningServer:
    """One real vLLM (CPU build) for the session, started as a user does (`ns start_server --server_type vllm
    --server_gpus 0`), on a tiny model (head size 32: vLLM's CPU attention serves no smaller one)."""
    from skills_cli.inference.tiny_model import build_tiny_model

    vllm_python()
    root = tmp_path_factory.mktemp("vllm_server")
    model_dir = str(build_tiny_model(root / "tiny"))
    server = start_shared_server(root, model_dir, "--server_type", "vllm", "--server_gpus", "0")
    yield server
    run_ns("cancel", server.expname, env={"SKILLS_CLI_HOME": server.home}, timeout=120)


def pytest_collection_modifyitems(items):
    """A test that shares the session's vLLM server may be the one that pays its start (minutes on busy cores)."""
    for item in items:
        if "vllm_server" in getattr(item, "fixturenames", ()) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(1500))


# ---- sandbox service (skills_cli/sandbox) -------------------------------------------------------------------------
# One real service for the session, started as a job starts it (`python -m skills_cli.sandbox.server`, a random key
# in its environment), plus a secret variable in that environment that no sandboxed code may ever see.

SANDBOX_SECRET_ENV = "SKILLS_SANDBOX_TEST_SECRET"


@dataclass(frozen=True)
class RunningSandbox:
    url: str
    api_key: str
    secret: str  # the value of SANDBOX_SECRET_ENV in the service's environment
    log_file: Path
    process: subprocess.Popen


def start_sandbox(log_file: Path, *args: str, api_key: str | None = None) -> RunningSandbox:
    """Start the sandbox service on a free port (its key and a secret in its environment only); waits until it
    answers. The caller stops it (stop_sandbox)."""
    import secrets

    from skills_cli.common.ports import free_port
    from skills_cli.sandbox.client import SANDBOX_KEY_ENV, SandboxClient

    port, key, secret = free_port(), api_key or secrets.token_hex(16), secrets.token_hex(16)
    env = {**os.environ, SANDBOX_KEY_ENV: key, SANDBOX_SECRET_ENV: secret}
    with open(log_file, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "skills_cli.sandbox.server", "--port", str(port), *args],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    sandbox = RunningSandbox(f"http://127.0.0.1:{port}", key, secret, log_file, process)
    try:
        SandboxClient(sandbox.url, key).wait_until_ready(timeout=60, log_file=str(log_file))
    except BaseException:
        stop_sandbox(sandbox)
        raise
    return sandbox


def stop_sandbox(sandbox: RunningSandbox, timeout: float = 30) -> int:
    """SIGTERM (as a job's end sends it) and wait; the exit status."""
    sandbox.process.terminate()
    try:
        return sandbox.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        sandbox.process.kill()
        return sandbox.process.wait()


@pytest.fixture(scope="session")
def sandbox_service(tmp_path_factory) -> RunningSandbox:
    """The session's sandbox service (4 workers)."""
    sandbox = start_sandbox(tmp_path_factory.mktemp("sandbox") / "sandbox.log", "--workers", "4")
    yield sandbox
    stop_sandbox(sandbox)


@pytest.fixture
def sandbox_url(sandbox_service, monkeypatch) -> str:
    """http://127.0.0.1:PORT of the session's sandbox; for the test's duration its key is in
    $SKILLS_SANDBOX_API_KEY, as in a job, so SandboxClient(url) and in-job programs find it."""
    from skills_cli.sandbox.client import SANDBOX_KEY_ENV

    monkeypatch.setenv(SANDBOX_KEY_ENV, sandbox_service.api_key)
    return sandbox_service.url


@pytest.fixture(scope="session")
def sandbox_client(sandbox_service):
    """A SandboxClient of the session's sandbox, with its key."""
    from skills_cli.sandbox.client import SandboxClient

    return SandboxClient(sandbox_service.url, sandbox_service.api_key)
