"""Executor kinds come from a registry: a plugin adds one without touching the package, a cluster config names
it (`executor: toy`), and `ns` submits, waits, follows and reports through it like through a built-in kind."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap

import pytest
from conftest import run_ns, write_config

from skills_cli.common.registry import PLUGINS_ENV
from skills_cli.pipeline import status
from skills_cli.pipeline.cluster import load_cluster_config
from skills_cli.pipeline.executors import EXECUTORS, executor_for
from skills_cli.pipeline.store import JobState

TOY_PLUGIN = '''
"""A toy executor: bare local processes, plus one marker file per submitted job in $TOY_MARKERS."""
import os
from pathlib import Path

from skills_cli.pipeline.executors.base import EXECUTORS, ExecutorEntry
from skills_cli.pipeline.executors.local import LocalExecutor


class ToyExecutor(LocalExecutor):
    def submit(self, plan, store):
        records = super().submit(plan, store)
        for record in records:
            (Path(os.environ["TOY_MARKERS"]) / record.uid).write_text(f"{record.expname}/{record.name}")
        return records


EXECUTORS.register(ExecutorEntry("toy", ToyExecutor, "bare processes that leave a marker per job",
                                 jobs_see_local_paths=True, preflight_checks=("nothing",)))
'''


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch):
    """The plugin module written into tmp_path and named in $SKILLS_CLI_PLUGINS, for `ns` and for this process."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "toy_executor_plugin.py").write_text(textwrap.dedent(TOY_PLUGIN))
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(plugins), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.syspath_prepend(str(plugins))
    monkeypatch.setenv(PLUGINS_ENV, "toy_executor_plugin")
    monkeypatch.setenv("TOY_MARKERS", str(markers))
    importlib.import_module("toy_executor_plugin")  # registers `toy` here whether or not plugins were loaded before
    yield markers
    EXECUTORS.unregister("toy")  # the registry lives on in this process; later tests must not see the toy
    sys.modules.pop("toy_executor_plugin", None)


def test_a_plugin_executor_runs_jobs_end_to_end(toy_plugin, tmp_path):
    configs = tmp_path / "configs"
    configs.mkdir()
    write_config(configs, "toy", "executor: toy\n")
    out = tmp_path / "out.txt"
    result = run_ns("run_cmd", "--cluster", "toy", "--config_dir", str(configs), "--expname", "toyrun",
                    f"echo made by the toy > {out}", check=True)  # fmt: skip
    assert "SUCCEEDED" in result.stdout
    assert out.read_text() == "made by the toy\n"
    (marker,) = toy_plugin.iterdir()  # the toy's own submit ran: one marker for the one job
    assert marker.read_text() == "toyrun/toyrun"
    shown = run_ns("status", "toyrun", check=True).stdout
    assert "experiment toyrun" in shown and "SUCCEEDED" in shown
    (record,) = status(expname="toyrun")["toyrun"]  # refreshed through the toy executor
    assert (record.uid, record.executor, record.state) == (marker.name, "toy", JobState.SUCCEEDED)


def test_capabilities_come_from_the_registry_entry(toy_plugin, tmp_path):
    write_config(tmp_path, "toy", "executor: toy\n")
    toy = load_cluster_config("toy", str(tmp_path))
    assert (toy.jobs_see_local_paths, toy.runs_remotely, toy.uses_containers) == (True, False, False)
    assert toy.python_executable == sys.executable  # a bare process on this machine: this interpreter
    assert type(executor_for(toy)).__name__ == "ToyExecutor"
    write_config(tmp_path, "docker", "executor: local\ncontainers:\n  main: img\n")
    docker = load_cluster_config("docker", str(tmp_path))
    assert (docker.jobs_see_local_paths, docker.runs_remotely, docker.uses_containers) == (False, False, True)
    write_config(tmp_path, "slurm", "executor: slurm\njob_dir: /jobs\n")
    slurm = load_cluster_config("slurm", str(tmp_path))
    assert (slurm.jobs_see_local_paths, slurm.runs_remotely, slurm.uses_containers) == (False, True, False)
    for entry in EXECUTORS:  # what each kind verifies before queueing is stated, not guessed from its name
        assert entry.preflight_checks, entry.name


def test_remote_only_keys_are_refused_for_a_local_plugin_kind(toy_plugin, tmp_path):
    write_config(tmp_path, "toy", "executor: toy\ncontainer_runtime: apptainer\ncontainers:\n  main: img\n")
    result = run_ns("run_cmd", "--cluster", "toy", "--config_dir", str(tmp_path), "--expname", "e", "echo hi")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: cluster 'toy': container_runtime only applies to executor: slurm"


def test_an_unknown_executor_is_one_line_listing_the_known_kinds(toy_plugin, tmp_path):
    write_config(tmp_path, "typo", "executor: slurn\n")
    result = run_ns("run_cmd", "--cluster", "typo", "--config_dir", str(tmp_path), "--expname", "e", "echo hi")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: cluster 'typo': unknown executor 'slurn'; known: local, none, slurm, toy"
