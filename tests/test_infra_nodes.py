"""The local cluster's compute nodes (tests/infra/nodes.sh): two docker containers running slurmd next to the
host's node, in partition `multi`, on their own network, sharing /tmp and the checkout with the host."""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.infra

PYTHON = REPO / ".venv" / "bin" / "python"

# each rank contributes rank + 1; the sum over 2 ranks is 3 only if both really joined one gloo group
ALL_REDUCE = """
import os, socket, datetime, torch, torch.distributed as dist
rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
dist.init_process_group("gloo", init_method=f"tcp://{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}",
                        rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
print(f"{rank} {socket.gethostname()} {socket.gethostbyname(socket.gethostname())} {value.item()}", flush=True)
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def nodes(infra) -> list[str]:
    """The multi partition's nodes, host first; the nodes are optional for `up`, required here."""
    if not infra.get("SKILLS_INFRA_MULTI_PARTITION"):
        message = "local_cluster.sh up started no compute nodes (see its WARNING line)"
        if os.environ.get("SKILLS_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return infra["SKILLS_INFRA_MULTI_NODES"].split(",")


def srun(infra: dict, *args: str, timeout: float = 120) -> list[str]:
    argv = ["srun", "-p", infra["SKILLS_INFRA_MULTI_PARTITION"], "--time", "00:02:00", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("\n")[:-1]


def test_sinfo_shows_three_idle_nodes(infra, nodes):
    """Idle once the jobs of earlier tests have ended (a bounded wait: a node that stays busy or down fails)."""
    assert len(nodes) == 3
    for _ in range(60):
        out = subprocess.run(["sinfo", "-h", "-N", "-p", infra["SKILLS_INFRA_MULTI_PARTITION"], "-o", "%N %T"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        states = dict(line.split() for line in out.splitlines())
        if states == {node: "idle" for node in nodes}:
            break
        time.sleep(1)
    assert states == {node: "idle" for node in nodes}


def test_a_job_spans_three_distinct_nodes(infra, nodes):
    assert sorted(srun(infra, "-N", "3", "hostname")) == sorted(nodes)


def test_a_file_written_on_a_container_node_is_on_the_host(infra, nodes, tmp_path):
    target = tmp_path / "from_node.txt"
    srun(infra, "-w", nodes[2], "bash", "-c", f"hostname > {target}")
    assert target.read_text().strip() == nodes[2]


def test_the_checkout_venv_imports_torch_on_a_container_node(infra, nodes):
    code = "import socket, torch, skills_cli; print(socket.gethostname(), torch.__version__)"
    (line,) = srun(infra, "-w", nodes[1], str(PYTHON), "-c", code)
    assert line.split()[0] == nodes[1]


@pytest.mark.parametrize("pair", [(1, 2), (0, 1)], ids=["two-containers", "host-and-container"])
def test_gloo_all_reduce_across_two_nodes(infra, nodes, tmp_path, pair):
    """Also with the host's node in the job: its rank must advertise an address the containers reach. The
    master is the allocation's first node (rank 0), as a multi-node job finds its head node."""
    script = tmp_path / "all_reduce.py"
    script.write_text(ALL_REDUCE)
    first, second = nodes[pair[0]], nodes[pair[1]]
    env = dict(os.environ, MASTER_PORT=str(random.randint(20000, 40000)))
    head = 'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1) exec "$0" "$1"'
    argv = ["srun", "-p", infra["SKILLS_INFRA_MULTI_PARTITION"], "--time", "00:02:00", "-N", "2",
            "--ntasks-per-node", "1", "-w", f"{first},{second}", "bash", "-c", head, str(PYTHON), str(script)]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env, cwd=Path(tmp_path))
    assert result.returncode == 0, result.stderr
    rows = sorted(line.split() for line in result.stdout.splitlines())
    assert [row[0] for row in rows] == ["0", "1"] and {row[1] for row in rows} == {first, second}
    assert rows[0][2] != rows[1][2], "both ranks report one address: no interface was crossed"
    assert [float(row[3]) for row in rows] == [3.0, 3.0]
