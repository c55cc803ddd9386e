"""Executors behind one protocol: bare local processes, local Docker, and Slurm (over SSH or on a login node)."""

from __future__ import annotations

from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind
from skills_cli.pipeline.executors.base import Executor


def executor_for(cluster: ClusterConfig) -> Executor:
    if cluster.executor is ExecutorKind.SLURM:
        from skills_cli.pipeline.executors.slurm import SlurmExecutor

        return SlurmExecutor(cluster)
    from skills_cli.pipeline.executors.local import LocalExecutor

    return LocalExecutor(cluster)
