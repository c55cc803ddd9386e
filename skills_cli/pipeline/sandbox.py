"""The code sandbox as a job's background command, beside the programs that run code in it: the grading of a
benchmark whose tests execute (`Benchmark.needs_sandbox`) and generation with `++code_execution=true`
(tool-integrated reasoning).

The service (`python -m skills_cli.sandbox.server`) binds the job's free port `$SKILLS_SANDBOX_PORT` on
127.0.0.1 and requires the job's random key `$SKILLS_SANDBOX_API_KEY`, both made when the job starts (like the
model server's, see `inference/server/auth.py`; the port is drawn on the sandbox's own node, which in a
heterogeneous job is not the batch script's: `render.free_port_lines`); its output goes to
`$SKILLS_CLI_RUN_DIR/sandbox.log`, whose last lines the client quotes when the service does not come up. It runs
in the cluster's `sandbox` container role: on clusters with containers that role must be defined (an image with
python3; the project image is enough), checked before anything is submitted; on bare processes the role picks
the interpreter as for any role (`ClusterConfig.python_for`), by default ours.
"""

from __future__ import annotations

import dataclasses

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.jobs import Command, Job
from skills_cli.pipeline.shell import Raw, quote_argv
from skills_cli.sandbox.client import SANDBOX_LOG, SANDBOX_PORT_ENV

SANDBOX_ROLE = "sandbox"  # the container role, and the command's name in the job


def sandbox_role(cluster: ClusterConfig, why: str) -> str:
    """The role the sandbox runs in; a cluster with containers but no sandbox image is an error now."""
    if cluster.uses_containers and SANDBOX_ROLE not in cluster.containers:
        raise UserError(f"{why} needs the code sandbox, but cluster {cluster.name!r} has no sandbox container: "
                        f"add containers.{SANDBOX_ROLE} (an image with python3; the project image works)")  # fmt: skip
    return SANDBOX_ROLE


def sandbox_command(cluster: ClusterConfig, why: str) -> Command:
    """The background command that serves the sandbox for the rest of the job (first node only)."""
    role = sandbox_role(cluster, why)
    argv = [cluster.python_for(role), "-m", "skills_cli.sandbox.server", "--host", "127.0.0.1",
            "--port", Raw(f'"${SANDBOX_PORT_ENV}"')]  # fmt: skip
    # its output also goes to the run dir, where the client's bounded wait reads its last lines; exec: the
    # service itself gets the job's SIGTERM (and kills the code it runs), not a shell in front of it
    script = (f'mkdir -p "$SKILLS_CLI_RUN_DIR"; exec > >(tee -a "$SKILLS_CLI_RUN_DIR/{SANDBOX_LOG}") 2>&1; '
              f"exec {quote_argv(argv)}")  # fmt: skip
    return Command(argv=("bash", "-c", script), name=SANDBOX_ROLE, container=role, background=True,
                   single_task=True, binds=(SANDBOX_PORT_ENV,))  # fmt: skip


def with_sandbox(job: Job, cluster: ClusterConfig, why: str) -> Job:
    """`job` with the sandbox started before its commands and its port chosen when the job starts."""
    if any(command.name == SANDBOX_ROLE for command in job.commands):
        return job
    return dataclasses.replace(job, commands=(sandbox_command(cluster, why), *job.commands),
                               ports=(*job.ports, SANDBOX_PORT_ENV))  # fmt: skip
