"""`ns prepare_data`, `ns eval` and `ns summarize_results`.

`ns eval --benchmarks gsm8k,math500:4,aime24:8` compiles, per benchmark: generation jobs (one per seed, and
per chunk with a merge) -> one grading job -> one summarize job over every benchmark, with afterok edges.
Reruns skip what is finished: complete generations are not resubmitted and graded files are not regraded.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import tempfile
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import Bounds
from skills_cli.evaluation.benchmarks import get_benchmark
from skills_cli.evaluation.prepare_data import MIRROR_ENV, default_output_dir, prepare
from skills_cli.inference.config import SERVER_TYPES
from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind, load_cluster_config
from skills_cli.pipeline.commands.generate import (
    GENERATE_OPTIONS,
    Outputs,
    check_server_address,
    check_server_options,
    compile_generate,
    generation_job,
    validate_overrides,
)
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_model_dir, check_output_dir
from skills_cli.pipeline.options import CLUSTER, CONFIG_DIR, CommandSpec, Option, WrappedArguments
from skills_cli.pipeline.shell import quote, quote_argv

_BENCH = re.compile(r"^([A-Za-z0-9_.\-]+)(?::(\d+))?$")


def parse_benchmarks(text: str) -> list[tuple[str, int]]:
    """`gsm8k,math500:4` -> [("gsm8k", 0), ("math500", 4)]; 0 means one greedy generation."""
    specs = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        match = _BENCH.match(part)
        if not match or (match[2] is not None and int(match[2]) < 1):
            raise UserError(f"--benchmarks: cannot parse {part!r}; use NAME or NAME:SAMPLES, e.g. math500:4")
        get_benchmark(match[1])
        specs.append((match[1], int(match[2] or 0)))
    if not specs:
        raise UserError("--benchmarks is empty")
    names = [name for name, _ in specs]
    if len(set(names)) != len(names):
        raise UserError(f"--benchmarks names a benchmark twice: {text!r}")
    return specs


# -- ns prepare_data --------------------------------------------------------------------------------------
def prepare_data_impl(extra: WrappedArguments, benchmarks: list[str], data_dir: str | None, output_dir: str | None,
                      split: str | None) -> list[str]:  # fmt: skip
    """Runs here (downloads or reads the mirror); the prepared folder is what `ns eval --data_dir` reads."""
    import os

    if not benchmarks:
        raise UserError("prepare_data: name at least one benchmark")
    mirror = data_dir or os.environ.get(MIRROR_ENV)
    target = Path(output_dir) if output_dir else default_output_dir()
    lines = []
    for name in benchmarks:
        lines += prepare(name, target, Path(mirror) if mirror else None, split)
    return lines


PREPARE_DATA = CommandSpec(
    "prepare_data",
    "Prepare benchmark data: download from the public source, read a local mirror (--data_dir or "
    "$SKILLS_BENCHMARKS_DIR), or generate (arith). Idempotent.",
    (
        Option("benchmarks", list[str], ..., "Benchmark names.", positional=True),
        Option("data_dir", str | None, None, "Local mirror with <benchmark>/<split>.jsonl files."),
        Option(
            "output_dir",
            str | None,
            None,
            "Where prepared data goes (default $SKILLS_CLI_DATA_DIR or ~/.skills_cli/data).",
        ),  # fmt: skip
        Option("split", str | None, None, "Only this split (default: all the benchmark's splits)."),
    ),
    prepare_data_impl,
)


# -- ns eval ----------------------------------------------------------------------------------------------
EVAL_OPTIONS = (
    Option("benchmarks", str, ..., "Comma-separated NAME[:SAMPLES], e.g. gsm8k,math500:4,aime24:8."),
    Option("output_dir", str, ..., "Results go to OUTPUT_DIR/eval-results/<benchmark>/."),
    Option("data_dir", str | None, None, "Prepared data folder on the machine that runs the jobs "
           "(default $SKILLS_CLI_DATA_DIR or ~/.skills_cli/data)."),  # fmt: skip
    Option("split", str | None, None, "Split to evaluate (default: each benchmark's default)."),
    Option("max_samples", int, -1, "Only the first N problems of each benchmark (-1: all).",
           bounds=Bounds(ge=1, also=(-1,), why="-1: all problems")),
    *(o for o in GENERATE_OPTIONS if o.name not in ("input_file", "output_dir", "num_random_seeds", "random_seeds",
                                                     "starting_seed", "log_samples", "samples_backend",
                                                     "wandb_project", "wandb_group", "wandb_name")),
    Option("judge_model", str | None, None, "Also judge answers with this model (judge/math prompt); exact "
           "matches and empty answers are decided without it.", panel="Judge"),
    Option("judge_server_type", str, "hf", "Server type of the judge.", choices=SERVER_TYPES, panel="Judge"),
    Option("judge_server_gpus", int, 0, "GPUs of the judge's server.", panel="Judge", bounds=Bounds(ge=0)),
    Option("judge_server_args", str, "", "Extra arguments of the judge's server.", panel="Judge"),
    Option("judge_server_address", str | None, None, "A running judge server instead of hosting one.", panel="Judge"),
)  # fmt: skip


def data_file(values: dict, name: str) -> str:
    split = values["split"] or get_benchmark(name).default_split
    root = values["data_dir"] or str(default_output_dir())
    return f"{root}/{name}/{split}.jsonl"


def check_prepared(values: dict, cluster: ClusterConfig, names: list[str]) -> None:
    if cluster.executor is not ExecutorKind.NONE or values["run_after"]:
        return  # the data lives where the jobs run, or a --run_after upstream prepares it: the jobs read it
    for name in names:
        path = Path(data_file(values, name))
        if not path.is_file():
            raise UserError(f"no prepared data for {name} at {path}; run `ns prepare_data {name}` first"
                            + (f" with --output_dir {values['data_dir']}" if values["data_dir"] else ""))  # fmt: skip


def prefixed(jobs: list[Job], prefix: str) -> list[Job]:
    rename = {job.name: f"{prefix}-{job.name}" for job in jobs}
    return [dataclasses.replace(job, name=rename[job.name], after=tuple(rename[n] for n in job.after),
                                after_any=tuple(rename[n] for n in job.after_any)) for job in jobs]  # fmt: skip


def cpu_job(name: str, script: str, values: dict, after: list[str]) -> Job:
    command = Command(argv=("bash", "-c", script), container=values["container"])
    resources = Resources(time_limit=values["time"], partition=values["partition"])
    return Job(name=name, commands=(command,), resources=resources, after=tuple(after))


def judge_job(values: dict, cluster: ClusterConfig, results: str, name: str, after: str) -> Job:
    """prepare (no-judge decisions) -> judge generation -> apply verdicts, in one job after the grading."""
    python = cluster.python_executable
    step = lambda *args: quote_argv([python, "-m", "skills_cli.evaluation.judge", *args, "--results_dir", results])  # noqa: E731
    judge = {**values, "model": values["judge_model"], "server_type": values["judge_server_type"],
             "server_gpus": values["judge_server_gpus"], "server_nodes": 1, "server_args": values["judge_server_args"],
             "server_address": values["judge_server_address"], "input_file": f"{results}/judge/input.jsonl",
             "preprocess_cmd": step("prepare"), "rerun_done": True, "config": None}  # fmt: skip
    out = Outputs(f"{results}/judge/output.jsonl", None, None)
    job = generation_job(
        judge, cluster, out, ["++prompt_config=judge/math", "++inference.temperature=0.0", "++allow_empty_input=true"],
        step("apply"),
    )
    return dataclasses.replace(job, name=f"{name}-judge", after=(after,))


def compile_eval(values: dict, overrides: list[str], cluster: ClusterConfig) -> list[Job]:
    python = cluster.python_executable
    jobs, grade_jobs = [], []
    for name, samples in parse_benchmarks(values["benchmarks"]):
        benchmark = get_benchmark(name)
        results = f"{values['output_dir']}/eval-results/{name}"
        bench_overrides = list(overrides)
        if not any(o.lstrip("+").startswith("prompt_config=") for o in overrides):
            bench_overrides.insert(0, f"++prompt_config={benchmark.prompt_config}")
        if values["max_samples"] >= 0:
            bench_overrides.append(f"++max_samples={values['max_samples']}")
        generation = {**values, "input_file": data_file(values, name), "output_dir": results,
                      "num_random_seeds": samples, "random_seeds": [], "starting_seed": 0, "log_samples": False}  # fmt: skip
        validate_overrides(bench_overrides, generation)
        generated = prefixed(compile_generate(generation, bench_overrides, cluster), name)
        finals = [j.name for j in generated if not any(j.name in other.after for other in generated)]
        grade = quote_argv([python, "-m", "skills_cli.evaluation.grade", "--results_dir", results])
        jobs += generated
        jobs.append(cpu_job(f"{name}-grade", grade, values, finals))
        if values["judge_model"] or values["judge_server_address"]:
            jobs.append(judge_job(values, cluster, results, name, jobs[-1].name))
        grade_jobs.append(jobs[-1].name)
    summarize = quote_argv([python, "-m", "skills_cli.evaluation.summarize", values["output_dir"]])
    jobs.append(cpu_job("summarize", summarize, values, grade_jobs))
    return jobs


def eval_impl(extra: WrappedArguments, **values) -> Submission:
    ensure_log_dir_is_absolute(values["log_dir"])
    names = [name for name, _ in parse_benchmarks(values["benchmarks"])]
    check_server_options(values)
    check_server_options(values, prefix="judge_")
    if values["server_address"] is None and not values["model"]:
        raise UserError("eval: give --model (a self-hosted server) or --server_address (a running one)")
    cluster = load_cluster_config(values["cluster"], values["config_dir"])
    check_prepared(values, cluster, names)
    if cluster.executor is ExecutorKind.NONE:
        check_output_dir(values["output_dir"], "--output_dir")
        if values["model"] and not values["server_address"]:
            check_model_dir(values["model"], "--model")
    if values["server_address"]:
        check_server_address(values["server_address"], cluster)
    jobs = compile_eval(values, list(extra.args), cluster)
    from skills_cli.pipeline.commands.run_cmd import log_change

    return submit_jobs(jobs, cluster, submit_options(values, default_expname="eval"), on_change=log_change)


EVAL = CommandSpec(
    "eval",
    "Evaluate a model on benchmarks: generation (seeds, chunks) -> grading -> summary, as dependent jobs.",
    EVAL_OPTIONS,
    eval_impl,
    extra_args="++key=value overrides of the generation program",
)


# -- ns summarize_results ---------------------------------------------------------------------------------
def fetch_results(cluster: ClusterConfig, remote_dir: str) -> Path:
    """The result files (without chunk and side files) packed on the cluster and fetched in one transfer."""
    from skills_cli.pipeline.executors.tunnel import ClusterTunnel

    local = Path(tempfile.mkdtemp(prefix="skills-results-"))
    remote_tar = f"/tmp/skills-results-{local.name}.tgz"
    with ClusterTunnel(cluster) as tunnel:
        packed = tunnel.run(f"tar -czf {quote(remote_tar)} -C {quote(remote_dir)} --exclude='*_chunk_*' "
                            f"--exclude='*-async' .", timeout=600)  # fmt: skip
        if packed.returncode != 0:
            raise UserError(f"cannot read {remote_dir} on {cluster.name}: {packed.stderr.strip()[-300:]}")
        tunnel.get_file(remote_tar, str(local / "results.tgz"))
        tunnel.run(f"rm -f {quote(remote_tar)}")
    subprocess.run(["tar", "-xzf", str(local / "results.tgz"), "-C", str(local)], check=True)
    (local / "results.tgz").unlink()
    return local


def summarize_results_impl(extra: WrappedArguments, results_dir: str, cluster: str | None, config_dir: str | None,
                           max_k: int | None, wandb_name: str | None, wandb_project: str, wandb_group: str | None,
                           swanlab_project: str | None, no_plot: bool) -> dict:  # fmt: skip
    from skills_cli.evaluation.summarize import log_scalars, metrics_json, summarize

    directory = Path(results_dir)
    if cluster:
        config = load_cluster_config(cluster, config_dir)
        if config.executor is ExecutorKind.SLURM and config.ssh_tunnel is not None:
            directory = fetch_results(config, results_dir)
    results, written = summarize(directory, max_k, not no_plot)
    logged = log_scalars(metrics_json(results), wandb_name, wandb_project, wandb_group, swanlab_project)
    return {"results": results, "metrics_file": written, "logged": logged,
            "plot": directory / "pass_at_k.png" if (directory / "pass_at_k.png").exists() else None}  # fmt: skip


SUMMARIZE_RESULTS = CommandSpec(
    "summarize_results",
    "Print one table per benchmark, write metrics.json and a pass@k/majority@k plot, log to wandb/swanlab.",
    (
        Option(
            "results_dir",
            str,
            ...,
            "The --output_dir of ns eval (on the cluster when --cluster is remote).",
            positional=True,
        ),  # fmt: skip
        CLUSTER,
        CONFIG_DIR,
        Option("max_k", int | None, None, "Largest k in the tables (default: the number of samples)."),
        Option("wandb_name", str | None, None, "Log the metrics to a wandb run of this name (WANDB_MODE applies)."),
        Option("wandb_project", str, "skills-cli", "wandb project."),
        Option("wandb_group", str | None, None, "wandb group."),
        Option("swanlab_project", str | None, None, "Log the metrics to this SwanLab project (SWANLAB_MODE applies)."),
        Option("no_plot", bool, False, "Skip the PNG plot."),
    ),
    summarize_results_impl,
)
