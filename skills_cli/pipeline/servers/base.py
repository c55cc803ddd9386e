"""What every server kind shares: `ServerKind` (one per module of this package, in `SERVER_KINDS`), the
`ServerSpec` of one hosted server, the logging wrapper, and `server_command`, the job's background command.

Every server binds the job's free port (`$SKILLS_SERVER_PORT`, chosen when the job starts) and is wrapped
so that its output also lands in `$SKILLS_CLI_RUN_DIR/server.log` and its exit status in `server.exit`:
the client's bounded health wait reads them to fail fast, quoting the server's own last words.

Access: a server listens on 127.0.0.1 unless something on another machine must reach it (a multi-node
server, whose client connects to the head node by name, or `ns start_server` on Slurm, reached through a
tunnel): then on all interfaces. Either way it requires the job's random API key, `$SKILLS_SERVER_API_KEY`
(set when the job starts, see `inference/server/auth.py`); each kind's module says how its server gets it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from skills_cli.common.errors import UserError
from skills_cli.common.registry import Registry
from skills_cli.inference.config import PORT_ENV
from skills_cli.inference.server.auth import ALL_INTERFACES, API_KEY_ENV, LOOPBACK, is_loopback
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.jobs import Command
from skills_cli.pipeline.shell import Raw, quote_argv

PORT = Raw(f'"${PORT_ENV}"')
# a multi-node server's own rendezvous on its head node (Ray's head, vLLM's CPU master, SGLang's dist-init): a
# port drawn free there when the job starts, like the server's, never a fixed one two jobs on a node would share
DIST_PORT_ENV = "SKILLS_SERVER_DIST_PORT"
DIST_PORT = Raw(f'"${DIST_PORT_ENV}"')
# the key as a shell word; a job without one fails here (logged) instead of serving without authentication
API_KEY = Raw(f'"${{{API_KEY_ENV}:?this job has no server API key}}"')
_HOST = re.compile(r"^[A-Za-z0-9.:\-]+$")  # an IPv4/IPv6 address or a host name


@dataclass(frozen=True)
class ServerKind:
    """One kind of model server: how to start it and what it needs.

    `argv(spec, python)` is the server's command line (`python`: the interpreter of the image it runs in);
    None marks a client-side kind, an external API that is never hosted (`openai`).
    """

    name: str
    argv: Callable[[ServerSpec, str], list[str]] | None
    min_gpus: int = 0  # per node
    multi_node: bool = False  # one server may span several nodes
    # it runs in the cluster's `containers.<name>` image (with that image's python3), not in our `main` image
    own_image: bool = True
    # why it may only listen on 127.0.0.1 (a server that cannot require the API key); None: anywhere
    loopback_only: str | None = None
    # how a multi-node server starts on every node (e.g. a Ray cluster first); None: its argv on every node
    multi_node_bootstrap: Callable[[list[str], int], str] | None = None
    # rules of this kind beyond the ones above (raise UserError)
    extra_check: Callable[[ServerSpec], None] | None = None
    # for jobs that run as processes on this machine: is the server's interpreter able to run it (raise UserError)
    environment_check: Callable[[ServerSpec, str], None] | None = None

    @property
    def self_hosted(self) -> bool:
        return self.argv is not None

    def check(self, spec: ServerSpec) -> None:
        """This kind's rules on where the server listens, its GPUs and its nodes."""
        if self.loopback_only and not is_loopback(spec.bind_host):
            raise UserError(f"server_type {self.name} cannot listen on {spec.bind_host}: {self.loopback_only}")
        if spec.nodes < 1 or spec.gpus < 0:
            raise UserError("server_nodes must be >= 1 and server_gpus >= 0")
        if spec.gpus < self.min_gpus:
            raise UserError(f"server_type {self.name} needs --server_gpus >= {self.min_gpus}")
        if spec.nodes > 1 and not self.multi_node:
            spanning = " or ".join(kind.name for kind in SERVER_KINDS if kind.multi_node)
            raise UserError(f"server_type {self.name} runs on one node; use {spanning} for --server_nodes > 1")
        if self.extra_check is not None:
            self.extra_check(spec)

    def script(self, spec: ServerSpec, python: str) -> str:
        """The shell script every task of the server's job runs."""
        argv = self.argv(spec, python)
        if spec.nodes > 1 and self.multi_node_bootstrap is not None:
            return self.multi_node_bootstrap(argv, spec.nodes)
        return logged(argv)

    def container(self, cluster: ClusterConfig) -> str:
        """The container role the server runs in: a role named after the kind if the cluster has one, and always
        on clusters without containers, where the role picks the interpreter (`ClusterConfig.python_for`)."""
        if self.name in cluster.containers or (self.own_image and not cluster.uses_containers):
            return self.name
        if cluster.uses_containers and self.own_image:
            raise UserError(f"cluster {cluster.name!r} has no container for server_type {self.name!r} "
                            f"(add containers.{self.name} to the config)")  # fmt: skip
        return "main"

    def python(self, cluster: ClusterConfig) -> str:
        """The interpreter of the server's role: its image's python3, or the role's environment on bare jobs."""
        return cluster.python_for(self.container(cluster))


SERVER_KINDS: Registry[ServerKind] = Registry("server kind", package="skills_cli.pipeline.servers")


def server_kind_choices() -> tuple[str, ...]:
    """Every server kind's name (the choices of `--server_type`), hosted ones and external APIs alike."""
    return SERVER_KINDS.names()


def hosted_kind(name: str) -> ServerKind:
    """The kind named `name`, if it is one we can host."""
    kind = SERVER_KINDS.get(name) if name in SERVER_KINDS else None
    if kind is None or not kind.self_hosted:
        hosted = ", ".join(kind.name for kind in SERVER_KINDS if kind.self_hosted)
        raise UserError(f"cannot host server_type {name!r}; self-hosted types: {hosted}")
    return kind


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
        self.kind.check(self)

    @property
    def kind(self) -> ServerKind:
        return hosted_kind(self.server_type)

    @property
    def tensor_parallel(self) -> int:
        return max(self.gpus, 1) * self.nodes

    @property
    def bind_host(self) -> str:
        """Loopback when the client shares the node; all interfaces when other nodes must reach the head."""
        if self.host is not None:
            return self.host
        return ALL_INTERFACES if self.nodes > 1 else LOOPBACK


def logged(argv: list[str]) -> str:
    """Run `argv`, copy its output to the run dir's server.log, record its exit status (first task only)."""
    return (f'mkdir -p "$SKILLS_CLI_RUN_DIR"; {quote_argv(argv)} 2>&1 | tee -a "$SKILLS_CLI_RUN_DIR/server.log"; '
            'status=${PIPESTATUS[0]}; [ "${SLURM_PROCID:-0}" = 0 ] && echo "$status" > "$SKILLS_CLI_RUN_DIR/server.exit"; '
            'exit "$status"')  # fmt: skip


def server_command(spec: ServerSpec, cluster: ClusterConfig) -> Command:
    """The background command that hosts the model for the rest of the job."""
    kind = spec.kind
    python = kind.python(cluster)
    if cluster.jobs_see_local_paths and kind.environment_check is not None:
        kind.environment_check(spec, python)
    script = kind.script(spec, python)
    return Command(argv=("bash", "-c", script), name="server", container=kind.container(cluster), gpus=spec.gpus,
                   background=True, binds=(PORT_ENV, DIST_PORT_ENV) if spec.nodes > 1 else (PORT_ENV,))  # fmt: skip
