"""`ns start_server`: host a model on its own (until `ns cancel EXPNAME` or the time limit) and print its
address. On Slurm, `--create_tunnel` forwards a local port to it over SSH and keeps the tunnel open.

The server requires the job's random API key. The job writes it to `server.key` in its run dir, readable
by its owner only; we print the file's path and how to use it (`export OPENAI_API_KEY=$(cat FILE)`), never
the key itself. It listens on 127.0.0.1 on executors none/local and on all interfaces on Slurm (the tunnel
and other nodes reach it there); `--server_host` chooses otherwise.
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.inference.config import PORT_ENV
from skills_cli.inference.server.auth import ALL_INTERFACES, API_KEY_ENV, LOOPBACK
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.commands.generate import ServerOptions
from skills_cli.pipeline.executors import executor_for
from skills_cli.pipeline.experiment import (
    Submission,
    ensure_log_dir_is_absolute,
    refresh,
    run_dir_for,
    submit_jobs,
    submit_options,
)
from skills_cli.pipeline.jobs import Job, Resources
from skills_cli.pipeline.options import CommandSpec, QueuedSpec, WrappedArguments, option
from skills_cli.pipeline.servers import server_command
from skills_cli.pipeline.shell import quote
from skills_cli.pipeline.store import JobState, Store

log = logging.getLogger("skills_cli")
ADDRESS_FILE = "server.address"
KEY_FILE = "server.key"  # the server's API key, owner-only, in the job's run dir


@dataclass(frozen=True, kw_only=True)
class StartServerSpec(ServerOptions, QueuedSpec):
    """`ns start_server`: ns generate's server options, hosted on their own."""

    server_host: str | None = option(None, "Address the server listens on (default: 127.0.0.1 on executors "
                                     "none/local, 0.0.0.0 on Slurm). It always requires the job's API key.",
                                     panel="Server")  # fmt: skip
    create_tunnel: bool = option(False, "Slurm: forward a local port to the server over SSH and keep it open.")
    tunnel_port: int = option(0, "Local port of the tunnel (0: the server's port).")
    startup_timeout: float = option(900.0, "Seconds to wait for the server to start.")
    # fixed, not options: the server is what is started (no running one to use), and this command waits for
    # its address itself instead of for the job
    server_address: str | None = field(default=None, init=False)
    detach: bool = field(default=True, init=False)


@dataclass
class ServerHandle:
    submission: Submission
    host: str = ""
    port: int = 0
    key_file: str = ""  # where the API key is (on the machine that runs the job)

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}/v1"


def default_host(cluster: ClusterConfig) -> str:
    """Local servers are used from this machine; Slurm ones through a tunnel or from other nodes."""
    return ALL_INTERFACES if cluster.runs_remotely else LOOPBACK


def server_job(spec: StartServerSpec, cluster: ClusterConfig) -> Job:
    command = server_command(spec.hosted_server(host=spec.server_host or default_host(cluster)), cluster)
    # record the key (owner-only) and where it listens (first task only), then serve until cancelled
    announce = (f'[ "${{SLURM_PROCID:-0}}" = 0 ] && mkdir -p "$SKILLS_CLI_RUN_DIR" && '
                f'(umask 077 && printf \'%s\\n\' "${API_KEY_ENV}" > "$SKILLS_CLI_RUN_DIR/{KEY_FILE}") && '
                f'echo "$(hostname) ${PORT_ENV}" > "$SKILLS_CLI_RUN_DIR/{ADDRESS_FILE}"; ')  # fmt: skip
    command = replace(command, argv=("bash", "-c", announce + command.argv[2]), background=False)
    resources = Resources(nodes=spec.server_nodes, gpus_per_node=spec.server_gpus, time_limit=spec.time,
                          partition=spec.partition)  # fmt: skip
    return Job(name="server", commands=(command,), resources=resources, ports=command.binds)


def read_address(cluster: ClusterConfig, run_dir: str) -> str | None:
    path = f"{run_dir}/{ADDRESS_FILE}"
    if not cluster.runs_remotely:
        return Path(path).read_text() if Path(path).exists() else None
    from skills_cli.pipeline.executors.tunnel import ClusterTunnel

    with ClusterTunnel(cluster) as tunnel:
        result = tunnel.run(f"cat {quote(path)} 2>/dev/null")
    return result.stdout or None


def wait_for_address(handle: ServerHandle, cluster: ClusterConfig, run_dir: str, timeout: float) -> None:
    store, deadline = Store(), time.time() + timeout
    while time.time() < deadline:
        (record,) = refresh(handle.submission.records, store, {cluster.name: cluster})
        if record.state.finished:
            logs = executor_for(cluster).logs(record, tail=20)
            raise UserError(f"the server job ended ({record.state.value}) before it was ready:\n{logs}")
        text = read_address(cluster, run_dir) if record.state is JobState.RUNNING else None
        if text and len(text.split()) == 2:
            host, port = text.split()
            handle.host = host if cluster.runs_remotely else "127.0.0.1"
            handle.port = int(port)
            return
        time.sleep(2.0)
    raise UserError(f"the server job did not start within {timeout:g} s (see `ns status {handle.submission.expname}`)")


def open_tunnel(cluster: ClusterConfig, handle: ServerHandle, local_port: int) -> None:
    """`ssh -N -L local:node:port` through the login node, in the foreground until interrupted."""
    config = cluster.ssh_tunnel
    if config is None:
        raise UserError("--create_tunnel needs a cluster reached over ssh_tunnel")
    argv = ["ssh", "-N", "-p", str(config.port), "-o", "ExitOnForwardFailure=yes",
            "-L", f"{local_port}:{handle.host}:{handle.port}", f"{config.user}@{config.host}"]  # fmt: skip
    if config.identity:
        argv[1:1] = ["-i", config.identity]
    log.info(
        "tunnel: http://127.0.0.1:%d/v1 -> %s (Ctrl-C closes it; the server keeps running)", local_port, handle.address
    )
    try:
        subprocess.run(argv, check=False)
    except KeyboardInterrupt:
        pass


def start_server_impl(extra: WrappedArguments, spec: StartServerSpec) -> ServerHandle:
    ensure_log_dir_is_absolute(spec.log_dir)
    if not spec.model:
        raise UserError("start_server: --model is required")
    if spec.server_type == "openai":
        raise UserError("start_server: server_type openai is an external API, nothing to host")
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    options = submit_options(spec, default_expname="server")
    submission = submit_jobs([server_job(spec, cluster)], cluster, options)
    handle = ServerHandle(submission)
    if submission.dry_run_text is not None:
        return handle
    (record,) = submission.records
    run_dir = run_dir_for(cluster, record.expname, record.name, record.uid)
    handle.key_file = f"{run_dir}/{KEY_FILE}"
    wait_for_address(handle, cluster, run_dir, spec.startup_timeout)
    if not cluster.runs_remotely:
        wait_until_answering(handle, spec.startup_timeout)
    log.info("server %s is up at %s (stop it with `ns cancel %s`)", spec.model, handle.address, submission.expname)
    where = " on the cluster" if cluster.runs_remotely else ""
    log.info("it requires its API key, in %s%s (readable by you only): export OPENAI_API_KEY=$(cat %s)",
             handle.key_file, where, quote(handle.key_file))  # fmt: skip
    if spec.create_tunnel:
        open_tunnel(cluster, handle, spec.tunnel_port or handle.port)
    return handle


def read_key(handle: ServerHandle) -> str:
    """The key the job wrote before its address (so it is there once the address is)."""
    try:
        return Path(handle.key_file).read_text().strip()
    except OSError as error:
        raise UserError(f"cannot read the server's API key from {handle.key_file}: {error.strerror}") from None


def wait_until_answering(handle: ServerHandle, timeout: float) -> None:
    """Local servers are reachable from here: wait until the model is loaded and answering."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{handle.address}/models", headers={"Authorization": f"Bearer {read_key(handle)}"}
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(request, timeout=5)
            return
        except urllib.error.HTTPError as error:
            if error.code == 401:  # waiting will not change the key
                raise UserError(f"the server at {handle.address} refused the key in {handle.key_file}") from None
            time.sleep(1.0)
        except (urllib.error.URLError, OSError):
            time.sleep(1.0)
    raise UserError(f"the server at {handle.address} did not answer within {timeout:g} s")


START_SERVER = CommandSpec(
    name="start_server",
    help="Host a model on its own and print its OpenAI-compatible address (stop it with ns cancel).",
    spec_type=StartServerSpec,
    impl=start_server_impl,
)
