"""Model servers as background commands of a job: vLLM, SGLang, TensorRT-LLM and our `hf` server.

Every server binds the job's free port (`$SKILLS_SERVER_PORT`, chosen when the job starts) and is wrapped
so that its output also lands in `$SKILLS_CLI_RUN_DIR/server.log` and its exit status in `server.exit`:
the client's bounded health wait reads them to fail fast, quoting the server's own last words.
Multi-node: vLLM runs on a Ray cluster (head on the first node, workers on the others); SGLang uses its
own `--dist-init-addr` rendezvous on the head node.

Access: a server listens on 127.0.0.1 unless something on another machine must reach it (a multi-node
server, whose client connects to the head node by name, or `ns start_server` on Slurm, reached through a
tunnel): then on all interfaces. Either way it requires the job's random API key, `$SKILLS_SERVER_API_KEY`
(set when the job starts, see `inference/server/auth.py`), from the environment where the server can read it
there (hf: itself; vLLM: `VLLM_API_KEY`) and else from a flag (SGLang `--api-key`: expanded by the shell on
the node, so visible in `ps` there). TensorRT-LLM's `trtllm-serve` has no API key option: it only ever
listens on 127.0.0.1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from skills_cli.common.errors import UserError
from skills_cli.inference.config import PORT_ENV, SERVER_TYPES
from skills_cli.inference.server.auth import ALL_INTERFACES, API_KEY_ENV, LOOPBACK, is_loopback
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.jobs import Command
from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.shell import Raw, quote_argv

RAY_PORT = 6379
SGLANG_DIST_PORT = 5757
PORT = Raw(f'"${PORT_ENV}"')
HEAD = Raw(f'"${HEAD_NODE_ENV}"')
# the key as a shell word; a job without one fails here (logged) instead of serving without authentication
API_KEY = Raw(f'"${{{API_KEY_ENV}:?this job has no server API key}}"')
_HOST = re.compile(r"^[A-Za-z0-9.:\-]+$")  # an IPv4/IPv6 address or a host name


@dataclass(frozen=True)
class ServerSpec:
    server_type: str
    model: str
    gpus: int = 0  # per node
    nodes: int = 1
    args: tuple[str, ...] = ()  # extra server arguments, passed through as words
    host: str | None = None  # where it listens; None: 127.0.0.1 on one node, all interfaces on several

    def __post_init__(self) -> None:
        if self.host is not None and not _HOST.match(self.host):
            raise UserError(f"server host {self.host!r} must be an IP address or a host name (e.g. 0.0.0.0)")
        if self.server_type == "trtllm" and not is_loopback(self.bind_host):
            raise UserError(f"server_type trtllm cannot listen on {self.bind_host}: trtllm-serve has no API key "
                            "option, so it only listens on 127.0.0.1 (use vllm or sglang to serve other machines)")  # fmt: skip
        if self.server_type not in SERVER_TYPES or self.server_type == "openai":
            hosted = ", ".join(t for t in SERVER_TYPES if t != "openai")
            raise UserError(f"cannot host server_type {self.server_type!r}; self-hosted types: {hosted}")
        if self.nodes < 1 or self.gpus < 0:
            raise UserError("server_nodes must be >= 1 and server_gpus >= 0")
        if self.server_type in ("vllm", "sglang", "trtllm") and self.gpus < 1:
            raise UserError(f"server_type {self.server_type} needs --server_gpus >= 1")
        if self.nodes > 1 and self.server_type in ("hf", "trtllm"):
            raise UserError(
                f"server_type {self.server_type} runs on one node; use vllm or sglang for --server_nodes > 1"
            )

    @property
    def tensor_parallel(self) -> int:
        return max(self.gpus, 1) * self.nodes

    @property
    def bind_host(self) -> str:
        """Loopback when the client shares the node; all interfaces when other nodes must reach the head."""
        if self.host is not None:
            return self.host
        return ALL_INTERFACES if self.nodes > 1 else LOOPBACK


def hf_argv(spec: ServerSpec, python: str) -> list[str]:
    device = "cuda" if spec.gpus else "cpu"
    # the hf server reads $SKILLS_SERVER_API_KEY itself (and refuses to start on a set but empty one)
    return [python, "-m", "skills_cli.inference.server.hf_server", "--model", spec.model, "--host", spec.bind_host,
            "--port", PORT, "--device", device, *spec.args]  # fmt: skip


def vllm_argv(spec: ServerSpec, python: str) -> list[str]:
    # vLLM takes the key from $VLLM_API_KEY (an env assignment, not a flag: not visible in `ps`)
    argv = [Raw(f"VLLM_API_KEY={API_KEY}"), python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
            "--host", spec.bind_host, "--port", PORT, "--tensor-parallel-size", str(spec.gpus),
            "--trust-remote-code"]  # fmt: skip
    if spec.nodes > 1:
        # one engine spanning the nodes: tensor parallel inside a node, pipeline parallel across nodes
        argv += ["--pipeline-parallel-size", str(spec.nodes), "--distributed-executor-backend", "ray"]
    return argv + list(spec.args)


def sglang_argv(spec: ServerSpec, python: str) -> list[str]:
    # SGLang reads the key only from its --api-key flag
    argv = [python, "-m", "sglang.launch_server", "--model-path", spec.model, "--host", spec.bind_host,
            "--port", PORT, "--tp", str(spec.tensor_parallel), "--trust-remote-code", "--api-key", API_KEY]  # fmt: skip
    if spec.nodes > 1:
        argv += ["--nnodes", str(spec.nodes), "--node-rank", Raw('"$SLURM_PROCID"'),
                 "--dist-init-addr", Raw(f'"${HEAD_NODE_ENV}:{SGLANG_DIST_PORT}"')]  # fmt: skip
    return argv + list(spec.args)


def trtllm_argv(spec: ServerSpec, python: str) -> list[str]:
    return ["trtllm-serve", spec.model, "--host", spec.bind_host, "--port", PORT, "--tp_size", str(spec.gpus),
            *spec.args]  # fmt: skip


def logged(argv: list[str]) -> str:
    """Run `argv`, copy its output to the run dir's server.log, record its exit status (first task only)."""
    return (f'mkdir -p "$SKILLS_CLI_RUN_DIR"; {quote_argv(argv)} 2>&1 | tee -a "$SKILLS_CLI_RUN_DIR/server.log"; '
            'status=${PIPESTATUS[0]}; [ "${SLURM_PROCID:-0}" = 0 ] && echo "$status" > "$SKILLS_CLI_RUN_DIR/server.exit"; '
            'exit "$status"')  # fmt: skip


def ray_cluster_script(serve: list[str], nodes: int) -> str:
    """Node 0 starts the Ray head, waits for every node, then serves; the others join as workers."""
    head = quote_argv(["ray", "start", "--head", f"--port={RAY_PORT}"])
    worker = quote_argv(["ray", "start", Raw(f'--address="${HEAD_NODE_ENV}:{RAY_PORT}"'), "--block"])
    wait_nodes = f"until [ \"$(ray status 2>/dev/null | grep -c ' node_')\" -ge {nodes} ]; do sleep 5; done"
    return (f'if [ "$SLURM_PROCID" = 0 ]; then {head} && {wait_nodes} && {{ {logged(serve)}; }}; '
            f"else {worker}; fi")  # fmt: skip


def server_command(spec: ServerSpec, cluster: ClusterConfig) -> Command:
    """The background command that hosts the model for the rest of the job."""
    # a server image has its own python3; bare jobs use the cluster's interpreter (the one with the packages)
    python = "python3" if cluster.uses_containers and spec.server_type != "hf" else cluster.python_executable
    if spec.server_type == "hf":
        script = logged(hf_argv(spec, cluster.python_executable))
    elif spec.server_type == "vllm" and spec.nodes > 1:
        script = ray_cluster_script(vllm_argv(spec, python), spec.nodes)
    else:
        script = logged(
            {"vllm": vllm_argv, "sglang": sglang_argv, "trtllm": trtllm_argv}[spec.server_type](spec, python)
        )
    container = spec.server_type if spec.server_type in cluster.containers else "main"
    if cluster.uses_containers and spec.server_type != "hf" and spec.server_type not in cluster.containers:
        raise UserError(f"cluster {cluster.name!r} has no container for server_type {spec.server_type!r} "
                        f"(add containers.{spec.server_type} to the config)")  # fmt: skip
    return Command(argv=("bash", "-c", script), name="server", container=container, gpus=spec.gpus, background=True)
