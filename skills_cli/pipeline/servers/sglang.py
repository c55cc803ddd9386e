"""`sglang`: SGLang's server. Multi-node: every node runs it with its rank, meeting at the head node's
`--dist-init-addr` rendezvous (its port drawn free there when the job starts, `DIST_PORT_ENV`).

SGLang reads the API key only from its `--api-key` flag: expanded by the shell on the node, so visible in
`ps` there.
"""

from __future__ import annotations

from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.servers.base import API_KEY, DIST_PORT_ENV, PORT, SERVER_KINDS, ServerKind, ServerSpec
from skills_cli.pipeline.shell import Raw


def sglang_argv(spec: ServerSpec, python: str) -> list[str]:
    argv = [python, "-m", "sglang.launch_server", "--model-path", spec.model, "--host", spec.bind_host,
            "--port", PORT, "--tp-size", str(spec.tensor_parallel), "--trust-remote-code", "--api-key", API_KEY]  # fmt: skip
    if spec.nodes > 1:
        argv += ["--nnodes", str(spec.nodes), "--node-rank", Raw('"$SLURM_PROCID"'),
                 "--dist-init-addr", Raw(f'"${HEAD_NODE_ENV}:${DIST_PORT_ENV}"')]  # fmt: skip
    return argv + list(spec.args)


SERVER_KINDS.register(ServerKind("sglang", sglang_argv, min_gpus=1, multi_node=True))
