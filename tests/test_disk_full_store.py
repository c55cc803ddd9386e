"""A full disk under the state folder (store, code snapshots, job specs) is one `error:` line, never a
traceback, and what was stored before stays readable. The disk is a real 16 MiB tmpfs (`small_disk`)."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import fill_disk, run_ns

from skills_cli.common.errors import UserError
from skills_cli.pipeline.store import JobRecord, Store


def test_submission_on_a_full_disk_is_one_line_and_the_store_survives(small_disk):
    home = small_disk / "home"
    env = {"SKILLS_CLI_HOME": str(home)}
    first = run_ns("run_cmd", "--expname", "before", "true", env=env)
    assert first.returncode == 0, first.stderr
    fill_disk(small_disk)
    full = run_ns("run_cmd", "--expname", "after", "echo hello", env=env)
    assert full.returncode != 0
    assert "Traceback" not in full.stderr, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full"), full.stderr
    (small_disk / ".filler").unlink()  # space freed: the earlier experiment is intact, the new one absent
    status = run_ns("status", "before", env=env)
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout, status.stdout + status.stderr
    assert run_ns("status", "after", env=env).returncode == 2  # nothing of the failed submission was recorded


def test_store_write_on_a_full_disk_names_the_store(small_disk):
    store = Store(small_disk / "store.sqlite")
    store.add_job(JobRecord(uid="u0", expname="e", name="j", cluster="c", executor="none"))
    fill_disk(small_disk)
    with pytest.raises(UserError, match=r"disk full while writing the job store .*store\.sqlite"):
        for index in range(2000):  # enough rows to need new pages on the full disk
            store.add_job(JobRecord(uid=f"u{index + 1}", expname="e", name="j" * 200, cluster="c", executor="none"))
    (small_disk / ".filler").unlink()
    assert store.job("u0").name == "j"


def test_other_sqlite_errors_are_not_reported_as_a_full_disk(tmp_path):
    store = Store(tmp_path / "store.sqlite")
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        with store._connect() as db:
            db.execute("SELECT * FROM no_such_table")
