"""`ns generate`: generation jobs (seeds x chunks), each with its own model server or an existing address.

    generate(ctx=wrap_arguments("++prompt_config=generic/math ++inference.temperature=0.6"),
             cluster="local", input_file=..., output_dir=..., model=..., server_type="vllm", server_gpus=8)

The `++` overrides are validated against the generation program's schema before anything is submitted
(a typo fails with the closest valid names). Outputs: `output.jsonl`, or `output-rs{seed}.jsonl` per seed;
with `--num_chunks N` each chunk job writes `output[-rsS]_chunk_K.jsonl` and a merge job that waits for all
of them writes the final file (then runs `--postprocess_cmd`).
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config, overrides_to_dict
from skills_cli.common.typed_config import Bounds
from skills_cli.inference import resume
from skills_cli.inference.config import GenerateConfig, check_code_execution, done_marker
from skills_cli.inference.merge_chunks import chunk_file
from skills_cli.inference.server.auth import ALL_INTERFACES
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_jsonl_file, check_model_dir, check_output_dir
from skills_cli.pipeline.options import CommandSpec, QueuedSpec, WrappedArguments, option
from skills_cli.pipeline.sandbox import SANDBOX_ROLE, with_sandbox
from skills_cli.pipeline.servers import SERVER_KINDS, ServerSpec, server_command, server_kind_choices
from skills_cli.pipeline.servers.openai import forward_key_variable
from skills_cli.pipeline.shell import quote_argv

log = logging.getLogger("skills_cli")

# what sampling with seeds means unless the user overrides it
SEED_DEFAULTS = ("++inference.temperature=0.7", "++inference.top_p=0.95", "++inference.top_k=-1")
LAUNCHER_KEYS = {"input_file", "output_file", "num_chunks", "chunk_id"}
CLIENT = "client"  # the command of a generation job that runs the generation program


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """The model server of a generation: one the job hosts (--model, --server_type, ...) or a running one."""

    model: str | None = option(None, "Model path (or name) the server hosts.", panel="Server")
    server_type: str = option("hf", "vllm, sglang, trtllm, hf (the embedded transformers server) or openai (an API; "
                              "needs --server_address).", choices=server_kind_choices, panel="Server")  # fmt: skip
    server_gpus: int = option(0, "GPUs per node for a self-hosted server.", panel="Server", bounds=Bounds(ge=0))
    server_nodes: int = option(1, "Nodes for a self-hosted server (vllm: Ray; sglang: dist-init).", panel="Server",
                               bounds=Bounds(ge=1))  # fmt: skip
    server_args: str = option("", "Extra arguments for the server command (split like a shell would).", panel="Server")
    server_address: str | None = option(None, "Use a running OpenAI-compatible server (http://host:port/v1) instead "
                                        "of hosting one.", panel="Server")  # fmt: skip

    def hosted_server(self, host: str | None = None) -> ServerSpec:
        """The server the job hosts (when there is no --server_address)."""
        return ServerSpec(self.server_type, self.model, self.server_gpus, self.server_nodes,
                          tuple(shlex.split(self.server_args)), host=host)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class GenerationOptions(ServerOptions):
    """How to generate, apart from the input and output: ns generate's and ns eval's options alike."""

    config: str | None = option(None, "YAML file with settings of the generation program (the base that "
                                "++overrides change), e.g. for stop strings that are awkward to quote.")  # fmt: skip
    num_chunks: int = option(1, "Split the input over N jobs; a merge job writes the final file.", bounds=Bounds(ge=1))
    chunk_ids: list[int] = option([], "Only these chunks (repeatable), e.g. to rerun a failed one.",
                                  bounds=Bounds(ge=0))  # fmt: skip
    num_random_seeds: int = option(0, "Generate K samples per input: seeds starting_seed..starting_seed+K-1.",
                                   bounds=Bounds(ge=0))  # fmt: skip
    random_seeds: list[int] = option([], "Explicit seeds (repeatable); overrides --num_random_seeds.",
                                     bounds=Bounds(ge=0))  # fmt: skip
    starting_seed: int = option(0, "First seed for --num_random_seeds.", bounds=Bounds(ge=0))
    preprocess_cmd: str | None = option(None, "Shell command run in the job before generation.")
    postprocess_cmd: str | None = option(None, "Shell command run after the final output is written.")
    rerun_done: bool = option(False, "Regenerate outputs that are already complete.")
    log_samples: bool = option(False, "Log a table of samples of each output to wandb or swanlab.")
    samples_backend: str = option("wandb", "Where --log_samples goes.", choices=("wandb", "swanlab"))
    wandb_project: str = option("skills-cli", "Project of the --log_samples runs (wandb or swanlab).")
    wandb_group: str | None = option(None, "Group of the --log_samples runs.")
    wandb_name: str | None = option(None, "Run name for --log_samples (default: the experiment name).")
    container: str = option("main", "Container role of the client.", panel="Resources")
    client_partition: str | None = option(None, "Slurm: run the client (and its sandbox) on a node of this "
                                          "partition, apart from the self-hosted server: a heterogeneous job whose "
                                          "server keeps its own nodes, listens on all interfaces and requires the "
                                          "job's API key. Default: the cluster config's client_partition; none: "
                                          "the client runs on the server's first node.", panel="Resources")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class GenerateSpec(GenerationOptions, QueuedSpec):
    """`ns generate`: one input file, one output folder."""

    input_file: str = option(..., "Input JSONL (a path on the machine that runs the jobs).")
    output_dir: str = option(..., "Directory for output.jsonl / output-rs{seed}.jsonl.")

    @property
    def seeds(self) -> list[int | None]:
        """The seed of each output (None: one output, no seed)."""
        if self.random_seeds:
            return list(self.random_seeds)
        if self.num_random_seeds > 0:
            return list(range(self.starting_seed, self.starting_seed + self.num_random_seeds))
        return [None]

    @property
    def every_chunk(self) -> list[int | None]:
        return list(range(self.num_chunks)) if self.num_chunks > 1 else [None]

    def chunks(self) -> list[int | None]:
        """The chunks to generate: all of them, or the valid --chunk_ids."""
        if not self.chunk_ids:
            return self.every_chunk
        if self.num_chunks == 1:
            raise UserError(f"--chunk_ids {self.chunk_ids} needs --num_chunks N (the chunks to pick from)")
        if any(k not in range(self.num_chunks) for k in self.chunk_ids):
            raise UserError(f"--chunk_ids {self.chunk_ids} must lie in 0..{self.num_chunks - 1}")
        return list(self.chunk_ids)

    def output_file(self, seed: int | None) -> str:
        return f"{self.output_dir}/output" + (f"-rs{seed}" if seed is not None else "") + ".jsonl"


@dataclass(frozen=True)
class Outputs:
    """One job's output file, its seed and chunk."""

    file: str
    seed: int | None
    chunk: int | None

    @classmethod
    def of(cls, output: str, seed: int | None, chunk: int | None) -> Outputs:
        return cls(chunk_file(output, chunk) if chunk is not None else output, seed, chunk)


def base_config(spec: GenerateSpec) -> dict | None:
    """The --config file's settings when it is readable here (None: a path only the cluster can see)."""
    if not spec.config:
        return {}
    path = Path(spec.config)
    if not path.exists():
        return None
    from skills_cli.common.yaml_files import read_yaml_file

    data = read_yaml_file(path, "--config") or {}
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a mapping")
    return data


def validate_overrides(overrides: list[str], spec: GenerateSpec) -> GenerateConfig | None:
    """The same schema the in-job program loads, applied now: typos fail before submission."""
    given = overrides_to_dict(overrides)
    base = base_config(spec)
    clash = sorted(LAUNCHER_KEYS & (set(given) | set(base or {})))
    if clash:
        raise UserError(f"generate: {clash[0]} is set by the launcher; use --input_file/--output_dir/--num_chunks")
    if base is None:
        return None  # the config file lives on the cluster: the job validates the merged settings
    if "prompt_config" not in given and "prompt_config" not in base:
        raise UserError("generate: ++prompt_config=NAME_OR_PATH is required (e.g. ++prompt_config=generic/math)")
    # the launcher's --server_type is what the job gets (client_argv), unless ++server.server_type overrides it
    server = {**base.get("server", {}), "server_type": spec.server_type}
    base = {**base, "input_file": spec.input_file, "output_file": "-", "server": server}
    config = load_config(GenerateConfig, overrides, base, where="generate")
    SERVER_KINDS.get(config.server.server_type)  # ++server.server_type must name a registered kind too
    check_code_execution(config)
    return config


def client_argv(python: str, spec: GenerateSpec, out: Outputs, overrides: list[str]) -> list[str]:
    argv = [python, "-m", "skills_cli.inference.generate", *(["--config", spec.config] if spec.config else []),
            f"++input_file={spec.input_file}",
            f"++output_file={out.file}", f"++server.server_type={spec.server_type}"]  # fmt: skip
    if spec.model:
        argv.append(f"++server.model={spec.model}")
    if spec.server_address:
        argv.append(f"++server.base_url={spec.server_address}")
    if spec.rerun_done:
        argv.append("++rerun_done=true")
    if out.seed is not None:
        argv += [*SEED_DEFAULTS, f"++inference.random_seed={out.seed}"]
    if out.chunk is not None:
        argv += [f"++num_chunks={spec.num_chunks}", f"++chunk_id={out.chunk}"]
    return argv + list(overrides)  # the user's overrides come last and win


def log_samples_step(spec: GenerateSpec, cluster: ClusterConfig, output_file: str, seed: int | None) -> str | None:
    if not spec.log_samples:
        return None
    name = (spec.wandb_name or spec.expname or "generate") + (f"-rs{seed}" if seed is not None else "")
    argv = [cluster.python_executable, "-m", "skills_cli.inference.log_samples", "--file", output_file,
            "--backend", spec.samples_backend, "--project", spec.wandb_project, "--name", name]  # fmt: skip
    if spec.wandb_group:
        argv += ["--group", spec.wandb_group]
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
    spec: GenerateSpec, cluster: ClusterConfig, out: Outputs, overrides: list[str], last_step: str | None
) -> Job:
    """The client (after --preprocess_cmd, before `last_step`), with its own server unless --server_address."""
    client = chained(spec.preprocess_cmd, quote_argv(client_argv(cluster.python_executable, spec, out, overrides)),
                     last_step)  # fmt: skip
    commands = [Command(argv=("bash", "-c", client), name=CLIENT, container=spec.container, single_task=True)]
    ports: tuple[str, ...] = ()
    apart = client_partition(spec, cluster)
    if not spec.server_address:
        # a client on another node reaches the server by its node's name: it listens on all interfaces
        commands.insert(0, server_command(spec.hosted_server(ALL_INTERFACES if apart else None), cluster))
        ports = commands[0].binds
    resources = Resources(nodes=spec.server_nodes, gpus_per_node=spec.server_gpus, time_limit=spec.time,
                          partition=spec.partition)  # fmt: skip
    job = Job(name=job_name("generate", out), commands=tuple(commands), resources=resources, ports=ports)
    job = with_sandbox(job, cluster, "++code_execution") if executes_code(spec, overrides) else job
    return with_client_apart(job, apart) if apart else job


def client_partition(spec: GenerateSpec, cluster: ClusterConfig) -> str | None:
    """Where the client runs apart from the server it hosts (--client_partition, else the cluster's); None:
    beside it. A running server (--server_address) is no part of the job: nothing to be apart from."""
    if spec.server_address:
        return None
    return spec.client_partition or cluster.client_partition


def with_client_apart(job: Job, partition: str) -> Job:
    """`job` as a heterogeneous job: the server keeps the job's nodes (component 0, whose first node the client
    reaches as $SKILLS_CLI_HEAD_NODE), the client and the sandbox it calls share a node of `partition`
    (component 1), as NeMo-Skills places a server on GPU nodes and its client on a CPU node."""
    moved = {CLIENT, SANDBOX_ROLE}
    commands = tuple(dataclasses.replace(command, group=1) if command.name in moved else command
                     for command in job.commands)  # fmt: skip
    client = Resources(time_limit=job.resources.time_limit, partition=partition)
    return dataclasses.replace(job, commands=commands, het_resources=(client,))


def check_client_partition(spec: GenerationOptions, cluster: ClusterConfig) -> None:
    """--client_partition asks for a heterogeneous job around a hosted server: Slurm only, and a server to host."""
    if spec.client_partition is None:
        return
    if spec.server_address:
        raise UserError("--client_partition places the client apart from a hosted server; --server_address uses a "
                        "running one (give one or the other)")  # fmt: skip
    cluster.check_heterogeneous_jobs("--client_partition")


def executes_code(spec: GenerateSpec, overrides: list[str]) -> bool:
    """Tool-integrated reasoning (`++code_execution=true`, in the overrides or the --config file): the
    generation program runs the model's code in a sandbox, which the job then hosts."""
    value = overrides_to_dict(overrides).get("code_execution", (base_config(spec) or {}).get("code_execution"))
    return str(value).lower() == "true"  # the typed config rejects anything but a boolean later


def merge_job(spec: GenerateSpec, cluster: ClusterConfig, output_file: str, seed: int | None, after: list[str]) -> Job:
    merge = quote_argv([cluster.python_executable, "-m", "skills_cli.inference.merge_chunks",
                        "--output_file", output_file, "--num_chunks", str(spec.num_chunks)])  # fmt: skip
    name = "merge" + (f"-rs{seed}" if seed is not None else "")
    samples = log_samples_step(spec, cluster, output_file, seed)
    command = Command(argv=("bash", "-c", chained(merge, samples, spec.postprocess_cmd)), container=spec.container)
    return Job(name=name, commands=(command,), resources=Resources(time_limit=spec.time,
               partition=spec.partition), after=tuple(after))  # fmt: skip


def launch_stamps(spec: GenerateSpec, cluster: ClusterConfig, output: str, seed: int | None,
                  overrides: list[str]) -> dict[int | None, str]:  # fmt: skip
    """The stamp the generation program records in `.done` for each chunk's output (its argv after `-m MODULE`),
    when jobs run here and so can be skipped at submission."""
    if not cluster.jobs_see_local_paths:
        return {}
    python = cluster.python_executable
    return {chunk: resume.launch_stamp(client_argv(python, spec, Outputs.of(output, seed, chunk), overrides)[3:])
            for chunk in spec.every_chunk}  # fmt: skip


def is_done_locally(cluster: ClusterConfig, output_file: str, rerun: bool, stamps: list[str | None]) -> bool:
    """A finished output is skipped at submission on this machine only when it was made by the same command
    line from the same input (its launch stamps); otherwise the job runs and compares every sample itself."""
    marker = Path(done_marker(output_file))
    if not cluster.jobs_see_local_paths or rerun or not marker.is_file():
        return False
    recorded = resume.read_marker(marker) or {}
    return recorded.get("stamps", [recorded.get("stamp")]) == stamps


def seed_jobs(spec: GenerateSpec, overrides: list[str], cluster: ClusterConfig, seed: int | None) -> list[Job]:
    """One seed's generation jobs (one per unfinished chunk) and, with chunks, the merge job after them."""
    output = spec.output_file(seed)
    stamps = launch_stamps(spec, cluster, output, seed, overrides)
    if is_done_locally(cluster, output, spec.rerun_done, list(stamps.values())):
        log.info("skipping %s: already complete for this input and these settings (--rerun_done to redo it)", output)
        return []
    chunks = spec.chunks()
    jobs = []
    for chunk in chunks:
        out = Outputs.of(output, seed, chunk)
        if chunk is not None and is_done_locally(cluster, out.file, spec.rerun_done, [stamps.get(chunk)]):
            continue
        last_step = None if chunk is not None else chained(log_samples_step(spec, cluster, output, seed),
                                                            spec.postprocess_cmd)  # fmt: skip
        jobs.append(generation_job(spec, cluster, out, overrides, last_step))
    if chunks != [None]:
        jobs.append(merge_job(spec, cluster, output, seed, [job.name for job in jobs]))
    return jobs


def compile_generate(spec: GenerateSpec, overrides: list[str], cluster: ClusterConfig) -> list[Job]:
    """ns generate's job builder (ns eval's too): for every seed, its chunks' jobs and their merge."""
    spec.chunks()  # a bad --chunk_ids is an error even when every output is complete
    return [job for seed in spec.seeds for job in seed_jobs(spec, overrides, cluster, seed)]


def check_local_inputs(spec: GenerateSpec, cluster: ClusterConfig, config: GenerateConfig | None) -> None:
    """Bare local jobs see this machine's files: a missing or unusable input is an error now, not in the job."""
    if not cluster.jobs_see_local_paths:
        return  # elsewhere: the job checks its files when it starts
    check_output_dir(spec.output_dir, "--output_dir")
    if spec.model and not spec.server_address:
        check_model_dir(spec.model, "--model")
    if config is not None and (Path(config.prompt_config).exists() or not spec.run_after):
        from skills_cli.prompts.prompt_config import load_prompt_config

        # a packaged name, or a YAML file here (not a folder, not binary); few-shot rows from the input's folder
        load_prompt_config(config.prompt_config, data_dir=Path(spec.input_file).parent)
    if spec.run_after:
        return  # the input may be produced by an upstream experiment: the job checks it when it starts
    rows = check_jsonl_file(spec.input_file, "--input_file")
    if spec.num_chunks > rows:
        raise UserError(f"--num_chunks {spec.num_chunks} is larger than the {rows} rows of {spec.input_file}")


def check_server_options(server: ServerOptions, prefix: str = "") -> None:
    """With a running server (--server_address) the hosting options would be silently ignored: refuse them.
    `--model` stays allowed: it is the model name sent to that server (as with NeMo-Skills' openai type)."""
    if not server.server_address:
        return
    hosting = ServerOptions()  # the defaults: nothing asked of a hosted server
    given = [name for name in ("server_gpus", "server_nodes", "server_args")
             if getattr(server, name) != getattr(hosting, name)]  # fmt: skip
    if given:
        raise UserError(f"--{prefix}{given[0]} is for hosting a server; --{prefix}server_address uses a running one "
                        "(give one or the other)")  # fmt: skip


def check_server_address(address: str, cluster: ClusterConfig) -> None:
    """From this machine the address must answer (a Slurm compute node may see other hosts: not checked)."""
    if cluster.runs_remotely:
        return
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{address.rstrip('/')}/models", timeout=10)
    except urllib.error.HTTPError:
        return  # it answered (e.g. 401 without a key): reachable
    except (urllib.error.URLError, OSError) as error:
        raise UserError(f"--server_address {address}: not reachable ({getattr(error, 'reason', error)})") from None


def require_a_server(server: ServerOptions, command: str) -> None:
    """A generation needs a server: one to host (--model) or a running one (--server_address)."""
    if server.server_address is None and not server.model:
        raise UserError(f"{command}: give --model (a self-hosted server) or --server_address (a running one)")


def generate_impl(extra: WrappedArguments, spec: GenerateSpec) -> Submission:
    ensure_log_dir_is_absolute(spec.log_dir)
    overrides = list(extra.args)
    config = validate_overrides(overrides, spec)
    check_server_options(spec)
    require_a_server(spec, "generate")
    if spec.server_type == "openai" and not spec.server_address:
        raise UserError("generate: --server_type openai needs --server_address")
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    # the API key's variable travels to the jobs like the cluster's env_vars (never in a file)
    cluster = forward_key_variable(cluster, spec.server_type, overrides, base_config(spec))
    check_client_partition(spec, cluster)
    check_local_inputs(spec, cluster, config)
    if spec.server_address:
        check_server_address(spec.server_address, cluster)
    jobs = compile_generate(spec, overrides, cluster)
    options = submit_options(spec, default_expname="generate")
    if not jobs:
        log.info("every output of %s is already complete; nothing submitted", options.expname)
        return Submission(expname=options.expname, cluster=cluster.name)
    return submit_jobs(jobs, cluster, options)


GENERATE = CommandSpec(
    name="generate",
    help="Generate with an LLM over a JSONL file (self-hosted server or --server_address); ++key=value "
    "overrides configure the generation program (e.g. ++prompt_config=generic/math ++inference.temperature=0.6).",
    spec_type=GenerateSpec,
    impl=generate_impl,
    extra_args="++key=value overrides of the generation program",
)
