"""Reaching the Slurm cluster: nemo-run's SSHTunnel (remote login node) or LocalTunnel (on the login node).

This is the only module that imports nemo_run, and it does so lazily: `ns --help`, dry runs and local
executors never pay for it. nemo-run's SSHTunnel connects without a timeout and falls back to interactive
password prompts; we open its fabric connection ourselves with a bounded connect timeout and key-only
authentication, so an unreachable host is a clear error after `connect_timeout` seconds, never a hang.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, SSHTunnelConfig
from skills_cli.pipeline.shell import quote


@dataclass
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def check_identity(config: SSHTunnelConfig) -> None:
    """Checkable before connecting: a configured identity file must exist."""
    if config.identity and not Path(config.identity).is_file():
        raise UserError(f"ssh_tunnel.identity: no such file {config.identity!r}")


class ClusterTunnel:
    """Run shell commands and upload bytes on the cluster's login node, with bounded waits."""

    def __init__(self, cluster: ClusterConfig):
        self.cluster = cluster
        self._tunnel = None

    def __enter__(self) -> ClusterTunnel:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def target(self) -> str:
        config = self.cluster.ssh_tunnel
        return f"{config.user}@{config.host}:{config.port}" if config else "the local login node"

    def open(self) -> None:
        # Keep nemo-run's metadata out of the user's home unless they chose a place.
        os.environ.setdefault("NEMORUN_HOME", str(Path(tempfile.gettempdir()) / "skills_cli_nemorun"))
        from nemo_run.core.tunnel.client import LocalTunnel, SSHTunnel

        config = self.cluster.ssh_tunnel
        if config is None:
            self._tunnel = LocalTunnel(job_dir=self.cluster.remote_job_dir)
            return
        check_identity(config)
        tunnel = SSHTunnel(
            host=config.host, user=config.user, port=config.port, identity=config.identity,
            job_dir=config.job_dir, pre_command=config.pre_command,
        )  # fmt: skip
        tunnel.session = self._connect(config)
        self._tunnel = tunnel

    def _connect(self, config: SSHTunnelConfig):
        import paramiko
        from fabric import Config, Connection

        # paramiko's transport thread logs tracebacks for failures we report ourselves in one line
        logging.getLogger("paramiko").addHandler(logging.NullHandler())

        connect_kwargs: dict = {"look_for_keys": config.identity is None, "allow_agent": config.identity is None,
                                "banner_timeout": config.connect_timeout, "auth_timeout": config.connect_timeout}  # fmt: skip
        if config.identity:
            connect_kwargs["key_filename"] = [config.identity]
        connection = Connection(
            config.host, user=config.user, port=config.port, connect_timeout=config.connect_timeout,
            connect_kwargs=connect_kwargs, config=Config(overrides={"run": {"in_stream": False}}),
        )  # fmt: skip
        try:
            connection.open()
        except TimeoutError:
            raise UserError(
                f"ssh {self.target}: no answer within {config.connect_timeout:g} s (host unreachable?)"
            ) from None
        except paramiko.AuthenticationException as error:
            raise UserError(f"ssh {self.target}: authentication failed ({error})") from None
        except (OSError, paramiko.SSHException) as error:
            # paramiko stops waiting for a silent server's banner at the timeout and reports the missing
            # session afterwards; that is a timeout for the user.
            if any(text in str(error) for text in ("No existing session", "protocol banner", "timed out")):
                raise UserError(
                    f"ssh {self.target}: no answer within {config.connect_timeout:g} s (host unreachable?)"
                ) from None
            raise UserError(f"ssh {self.target}: cannot connect ({error})") from None
        return connection

    def run(self, command: str, timeout: float | None = 120) -> CommandResult:
        """Run shell text on the cluster; never raises on a non-zero exit (the caller decides)."""
        assert self._tunnel is not None, "tunnel not open"
        try:
            result = self._tunnel.run(command, hide=True, warn=True, timeout=timeout, in_stream=False)
        except Exception as error:  # invoke raises CommandTimedOut; fabric may raise socket errors
            raise UserError(f"{self.target}: command failed or timed out after {timeout} s: {error}") from None
        return CommandResult(result.exited, result.stdout, result.stderr)

    def put_bytes(self, data: bytes, remote_path: str) -> None:
        assert self._tunnel is not None, "tunnel not open"
        with tempfile.NamedTemporaryFile(delete=False) as handle:
            handle.write(data)
        try:
            self.run(f"mkdir -p {quote(os.path.dirname(remote_path))}")
            self._tunnel.put(handle.name, remote_path)
        finally:
            os.unlink(handle.name)

    def get_file(self, remote_path: str, local_path: str) -> None:
        assert self._tunnel is not None, "tunnel not open"
        self._tunnel.get(remote_path, local_path)

    def close(self) -> None:
        if self._tunnel is not None:
            self._tunnel.cleanup()
            self._tunnel = None
