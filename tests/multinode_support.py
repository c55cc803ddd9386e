"""Shared pieces of the multi-node tests: a cluster config for the local cluster's `multi` partition (the host's
node and the two container nodes of tests/infra/nodes.sh) and what sacct says about where a job ran."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ssh_tunnel_yaml

REPO = Path(__file__).resolve().parent.parent


def write_multi_cluster(
    infra: dict, directory: Path, job_dir: Path, name: str = "slurm_multi", extra: str = ""
) -> Path:
    """`<directory>/<name>.yaml` for the multi partition; `job_dir` must be under /tmp, which every node shares.
    `extra` is more YAML (e.g. `sbatch_args:`)."""
    if not infra.get("SKILLS_INFRA_MULTI_PARTITION"):
        pytest.fail("local_cluster.sh up started no compute nodes (see its WARNING line)")
    (directory / f"{name}.yaml").write_text(f"""executor: slurm
{ssh_tunnel_yaml(infra, job_dir)}partition: {infra["SKILLS_INFRA_MULTI_PARTITION"]}
python: {REPO / ".venv" / "bin" / "python"}
{extra}""")
    return directory


def job_nodes(job_id: str) -> list[str]:
    """The nodes a finished or running job was given (sacct's NodeList, expanded)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=NodeList"], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    return subprocess.run(["scontrol", "show", "hostnames", out], capture_output=True, text=True,
                          check=True).stdout.split()  # fmt: skip
