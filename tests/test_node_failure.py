"""A node that dies under a running 2-node job (its container killed, like a machine losing power), on the local
cluster's `multi` partition: Slurm notices within SlurmdTimeout (40 s there), ends the job NODE_FAIL instead of
requeueing it (#SBATCH --no-requeue), kills its processes on the node that survives and cancels its afterok
dependents (--kill-on-invalid-dep=yes); `ns status` names the node for the job and the upstream for the dependent.
The node is brought back (local_cluster.sh up) however the test ends: the tests after this one need it."""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from conftest import run_ns
from multinode_support import REPO, job_nodes, write_multi_cluster
from test_multinode import processes
from test_slurm import finish

from skills_cli.pipeline.store import JobState, Store

pytestmark = pytest.mark.infra

# what sinfo calls a node that takes jobs again (other tests' jobs may be running on it)
READY = ("idle", "planned", "mixed", "allocated", "completing")


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(1)
    return True


def node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True,
                          text=True).stdout.split("\n")[0].strip()  # fmt: skip


def node_ready(node: str) -> bool:
    return node_state(node).rstrip("-") in READY  # `-`: backfill has planned a job there


def running_jobs_on(node: str) -> int:
    return len(subprocess.run(["squeue", "-h", "-t", "running", "-w", node, "-o", "%i"], capture_output=True,
                              text=True).stdout.split())  # fmt: skip


class NodeKiller:
    """Kills container nodes of the local cluster and brings them back. While one is down, a file says so
    (`$SKILLS_NODE_DOWN_FILE`, default NODE_DOWN in the infra's nodes folder): other multi-node runs that fail
    meanwhile are not their own bug."""

    def __init__(self, nodes_dir: Path):
        self.nodes_dir = nodes_dir
        self.notice = Path(os.environ.get("SKILLS_NODE_DOWN_FILE") or nodes_dir / "NODE_DOWN")
        self.killed: list[str] = []

    def container_nodes(self) -> list[str]:
        return sorted(path.stem for path in self.nodes_dir.glob("*.cid"))

    @staticmethod
    def least_busy(nodes: list[str]) -> str:
        """The node running the fewest jobs (other tests' jobs there would fail with it), the last on a tie: not
        the first node of an allocation, where the batch script runs."""
        return min(reversed(nodes), key=running_jobs_on)

    def kill(self, node: str) -> None:
        self.notice.touch()
        self.killed.append(node)
        container = (self.nodes_dir / f"{node}.cid").read_text().strip()
        subprocess.run(["docker", "kill", container], capture_output=True, check=True, timeout=60)

    def bring_back(self) -> None:
        """`up` restarts a node whose container is gone; ReturnToService=2 makes it usable once its slurmd
        registers, and a node still DOWN is resumed by hand."""
        up = subprocess.run(["bash", str(REPO / "tests/infra/local_cluster.sh"), "up"], capture_output=True,
                            text=True, timeout=400)  # fmt: skip
        for node in self.killed:
            if not wait_for(partial(node_ready, node), 60):
                subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
            assert wait_for(partial(node_ready, node), 60), (
                f"{node} is still {node_state(node)!r} after local_cluster.sh up:\n{up.stdout[-3000:]}{up.stderr[-2000:]}"
            )
        self.notice.unlink(missing_ok=True)  # kept when the node stays down: it is down


@pytest.fixture
def killer(infra) -> Iterator[NodeKiller]:
    killer = NodeKiller(Path(infra["SKILLS_INFRA_STATE"]) / "nodes")
    if len(killer.container_nodes()) < 2:
        pytest.fail(f"no container nodes in {killer.nodes_dir} (local_cluster.sh up started none)")
    yield killer
    if killer.killed:
        killer.bring_back()


@pytest.fixture
def multi(infra, tmp_path) -> Path:
    (tmp_path / "configs").mkdir()
    return write_multi_cluster(infra, tmp_path / "configs", tmp_path / "jobs")  # under /tmp: shared by the nodes


def status_text(expname: str) -> str:
    """`ns status` as a user sees it, wide enough that no reason is folded over two lines."""
    return run_ns("status", expname, check=True, env={"COLUMNS": "400"}).stdout


@pytest.mark.timeout(600)
def test_a_node_killed_mid_job_fails_the_job_naming_the_node_and_cancels_dependents(multi, killer):
    marker = f"sleep {random.randint(10000, 19999)}"
    where = ("--cluster", "slurm_multi", "--config_dir", str(multi))
    run_ns("run_cmd", *where, "--expname", "nf-job", "--num_nodes", "2", marker, check=True)
    run_ns("run_cmd", *where, "--expname", "nf-after", "--run_after", "nf-job", "echo never", check=True)
    (job,) = Store().jobs("nf-job")
    try:
        # one sleep per node (the multi partition is shared with other tests: the job may queue a while)
        running = wait_for(lambda: [line.split(None, 1)[1] for line in processes(marker)].count(marker) == 2, 240)
        assert running, f"the job never ran on two nodes: {processes(marker)}"
        victim = killer.least_busy([node for node in job_nodes(job.external_id) if node in killer.container_nodes()])
        killer.kill(victim)
        killed_at = time.monotonic()
        (job,) = finish("nf-job", timeout=180)
        noticed = time.monotonic() - killed_at
        print(f"Slurm ended job {job.external_id} {noticed:.0f} s after {victim} was killed (SlurmdTimeout=40)")
    except BaseException:  # no leftovers on the shared partition (on success Slurm has ended both by itself)
        subprocess.run(["scancel", job.external_id, *(r.external_id for r in Store().jobs("nf-after"))])
        raise
    assert job.state is JobState.FAILED, job
    assert re.fullmatch(rf"node failure: {victim} \((NODE_FAIL|FAILED); down: Not responding\)", job.reason), job
    assert job.reason in status_text("nf-job")
    (after,) = finish("nf-after", timeout=60)
    assert (after.state, after.reason) == (JobState.CANCELLED, "upstream nf-job/nf-job FAILED"), after
    assert after.reason in status_text("nf-after")
    assert wait_for(lambda: not processes(marker), 30), processes(marker)
