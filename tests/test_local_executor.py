"""The bare local executor (`executor: none`) for real: supervisors, dependencies across invocations,
failure propagation, GPU assignment, time limits, cancel, dependent jobs and multi-command jobs."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from conftest import run_ns, write_config

from skills_cli.pipeline import run_cmd, status, wrap_arguments
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.experiment import SubmitOptions, submit_jobs, wait
from skills_cli.pipeline.jobs import Command, Job
from skills_cli.pipeline.store import JobState, Store


def states(expname: str) -> dict[str, JobState]:
    return {r.name: r.state for r in status(expname=expname)[expname]}


def wait_all(expname: str, timeout: float = 60) -> list:
    store = Store()
    return wait(store.jobs(expname), store, timeout=timeout)


def test_run_cmd_cli_runs_and_records(tmp_path):
    out = run_ns("run_cmd", "--expname", "hello", f"echo hi from ns > {tmp_path}/out.txt; echo logged", check=True)
    assert (tmp_path / "out.txt").read_text() == "hi from ns\n"
    assert "SUCCEEDED" in out.stdout
    shown = run_ns("status", "hello", check=True).stdout
    assert "hello" in shown and "SUCCEEDED" in shown
    logs = run_ns("logs", "hello", check=True).stdout
    assert "logged" in logs


def test_failed_job_exits_nonzero_and_records_exit_code():
    result = run_ns("run_cmd", "--expname", "bad", "echo before; exit 7")
    assert result.returncode == 1
    (record,) = Store().jobs("bad")
    assert record.state is JobState.FAILED and record.exit_code == 7


def test_run_after_across_invocations_orders_jobs(tmp_path):
    order = tmp_path / "order.txt"
    run_cmd(ctx=wrap_arguments(f"sleep 2; echo A >> {order}"), expname="first", detach=True)
    submission = run_cmd(ctx=wrap_arguments(f"echo B >> {order}"), expname="second", run_after=["first"])
    assert submission.succeeded
    assert order.read_text().split() == ["A", "B"]
    (first,) = Store().jobs("first")
    (second,) = Store().jobs("second")
    assert first.ended_at <= second.started_at


def test_failed_upstream_stops_dependents_with_reason(tmp_path):
    marker = tmp_path / "dependent_ran"
    run_cmd(ctx=wrap_arguments("sleep 1; exit 3"), expname="upstream", detach=True)
    run_cmd(ctx=wrap_arguments(f"touch {marker}"), expname="downstream", run_after=["upstream"], detach=True)
    run_cmd(ctx=wrap_arguments(f"touch {marker}.2"), expname="further", run_after=["downstream"], detach=True)
    wait_all("further")
    assert not marker.exists() and not Path(f"{marker}.2").exists()
    (down,) = status(expname="downstream")["downstream"]
    assert down.state is JobState.CANCELLED
    assert down.reason == "upstream upstream/upstream FAILED"
    (further,) = status(expname="further")["further"]
    assert further.reason == "upstream downstream/downstream CANCELLED"
    shown = run_ns("status", "downstream", check=True).stdout
    assert "upstream upstream/upstream FAILED" in shown  # piped tables are wide: no folded cells


def test_afterany_runs_after_a_failure(tmp_path):
    marker = tmp_path / "ran"
    run_cmd(ctx=wrap_arguments("exit 1"), expname="flaky", detach=True)
    result = run_cmd(ctx=wrap_arguments(f"touch {marker}"), expname="cleanup", run_after=["flaky"],
                     dependency_type="afterany")  # fmt: skip
    assert result.succeeded and marker.exists()


def test_gpu_assignment_through_cuda_visible_devices(tmp_path, config_dir):
    write_config(config_dir, "gpus4", "executor: none\ngpus: [0, 1, 2]\nmax_parallel_jobs: 4\n")
    common = {"cluster": "gpus4", "config_dir": str(config_dir), "detach": True}
    run_cmd(
        ctx=wrap_arguments(f"echo $CUDA_VISIBLE_DEVICES > {tmp_path}/a; sleep 3"), expname="a", num_gpus=2, **common
    )
    run_cmd(
        ctx=wrap_arguments(f"echo $CUDA_VISIBLE_DEVICES > {tmp_path}/b; sleep 3"), expname="b", num_gpus=1, **common
    )
    run_cmd(ctx=wrap_arguments(f"echo $CUDA_VISIBLE_DEVICES > {tmp_path}/c"), expname="c", num_gpus=2, **common)
    run_cmd(ctx=wrap_arguments(f'echo "[$CUDA_VISIBLE_DEVICES]" > {tmp_path}/d'), expname="d", **common)
    records = {name: wait_all(name)[0] for name in "abcd"}
    gpus = {name: set((tmp_path / name).read_text().strip().split(",")) for name in "abc"}
    assert [len(gpus[n]) for n in "abc"] == [2, 1, 2] and set().union(*gpus.values()) <= {"0", "1", "2"}
    # whichever order the supervisors started in: jobs that ran at the same time never shared a GPU,
    # and a and c (2 + 2 GPUs out of 3) could never run together
    for first, second in (("a", "b"), ("a", "c"), ("b", "c")):
        x, y = records[first], records[second]
        overlapped = x.started_at < y.ended_at and y.started_at < x.ended_at
        assert not (overlapped and gpus[first] & gpus[second]), (first, second, gpus)
    a, c = records["a"], records["c"]
    assert a.ended_at <= c.started_at + 0.5 or c.ended_at <= a.started_at + 0.5
    assert (tmp_path / "d").read_text().strip() == "[]"  # a CPU job sees no GPU


def test_time_limit_is_enforced():
    started = time.time()
    result = run_cmd(ctx=wrap_arguments("sleep 60"), expname="slow", time="0:02")
    assert time.time() - started < 30
    (record,) = result.records
    assert record.state is JobState.TIMEOUT


def test_cancel_stops_running_and_waiting_jobs(tmp_path):
    run_cmd(ctx=wrap_arguments("sleep 60"), expname="long", detach=True)
    run_cmd(ctx=wrap_arguments(f"touch {tmp_path}/never"), expname="after_long", run_after=["long"], detach=True)
    deadline = time.time() + 20
    while states("long")["long"] is not JobState.RUNNING and time.time() < deadline:
        time.sleep(0.2)
    result = run_ns("cancel", "long", check=True)
    assert "CANCELLED" in result.stdout
    assert states("long")["long"] is JobState.CANCELLED
    wait_all("after_long")
    assert states("after_long")["after_long"] is JobState.CANCELLED
    assert not (tmp_path / "never").exists()


def test_dependent_jobs_chain_copies(tmp_path):
    log = tmp_path / "copies.txt"
    result = run_cmd(ctx=wrap_arguments(f"echo $SKILLS_CLI_JOB_NAME >> {log}"), expname="chain", dependent_jobs=2)
    assert [r.name for r in result.records] == ["chain", "chain-cont1", "chain-cont2"]
    assert log.read_text().split() == ["chain", "chain-cont1", "chain-cont2"]


def test_multi_command_job_stops_background_service(tmp_path):
    cluster = parse_cluster_config({"executor": "none"}, name="local")
    job = Job(
        name="served",
        commands=(
            Command(argv=("bash", "-c", f"echo $$ > {tmp_path}/server.pid; exec sleep 300"), name="server",
                    background=True),
            Command(argv=("bash", "-c", "sleep 1; echo client done"), name="client"),
        ),
    )  # fmt: skip
    started = time.time()
    submission = submit_jobs([job], cluster, SubmitOptions(expname="served"))
    assert submission.succeeded and time.time() - started < 30
    pid = int((tmp_path / "server.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    logs = run_ns("logs", "served", check=True).stdout
    assert "client done" in logs and "served-" in logs


def test_jobs_run_the_shipped_code_snapshot(isolated_home, tmp_path):
    run_cmd(ctx=wrap_arguments(f"{sys.executable} -c 'import skills_cli; print(skills_cli.__file__)' > {tmp_path}/where"),
            expname="code")  # fmt: skip
    where = (tmp_path / "where").read_text().strip()
    assert where.startswith(str(isolated_home / "code")), where


def test_max_parallel_jobs_limits_concurrency(tmp_path, config_dir):
    write_config(config_dir, "one_at_a_time", "executor: none\nmax_parallel_jobs: 1\n")
    common = {"cluster": "one_at_a_time", "config_dir": str(config_dir), "detach": True}
    for name in ("p1", "p2", "p3"):
        run_cmd(ctx=wrap_arguments("sleep 1"), expname=name, **common)
    records = [wait_all(name)[0] for name in ("p1", "p2", "p3")]
    spans = sorted((r.started_at, r.ended_at) for r in records)
    assert all(
        later[0] >= earlier[1] - 0.05 for earlier, later in zip(spans, spans[1:], strict=False)
    )  # never overlapping
