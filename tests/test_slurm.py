"""The Slurm executor against a real local Slurm (slurmctld, slurmd, slurmdbd + MariaDB) reached over real
SSH, and with Docker containers started inside Slurm jobs. Needs tests/infra/local_cluster.sh."""

from __future__ import annotations

import subprocess
import uuid
from datetime import datetime

import pytest
from conftest import run_ns

from skills_cli.pipeline import run_cmd, status, wrap_arguments
from skills_cli.pipeline.cluster import load_cluster_config
from skills_cli.pipeline.experiment import SubmitOptions, submit_jobs, wait
from skills_cli.pipeline.jobs import Command, Job
from skills_cli.pipeline.store import JobState, Store

pytestmark = pytest.mark.infra


def ssh(infra: dict, command: str) -> str:
    argv = ["ssh", "-p", infra["SKILLS_INFRA_SSH_PORT"], "-i", infra["SKILLS_INFRA_SSH_KEY"], "-o", "BatchMode=yes",
            f"{infra['SKILLS_INFRA_SSH_USER']}@{infra['SKILLS_INFRA_SSH_HOST']}", command]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def finish(expname: str, timeout: float = 180) -> list:
    store = Store()
    return wait(store.jobs(expname), store, timeout=timeout, poll=1.0)


def sacct_times(infra: dict, job_ids: list[str]) -> dict[str, tuple[datetime, datetime, str]]:
    """Start, end and state of each job as slurmdbd recorded them (waits for accounting to catch up)."""
    for _ in range(30):
        out = ssh(infra, f"sacct -X -n -P -j {','.join(job_ids)} --format=JobIDRaw,Start,End,State")
        rows = {}
        for line in out.strip().splitlines():
            job_id, start, end, state = line.split("|")[:4]
            if start not in ("Unknown", "None") and end not in ("Unknown", "None"):
                rows[job_id] = (datetime.fromisoformat(start), datetime.fromisoformat(end), state)
        if len(rows) == len(job_ids):
            return rows
        subprocess.run(["sleep", "2"])
    raise AssertionError(f"sacct never showed all of {job_ids}: {out}")


def test_run_cmd_over_ssh_ships_code_and_logs(slurm_config):
    cmd = 'python3 -c \'import skills_cli.pipeline.shell as s, sys; print("shipped", s.quote("a b"))\'; echo job=$SLURM_JOB_ID'
    submission = run_cmd(ctx=wrap_arguments(cmd), cluster="slurm_local", config_dir=str(slurm_config), expname="ssh1")
    (record,) = submission.records
    assert record.executor == "slurm" and record.external_id.isdigit()
    (record,) = finish("ssh1")
    assert record.state is JobState.SUCCEEDED, record
    logs = run_ns("logs", "ssh1", check=True).stdout
    assert "shipped 'a b'" in logs and f"job={record.external_id}" in logs


def test_three_job_chain_over_two_expnames_runs_in_order(slurm_config, infra):
    cluster = load_cluster_config("slurm_local", str(slurm_config))
    run_cmd(ctx=wrap_arguments("sleep 3; echo first"), cluster="slurm_local", config_dir=str(slurm_config),
            expname="chain-a")  # fmt: skip
    second = Job(name="second", commands=(Command(argv=("bash", "-c", "sleep 2; echo second")),))
    third = Job(name="third", commands=(Command(argv=("bash", "-c", "echo third")),), after=("second",))
    queued = submit_jobs([second, third], cluster, SubmitOptions(expname="chain-b", run_after=("chain-a",))).records
    # right after submission both wait on their upstream inside Slurm (reason Dependency)
    reasons = ssh(infra, f"squeue -h -j {','.join(r.external_id for r in queued)} -o %r").split()
    assert reasons == ["Dependency", "Dependency"], reasons
    records = finish("chain-a") + finish("chain-b")
    assert [r.state for r in records] == [JobState.SUCCEEDED] * 3
    ids = [r.external_id for r in records]
    times = sacct_times(infra, ids)
    (a_start, a_end, _), (b_start, b_end, _), (c_start, c_end, _) = (times[i] for i in ids)
    assert a_end <= b_start and b_end <= c_start, times  # order visible in accounting
    assert all(state == "COMPLETED" for _, _, state in times.values())


def test_failing_upstream_dependents_never_run(slurm_config, tmp_path):
    marker = f"/tmp/skills-test-{uuid.uuid4().hex}"
    common = {"cluster": "slurm_local", "config_dir": str(slurm_config)}
    run_cmd(ctx=wrap_arguments("sleep 2; exit 3"), expname="fails", **common)
    run_cmd(ctx=wrap_arguments(f"touch {marker}"), expname="after-fail", run_after=["fails"], **common)
    (up,) = finish("fails")
    assert up.state is JobState.FAILED and up.exit_code == 3
    (down,) = finish("after-fail", timeout=120)
    assert down.state is JobState.CANCELLED
    (down,) = status(expname="after-fail")["after-fail"]
    assert down.reason == "upstream fails/fails FAILED"
    assert not subprocess.run(["test", "-e", marker]).returncode == 0  # the dependent never ran
    shown = run_ns("status", "after-fail", check=True).stdout
    assert "CANCELLED" in shown and "upstream" in shown


def test_run_after_on_a_finished_failure_is_refused(slurm_config):
    common = {"cluster": "slurm_local", "config_dir": str(slurm_config)}
    run_cmd(ctx=wrap_arguments("exit 1"), expname="failed-before", **common)
    finish("failed-before")
    result = run_ns("run_cmd", "--cluster", "slurm_local", "--config_dir", str(slurm_config), "--expname", "x",
                    "--run_after", "failed-before", "echo never")  # fmt: skip
    assert result.returncode == 2
    assert "failed-before" in result.stderr and "FAILED" in result.stderr
    assert not Store().has_experiment("x")


@pytest.mark.parametrize("cluster", ["slurm_docker", "slurm_podman"])
def test_container_inside_a_slurm_job(slurm_config, cluster):
    cmd = ("python3 -c 'import sys, skills_cli.pipeline.shell; print(\"in-container\", sys.version.split()[0])'; "
           "grep PRETTY_NAME /etc/os-release")  # fmt: skip
    run_cmd(ctx=wrap_arguments(cmd), cluster=cluster, config_dir=str(slurm_config), expname="in-container")
    (record,) = finish("in-container")
    logs = run_ns("logs", "in-container", check=True).stdout
    assert record.state is JobState.SUCCEEDED, logs
    assert "in-container 3.11" in logs and "bookworm" in logs


def test_login_node_submission_through_local_tunnel(slurm_config):
    run_cmd(ctx=wrap_arguments("echo from-login-node"), cluster="slurm_login", config_dir=str(slurm_config),
            expname="login")  # fmt: skip
    (record,) = finish("login")
    assert record.state is JobState.SUCCEEDED
    assert "from-login-node" in run_ns("logs", "login", check=True).stdout


def test_cancel_on_slurm(slurm_config):
    run_cmd(ctx=wrap_arguments("sleep 300"), cluster="slurm_local", config_dir=str(slurm_config), expname="to-cancel")
    result = run_ns("cancel", "to-cancel", check=True)
    assert result.returncode == 0
    (record,) = finish("to-cancel", timeout=60)
    assert record.state is JobState.CANCELLED


def test_dry_run_on_slurm_connects_to_nothing(slurm_config):
    result = run_ns("run_cmd", "--cluster", "slurm_docker", "--config_dir", str(slurm_config), "--expname", "dry",
                    "--dry_run", "echo hi", check=True)  # fmt: skip
    assert "#!/bin/bash" in result.stdout and "docker run" in result.stdout and "sbatch --parsable" in result.stdout
    assert not Store().has_experiment("dry")


def test_more_gpus_than_the_partition_has_is_refused_before_queueing(slurm_config, infra):
    """The first round trip asks sinfo what the partition's nodes have (this cluster: no GPUs)."""
    partition = ssh(infra, "sinfo -h -o %P").split()[0].rstrip("*")
    result = run_ns("run_cmd", "--cluster", "slurm_local", "--config_dir", str(slurm_config), "--expname", "gpu-ask",
                    "--num_gpus", "2", "echo never")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (f"error: job 'gpu-ask' asks for 2 GPUs per node; partition {partition!r} of "
                                     "cluster 'slurm_local' has at most 0 per node (sinfo)")  # fmt: skip
    assert not Store().has_experiment("gpu-ask")
    assert "gpu-ask" not in ssh(infra, "squeue -h -o %j")


def test_partition_sizes_read_sinfo_gres_and_node_counts():
    from skills_cli.pipeline.executors.slurm import partition_sizes

    offered = partition_sizes(["SINFO cpu*|(null)|3", "SINFO gpu|gpu:a100:4(S:0-1),gpu:v100:2|2", "SINFO gpu|gpu:8|5"])
    assert (offered.gpus_per_node, offered.nodes, offered.default) == (
        {"cpu": 0, "gpu": 8},
        {"cpu": 3, "gpu": 7},
        "cpu",
    )
