"""`ns prepare_data`, `ns eval` and `ns summarize_results`.

`ns eval --benchmarks gsm8k,math500:4,aime24:8` compiles generation programs (one per benchmark, seed and
chunk) packed into --num_jobs jobs with one server each (`eval_jobs.py`), then per benchmark (merges with
chunks) -> one grading job, and one summarize job over every benchmark, with afterok edges.
Reruns skip what is finished: complete generations are not resubmitted and graded files are not regraded.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import overrides_to_dict
from skills_cli.common.typed_config import Bounds
from skills_cli.evaluation.benchmarks import BENCHMARKS_DIR_ENV, benchmark_dirs, get_benchmark
from skills_cli.evaluation.prepare_data import MIRROR_ENV, default_output_dir, prepare
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.commands.eval_jobs import default_num_jobs, is_program, pack_programs, redirected
from skills_cli.pipeline.commands.generate import (
    GenerateSpec,
    GenerationOptions,
    Outputs,
    ServerOptions,
    check_client_partition,
    check_server_address,
    check_server_options,
    compile_generate,
    executes_code,
    generation_job,
    require_a_server,
    validate_overrides,
)
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_model_dir, check_output_dir
from skills_cli.pipeline.options import (
    ClusterSpec,
    CommandSpec,
    QueuedSpec,
    WrappedArguments,
    option,
    spec_from,
)
from skills_cli.pipeline.sandbox import with_sandbox
from skills_cli.pipeline.servers import server_kind_choices
from skills_cli.pipeline.servers.openai import forward_key_variable
from skills_cli.pipeline.shell import quote, quote_argv
from skills_cli.training.model_files import read_model_config

log = logging.getLogger("skills_cli")
_BENCH = re.compile(r"^([A-Za-z0-9_.\-]+)(?::(\d+))?$")


BENCHMARKS_DIR_HELP = ("A folder of benchmark modules outside the package (like skills_cli/evaluation/benchmarks), "
                       "added to $SKILLS_CLI_BENCHMARKS_DIR; the jobs read it at the same path.")  # fmt: skip


def use_benchmarks_dir(folder: str | None) -> None:
    """Put --benchmarks_dir first in $SKILLS_CLI_BENCHMARKS_DIR, where the registry and the jobs look."""
    if folder is None:
        return
    path = Path(folder).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"--benchmarks_dir {folder}: no such folder")
    known = [str(p) for p in benchmark_dirs() if str(p) != str(path)]
    os.environ[BENCHMARKS_DIR_ENV] = os.pathsep.join([str(path), *known])


def with_benchmark_dirs(jobs: list[Job]) -> list[Job]:
    """Every job sees the plug-in folders the launcher used (Slurm jobs do not inherit this shell's variables)."""
    if not os.environ.get(BENCHMARKS_DIR_ENV):
        return jobs
    value = os.environ[BENCHMARKS_DIR_ENV]
    return [dataclasses.replace(job, env={**job.env, BENCHMARKS_DIR_ENV: value}) for job in jobs]


def parse_benchmarks(text: str) -> list[tuple[str, int]]:
    """`gsm8k,math500:4` -> [("gsm8k", 0), ("math500", 4)]; 0: no SAMPLES given."""
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
@dataclass(frozen=True, kw_only=True)
class PrepareDataSpec:
    benchmarks: list[str] = option(..., "Benchmark names.", positional=True)
    data_dir: str | None = option(None, "Local mirror with <benchmark>/<split>.jsonl files.")
    output_dir: str | None = option(None, "Where prepared data goes (default $SKILLS_CLI_DATA_DIR or "
                                    "~/.skills_cli/data).")  # fmt: skip
    split: str | None = option(None, "Only this split (default: all the benchmark's splits).")
    benchmarks_dir: str | None = option(None, BENCHMARKS_DIR_HELP)


def prepare_data_impl(extra: WrappedArguments, spec: PrepareDataSpec) -> list[str]:
    """Runs here (downloads or reads the mirror); the prepared folder is what `ns eval --data_dir` reads."""
    use_benchmarks_dir(spec.benchmarks_dir)
    if not spec.benchmarks:
        raise UserError("prepare_data: name at least one benchmark")
    mirror = spec.data_dir or os.environ.get(MIRROR_ENV)
    target = Path(spec.output_dir) if spec.output_dir else default_output_dir()
    lines = []
    for name in spec.benchmarks:
        lines += prepare(name, target, Path(mirror) if mirror else None, spec.split)
    return lines


PREPARE_DATA = CommandSpec(
    "prepare_data",
    "Prepare benchmark data: download from the public source, read a local mirror (--data_dir or "
    "$SKILLS_BENCHMARKS_DIR), or generate (arith). Idempotent.",
    spec_type=PrepareDataSpec,
    impl=prepare_data_impl,
)


# -- ns eval ----------------------------------------------------------------------------------------------
# the judge's generation: greedy, and an input that may be empty (every answer decided without it)
JUDGE_OVERRIDES = ["++inference.temperature=0.0", "++allow_empty_input=true"]


@dataclass(frozen=True, kw_only=True)
class JudgeOptions:
    """An LLM judge for the answers grading cannot decide."""

    judge_model: str | None = option(None, "Also judge answers with this model (judge/math prompt); exact "
                                     "matches and empty answers are decided without it.", panel="Judge")  # fmt: skip
    judge_server_type: str = option("hf", "Server type of the judge.", choices=server_kind_choices, panel="Judge")
    judge_server_gpus: int = option(0, "GPUs of the judge's server.", panel="Judge", bounds=Bounds(ge=0))
    judge_server_args: str = option("", "Extra arguments of the judge's server.", panel="Judge")
    judge_server_address: str | None = option(None, "A running judge server instead of hosting one.", panel="Judge")
    judge_api_key_env: str | None = option(None, "Environment variable holding the key of the judge's API "
                                           "(default for --judge_server_type openai: OPENAI_API_KEY).", panel="Judge")  # fmt: skip
    judge_prompt_config: str = option("judge/math", "The judge's prompt config (a packaged name or a YAML file); "
                                      "its fields are the result row's (problem, expected_answer, "
                                      "predicted_answer, generation, ...).", panel="Judge")  # fmt: skip
    judge_module: str | None = option(None, "MODULE::FUNCTION(row, judgement_text) -> True/False/None reading the "
                                      "judge's verdict (default: its last `Judgement: Yes|No` line); a module "
                                      "the jobs can import or a .py file they can read.", panel="Judge")  # fmt: skip

    @property
    def judged(self) -> bool:
        return bool(self.judge_model or self.judge_server_address)

    def judge_overrides(self) -> list[str]:
        """The judge's generation settings, with the variable of its API key if one is named."""
        key = [f"++server.api_key_env={self.judge_api_key_env}"] if self.judge_api_key_env else []
        return [f"++prompt_config={self.judge_prompt_config}", *JUDGE_OVERRIDES, *key]

    def check_judge(self, jobs_see_local_paths: bool) -> None:
        """A judge prompt or module that cannot be found fails now, not after the generations."""
        from skills_cli.common.functions import is_file_reference, parse_reference

        if jobs_see_local_paths or not Path(self.judge_prompt_config).suffix:
            from skills_cli.prompts.prompt_config import load_prompt_config

            load_prompt_config(self.judge_prompt_config)
        if self.judge_module:
            module, _ = parse_reference(self.judge_module, "--judge_module")
            if jobs_see_local_paths and is_file_reference(module) and not Path(module).is_file():
                raise UserError(f"--judge_module {self.judge_module!r}: no such file {module}")

    def judge_server(self) -> ServerOptions:
        return ServerOptions(model=self.judge_model, server_type=self.judge_server_type,
                             server_gpus=self.judge_server_gpus, server_args=self.judge_server_args,
                             server_address=self.judge_server_address)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class RewardModelOptions:
    """A reward model scoring every generation after the grading (rm_best@k, rm_majority@k)."""

    reward_model: str | None = option(None, "Score every generation with this reward model (an HF sequence-"
                                      "classification folder, e.g. ns train rm's final_hf) after grading: rows get "
                                      "reward_model_score, tables rm_best@k and rm_majority@k.",
                                      panel="Reward model")  # fmt: skip
    reward_model_gpus: int | None = option(None, "GPUs of the scoring job (default: 1 when --server_gpus > 0, "
                                           "else 0: on the CPU).", panel="Reward model", bounds=Bounds(ge=0))  # fmt: skip

    def check_reward_model(self, jobs_see_local_paths: bool) -> None:
        """A local --reward_model that is no folder, or a causal LM, fails now, not after the generations."""
        if not self.reward_model or not jobs_see_local_paths:
            return
        check_model_dir(self.reward_model, "--reward_model")
        config = read_model_config(self.reward_model, "--reward_model")
        architectures = (config or {}).get("architectures") or []
        if config is not None and not any(a.endswith("ForSequenceClassification") for a in architectures):
            kind = architectures[0] if architectures else "a model without an architecture"
            raise UserError(f"--reward_model {self.reward_model} is {kind}, not a reward model (a sequence-"
                            "classification model with one score, as ns train rm exports)")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class EvalSpec(GenerationOptions, JudgeOptions, RewardModelOptions, QueuedSpec):
    """`ns eval`: every generation option of ns generate; benchmarks instead of an input file."""

    benchmarks: str = option(..., "Comma-separated NAME[:SAMPLES], e.g. gsm8k,math500:4,aime24:8.")
    output_dir: str = option(..., "Results go to OUTPUT_DIR/eval-results/<benchmark>/.")
    data_dir: str | None = option(None, "Prepared data folder on the machine that runs the jobs "
                                  "(default $SKILLS_CLI_DATA_DIR or ~/.skills_cli/data).")  # fmt: skip
    split: str | None = option(None, "Split to evaluate (default: each benchmark's default).")
    benchmarks_dir: str | None = option(None, BENCHMARKS_DIR_HELP)
    max_samples: int = option(-1, "Only the first N problems of each benchmark (-1: all).",
                              bounds=Bounds(ge=1, also=(-1,), why="-1: all problems"))  # fmt: skip
    num_jobs: int | None = option(None, "Pack the generation programs (one per benchmark, seed and chunk) into N "
                                  "jobs, each starting one model server for its programs (more than there are "
                                  "programs: one job each). Default on local executors: as many jobs as servers fit "
                                  "on this machine at once (its GPUs / --server_gpus; 1 for a CPU server); one job "
                                  "per program on Slurm (separate allocations run side by side) or with "
                                  "--server_address (no server to start).",
                                  panel="Resources", bounds=Bounds(ge=1))  # fmt: skip
    programs_at_once: int = option(1, "Generation programs a job runs at the same time against its server (the "
                                   "others wait their turn).", panel="Resources", bounds=Bounds(ge=1))  # fmt: skip

    def data_file(self, name: str) -> str:
        split = self.split or get_benchmark(name).default_split
        root = self.data_dir or str(default_output_dir())
        return f"{root}/{name}/{split}.jsonl"

    def results_dir(self, name: str) -> str:
        return f"{self.output_dir}/eval-results/{name}"


def check_seeds(spec: EvalSpec, benchmarks: list[tuple[str, int]]) -> None:
    """NAME:SAMPLES and --random_seeds both say which seeds a benchmark gets: refuse the ambiguity."""
    sampled = [f"{name}:{samples}" for name, samples in benchmarks if samples]
    if spec.random_seeds and sampled:
        raise UserError(f"--random_seeds and --benchmarks {sampled[0]} both choose the seeds of "
                        f"{sampled[0].split(':')[0]}; give one or the other")  # fmt: skip


def check_prepared(spec: EvalSpec, cluster: ClusterConfig, names: list[str]) -> None:
    if not cluster.jobs_see_local_paths or spec.run_after:
        return  # the data lives where the jobs run, or a --run_after upstream prepares it: the jobs read it
    for name in names:
        path = Path(spec.data_file(name))
        if not path.is_file():
            raise UserError(f"no prepared data for {name} at {path}; run `ns prepare_data {name}` first"
                            + (f" with --output_dir {spec.data_dir}" if spec.data_dir else ""))  # fmt: skip


def prefixed(jobs: list[Job], prefix: str) -> list[Job]:
    rename = {job.name: f"{prefix}-{job.name}" for job in jobs}
    return [dataclasses.replace(job, name=rename[job.name], after=tuple(rename[n] for n in job.after),
                                after_any=tuple(rename[n] for n in job.after_any)) for job in jobs]  # fmt: skip


def cpu_job(name: str, script: str, spec: EvalSpec, after: list[str]) -> Job:
    command = Command(argv=("bash", "-c", script), container=spec.container)
    resources = Resources(time_limit=spec.time, partition=spec.partition)
    return Job(name=name, commands=(command,), resources=resources, after=tuple(after))


def benchmark_generation(spec: EvalSpec, name: str, samples: int) -> GenerateSpec:
    """ns generate's spec for one benchmark: its prepared data into its results folder, SAMPLES seeds if given."""
    seeds = {"num_random_seeds": samples, "random_seeds": []} if samples else {}
    samples_run = (spec.wandb_name or spec.expname or "eval") + f"-{name}"  # one --log_samples run per benchmark
    return spec_from(GenerateSpec, spec, input_file=spec.data_file(name), output_dir=spec.results_dir(name),
                     wandb_name=samples_run, **seeds)  # fmt: skip


def default_prompt_config(spec: EvalSpec, overrides: list[str], name: str) -> str:
    """The benchmark's prompt config; with ++code_execution=true its packaged `-tir` variant where there is one
    (generic/math -> generic/math-tir: the model is told its code blocks will run)."""
    from skills_cli.prompts.prompt_config import PACKAGED

    prompt = get_benchmark(name).prompt_config
    with_code = f"{prompt}-tir"
    return with_code if executes_code(spec, overrides) and (PACKAGED / f"{with_code}.yaml").is_file() else prompt


def benchmark_overrides(spec: EvalSpec, overrides: list[str], name: str) -> list[str]:
    """The user's overrides, after the benchmark's prompt config (unless one is given) and --max_samples."""
    result = list(overrides)
    if not any(o.lstrip("+").startswith("prompt_config=") for o in overrides):
        result.insert(0, f"++prompt_config={default_prompt_config(spec, overrides, name)}")
    if spec.max_samples >= 0:
        result.append(f"++max_samples={spec.max_samples}")
    return result


def judge_job(spec: EvalSpec, generation: GenerateSpec, cluster: ClusterConfig, name: str, after: str) -> Job:
    """prepare (no-judge decisions) -> judge generation -> apply verdicts, in one job after the grading."""
    results = generation.output_dir
    python = cluster.python_executable
    step = lambda *args: quote_argv([python, "-m", "skills_cli.evaluation.judge", *args, "--results_dir", results])  # noqa: E731
    judge = dataclasses.replace(generation, **dataclasses.asdict(spec.judge_server()), config=None, rerun_done=True,
                                input_file=f"{results}/judge/input.jsonl", preprocess_cmd=step("prepare"))  # fmt: skip
    out = Outputs(f"{results}/judge/output.jsonl", None, None)
    verdict = ("--verdict", spec.judge_module) if spec.judge_module else ()
    job = generation_job(judge, cluster, out, spec.judge_overrides(), step("apply", *verdict))
    return dataclasses.replace(job, name=f"{name}-judge", after=(after,))


def reward_model_job(spec: EvalSpec, generation: GenerateSpec, overrides: list[str], cluster: ClusterConfig,
                     name: str, after: str) -> Job:  # fmt: skip
    """`reward_model_score` into every result file of the benchmark, after the jobs that write them before it
    (files are rewritten whole: one writer at a time), with the prompt config the generation used."""
    prompt = overrides_to_dict(overrides)["prompt_config"]
    files = [generation.output_file(seed) for seed in generation.seeds]
    score = quote_argv([cluster.python_executable, "-m", "skills_cli.inference.reward_model", "--model",
                        spec.reward_model, "--prompt_config", prompt, "--data_dir",
                        str(Path(spec.data_file(name)).parent), *files])  # fmt: skip
    gpus = spec.reward_model_gpus if spec.reward_model_gpus is not None else min(spec.server_gpus, 1)
    command = Command(argv=("bash", "-c", score), container=spec.container, gpus=gpus)
    resources = Resources(gpus_per_node=gpus, time_limit=spec.time, partition=spec.partition)
    return Job(name=f"{name}-reward-model", commands=(command,), resources=resources, after=(after,))


def benchmark_jobs(spec: EvalSpec, overrides: list[str], cluster: ClusterConfig, name: str,
                   samples: int) -> tuple[list[Job], list[Job]]:  # fmt: skip
    """One benchmark's generation programs (ns generate's jobs), and the jobs after them: the merges of
    chunks, the grading, the reward model's scoring, the judge; the last of these ends the benchmark."""
    generation = benchmark_generation(spec, name, samples)
    generation_overrides = benchmark_overrides(spec, overrides, name)
    validate_overrides(generation_overrides, generation)
    generated = prefixed(compile_generate(generation, generation_overrides, cluster), name)
    finals = [j.name for j in generated if not any(j.name in other.after for other in generated)]
    # the benchmark names its grader (the in-job registry, plugins included, resolves it)
    grade = quote_argv([cluster.python_executable, "-m", "skills_cli.evaluation.grade", "--benchmark", name,
                        "--results_dir", generation.output_dir])  # fmt: skip
    grading = cpu_job(f"{name}-grade", grade, spec, finals)
    if get_benchmark(name).needs_sandbox:
        grading = with_sandbox(grading, cluster, f"grading {name}")
    after = [*(job for job in generated if not is_program(job)), grading]
    if spec.reward_model:
        after.append(reward_model_job(spec, generation, generation_overrides, cluster, name, grading.name))
    if spec.judged:
        after.append(judge_job(spec, generation, cluster, name, after[-1].name))
    return [job for job in generated if is_program(job)], after


def packed_programs(spec: EvalSpec, cluster: ClusterConfig, programs: list[Job]) -> tuple[list[Job], dict[str, str]]:
    """The programs in --num_jobs jobs (or the default's), each job with one server."""
    if spec.num_jobs and spec.num_jobs > len(programs):
        log.info("--num_jobs %d: only %d generation programs to run, one job each", spec.num_jobs, len(programs))
    num_jobs = spec.num_jobs or default_num_jobs(spec, cluster, len(programs))
    return pack_programs(programs, num_jobs, spec.programs_at_once)


def compile_eval(spec: EvalSpec, overrides: list[str], cluster: ClusterConfig) -> list[Job]:
    """Every benchmark's programs packed into jobs, then (waiting for those jobs) its merges, grading and
    judge, then one summary after every benchmark."""
    programs, downstream, ends = [], [], []
    for name, samples in parse_benchmarks(spec.benchmarks):
        generated, after = benchmark_jobs(spec, overrides, cluster, name, samples)
        programs += generated
        downstream += after
        ends.append(after[-1].name)
    packed, renamed = packed_programs(spec, cluster, programs)
    summarize = quote_argv([cluster.python_executable, "-m", "skills_cli.evaluation.summarize", spec.output_dir])
    jobs = [*packed, *(redirected(job, renamed) for job in downstream), cpu_job("summarize", summarize, spec, ends)]
    return with_benchmark_dirs(jobs)


def check_local_paths(spec: EvalSpec, cluster: ClusterConfig) -> None:
    """Bare local jobs write and read this machine's paths: unusable ones are errors now."""
    if not cluster.jobs_see_local_paths:
        return
    check_output_dir(spec.output_dir, "--output_dir")
    if spec.model and not spec.server_address:
        check_model_dir(spec.model, "--model")


def eval_impl(extra: WrappedArguments, spec: EvalSpec) -> Submission:
    ensure_log_dir_is_absolute(spec.log_dir)
    use_benchmarks_dir(spec.benchmarks_dir)
    benchmarks = parse_benchmarks(spec.benchmarks)
    check_seeds(spec, benchmarks)
    check_server_options(spec)
    check_server_options(spec.judge_server(), prefix="judge_")
    require_a_server(spec, "eval")
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    # the API keys' variables travel to the jobs like the cluster's env_vars (never in a file)
    cluster = forward_key_variable(cluster, spec.server_type, extra.args)
    check_client_partition(spec, cluster)
    if spec.judged:
        spec.check_judge(cluster.jobs_see_local_paths)
        cluster = forward_key_variable(cluster, spec.judge_server_type, spec.judge_overrides(),
                                       option="--judge_api_key_env")  # fmt: skip
    check_prepared(spec, cluster, [name for name, _ in benchmarks])
    check_local_paths(spec, cluster)
    spec.check_reward_model(cluster.jobs_see_local_paths)
    if spec.server_address:
        check_server_address(spec.server_address, cluster)
    jobs = compile_eval(spec, list(extra.args), cluster)
    options = submit_options(spec, default_expname="eval")
    return submit_jobs(jobs, cluster, options)


EVAL = CommandSpec(
    "eval",
    "Evaluate a model on benchmarks: generation (seeds, chunks) -> grading -> summary, as dependent jobs.",
    spec_type=EvalSpec,
    impl=eval_impl,
    extra_args="++key=value overrides of the generation program",
)


# -- ns summarize_results ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SummarizeResultsSpec(ClusterSpec):
    results_dir: str = option(..., "The --output_dir of ns eval (on the cluster when --cluster is remote).",
                              positional=True)  # fmt: skip
    max_k: int | None = option(None, "Largest k in the tables (default: the number of samples).")
    wandb_name: str | None = option(None, "Log the metrics to a wandb run of this name (WANDB_MODE applies).")
    wandb_project: str = option("skills-cli", "wandb project.")
    wandb_group: str | None = option(None, "wandb group.")
    swanlab_project: str | None = option(None, "Log the metrics to this SwanLab project (SWANLAB_MODE applies).")
    no_plot: bool = option(False, "Skip the PNG plot.")


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


def summarize_results_impl(extra: WrappedArguments, spec: SummarizeResultsSpec) -> dict:
    from skills_cli.evaluation.summarize import log_scalars, metrics_json, summarize

    directory = Path(spec.results_dir)
    if spec.cluster:
        config = load_cluster_config(spec.cluster, spec.config_dir)
        if config.runs_remotely and config.ssh_tunnel is not None:
            directory = fetch_results(config, spec.results_dir)
    results, written = summarize(directory, spec.max_k, not spec.no_plot)
    logged = log_scalars(metrics_json(results), spec.wandb_name, spec.wandb_project, spec.wandb_group,
                         spec.swanlab_project)  # fmt: skip
    return {"results": results, "metrics_file": written, "logged": logged,
            "plot": directory / "pass_at_k.png" if (directory / "pass_at_k.png").exists() else None}  # fmt: skip


SUMMARIZE_RESULTS = CommandSpec(
    "summarize_results",
    "Print one table per benchmark, write metrics.json and a pass@k/majority@k plot, log to wandb/swanlab.",
    spec_type=SummarizeResultsSpec,
    impl=summarize_results_impl,
)
