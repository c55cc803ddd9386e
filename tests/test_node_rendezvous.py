"""The multi-node pre-launch rendezvous (skills_cli/common/node_rendezvous.py).

The protocol pieces run as several "nodes" that are processes on this machine, told their names with --nodes and
--node (the head is 127.0.0.1 so the others reach it). The acceptance runs are on the local cluster's `multi`
partition (the host's node and two container nodes): a 3-node allocation whose step starts on two nodes only, an
`ns train sft --num_nodes 2` whose output folder only one node sees, and two jobs at once whose torchruns share a
head node. The normal path (2-node SFT and GRPO end to end) is tests/test_multinode.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import run_ns
from multinode_support import REPO, job_nodes, write_multi_cluster
from test_sft_support import tiny_model, write_jsonl
from test_slurm import finish, sacct_times

from skills_cli.common.hostlist import expand_hostlist
from skills_cli.pipeline.store import JobState

MODULE = [sys.executable, "-m", "skills_cli.common.node_rendezvous"]
HEAD = "127.0.0.1"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def start_node(name: str, nodes: str, shared: Path, job: str, timeout: float, *command: str) -> subprocess.Popen:
    """One "node": the rendezvous, then the command with the head's endpoint filled in."""
    command = command or ("echo", "{rendezvous_host}:{rendezvous_port}")
    return subprocess.Popen([*MODULE, "--shared_dir", str(shared), "--nodes", nodes, "--node", name, "--job_id", job,
                             "--timeout", str(timeout), "--", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip


def outcome(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=60)
    return process.returncode, out.strip(), err.strip()


@pytest.mark.parametrize("expression", ["skills-n[1-2],vm", "r[1-2]n[1-2]", "a,b[08-11],c", "node[1-3],gpu-[01-02]"])
def test_node_lists_expand_as_scontrol_expands_them(expression):
    scontrol = subprocess.run(["scontrol", "show", "hostnames", expression], capture_output=True, text=True)
    if scontrol.returncode != 0:
        pytest.skip("no scontrol here")
    assert expand_hostlist(expression) == scontrol.stdout.split()


def test_every_node_gets_the_same_fresh_port_and_the_file_is_gone(tmp_path):
    nodes = f"{HEAD},node-b,node-c"
    shared = tmp_path / "shared"
    runs = [start_node(name, nodes, shared, "41", 20) for name in ("node-c", HEAD, "node-b")]
    results = [outcome(process) for process in runs]
    assert [rc for rc, _, _ in results] == [0, 0, 0], results
    endpoints = {out for _, out, _ in results}
    assert len(endpoints) == 1 and re.fullmatch(rf"{HEAD}:\d+", endpoints.pop())
    assert re.fullmatch(rf"rendezvous: 3 nodes joined at {HEAD}:\d+ in [\d.]+ s; the program meets at {HEAD}:\d+",
                        results[1][2])  # fmt: skip
    assert list(shared.iterdir()) == []  # made by the head, its file removed before the program starts


def test_two_jobs_on_one_head_meet_at_different_ports(tmp_path):
    nodes = f"{HEAD},node-b"
    runs = [start_node(name, nodes, tmp_path, job, 20) for job in ("51", "52") for name in (HEAD, "node-b")]
    outs = [outcome(process)[1] for process in runs]
    assert outs[0] == outs[1] and outs[2] == outs[3] and outs[0] != outs[2], outs


def test_a_node_that_never_joins_is_named_by_the_head_within_the_timeout(tmp_path):
    nodes = f"{HEAD},node-b,node-c"
    started = time.monotonic()
    head, joined = start_node(HEAD, nodes, tmp_path, "61", 4), start_node("node-b", nodes, tmp_path, "61", 4)
    (head_rc, _, head_err), (joined_rc, joined_out, joined_err) = outcome(head), outcome(joined)
    assert time.monotonic() - started < 30
    assert head_rc == 2 and re.fullmatch(
        rf"error: rendezvous at {HEAD}:\d+: node\(s\) node-c never joined within 4 s \(joined: {HEAD}, node-b\)",
        head_err,
    )
    # the joined node ran nothing and left the one error line to the head
    assert (joined_rc, joined_out, joined_err) == (2, "", "")


def test_a_node_that_does_not_see_the_shared_folder_says_so(tmp_path):
    nodes = f"{HEAD},node-b"
    rc, out, err = outcome(start_node("node-b", nodes, tmp_path / "not-shared", "71", 4))
    assert (rc, out) == (2, "")
    assert err == (f"error: node node-b does not see {tmp_path}/not-shared/.rendezvous-71 written by head {HEAD} "
                   f"within 3 s (is {tmp_path}/not-shared on a filesystem every node shares, and did the head start?)")  # fmt: skip


def test_a_node_that_cannot_reach_the_head_gives_the_reason(tmp_path):
    """The head's file names a port nobody listens on (the head wrote it, then its port was closed)."""
    nodes = f"{HEAD},node-b"
    (tmp_path / ".rendezvous-81").write_text(json.dumps({"head": HEAD, "port": 9, "nonce": "x"}))
    rc, _, err = outcome(start_node("node-b", nodes, tmp_path, "81", 4))
    assert rc == 2 and err == f"error: node node-b cannot reach head {HEAD}:9: [Errno 111] Connection refused"


def test_a_stale_file_of_an_earlier_run_is_retried_until_the_head_writes_its_own(tmp_path):
    """A requeued job keeps its id: its nodes can find the earlier run's file (a port nobody listens on now)."""
    nodes = f"{HEAD},node-b"
    (tmp_path / ".rendezvous-91").write_text(json.dumps({"head": HEAD, "port": 9, "nonce": "old"}))
    node = start_node("node-b", nodes, tmp_path, "91", 20)
    time.sleep(1.5)
    head = start_node(HEAD, nodes, tmp_path, "91", 20)
    (head_rc, head_out, _), (node_rc, node_out, _) = outcome(head), outcome(node)
    assert head_rc == node_rc == 0 and head_out == node_out and head_out.startswith(f"{HEAD}:")


def hello(port: int, message: dict) -> dict:
    with socket.create_connection((HEAD, port), timeout=10) as connection:
        connection.sendall((json.dumps(message) + "\n").encode())
        return json.loads(connection.makefile("r").readline())


def test_only_a_reader_of_the_owner_only_file_joins(tmp_path):
    head = start_node(HEAD, f"{HEAD},node-b", tmp_path, "95", 20)
    invitation = tmp_path / ".rendezvous-95"
    for _ in range(100):
        if invitation.exists():
            break
        time.sleep(0.1)
    assert stat.S_IMODE(invitation.stat().st_mode) == 0o600
    port, nonce = json.loads(invitation.read_text())["port"], json.loads(invitation.read_text())["nonce"]
    assert hello(port, {"node": "node-b", "nonce": "guessed"}) == {"again": True}
    assert hello(port, {"node": "node-x", "nonce": nonce}) == {"again": True}  # not one of the job's nodes
    answer = hello(port, {"node": "node-b", "nonce": nonce})
    assert outcome(head)[:2] == (0, f"{HEAD}:{answer['port']}")


def test_a_name_that_is_not_one_of_the_jobs_nodes_is_an_error(tmp_path):
    result = subprocess.run([*MODULE, "--shared_dir", str(tmp_path), "--nodes", "a,b", "--job_id", "1", "--", "true"],
                            capture_output=True, text=True, env={**ENV, "SLURMD_NODENAME": "zz"})  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: node_rendezvous: this node (") and "is not one of the job's nodes a, b" in (
        result.stderr
    )


# -- on the local cluster ---------------------------------------------------------------------------------------
SBATCH_WAIT_S = 240  # other tests share the multi partition, so a job may queue a while


@pytest.fixture
def sbatch(tmp_path):
    """Submits a batch script; whatever the test submitted is cancelled when it ends, passed or not."""
    submitted = []

    def submit(script: str, *options: str) -> str:
        path = tmp_path / f"job-{uuid.uuid4().hex[:8]}.sh"
        path.write_text(script)
        result = subprocess.run(["sbatch", "--parsable", *options, str(path)], capture_output=True, text=True,
                                check=True)  # fmt: skip
        submitted.append(result.stdout.strip().split(";")[0])
        return submitted[-1]

    yield submit
    subprocess.run(["scancel", *submitted], capture_output=True)


def wait_for_end(job_id: str) -> str:
    deadline = time.monotonic() + SBATCH_WAIT_S
    while time.monotonic() < deadline:
        state = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=State"], capture_output=True,
                               text=True).stdout.strip()  # fmt: skip
        if state and state.split()[0] not in ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING"):
            return state
        time.sleep(2)
    raise AssertionError(f"job {job_id} did not end within {SBATCH_WAIT_S} s")


def elapsed_s(infra: dict, job_id: str) -> float:
    start, end, _ = sacct_times(infra, [job_id])[job_id]
    return (end - start).total_seconds()


@pytest.fixture
def shared(tmp_path) -> Path:
    """A folder under /tmp, which every node of the local cluster sees at the same path."""
    assert str(tmp_path).startswith("/tmp/")
    return tmp_path


@pytest.mark.infra
@pytest.mark.timeout(400)
def test_a_step_on_two_of_three_nodes_fails_within_the_bound_naming_the_third(infra, shared, sbatch):
    partition = infra["SKILLS_INFRA_MULTI_PARTITION"]
    job_id = sbatch(f"""#!/bin/bash
#SBATCH --nodes=3 --ntasks-per-node=1 --partition={partition} --output={shared}/job-%j.log --no-requeue
nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
echo "left out: ${{nodes[2]}}"
PYTHONPATH={REPO} srun --nodes=2 --ntasks=2 --nodelist="${{nodes[0]}},${{nodes[1]}}" --kill-on-bad-exit=1 \\
    {REPO}/.venv/bin/python -m skills_cli.common.node_rendezvous --shared_dir {shared}/shared --timeout 20 -- true
""")  # fmt: skip
    assert wait_for_end(job_id).startswith("FAILED")
    head, second, third = job_nodes(job_id)
    log = (shared / f"job-{job_id}.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        rf"error: rendezvous at {head}:\d+: node\(s\) {third} never joined within 20 s \(joined: {head}, {second}\)",
        errors[0],
    ), log
    assert elapsed_s(infra, job_id) <= 50  # 20 s, plus Slurm's start and kill


@pytest.mark.infra
@pytest.mark.timeout(400)
def test_a_training_whose_output_dir_one_node_lacks_fails_naming_that_node(infra, tmp_path):
    """/var/tmp is each node's own (the container nodes do not mount the host's): the head creates the output
    folder there and writes its file; the other node never sees it."""
    extra = "env_vars:\n  - SKILLS_CLI_RENDEZVOUS_TIMEOUT=20\n"
    configs = write_multi_cluster(infra, tmp_path, tmp_path / "jobs", extra=extra)
    rows = [{"messages": [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"}]}] * 8
    output_dir = f"/var/tmp/skills-rdzv-{uuid.uuid4().hex[:8]}"
    expname = f"rdzv-unshared-{uuid.uuid4().hex[:6]}"
    run_ns("train", "sft", "--cluster", "slurm_multi", "--config_dir", str(configs), "--expname", expname,
           "--num_nodes", "2", "--hf_model", tiny_model(), "--training_data", write_jsonl(tmp_path / "t.jsonl", rows),
           "--output_dir", output_dir, "++policy.train_global_batch_size=2", check=True)  # fmt: skip
    (record,) = finish(expname, timeout=SBATCH_WAIT_S)
    assert record.state is JobState.FAILED, record
    head, other = job_nodes(record.external_id)
    logs = run_ns("logs", expname, check=True).stdout
    errors = [line for line in logs.splitlines() if line.startswith("error:")]
    assert errors == [f"error: node {other} does not see {output_dir}/.rendezvous-{record.external_id}.0 written by "
                      f"head {head} within 15 s (is {output_dir} on a filesystem every node shares, and did the head "
                      "start?)"], logs  # fmt: skip
    assert elapsed_s(infra, record.external_id) <= 50
    shutil.rmtree(output_dir, ignore_errors=True)  # on this machine's node, when it was the head


TORCHRUN_PROGRAM = """import os, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
total = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(total)
time.sleep(float(os.environ["HOLD_S"]))
print("world", dist.get_world_size(), "sum", int(total.item()), flush=True)
dist.destroy_process_group()
"""


@pytest.mark.infra
@pytest.mark.timeout(400)
def test_two_torchrun_jobs_on_the_same_head_node_do_not_collide(infra, shared, sbatch):
    """The second job starts while the first runs and outlives it. With the fixed port 29500 (before
    node_rendezvous) its torchrun found the port taken, used the first job's store instead of its own, and
    failed when the first job ended ("The connection to the C10d store has failed", jobs 2220/2222 on
    2026-12-04). One node is this machine's, whose name /etc/hosts also maps to 127.0.0.1: without
    --local_addr its torchrun told the other node to meet it at "localhost" (jobs 2178/2189 never formed gloo)."""
    (shared / "program.py").write_text(TORCHRUN_PROGRAM)
    partition, nodes = infra["SKILLS_INFRA_MULTI_PARTITION"], "skills-n1,vm"  # the head: skills-n1
    script = f"""#!/bin/bash
#SBATCH --nodes=2 --ntasks-per-node=1 --cpus-per-task=1 --mem=1500M --partition={partition} --nodelist={nodes}
#SBATCH --output={shared}/job-%j.log --no-requeue
export PYTHONPATH={REPO} OMP_NUM_THREADS=1
srun --kill-on-bad-exit=1 {REPO}/.venv/bin/python -m skills_cli.common.node_rendezvous --shared_dir {shared} -- \\
    {REPO}/.venv/bin/python -m torch.distributed.run --nproc_per_node=1 --nnodes=2 --rdzv_backend=c10d \\
    --rdzv_endpoint={{rendezvous_host}}:{{rendezvous_port}} --rdzv_id="$SLURM_JOB_ID" --local_addr={{rendezvous_node}} \\
    {shared}/program.py
"""
    jobs = [sbatch(script, "--export=ALL,HOLD_S=2")]
    time.sleep(3)  # the first job's torchrun hosts its store first
    jobs.append(sbatch(script, "--export=ALL,HOLD_S=30"))
    states = [wait_for_end(job) for job in jobs]
    logs = [(shared / f"job-{job}.log").read_text() for job in jobs]
    assert states == ["COMPLETED", "COMPLETED"], logs
    assert all(log.count("world 2 sum 3") == 2 for log in logs), logs
    meeting = re.compile(r"the program meets at skills-n1:(\d+)")
    ports = [meeting.findall(log) for log in logs]
    assert [len(found) for found in ports] == [1, 1] and ports[0] != ports[1], logs
    times = sacct_times(infra, jobs)
    (start_a, end_a, _), (start_b, end_b, _) = times[jobs[0]], times[jobs[1]]
    assert start_b < end_a and start_a < end_b, times  # they really ran at the same time
