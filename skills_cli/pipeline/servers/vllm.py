"""`vllm`: vLLM's OpenAI-compatible server. Multi-node: one engine on a Ray cluster (head on the first node,
workers on the others), tensor parallel inside a node and pipeline parallel across nodes.

vLLM takes the API key from `$VLLM_API_KEY`: an environment assignment, not a flag, so not visible in `ps`.
"""

from __future__ import annotations

from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.servers.base import API_KEY, PORT, SERVER_KINDS, ServerKind, ServerSpec, logged
from skills_cli.pipeline.shell import Raw, quote_argv

RAY_PORT = 6379


def vllm_argv(spec: ServerSpec, python: str) -> list[str]:
    argv = [Raw(f"VLLM_API_KEY={API_KEY}"), python, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
            "--host", spec.bind_host, "--port", PORT, "--tensor-parallel-size", str(spec.gpus),
            "--trust-remote-code"]  # fmt: skip
    if spec.nodes > 1:
        argv += ["--pipeline-parallel-size", str(spec.nodes), "--distributed-executor-backend", "ray"]
    return argv + list(spec.args)


def ray_cluster_script(serve: list[str], nodes: int) -> str:
    """Node 0 starts the Ray head, waits for every node, then serves; the others join as workers."""
    head = quote_argv(["ray", "start", "--head", f"--port={RAY_PORT}"])
    worker = quote_argv(["ray", "start", Raw(f'--address="${HEAD_NODE_ENV}:{RAY_PORT}"'), "--block"])
    wait_nodes = f"until [ \"$(ray status 2>/dev/null | grep -c ' node_')\" -ge {nodes} ]; do sleep 5; done"
    return (f'if [ "$SLURM_PROCID" = 0 ]; then {head} && {wait_nodes} && {{ {logged(serve)}; }}; '
            f"else {worker}; fi")  # fmt: skip


SERVER_KINDS.register(
    ServerKind("vllm", vllm_argv, min_gpus=1, multi_node=True, multi_node_bootstrap=ray_cluster_script)
)
