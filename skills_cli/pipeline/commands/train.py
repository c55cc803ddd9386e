"""`ns train <algorithm>` (also `ns nemo_rl <algorithm>`, the NeMo-Skills OpenMathReasoning tutorial's spelling) as torchrun jobs, one command per
registered training algorithm (`skills_cli/training/algorithms`: sft, grpo, and any a plugin adds).

    ns train sft --backend dtensor --hf_model /workspace/Qwen2.5-14B-Instruct --training_data /workspace/sft.jsonl \
        --output_dir /workspace/training --num_nodes 1 --num_gpus 8 --final_hf_path /workspace/improved-hf \
        ++sft.max_num_epochs=4 ++policy.train_global_batch_size=32 ++policy.max_total_sequence_length=8192 \
        ++policy.optimizer.kwargs.lr=1e-5 ++policy.dtensor_cfg.tensor_parallel_size=8

The `++` overrides are checked against the algorithm's typed config before submission, together with its
parallel layout (global batch vs micro-batch x data-parallel size; for GRPO the rollout batch too), and
tensor parallel vs attention heads when the model's config is readable here (when it is not, one info line
says it was not checked). Multi-node jobs start one torchrun per node with a c10d rendezvous on the first
node. With `--dependent_jobs N` each copy resumes from the latest checkpoint.

GRPO takes the same options; its `++` keys are NeMo-RL's grpo_math names (`++grpo.num_prompts_per_step=32
++grpo.num_generations_per_prompt=16 ++loss_fn.use_importance_sampling_correction=true`).
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.node_rendezvous import HOST_PLACEHOLDER, NODE_PLACEHOLDER, PORT_PLACEHOLDER
from skills_cli.common.overrides import load_config
from skills_cli.common.typed_config import Bounds
from skills_cli.inference.model_files import tokenizer_problem
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_jsonl_file, check_output_dir
from skills_cli.pipeline.options import CommandSpec, QueuedSpec, WrappedArguments, option
from skills_cli.pipeline.shell import Raw, quote_argv
from skills_cli.training.algorithms import ALGORITHMS, Algorithm

log = logging.getLogger("skills_cli")
# filled in on each node by node_rendezvous; plain shell text (no comma or `..`, so bash expands no braces)
RENDEZVOUS_ENDPOINT = f"{HOST_PLACEHOLDER}:{PORT_PLACEHOLDER}"


@dataclass(frozen=True, kw_only=True)
class TrainSpec(QueuedSpec):
    backend: str = option("dtensor", "Policy backend.", choices=("dtensor", "megatron"))
    hf_model: str = option(..., "Hugging Face model folder (weights + tokenizer) to start from.")
    training_data: str = option(..., "JSONL: SFT rows with `messages` or `input`/`output`; GRPO, PPO and distill "
                                "problems with `problem` and `expected_answer`; DPO and RM pairs with `prompt`, "
                                "`chosen` and `rejected`.")  # fmt: skip
    validation_data: str | None = option(None, "Validation JSONL in --training_data's format, evaluated every "
                                             "++<algorithm>.val_period steps.")  # fmt: skip
    output_dir: str = option(..., "Checkpoints, logs and metrics go here.")
    final_hf_path: str | None = option(None, "Export the final model (safetensors + tokenizer) here.")
    num_nodes: int = option(1, "Nodes.", panel="Resources", bounds=Bounds(ge=1))
    num_gpus: int = option(0, "GPUs per node (0: one CPU process).", panel="Resources", bounds=Bounds(ge=0))
    container: str = option("main", "Container role.", panel="Resources")
    cache_dir: str | None = option(None, "HF cache folder for the job (sets HF_HOME).")
    wandb_project: str | None = option(None, "Log to wandb (WANDB_MODE applies) in this project.")
    wandb_name: str | None = option(None, "wandb/swanlab run name (default: the experiment name).")
    swanlab_project: str | None = option(None, "Log to SwanLab (SWANLAB_MODE applies) in this project.")
    disable_wandb: bool = option(False, "Never log to wandb, whatever the overrides say.")

    @property
    def world_size(self) -> int:
        return self.num_nodes * max(self.num_gpus, 1)


def launcher_overrides(spec: TrainSpec, algorithm: str) -> list[str]:
    """What the launcher sets; the user's `++` overrides come after and may refine, not contradict, these."""
    out = spec.output_dir
    args = [f"++backend={spec.backend}", f"++policy.model_name={spec.hf_model}",
            f"++data.train_data={spec.training_data}", f"++output_dir={out}",
            f"++checkpointing.checkpoint_dir={out}/checkpoints", f"++logger.log_dir={out}/logs"]  # fmt: skip
    if spec.validation_data:
        args.append(f"++data.val_data={spec.validation_data}")
    if spec.final_hf_path:
        args.append(f"++final_hf_path={spec.final_hf_path}")
    return args + tracker_overrides(spec, algorithm) + backend_overrides(spec.backend)


def tracker_overrides(spec: TrainSpec, algorithm: str) -> list[str]:
    name = spec.wandb_name or spec.expname or algorithm
    args = []
    if spec.wandb_project and not spec.disable_wandb:
        args += ["++logger.wandb_enabled=true", f"++logger.wandb.project={spec.wandb_project}",
                 f"++logger.wandb.name={name}"]  # fmt: skip
    if spec.swanlab_project:
        args += ["++logger.swanlab_enabled=true", f"++logger.swanlab.project={spec.swanlab_project}",
                 f"++logger.swanlab.name={name}"]  # fmt: skip
    return args


def backend_overrides(backend: str) -> list[str]:
    return ["++policy.dtensor_cfg.enabled=false", "++policy.megatron_cfg.enabled=true"] if backend == "megatron" else []


def tensor_parallel_size(config) -> int:
    policy = config.policy
    return (
        policy.dtensor_cfg.tensor_parallel_size
        if config.backend == "dtensor"
        else policy.megatron_cfg.tensor_model_parallel_size
    )


def check_heads(path: Path, config) -> None:
    """Tensor parallelism must split the attention heads evenly (when this machine can read the model's config)."""
    if not (path / "config.json").is_file():
        log.info("--hf_model %s: no config.json readable here; tensor parallel size vs attention heads not checked "
                 "before submission", path)  # fmt: skip
        return
    try:
        model = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, OSError):  # being written by an upstream job: the job checks it when it starts
        log.info("--hf_model %s: config.json not readable yet; heads not checked before submission", path)
        return
    tp = tensor_parallel_size(config)
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = model.get(key)
        if heads and heads % tp:
            raise UserError(f"tensor parallel size {tp} does not divide {key}={heads} of {path}")


def check_model(spec: TrainSpec, config, cluster: ClusterConfig) -> None:
    """What this machine can see of the model: existence (bare local jobs whose inputs no --run_after upstream
    makes) and heads vs tensor parallelism."""
    path = Path(spec.hf_model)
    local = cluster.jobs_see_local_paths and not spec.run_after
    if local and not (path / "config.json").is_file():
        raise UserError(f"--hf_model {path}: no Hugging Face model there (config.json missing)")
    check_heads(path, config)
    if not (path / "config.json").is_file():
        return
    tokenizer_dir = config.policy.tokenizer or str(path)
    # with --run_after an upstream job may still be writing the model (config.json first, the tokenizer last:
    # the OpenMath recipe's download job on Slurm was caught half way): its tokenizer is the job's to check
    readable_now = not spec.run_after and (local or tokenizer_dir == str(path))
    problem = tokenizer_problem(tokenizer_dir) if readable_now else None
    if problem:
        raise UserError(f"--hf_model {path}: {problem}; save the tokenizer with the model or set ++policy.tokenizer")
    if local:  # a folder, binary, empty or JSON-array file fails here, not in the job after submission
        check_local_inputs(spec)


def check_local_inputs(spec: TrainSpec) -> None:
    check_jsonl_file(spec.training_data, "--training_data")
    if spec.validation_data:
        check_jsonl_file(spec.validation_data, "--validation_data")
    check_output_dir(spec.output_dir, "--output_dir")


def torchrun_script(spec: TrainSpec, python: str, module: str, arguments: list[str]) -> str:
    """One node's torchrun. Multi-node: behind a bounded rendezvous of the job's nodes (common/node_rendezvous.py)
    that names a node that never joins or does not see --output_dir (checkpoints are written once, read
    everywhere), and gives torchrun a port the head picked, so two jobs sharing a head node do not collide.
    --local_addr: the node's Slurm name, which the others resolve (torchrun's own guess can be "localhost")."""
    nodes, gpus = spec.num_nodes, spec.num_gpus
    argv = [python, "-m", "torch.distributed.run", f"--nproc_per_node={max(gpus, 1)}"]
    if nodes > 1:
        argv = [python, "-m", "skills_cli.common.node_rendezvous", "--shared_dir", spec.output_dir, "--", *argv,
                f"--nnodes={nodes}", Raw('--node_rank="$SLURM_NODEID"'), "--rdzv_backend=c10d",
                Raw(f"--rdzv_endpoint={RENDEZVOUS_ENDPOINT}"), Raw('--rdzv_id="$SLURM_JOB_ID"'),
                Raw(f"--local_addr={NODE_PLACEHOLDER}")]  # fmt: skip
    else:
        argv.append("--standalone")
    argv += ["-m", module, *arguments]
    return quote_argv(argv)


def checked_config(algorithm: Algorithm, spec: TrainSpec, arguments: list[str]):
    """The algorithm's typed config from the launcher's and the user's overrides, with its layout checked."""
    config = load_config(algorithm.config_class, arguments, where=f"train {algorithm.name}")
    if config.backend != spec.backend:
        raise UserError(f"train {algorithm.name}: choose the backend with --backend, not ++backend")
    algorithm.check_layout(config, spec.world_size)
    return config


def train_impl(name: str, extra: WrappedArguments, spec: TrainSpec) -> Submission:
    """Validate the trainer's config and layout here, then submit one torchrun job named after the algorithm."""
    algorithm = ALGORITHMS.get(name)
    ensure_log_dir_is_absolute(spec.log_dir)
    overrides = algorithm.translate_overrides(list(extra.args))
    if spec.disable_wandb:
        overrides.append("++logger.wandb_enabled=false")  # last, so it wins over the user's overrides
    arguments = [*launcher_overrides(spec, name), *overrides]
    config = checked_config(algorithm, spec, arguments)
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    check_model(spec, config, cluster)
    algorithm.check_models(config)
    role = algorithm.container(config, spec.container)
    script = torchrun_script(spec, cluster.python_for(role), algorithm.module, arguments)
    command = Command(argv=("bash", "-c", script), container=role, gpus=spec.num_gpus)
    job = Job(name=name, commands=(command,), env={"HF_HOME": spec.cache_dir} if spec.cache_dir else {},
              resources=Resources(nodes=spec.num_nodes, gpus_per_node=spec.num_gpus, time_limit=spec.time,
                                  partition=spec.partition))  # fmt: skip
    return submit_jobs([job], cluster, submit_options(spec, default_expname=name))


def train_command(algorithm: Algorithm) -> CommandSpec:
    """`ns train <name>` / `ns nemo_rl <name>` of a registered algorithm."""
    return CommandSpec(
        name=algorithm.name,
        help=algorithm.help,
        spec_type=TrainSpec,
        impl=functools.partial(train_impl, algorithm.name),
        extra_args=f"++key=value overrides of the {algorithm.name.upper()} trainer",
        groups=("train", "nemo_rl"),
    )


TRAIN_SFT = train_command(ALGORITHMS.get("sft"))
TRAIN_GRPO = train_command(ALGORITHMS.get("grpo"))
TRAIN_PPO = train_command(ALGORITHMS.get("ppo"))
TRAIN_DPO = train_command(ALGORITHMS.get("dpo"))
TRAIN_RM = train_command(ALGORITHMS.get("rm"))
TRAIN_DISTILL = train_command(ALGORITHMS.get("distill"))


def train_commands() -> tuple[CommandSpec, ...]:
    """One command per registered algorithm: the built-in ones first, then those plugins add, by name."""
    built_in = (TRAIN_SFT, TRAIN_GRPO, TRAIN_PPO, TRAIN_DPO, TRAIN_RM, TRAIN_DISTILL)
    known = {spec.name for spec in built_in}
    return built_in + tuple(train_command(algorithm) for algorithm in ALGORITHMS if algorithm.name not in known)
