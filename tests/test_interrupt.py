"""Ctrl-C aborts `ns` with "aborted" and status 130, and never leaves a job of the interrupted command running.

These run the real `ns` entry point in a subprocess and send it a real SIGINT, as a terminal does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skills_cli.pipeline.executors.local import supervisor_alive
from skills_cli.pipeline.store import JobState, Store

NS = [sys.executable, "-m", "skills_cli"]


def _start(args: list[str], home: Path) -> subprocess.Popen:
    env = {**os.environ, "SKILLS_CLI_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    # as from an interactive shell: Ctrl-C not ignored, even where the test runner itself was started with it ignored
    return subprocess.Popen([*NS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def _jobs(home: Path, expname: str) -> list:
    path = home / "store.sqlite"
    if not path.exists():
        return []
    store = Store(path)
    with store._connect() as db:
        uids = [row[0] for row in db.execute("SELECT uid FROM jobs WHERE expname = ?", (expname,))]
    return [store.job(uid) for uid in uids]


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_ctrl_c_while_waiting_cancels_the_job_and_exits_130(isolated_home, tmp_path):
    marker = tmp_path / "still-running"
    # the job would create the marker after 20 s unless it is stopped first
    command = f"sleep 20 && touch {marker}"
    process = _start(["run_cmd", "--expname", "ctrlc-wait", command], isolated_home)
    _wait_for(lambda: any(r.state is JobState.RUNNING for r in _jobs(isolated_home, "ctrlc-wait")))
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert stderr.rstrip().endswith("aborted"), stderr
    assert "cancelled 1 job(s)" in stderr
    (record,) = _jobs(isolated_home, "ctrlc-wait")
    assert record.state is JobState.CANCELLED
    assert not supervisor_alive(record)
    time.sleep(0.5)
    assert not marker.exists()


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, 2.5])
def test_ctrl_c_at_any_moment_leaves_nothing_running(isolated_home, delay):
    """Whenever the interrupt lands (imports, validation, submission, waiting), the status is 130 with one
    "aborted" line, no traceback, and no job of the experiment is left queued or running."""
    expname = f"ctrlc-{delay}"
    process = _start(["run_cmd", "--expname", expname, "sleep 30"], isolated_home)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=90)
    if process.returncode == 0:  # pragma: no cover - the command cannot finish within the delays above
        pytest.fail(f"ns finished before the interrupt: {stderr}")
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.rstrip().endswith("aborted"), stderr
    for record in _jobs(isolated_home, expname):
        assert record.state.finished, record
        assert not supervisor_alive(record)


def test_ctrl_c_during_submission_lets_it_finish_then_cancels_every_queued_job(isolated_home, monkeypatch):
    """The interrupt lands after the first of three jobs was started: the submission completes (every job is
    recorded), then all three are cancelled, and KeyboardInterrupt reaches the caller."""
    from skills_cli.common import interrupts
    from skills_cli.pipeline.cluster import load_cluster_config
    from skills_cli.pipeline.executors.local import LocalExecutor
    from skills_cli.pipeline.experiment import SubmitOptions, submit_jobs
    from skills_cli.pipeline.jobs import Command, Job

    spawn = LocalExecutor._spawn_supervisor
    spawned: list[int] = []

    def spawn_then_interrupt(*args):  # a Ctrl-C timed inside the submission
        pid = spawn(*args)
        spawned.append(pid)
        if len(spawned) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return pid

    monkeypatch.setattr(LocalExecutor, "_spawn_supervisor", staticmethod(spawn_then_interrupt))
    monkeypatch.setattr(interrupts, "_seen", [])
    jobs = [Job(name=f"j{i}", commands=(Command(argv=("sleep", "30")),)) for i in range(3)]
    # as in an interactive shell: pytest started in the background of a script inherits SIGINT ignored, which
    # `ns` rightly keeps ignoring (test_ns_started_with_ctrl_c_ignored_keeps_ignoring_it)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            submit_jobs(jobs, load_cluster_config("local"), SubmitOptions(expname="half", detach=True))
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert len(spawned) == 3  # the submission was not cut half way
    records = _jobs(isolated_home, "half")
    assert len(records) == 3
    for record in records:
        assert record.state is JobState.CANCELLED, record
        assert not supervisor_alive(record)


def test_ns_started_with_ctrl_c_ignored_keeps_ignoring_it(isolated_home):
    """`nohup ns ...` or `ns ... &` in a script: the interrupt is ignored, as for any Python program."""
    env = {**os.environ, "SKILLS_CLI_HOME": str(isolated_home)}
    process = subprocess.Popen([*NS, "run_cmd", "--expname", "ignored", "sleep 2"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    _wait_for(lambda: any(r.state is JobState.RUNNING for r in _jobs(isolated_home, "ignored")))
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert [r.state for r in _jobs(isolated_home, "ignored")] == [JobState.SUCCEEDED]
