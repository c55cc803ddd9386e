"""The project Dockerfile and the Docker executor (`executor: local`) against a real dockerd."""

from __future__ import annotations

import subprocess

import pytest
from conftest import REPO, run_ns, write_config

from skills_cli.pipeline import run_cmd, wrap_arguments
from skills_cli.pipeline.store import JobState, Store

pytestmark = pytest.mark.infra
PROJECT_IMAGE = "skills-cli:test"


@pytest.fixture(scope="session")
def project_image(infra) -> str:
    """Build the project image from the Dockerfile on the locally built Python base image."""
    if infra.get("SKILLS_INFRA_DOCKER") != "1":
        pytest.fail("dockerd is not up")
    result = subprocess.run(
        ["docker", "build", "--no-cache", "--build-arg", f"BASE_IMAGE={infra['SKILLS_INFRA_IMAGE']}", "-t", PROJECT_IMAGE, str(REPO)],
        capture_output=True, text=True, timeout=600, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "skills-cli 0.1.0 on python 3.11" in result.stdout
    return PROJECT_IMAGE


def test_run_cmd_in_a_local_docker_container(project_image, config_dir, tmp_path):
    shared = tmp_path / "shared dir"
    shared.mkdir()
    write_config(
        config_dir,
        "docker_test",
        f"""
executor: local
containers:
  main: {project_image}
mounts:
  - {shared}:/shared
""",
    )
    cmd = ("python3 -c 'import skills_cli.pipeline.shell, sys; print(sys.version.split()[0])' > /shared/version; "
           "grep -c bookworm /etc/os-release > /shared/os")  # fmt: skip
    submission = run_cmd(ctx=wrap_arguments(cmd), cluster="docker_test", config_dir=str(config_dir), expname="dock")
    (record,) = submission.records
    assert record.state is JobState.SUCCEEDED, run_ns("logs", "dock").stdout
    assert (shared / "version").read_text().startswith("3.11")
    assert int((shared / "os").read_text()) >= 1
    leftover = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=skills-cli.job-uid={record.uid}"],
                              capture_output=True, text=True).stdout  # fmt: skip
    assert leftover.strip() == ""  # --rm and the supervisor's cleanup leave no container behind


def test_cancelling_a_docker_job_removes_its_container(project_image, config_dir):
    write_config(config_dir, "docker_test", f"executor: local\ncontainers:\n  main: {project_image}\n")
    run_cmd(ctx=wrap_arguments("sleep 300"), cluster="docker_test", config_dir=str(config_dir), expname="dock-long",
            detach=True)  # fmt: skip
    (record,) = Store().jobs("dock-long")
    for _ in range(100):
        running = subprocess.run(["docker", "ps", "-q", "--filter", f"label=skills-cli.job-uid={record.uid}"],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
        if running:
            break
        subprocess.run(["sleep", "0.2"])
    assert running, "the container never started"
    run_ns("cancel", "dock-long", check=True)
    assert Store().job(record.uid).state is JobState.CANCELLED
    left = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=skills-cli.job-uid={record.uid}"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    assert left == ""


def test_missing_image_is_refused_before_anything_runs(infra, config_dir):
    write_config(config_dir, "docker_missing", "executor: local\ncontainers:\n  main: no-such/image:1\n")
    result = run_ns("run_cmd", "--cluster", "docker_missing", "--config_dir", str(config_dir), "--expname", "m", "true")
    assert result.returncode == 2 and "no-such/image:1" in result.stderr and "not present" in result.stderr
    assert not Store().has_experiment("m")
