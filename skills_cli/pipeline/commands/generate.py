"""`ns generate`: generation jobs (seeds x chunks), each with its own model server or an existing address.

    generate(ctx=wrap_arguments("++prompt_config=generic/math ++inference.temperature=0.6"),
             cluster="local", input_file=..., output_dir=..., model=..., server_type="vllm", server_gpus=8)

The `++` overrides are validated against the generation program's schema before anything is submitted
(a typo fails with the closest valid names). Outputs: `output.jsonl`, or `output-rs{seed}.jsonl` per seed;
with `--num_chunks N` each chunk job writes `output[-rsS]_chunk_K.jsonl` and a merge job that waits for all
of them writes the final file (then runs `--postprocess_cmd`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config, overrides_to_dict
from skills_cli.common.typed_config import Bounds
from skills_cli.inference import resume
from skills_cli.inference.config import PORT_ENV, SERVER_TYPES, GenerateConfig, done_marker
from skills_cli.inference.merge_chunks import chunk_file
from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_jsonl_file, check_model_dir, check_output_dir
from skills_cli.pipeline.options import PARTITION, SUBMIT_OPTIONS, TIME, CommandSpec, Option, WrappedArguments
from skills_cli.pipeline.servers import ServerSpec, server_command
from skills_cli.pipeline.shell import quote_argv

log = logging.getLogger("skills_cli")

# what sampling with seeds means unless the user overrides it
SEED_DEFAULTS = ("++inference.temperature=0.7", "++inference.top_p=0.95", "++inference.top_k=-1")
LAUNCHER_KEYS = {"input_file", "output_file", "num_chunks", "chunk_id"}

SERVER_OPTIONS = (
    Option("model", str | None, None, "Model path (or name) the server hosts.", panel="Server"),
    Option(
        "server_type",
        str,
        "hf",
        "vllm, sglang, trtllm, hf (the embedded transformers server) or openai (an API; needs --server_address).",
        choices=SERVER_TYPES,
        panel="Server",
    ),  # fmt: skip
    Option("server_gpus", int, 0, "GPUs per node for a self-hosted server.", panel="Server", bounds=Bounds(ge=0)),
    Option(
        "server_nodes",
        int,
        1,
        "Nodes for a self-hosted server (vllm: Ray; sglang: dist-init).",
        panel="Server",
        bounds=Bounds(ge=1),
    ),  # fmt: skip
    Option(
        "server_args", str, "", "Extra arguments for the server command (split like a shell would).", panel="Server"
    ),  # fmt: skip
    Option(
        "server_address",
        str | None,
        None,
        "Use a running OpenAI-compatible server (http://host:port/v1) instead of hosting one.",
        panel="Server",
    ),  # fmt: skip
)
GENERATE_OPTIONS = (
    Option("input_file", str, ..., "Input JSONL (a path on the machine that runs the jobs)."),
    Option("output_dir", str, ..., "Directory for output.jsonl / output-rs{seed}.jsonl."),
    Option(
        "config",
        str | None,
        None,
        "YAML file with settings of the generation program (the base that "
        "++overrides change), e.g. for stop strings that are awkward to quote.",
    ),  # fmt: skip
    Option(
        "num_chunks", int, 1, "Split the input over N jobs; a merge job writes the final file.", bounds=Bounds(ge=1)
    ),
    Option(
        "chunk_ids", list[int], [], "Only these chunks (repeatable), e.g. to rerun a failed one.", bounds=Bounds(ge=0)
    ),
    Option(
        "num_random_seeds",
        int,
        0,
        "Generate K samples per input: seeds starting_seed..starting_seed+K-1.",
        bounds=Bounds(ge=0),
    ),
    Option(
        "random_seeds", list[int], [], "Explicit seeds (repeatable); overrides --num_random_seeds.", bounds=Bounds(ge=0)
    ),
    Option("starting_seed", int, 0, "First seed for --num_random_seeds.", bounds=Bounds(ge=0)),
    Option("preprocess_cmd", str | None, None, "Shell command run in the job before generation."),
    Option("postprocess_cmd", str | None, None, "Shell command run after the final output is written."),
    Option("rerun_done", bool, False, "Regenerate outputs that are already complete."),
    Option("log_samples", bool, False, "Log a table of samples of each output to wandb or swanlab."),
    Option("samples_backend", str, "wandb", "Where --log_samples goes.", choices=("wandb", "swanlab")),
    Option("wandb_project", str, "skills-cli", "Project of the --log_samples runs (wandb or swanlab)."),
    Option("wandb_group", str | None, None, "Group of the --log_samples runs."),
    Option("wandb_name", str | None, None, "Run name for --log_samples (default: the experiment name)."),
    *SERVER_OPTIONS,
    *SUBMIT_OPTIONS,
    PARTITION,
    TIME,
    Option("container", str, "main", "Container role of the client.", panel="Resources"),
)


@dataclass(frozen=True)
class Outputs:
    """One job's output file, its seed and chunk."""

    file: str
    seed: int | None
    chunk: int | None


def seeds_of(values: dict) -> list[int | None]:
    if values["random_seeds"]:
        return list(values["random_seeds"])
    if values["num_random_seeds"] > 0:
        return list(range(values["starting_seed"], values["starting_seed"] + values["num_random_seeds"]))
    return [None]


def base_config(values: dict) -> dict | None:
    """The --config file's settings when it is readable here (None: a path only the cluster can see)."""
    if not values["config"]:
        return {}
    path = Path(values["config"])
    if not path.exists():
        return None
    from skills_cli.common.yaml_files import read_yaml_file

    data = read_yaml_file(path, "--config") or {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping")
    return data


def validate_overrides(overrides: list[str], values: dict) -> GenerateConfig | None:
    """The same schema the in-job program loads, applied now: typos fail before submission."""
    given = overrides_to_dict(overrides)
    base = base_config(values)
    clash = sorted(LAUNCHER_KEYS & (set(given) | set(base or {})))
    if clash:
        raise UserError(f"generate: {clash[0]} is set by the launcher; use --input_file/--output_dir/--num_chunks")
    if base is None:
        return None  # the config file lives on the cluster: the job validates the merged settings
    if "prompt_config" not in given and "prompt_config" not in base:
        raise UserError("generate: ++prompt_config=NAME_OR_PATH is required (e.g. ++prompt_config=generic/math)")
    base = {**base, "input_file": values["input_file"], "output_file": "-"}
    return load_config(GenerateConfig, overrides, base, where="generate")


def client_argv(python: str, values: dict, out: Outputs, overrides: list[str]) -> list[str]:
    argv = [python, "-m", "skills_cli.inference.generate", *(["--config", values["config"]] if values["config"] else []),
            f"++input_file={values['input_file']}",
            f"++output_file={out.file}", f"++server.server_type={values['server_type']}"]  # fmt: skip
    if values["model"]:
        argv.append(f"++server.model={values['model']}")
    if values["server_address"]:
        argv.append(f"++server.base_url={values['server_address']}")
    if values["rerun_done"]:
        argv.append("++rerun_done=true")
    if out.seed is not None:
        argv += [*SEED_DEFAULTS, f"++inference.random_seed={out.seed}"]
    if out.chunk is not None:
        argv += [f"++num_chunks={values['num_chunks']}", f"++chunk_id={out.chunk}"]
    return argv + list(overrides)  # the user's overrides come last and win


def log_samples_step(values: dict, cluster: ClusterConfig, output_file: str, seed: int | None) -> str | None:
    if not values["log_samples"]:
        return None
    name = (values["wandb_name"] or values["expname"] or "generate") + (f"-rs{seed}" if seed is not None else "")
    argv = [cluster.python_executable, "-m", "skills_cli.inference.log_samples", "--file", output_file,
            "--backend", values["samples_backend"], "--project", values["wandb_project"], "--name", name]  # fmt: skip
    if values["wandb_group"]:
        argv += ["--group", values["wandb_group"]]
    return quote_argv(argv)


def chained(*parts: str | None) -> str:
    return " && ".join(part for part in parts if part)


def job_name(base: str, out: Outputs) -> str:
    return (
        base
        + (f"-rs{out.seed}" if out.seed is not None else "")
        + (f"-chunk{out.chunk}" if out.chunk is not None else "")
    )


def generation_job(
    values: dict, cluster: ClusterConfig, out: Outputs, overrides: list[str], last_step: str | None
) -> Job:
    import shlex

    python = cluster.python_executable
    client = chained(values["preprocess_cmd"], quote_argv(client_argv(python, values, out, overrides)), last_step)
    commands = [Command(argv=("bash", "-c", client), name="client", container=values["container"], single_task=True)]
    ports: tuple[str, ...] = ()
    if not values["server_address"]:
        spec = ServerSpec(values["server_type"], values["model"], values["server_gpus"], values["server_nodes"],
                          tuple(shlex.split(values["server_args"])))  # fmt: skip
        commands.insert(0, server_command(spec, cluster))
        ports = (PORT_ENV,)
    resources = Resources(nodes=values["server_nodes"], gpus_per_node=values["server_gpus"], time_limit=values["time"],
                          partition=values["partition"])  # fmt: skip
    return Job(name=job_name("generate", out), commands=tuple(commands), resources=resources, ports=ports)


def merge_job(values: dict, cluster: ClusterConfig, output_file: str, seed: int | None, after: list[str]) -> Job:
    merge = quote_argv([cluster.python_executable, "-m", "skills_cli.inference.merge_chunks",
                        "--output_file", output_file, "--num_chunks", str(values["num_chunks"])])  # fmt: skip
    name = "merge" + (f"-rs{seed}" if seed is not None else "")
    samples = log_samples_step(values, cluster, output_file, seed)
    command = Command(
        argv=("bash", "-c", chained(merge, samples, values["postprocess_cmd"])), container=values["container"]
    )
    return Job(name=name, commands=(command,), resources=Resources(time_limit=values["time"],
               partition=values["partition"]), after=tuple(after))  # fmt: skip


def launch_stamp(values: dict, cluster: ClusterConfig, out: Outputs, overrides: list[str]) -> str:
    """The stamp the generation program will record in `.done` for this output (its argv after `-m MODULE`)."""
    return resume.launch_stamp(client_argv(cluster.python_executable, values, out, overrides)[3:])


def is_done_locally(cluster: ClusterConfig, output_file: str, rerun: bool, stamps: list[str]) -> bool:
    """A finished output is skipped at submission on this machine only when it was made by the same command
    line from the same input (its launch stamps); otherwise the job runs and compares every sample itself."""
    marker = Path(done_marker(output_file))
    if cluster.executor is not ExecutorKind.NONE or rerun or not marker.is_file():
        return False
    recorded = resume.read_marker(marker) or {}
    return recorded.get("stamps", [recorded.get("stamp")]) == stamps


def compile_generate(values: dict, overrides: list[str], cluster: ClusterConfig) -> list[Job]:
    chunks = list(range(values["num_chunks"])) if values["num_chunks"] > 1 else [None]
    if values["chunk_ids"]:
        if values["num_chunks"] == 1:
            raise UserError(f"--chunk_ids {values['chunk_ids']} needs --num_chunks N (the chunks to pick from)")
        unknown = [k for k in values["chunk_ids"] if k not in range(values["num_chunks"])]
        if unknown:
            raise UserError(f"--chunk_ids {values['chunk_ids']} must lie in 0..{values['num_chunks'] - 1}")
        chunks = list(values["chunk_ids"])
    jobs = []
    for seed in seeds_of(values):
        output = f"{values['output_dir']}/output" + (f"-rs{seed}" if seed is not None else "") + ".jsonl"
        every_chunk = range(values["num_chunks"]) if values["num_chunks"] > 1 else [None]
        stamps = {chunk: launch_stamp(values, cluster, Outputs(chunk_file(output, chunk) if chunk is not None else output,
                                                               seed, chunk), overrides)
                  for chunk in every_chunk} if cluster.executor is ExecutorKind.NONE else {}  # fmt: skip
        if is_done_locally(cluster, output, values["rerun_done"], list(stamps.values())):
            log.info("skipping %s: already complete for this input and these settings (--rerun_done to redo it)",
                     output)  # fmt: skip
            continue
        chunk_jobs = []
        for chunk in chunks:
            out = Outputs(chunk_file(output, chunk) if chunk is not None else output, seed, chunk)
            if chunk is not None and is_done_locally(cluster, out.file, values["rerun_done"], [stamps.get(chunk)]):
                continue
            last_step = (
                chained(log_samples_step(values, cluster, output, seed), values["postprocess_cmd"])
                if chunk is None
                else None
            )
            jobs.append(generation_job(values, cluster, out, overrides, last_step))
            chunk_jobs.append(jobs[-1].name)
        if chunks != [None]:
            jobs.append(merge_job(values, cluster, output, seed, chunk_jobs))
    return jobs


def check_local_inputs(values: dict, cluster: ClusterConfig, config: GenerateConfig | None) -> None:
    """Bare local jobs see this machine's files: a missing or unusable input is an error now, not in the job."""
    if cluster.executor is not ExecutorKind.NONE:
        return  # elsewhere: the job checks its files when it starts
    check_output_dir(values["output_dir"], "--output_dir")
    if values["model"] and not values["server_address"]:
        check_model_dir(values["model"], "--model")
    if config is not None and (Path(config.prompt_config).exists() or not values["run_after"]):
        from skills_cli.prompts.prompt_config import load_prompt_config

        load_prompt_config(config.prompt_config)  # a packaged name, or a YAML file here (not a folder, not binary)
    if values["run_after"]:
        return  # the input may be produced by an upstream experiment: the job checks it when it starts
    rows = check_jsonl_file(values["input_file"], "--input_file")
    if values["num_chunks"] > rows:
        raise UserError(f"--num_chunks {values['num_chunks']} is larger than the {rows} rows of {values['input_file']}")


def check_server_options(values: dict, prefix: str = "") -> None:
    """With a running server (--server_address) the hosting options would be silently ignored: refuse them.
    `--model` stays allowed: it is the model name sent to that server (as with NeMo-Skills' openai type)."""
    if not values[f"{prefix}server_address"]:
        return
    hosting = {f"{prefix}server_gpus": 0, f"{prefix}server_nodes": 1, f"{prefix}server_args": ""}
    given = [name for name, default in hosting.items() if name in values and values[name] != default]
    if given:
        raise UserError(f"--{given[0]} is for hosting a server; --{prefix}server_address uses a running one "
                        "(give one or the other)")  # fmt: skip


def check_server_address(address: str, cluster: ClusterConfig) -> None:
    """From this machine the address must answer (a Slurm compute node may see other hosts: not checked)."""
    if cluster.executor is ExecutorKind.SLURM:
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{address.rstrip('/')}/models", timeout=10)
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 without a key): reachable
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"--server_address {address}: not reachable ({getattr(error, 'reason', error)})") from None


def generate_impl(extra: WrappedArguments, **values) -> Submission:
    ensure_log_dir_is_absolute(values["log_dir"])
    overrides = list(extra.args)
    config = validate_overrides(overrides, values)
    check_server_options(values)
    if values["server_address"] is None and not values["model"]:
        raise UserError("generate: give --model (a self-hosted server) or --server_address (a running one)")
    if values["server_type"] == "openai" and not values["server_address"]:
        raise UserError("generate: --server_type openai needs --server_address")
    cluster = load_cluster_config(values["cluster"], values["config_dir"])
    check_local_inputs(values, cluster, config)
    if values["server_address"]:
        check_server_address(values["server_address"], cluster)
    jobs = compile_generate(values, overrides, cluster)
    options = submit_options(values, default_expname="generate")
    if not jobs:
        log.info("every output of %s is already complete; nothing submitted", options.expname)
        return Submission(expname=options.expname, cluster=cluster.name)
    from skills_cli.pipeline.commands.run_cmd import log_change

    return submit_jobs(jobs, cluster, options, on_change=log_change)


GENERATE = CommandSpec(
    name="generate",
    help="Generate with an LLM over a JSONL file (self-hosted server or --server_address); ++key=value "
    "overrides configure the generation program (e.g. ++prompt_config=generic/math ++inference.temperature=0.6).",
    options=GENERATE_OPTIONS,
    impl=generate_impl,
    extra_args="++key=value overrides of the generation program",
)
