"""Executors behind one protocol, one registry entry per kind: bare local processes (`none`), local Docker
(`local`) and Slurm (over SSH or on a login node); plugins add more (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skills_cli.pipeline.executors.base import EXECUTORS, Executor, ExecutorEntry

if TYPE_CHECKING:
    from skills_cli.pipeline.cluster import ClusterConfig

__all__ = ["EXECUTORS", "Executor", "ExecutorEntry", "executor_for", "runs_remotely"]


def executor_for(cluster: ClusterConfig) -> Executor:
    return cluster.executor_entry.factory(cluster)


def runs_remotely(kind: str) -> bool:
    """Whether jobs recorded under executor `kind` ran on other hosts (False for a kind no longer registered:
    its records are read as stored)."""
    return kind in EXECUTORS and EXECUTORS.get(kind).runs_remotely
