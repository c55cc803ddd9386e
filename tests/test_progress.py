"""Progress while waiting, with real jobs on executor `none`: one plain line per job start and end when the
output is not a terminal (a waiting `ns run_cmd`, `ns status --watch`), and a live rich table on a terminal."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time

from conftest import run_ns
from rich.console import Console

from skills_cli.pipeline import run_cmd, status, wrap_arguments
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.progress import Progress, transition_line
from skills_cli.pipeline.store import JobRecord, JobState, Store

ENDED = re.compile(r"^(?P<job>\S+): SUCCEEDED after (?P<seconds>\d+\.\d) s$")


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_waiting_submission_prints_one_line_per_start_and_end():
    result = run_ns("run_cmd", "--expname", "p", "--dependent_jobs", "1", "sleep 2", check=True)
    shown = lines(result.stderr)
    assert [line.split(" after ")[0] for line in shown] == [
        "p/p: RUNNING", "p/p: SUCCEEDED", "p/p-cont1: RUNNING", "p/p-cont1: SUCCEEDED",
    ], result.stderr  # fmt: skip
    for line in (shown[1], shown[3]):
        assert 1.5 <= float(ENDED.match(line)["seconds"]) < 60, line  # each job slept 2 s
    assert "experiment p on local" in result.stdout and result.stdout.count("SUCCEEDED") == 2  # the table as before


def test_status_watch_waits_for_the_experiment_and_what_it_ran_after(tmp_path):
    go = tmp_path / "go"
    run_ns("run_cmd", "--expname", "up", "--detach", f"while [ ! -e {go} ]; do sleep 0.2; done", check=True)
    run_ns("run_cmd", "--expname", "down", "--detach", "--run_after", "up", "sleep 1", check=True)
    watcher = subprocess.Popen([sys.executable, "-m", "skills_cli", "status", "--watch", "down"], text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    time.sleep(3)
    assert watcher.poll() is None  # `up` cannot end before `go` exists, so neither can `down`: still watching
    go.touch()
    stdout, stderr = watcher.communicate(timeout=120)
    returned = time.time()
    assert watcher.returncode == 0, stderr
    assert "experiment up" in stdout and "experiment down" in stdout
    for name in ("up", "down"):
        (record,) = status(expname=name)[name]
        assert record.state is JobState.SUCCEEDED and record.ended_at <= returned  # it waited for both
    shown = lines(stderr)
    assert all(re.match(r"^(up/up|down/down): (RUNNING|SUCCEEDED after \d+\.\d s)$", line) for line in shown), shown
    assert [ENDED.match(line)["job"] for line in shown if ENDED.match(line)] == ["up/up", "down/down"]
    assert len(shown) == len(set(shown))  # one line per transition, not one per poll


def test_status_watch_needs_an_experiment():
    result = run_ns("status", "--watch")
    assert result.returncode == 2 and result.stderr.strip() == "error: --watch needs an experiment name"


def test_a_terminal_gets_a_live_table_and_no_plain_lines(capsys):
    (record,) = run_cmd(ctx=wrap_arguments("sleep 1.5"), expname="live", detach=True).records
    screen = io.StringIO()
    progress = Progress(Console(force_terminal=True, file=screen, width=100))
    with progress:
        (final,) = wait([record], Store(), poll=0.2, progress=progress)
    assert final.state is JobState.SUCCEEDED
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # terminal control codes: redrawn in place
    for text in ("waiting for jobs", "experiment", "elapsed", "live", "RUNNING", "SUCCEEDED"):
        assert text in drawn, text
    assert re.search(r"live\s*│\s*live\s*│\s*\S*RUNNING", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", drawn))
    assert "live/live" not in capsys.readouterr().err  # the table replaces the plain lines


def test_a_job_that_never_ran_ends_without_a_run_time():
    never = JobRecord("u1", "exp", "job", "local", "none", JobState.CANCELLED, reason="upstream exp/first FAILED")
    assert transition_line(never, time.time()) == "exp/job: CANCELLED (upstream exp/first FAILED)"
    assert transition_line(JobRecord("u2", "exp", "job", "local", "none", JobState.PENDING), time.time()) is None
