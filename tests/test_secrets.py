"""Secrets from a cluster's env_vars: never in a file others (or we) keep, always hidden where we print.

The values come from `env_vars` (`NAME=value` literals and bare names copied from the submitting shell) and
`required_env_vars`. Jobs must still receive them; spec.json, the store, logs written by us, sbatch scripts
and the remote job_dir must not hold them; the state folder is owner-only; dry runs, logs and errors mask them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import run_ns, write_config

from skills_cli.pipeline import secrets
from skills_cli.pipeline.cluster import load_cluster_config, load_cluster_file, parse_cluster_config
from skills_cli.pipeline.executors.slurm import SlurmExecutor
from skills_cli.pipeline.experiment import SubmitOptions, build_plan, logs, submit_jobs
from skills_cli.pipeline.jobs import Command, Job
from skills_cli.pipeline.render import sbatch_script
from skills_cli.pipeline.reporting import collect
from skills_cli.pipeline.store import JobState, Store

# a job that writes the sha256 of each named variable to the file given as argv[1] (never the value itself)
HASH_JOB = (
    "import hashlib, json, os, sys; names = sys.argv[2:]; "
    "open(sys.argv[1], 'w').write(json.dumps({n: hashlib.sha256(os.environ[n].encode()).hexdigest() for n in names}))"
)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def values(monkeypatch) -> dict[str, str]:
    """Distinct secret values: literals in the config, and values copied from this process's environment."""
    found = {
        "DB_PASS": f"db-{uuid.uuid4().hex}",  # literal in env_vars
        "WANDB_API_KEY": f"wandb-{uuid.uuid4().hex}",  # bare name in env_vars, copied from the shell
        "HF_TOKEN": f"hf_{uuid.uuid4().hex}",  # required_env_vars
    }
    monkeypatch.setenv("WANDB_API_KEY", found["WANDB_API_KEY"])
    monkeypatch.setenv("HF_TOKEN", found["HF_TOKEN"])
    return found


def env_config(values: dict[str, str]) -> str:
    return f"env_vars:\n  - DB_PASS={values['DB_PASS']}\n  - WANDB_API_KEY\nrequired_env_vars:\n  - HF_TOKEN\n"


def files_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, names in os.walk(root) for f in names]


def files_containing(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in files_under(root):
        data = path.read_bytes()
        found += [f"{path}: {needle[:6]}..." for needle in needles if needle.encode() in data]
    return found


def test_local_job_gets_the_values_and_no_state_file_holds_them(isolated_home, tmp_path, values):
    config = load_cluster_file(write_config(tmp_path, "bare", "executor: none\n" + env_config(values)))
    out = tmp_path / "hashes.json"
    job = Job(name="job", commands=(Command(argv=(sys.executable, "-c", HASH_JOB, str(out), *values)),))
    submission = submit_jobs([job], config, SubmitOptions(expname="secret-local"))
    (record,) = submission.records
    assert record.state is JobState.SUCCEEDED, logs("secret-local", None, None)
    assert json.loads(out.read_text()) == {name: sha256(value) for name, value in values.items()}
    spec = json.loads((isolated_home / "jobs" / record.uid / "spec.json").read_text())
    assert set(values) <= set(spec["commands"][0]["argv"])  # names travel (in argv here), values do not
    assert files_containing(isolated_home, list(values.values())) == []
    # owner-only state: every folder 0700, every file 0600 (store, -wal/-shm, spec, logs, code, locks)
    for directory, _, names in os.walk(isolated_home):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
        for name in names:
            assert stat.S_IMODE(os.stat(Path(directory) / name).st_mode) == 0o600, Path(directory) / name
    assert stat.S_IMODE(out.stat().st_mode) == 0o644  # the job's own outputs keep the user's umask (022)


@pytest.mark.infra
def test_docker_job_gets_the_values_from_the_supervisor_environment(isolated_home, tmp_path, values, infra):
    """`docker run -e NAME` reads the value from the client, the supervisor: it reaches the container."""
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    config = load_cluster_file(write_config(tmp_path, "dock", f"executor: local\ncontainers:\n  main: "
                                            f"{infra['SKILLS_INFRA_IMAGE']}\nmounts:\n  - {outputs}:/out\n"
                                            + env_config(values)))  # fmt: skip
    job = Job(name="job", commands=(Command(argv=("python3", "-c", HASH_JOB, "/out/hashes.json", *values)),))
    (record,) = submit_jobs([job], config, SubmitOptions(expname="secret-docker")).records
    assert record.state is JobState.SUCCEEDED, logs("secret-docker", None, None)
    assert json.loads((outputs / "hashes.json").read_text()) == {n: sha256(v) for n, v in values.items()}
    assert files_containing(isolated_home, list(values.values())) == []


def test_logs_and_reports_hide_values_a_job_printed(isolated_home, tmp_path, values):
    config = load_cluster_file(write_config(tmp_path, "bare", "executor: none\n" + env_config(values)))
    job = Job(name="job", commands=(Command(argv=("bash", "-c", 'echo "db=$DB_PASS hf=$HF_TOKEN"; exit 3')),))
    submit_jobs([job], config, SubmitOptions(expname="secret-logs"))
    ((record, text),) = logs("secret-logs", None, None)
    assert "db=<hidden> hf=<hidden>" in text
    assert values["DB_PASS"] not in text and values["HF_TOKEN"] not in text
    # `ns report` quotes the log of a failed job: hidden there too.
    (section,) = collect("secret-logs").sections
    assert "db=<hidden> hf=<hidden>" in section.log_tails[record.uid]
    assert values["DB_PASS"] not in section.log_tails[record.uid]


def test_spec_holds_names_and_the_supervisor_resolves_them(isolated_home, tmp_path, values, monkeypatch):
    """A job's own env (here overriding a cluster variable) stays in the spec; cluster values never do."""
    config = load_cluster_file(write_config(tmp_path, "bare", "executor: none\n" + env_config(values)))
    out = tmp_path / "hashes.json"
    job = Job(name="job", commands=(Command(argv=(sys.executable, "-c", HASH_JOB, str(out), "DB_PASS", "HF_TOKEN")),),
              env={"DB_PASS": "job-level-value"})  # fmt: skip
    (record,) = submit_jobs([job], config, SubmitOptions(expname="secret-override")).records
    assert json.loads(out.read_text()) == {"DB_PASS": sha256("job-level-value"), "HF_TOKEN": sha256(values["HF_TOKEN"])}
    env = json.loads((isolated_home / "jobs" / record.uid / "spec.json").read_text())["commands"][0]["env"]
    assert env["DB_PASS"] == "job-level-value" and "HF_TOKEN" not in env and "WANDB_API_KEY" not in env


def test_state_folder_left_open_by_an_older_version_is_made_owner_only(isolated_home):
    (isolated_home / "logs" / "old").mkdir(parents=True, mode=0o755)
    isolated_home.chmod(0o755)
    (isolated_home / "logs" / "old" / "job.log").write_text("old log")
    (isolated_home / "logs" / "old" / "job.log").chmod(0o644)
    Store()
    assert stat.S_IMODE(isolated_home.stat().st_mode) == 0o700
    assert stat.S_IMODE((isolated_home / "logs" / "old").stat().st_mode) == 0o700
    assert stat.S_IMODE((isolated_home / "logs" / "old" / "job.log").stat().st_mode) == 0o600
    assert stat.S_IMODE((isolated_home / "store.sqlite").stat().st_mode) == 0o600


# -- dry runs: masked by value ----------------------------------------------------------------------------
DRY_RUN_SECRETS = {"DB_PASS": "pa55word", "CREDENTIALS": "cr3dential-blob", "SSH_PRIVATE": "-----BEGIN KEY abc"}


@pytest.mark.parametrize("cluster", [
    {"executor": "none"},
    {"executor": "local", "containers": {"main": "skills-cli:latest"}},
    {"executor": "slurm", "job_dir": "/jobs"},
    {"executor": "slurm", "job_dir": "/jobs", "container_runtime": "docker", "containers": {"main": "img"}},
])  # fmt: skip
def test_dry_runs_mask_values_wherever_they_appear(isolated_home, monkeypatch, cluster):
    monkeypatch.setenv("CREDENTIALS", DRY_RUN_SECRETS["CREDENTIALS"])
    config = parse_cluster_config({**cluster, "env_vars": [
        f"DB_PASS={DRY_RUN_SECRETS['DB_PASS']}", "CREDENTIALS", f"SSH_PRIVATE={DRY_RUN_SECRETS['SSH_PRIVATE']}",
        "HTTP_PROXY=http://proxyuser:proxypass@proxy:3128",
    ]}, name="c")  # fmt: skip
    # the values also appear in the user's command, and a job-level (not cluster) variable has a URL password
    command = f"login --password {DRY_RUN_SECRETS['DB_PASS']} --blob '{DRY_RUN_SECRETS['CREDENTIALS']}'"
    job = Job(name="j", commands=(Command(argv=("bash", "-c", command)),),
              env={"HTTPS_PROXY": "https://other:otherpass@proxy:3129"})  # fmt: skip
    text = submit_jobs([job], config, SubmitOptions(expname="e", dry_run=True)).dry_run_text
    for value in [*DRY_RUN_SECRETS.values(), "proxypass", "otherpass"]:
        assert value not in text, value
    assert "login --password <hidden> --blob" in text
    assert "https://other:<hidden>@proxy:3129" in text
    assert "DB_PASS" in text and "SSH_PRIVATE" in text  # the names stay visible


def test_sbatch_scripts_hold_names_and_the_bundle_keeps_the_env_file_private(isolated_home, values):
    cluster = parse_cluster_config({"executor": "slurm", "job_dir": "/jobs", "env_vars": [
        f"DB_PASS={values['DB_PASS']}", "WANDB_API_KEY"], "required_env_vars": ["HF_TOKEN"]}, name="s")  # fmt: skip
    plan = build_plan([Job(name="train", commands=(Command(argv=("python", "train.py")),))], cluster,
                      SubmitOptions(expname="e"), Store())  # fmt: skip
    script = sbatch_script(plan, plan.jobs[0], "/jobs/code/x")
    assert not [v for v in values.values() if v in script]
    assert ': "${HF_TOKEN?' in script and "export WANDB_API_KEY" not in script
    with tarfile.open(fileobj=io.BytesIO(SlurmExecutor(cluster)._bundle(plan))) as archive:
        members = {m.name: m for m in archive.getmembers()}
        env_files = [m for name, m in members.items() if name.endswith("/env.sh")]
        (env_file,) = env_files
        assert env_file.mode == 0o600 and all(m.mode == 0o700 for m in members.values() if m is not env_file)
        text = archive.extractfile(env_file).read().decode()
    assert all(f"export {name}={value}" in text for name, value in values.items())


# -- masking rules ----------------------------------------------------------------------------------------
def test_masking_rules_for_short_common_and_url_values():
    mask = secrets.Masker.for_env({"DEBUG": "1", "MODE": "true", "SHORT": "abcde", "API_KEY": "k3y9",
                                   "REGION": "us-east-1", "DB_PASS": "it's a pass"})  # fmt: skip
    text = mask("DEBUG=1 MODE=true SHORT=abcde key=k3y9 region=us-east-1 quoted='it'\"'\"'s a pass' "
                "url=postgres://me:p%40ss@db:5432/x")  # fmt: skip
    assert text == ("DEBUG=1 MODE=true SHORT=abcde key=<hidden> region=<hidden> quoted=<hidden> "
                    "url=postgres://me:<hidden>@db:5432/x")  # fmt: skip


def test_error_messages_hide_values_the_cluster_config_gave(isolated_home, values):
    """`ns` prints every UserError through `mask_known`: values learned by `job_env` (any cluster) are hidden."""
    cluster = parse_cluster_config({"executor": "none", "env_vars": [f"DB_PASS={values['DB_PASS']}", "WANDB_API_KEY"]},
                                   name="c")  # fmt: skip
    cluster.job_env()
    message = f"mount source '/data/{values['DB_PASS']}' does not exist; key {values['WANDB_API_KEY']}"
    assert secrets.mask_known(message) == "mount source '/data/<hidden>' does not exist; key <hidden>"


# -- Slurm over SSH ---------------------------------------------------------------------------------------
@pytest.mark.infra
def test_slurm_job_gets_the_values_and_job_dir_holds_none(slurm_config, infra, values, tmp_path):
    from test_slurm import finish, ssh

    text = (slurm_config / "slurm_local.yaml").read_text() + env_config(values)
    write_config(slurm_config, "slurm_secret", text)
    cluster = load_cluster_config("slurm_secret", str(slurm_config))
    job_dir = cluster.remote_job_dir
    # a fresh job_dir, except for a code folder left open to others as older versions left it
    ssh(infra, f"rm -rf {job_dir} && mkdir -p {job_dir}/code && chmod 755 {job_dir} {job_dir}/code")
    job = Job(name="hash", commands=(Command(argv=("python3", "-c", HASH_JOB, f"{job_dir}/hashes.json", *values)),))
    submit_jobs([job], cluster, SubmitOptions(expname="secret-slurm"))
    (record,) = finish("secret-slurm")
    assert record.state is JobState.SUCCEEDED, run_ns("logs", "secret-slurm").stdout
    hashes = json.loads(ssh(infra, f"cat {job_dir}/hashes.json"))
    assert hashes == {name: sha256(value) for name, value in values.items()}
    # no file under job_dir (scripts, staging, code, logs) holds a value; no env file or bundle is left
    for value in values.values():
        assert ssh(infra, f"grep -rlF -e {value} {job_dir} || true").strip() == ""
    assert ssh(infra, f"find {job_dir}/.staging -name 'env.sh' -o -name '*.tar.gz' ! -name '*-code.tar.gz'") == ""
    # what we wrote is owner-only: folders (job_dir and below) and the scripts
    open_dirs = ssh(infra, f"find {job_dir}/.staging {job_dir}/code {job_dir}/secret-slurm -type d -perm /077")
    assert open_dirs == ""
    assert ssh(infra, f"find {job_dir} -name '*.sbatch' -perm /077 -o -name submit.sh -perm /077") == ""
    assert files_containing(Path(os.environ["SKILLS_CLI_HOME"]), list(values.values())) == []
