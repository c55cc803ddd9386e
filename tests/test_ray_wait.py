"""The head of a multi-node vLLM on GPUs waits for every node to join its Ray cluster, bounded like a training's
rendezvous ($SKILLS_CLI_RENDEZVOUS_TIMEOUT): a node that never joins fails the server with one line (in its
log and server.exit, where the client's wait reads it) instead of a job that hangs.

Ray is not installed here, so the rendered node script runs in bash with a scripted `ray` on PATH: `ray start`
succeeds, and each `ray status` lists the number of nodes the test wrote for that call (the last one repeats).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from skills_cli.pipeline.servers.base import ServerSpec
from skills_cli.pipeline.servers.vllm import RAY_STATUS_TIMEOUT_S, ray_cluster_script

# the status lines of the real `ray status` that the wait counts (one `node_<id>` per live node)
SCRIPTED_RAY = """#!/bin/bash
echo "$*" >> "$RAY_SCRIPT/calls"
[ "$1" = status ] || exit 0
[ "$(cat "$RAY_SCRIPT/nodes")" = hang ] && exec sleep 120
calls=$(grep -c '^status' "$RAY_SCRIPT/calls")
counts=($(cat "$RAY_SCRIPT/nodes"))
index=$(( calls < ${#counts[@]} ? calls - 1 : ${#counts[@]} - 1 ))
echo "======== Autoscaler status: 2026-12-05 01:00:00 ========"
echo "Node status"
echo "Active:"
for ((node = 0; node < counts[index]; node++)); do echo " 1 node_$node"; done
"""
SERVE = ["bash", "-c", 'echo serving; touch "$SKILLS_CLI_RUN_DIR/served"']
POLL_S = 5  # the wait polls `ray status` every 5 s: a timeout is noticed at most one poll late


def run_node(tmp_path: Path, nodes_seen: list, procid: int = 0, timeout: str = "2") -> tuple[int, str, float]:
    """Run the 2-node script as task `procid` with the scripted Ray; (exit code, output, seconds)."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "ray").write_text(SCRIPTED_RAY)
    (stub / "ray").chmod(0o755)
    (tmp_path / "nodes").write_text(" ".join(map(str, nodes_seen)))
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "RAY_SCRIPT": str(tmp_path),
           "SLURM_PROCID": str(procid), "SKILLS_CLI_RUN_DIR": str(tmp_path / "run"),
           "SKILLS_CLI_HEAD_NODE": "head-node", "SKILLS_SERVER_DIST_PORT": "6379",
           "SKILLS_CLI_RENDEZVOUS_TIMEOUT": timeout}  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(["bash", "-c", ray_cluster_script(SERVE, 2)], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_a_node_that_never_joins_fails_the_head_with_one_line_within_the_timeout(tmp_path):
    code, output, seconds = run_node(tmp_path, nodes_seen=[1])
    line = "error: only 1 of 2 nodes joined the Ray cluster at head-node:6379 within 2 s (set SKILLS_CLI_RENDEZVOUS_TIMEOUT to wait longer)"  # fmt: skip
    assert code == 1 and output.splitlines() == [line], output
    assert 2 <= seconds < 2 + POLL_S + 10, seconds
    run = tmp_path / "run"
    # as a server that died: the client's wait finds the exit status and quotes the log
    assert (run / "server.exit").read_text() == "1\n" and (run / "server.log").read_text() == line + "\n"
    assert not (run / "served").exists()
    assert (tmp_path / "calls").read_text().splitlines()[0] == "start --head --port=6379"


def test_the_head_serves_once_every_node_has_joined(tmp_path):
    code, output, _ = run_node(tmp_path, nodes_seen=[1, 1, 2], timeout="60")
    assert code == 0 and output.splitlines() == ["serving"], output
    assert (tmp_path / "run" / "served").exists() and (tmp_path / "run" / "server.exit").read_text() == "0\n"
    assert (tmp_path / "calls").read_text().splitlines().count("status") == 3


def test_a_timeout_in_the_rendezvous_form_with_a_fraction_is_whole_seconds(tmp_path):
    """The rendezvous reads the variable as a float; bash counts whole seconds (2.5 -> 2)."""
    code, output, seconds = run_node(tmp_path, nodes_seen=[0], timeout="2.5")
    assert code == 1 and output.startswith("error: only 0 of 2 nodes joined") and "within 2.5 s" in output, output
    assert seconds < 2 + POLL_S + 10, seconds


def test_a_ray_status_that_hangs_does_not_stretch_the_bound(tmp_path):
    """A head whose `ray status` never answers: each call is cut after RAY_STATUS_TIMEOUT_S and counts no node."""
    code, output, seconds = run_node(tmp_path, nodes_seen=["hang"])
    assert code == 1 and output.splitlines()[0].startswith("error: only 0 of 2 nodes joined"), output
    assert 2 <= seconds < 2 + RAY_STATUS_TIMEOUT_S + POLL_S + 10, seconds


def test_the_other_nodes_join_the_heads_ray_cluster(tmp_path):
    code, output, _ = run_node(tmp_path, nodes_seen=[2], procid=1)
    assert code == 0, output
    assert (tmp_path / "calls").read_text().splitlines() == ["start --address=head-node:6379 --block"]


@pytest.mark.parametrize("gpus,bounded", [(8, True), (0, False)])
def test_only_the_ray_cluster_waits_for_its_nodes(gpus, bounded):
    """GPU builds start a Ray cluster and wait for it; the CPU build's nodes meet in vLLM's own executor."""
    spec = ServerSpec("vllm", "/models/m", gpus=gpus, nodes=2)
    script = spec.kind.script(spec, "python3")
    assert ("SKILLS_CLI_RENDEZVOUS_TIMEOUT:-300" in script) is bounded, script
