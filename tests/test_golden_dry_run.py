"""Golden dry-run texts: the exact sbatch scripts, submission scripts and docker/bare command lines.

Regenerate after an intended change with SKILLS_UPDATE_GOLDEN=1 and review the diff.
Generated ids, the code digest and the temporary home directory are normalised before comparing.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import pytest

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.experiment import SubmitOptions, submit_jobs
from skills_cli.pipeline.jobs import Command, Job, Mount, Resources
from skills_cli.pipeline.packaging import snapshot
from skills_cli.pipeline.store import JobRecord, JobState, Store

GOLDEN = Path(__file__).parent / "golden"


def normalise(text: str, home: Path) -> str:
    text = text.replace(str(home), "<home>").replace(snapshot().digest, "<code>")
    return re.sub(r"\d{8}-\d{6}-[0-9a-f]{8}", "<uid>", text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SKILLS_UPDATE_GOLDEN") == "1" or not path.exists():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
        if os.environ.get("SKILLS_UPDATE_GOLDEN") != "1":
            pytest.fail(f"golden file {path} was missing and has been written; review and commit it")
    assert text == path.read_text(), f"dry-run text differs from {path} (SKILLS_UPDATE_GOLDEN=1 to accept)"


def server_client_graph() -> list[Job]:
    """A generation-like job (GPU server in the background + client) followed by a CPU-only job."""
    generate = Job(
        name="generate",
        commands=(
            Command(argv=("python", "-m", "server", "--model", "/models/my model"), name="server",
                    container="vllm", gpus=2, background=True),
            Command(argv=("python", "-m", "client", "--prompt", "it's $(not run)"), name="client"),
        ),
        resources=Resources(gpus_per_node=2, time_limit="2:00:00"),
        env={"HF_HOME": "/workspace/hf"},
        mounts=(Mount.parse("/data/extra:/extra:ro"),),
    )  # fmt: skip
    summarize = Job(name="summarize", commands=(Command(argv=("python", "-m", "summarize", "/workspace/out")),),
                    after=("generate",))  # fmt: skip
    return [generate, summarize]


def slurm_cluster(runtime: str, images: dict[str, str]) -> object:
    return parse_cluster_config({
        "executor": "slurm",
        "ssh_tunnel": {"host": "login.example.com", "user": "me", "job_dir": "/lustre/me/jobs"},
        "account": "acct", "partition": "batch", "cpu_partition": "cpu",
        "timeouts": {"cpu": "00:30:00"}, "default_timeout": "04:00:00",
        "container_runtime": runtime, "containers": images,
        "mounts": ["/lustre/me/workspace:/workspace"], "sbatch_args": {"qos": "normal"},
    }, name=f"slurm_{runtime}")  # fmt: skip


def upstream_record(cluster_name: str) -> None:
    """A job of another experiment, still running on the same cluster: the plan must wait for its id."""
    store = Store()
    store.add_job(JobRecord(uid="20260101-000000-00000000", expname="download", name="download",
                            cluster=cluster_name, executor="slurm", external_id="4242", state=JobState.RUNNING,
                            submitted_at=time.time()))  # fmt: skip
    store.add_experiment("download", cluster_name, "slurm")


@pytest.mark.parametrize("runtime,images", [
    ("pyxis", {"main": "/lustre/images/skills.sqsh", "vllm": "vllm/vllm-openai:v0.10.1.1"}),
    ("apptainer", {"main": "/lustre/images/skills.sif", "vllm": "/lustre/images/vllm.sif"}),
    ("docker", {"main": "skills-cli:latest", "vllm": "vllm/vllm-openai:v0.10.1.1"}),
])  # fmt: skip
def test_slurm_dry_run_golden(runtime, images, isolated_home):
    cluster = slurm_cluster(runtime, images)
    upstream_record(cluster.name)
    options = SubmitOptions(expname="gen eval", run_after=("download",), dependent_jobs=1, dry_run=True)
    submission = submit_jobs(server_client_graph(), cluster, options)
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden(f"slurm_{runtime}.txt", text)
    # structural facts the golden file must keep, stated here so a careless regeneration cannot drop them
    assert "--dependency=afterok:4242" in text
    assert "--dependency=afterany:$_skills_job_0" in text  # the continuation copy waits however copy 0 ended
    assert "'it'\"'\"'s $(not run)'" in text  # user text quoted, never evaluated
    assert text.count("sbatch --parsable") == 4  # 2 jobs x (1 + 1 dependent copy)


def test_docker_dry_run_golden(isolated_home):
    cluster = parse_cluster_config({
        "executor": "local", "containers": {"main": "skills-cli:latest", "vllm": "vllm/vllm-openai:v0.10.1.1"},
        "mounts": ["/data/workspace:/workspace"], "gpus": [0, 1, 2, 3],
    }, name="docker")  # fmt: skip
    submission = submit_jobs(server_client_graph(), cluster, SubmitOptions(expname="gen", dry_run=True))
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden("docker.txt", text)
    assert "docker run --rm --init --network=host" in text
    assert "-v /data/workspace:/workspace" in text


def test_bare_local_dry_run_golden(isolated_home):
    cluster = parse_cluster_config({"executor": "none", "gpus": [0, 1]}, name="local")
    submission = submit_jobs(server_client_graph(), cluster, SubmitOptions(expname="gen", dry_run=True))
    check_golden("local_none.txt", normalise(submission.dry_run_text, isolated_home))


def test_dry_run_submits_nothing(isolated_home):
    cluster = parse_cluster_config({"executor": "none"}, name="local")
    submit_jobs(server_client_graph(), cluster, SubmitOptions(expname="gen", dry_run=True))
    assert Store().experiment_names() == []


def test_dry_runs_hide_credentials_but_jobs_get_them(isolated_home, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "s3cr3t-value")
    cluster = parse_cluster_config({"executor": "slurm", "job_dir": "/jobs", "env_vars": ["WANDB_API_KEY"]}, name="s")
    jobs = [Job(name="train", commands=(Command(argv=("python", "train.py")),))]
    text = submit_jobs(jobs, cluster, SubmitOptions(expname="e", dry_run=True)).dry_run_text
    assert "s3cr3t-value" not in text and "WANDB_API_KEY='<hidden>'" in text
    from skills_cli.pipeline.experiment import build_plan
    from skills_cli.pipeline.render import sbatch_script

    plan = build_plan(jobs, cluster, SubmitOptions(expname="e"), Store())
    script = sbatch_script(plan, plan.jobs[0], "/jobs/code/x")
    # the job gets the value through the submission's environment (tests/test_secrets.py), never the script
    assert "s3cr3t-value" not in script and ': "${WANDB_API_KEY?' in script


# -- ns eval: one server per job ---------------------------------------------------------------------------
EVAL_SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers: {main: /lustre/images/skills.sqsh, vllm: vllm/vllm-openai:v0.10.1.1}
mounts: ["/lustre/me/workspace:/workspace"]
"""


def sbatch_scripts(text: str) -> dict[str, str]:
    """{job name: its sbatch script} of a Slurm dry run."""
    sections = re.split(r"^# ---- \S+/([^/\s]+)-<uid>\.sbatch$", text, flags=re.M)
    return dict(zip(sections[1::2], sections[2::2], strict=True))


def test_eval_num_jobs_packs_programs_under_one_server_per_job_golden(config_dir, isolated_home):
    from conftest import write_config

    from skills_cli.pipeline import eval as evaluate
    from skills_cli.pipeline import wrap_arguments

    write_config(config_dir, "cluster", EVAL_SLURM)
    submission = evaluate(
        ctx=wrap_arguments("++inference.tokens_to_generate=1024"), cluster="cluster", config_dir=str(config_dir),
        benchmarks="arith:3,gsm8k:2", data_dir="/workspace/data", output_dir="/workspace/evals",
        model="/workspace/model", server_type="vllm", server_gpus=1, num_jobs=2, expname="packed", dry_run=True,
    )  # fmt: skip
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden("eval_num_jobs.txt", text)
    scripts = sbatch_scripts(text)
    assert list(scripts) == ["generate-0", "generate-1", "arith-grade", "gsm8k-grade", "summarize"]
    programs = {"generate-0": ["arith/output-rs0", "arith/output-rs1", "arith/output-rs2"],
                "generate-1": ["gsm8k/output-rs0", "gsm8k/output-rs1"]}  # fmt: skip
    for name, outputs in programs.items():
        assert scripts[name].count("vllm.entrypoints.openai.api_server") == 1  # one server for all its programs
        written = re.findall(r"\+\+output_file=/workspace/evals/eval-results/(\S+)\.jsonl", scripts[name])
        assert written == outputs  # run one after another, in order, to the same paths as one job each
    # each grading job waits for the one job that holds its benchmark's programs
    assert re.search(r"--job-name=arith-grade \S+ --dependency=afterok:\$_skills_job_0 ", text)
    assert re.search(r"--job-name=gsm8k-grade \S+ --dependency=afterok:\$_skills_job_1 ", text)


# -- ns eval: the code sandbox beside the programs that run code -------------------------------------------
SANDBOX_SLURM = EVAL_SLURM.replace("vllm: vllm/vllm-openai:v0.10.1.1}", "sandbox: /lustre/images/skills.sqsh}")


def sandboxed_eval(cluster: str, config_dir, overrides="++code_execution=true", **extra):
    from skills_cli.pipeline import eval as evaluate
    from skills_cli.pipeline import wrap_arguments

    values = {"benchmarks": "humaneval,gsm8k", "data_dir": "/workspace/data", "output_dir": "/workspace/evals",
              "model": "/workspace/model", **extra}  # fmt: skip
    return evaluate(ctx=wrap_arguments(f"++inference.tokens_to_generate=512 {overrides}"), cluster=cluster,
                    config_dir=str(config_dir), server_type="hf", expname="sandboxed", dry_run=True, **values)  # fmt: skip


def test_eval_with_code_runs_the_sandbox_in_the_jobs_that_need_it_golden(config_dir, isolated_home, tmp_path):
    """Slurm: the sandbox is the `sandbox` container role's command in the grading job of a benchmark that runs
    code and in generation jobs with ++code_execution; with bare processes, a local process with the same rules."""
    from conftest import write_config

    write_config(config_dir, "cluster", SANDBOX_SLURM)
    text = normalise(sandboxed_eval("cluster", config_dir).dry_run_text, isolated_home)
    check_golden("eval_sandbox_slurm.txt", text)
    scripts = sbatch_scripts(text)
    assert list(scripts) == ["humaneval-generate", "gsm8k-generate", "humaneval-grade", "gsm8k-grade", "summarize"]
    for name in ("humaneval-generate", "gsm8k-generate", "humaneval-grade"):  # code runs there: a sandbox each
        assert scripts[name].count("skills_cli.sandbox.server") == 1, name
        assert "--container-image=/lustre/images/skills.sqsh" in scripts[name]
        assert "export SKILLS_SANDBOX_PORT=" in scripts[name] and "export SKILLS_SANDBOX_API_KEY=" in scripts[name]
    assert "skills_cli.sandbox.server" not in scripts["gsm8k-grade"] + scripts["summarize"]
    # the model is told its code will run: a math benchmark's prompt becomes its -tir variant
    assert "++prompt_config=generic/math-tir" in scripts["gsm8k-generate"]
    assert "++prompt_config=code/humaneval" in scripts["humaneval-generate"]  # no -tir variant: as it was
    data = tmp_path / "data"
    for name in ("humaneval", "gsm8k"):
        (data / name).mkdir(parents=True)
        (data / name / "test.jsonl").write_text('{"id": "1"}\n')
    local = sandboxed_eval("local", config_dir, data_dir=str(data), output_dir=str(tmp_path / "evals"),
                           model=str(tmp_path))  # fmt: skip
    text = normalise(local.dry_run_text, isolated_home).replace(str(tmp_path), "<tmp>")
    text = text.replace(sys.executable, "<python>")  # bare jobs run this interpreter, wherever it lives
    check_golden("eval_sandbox_local.txt", text)
    assert text.count("command 'sandbox' (background)") == 2  # the packed generation job and humaneval's grading


def test_a_cluster_with_containers_but_no_sandbox_image_fails_before_submission(config_dir, isolated_home):
    from conftest import write_config

    write_config(config_dir, "cluster", EVAL_SLURM)
    with pytest.raises(UserError, match=r"grading humaneval needs the code sandbox, but cluster 'cluster' has no "
                                        r"sandbox container: add containers.sandbox"):  # fmt: skip
        sandboxed_eval("cluster", config_dir, overrides="", benchmarks="humaneval")
    assert not Store().has_experiment("sandboxed")
