"""`ns train sft` and `ns train grpo` (also `ns nemo_rl sft|grpo`, seed 003's spelling) as torchrun jobs.

    ns train sft --backend dtensor --hf_model /workspace/Qwen2.5-14B-Instruct --training_data /workspace/sft.jsonl \
        --output_dir /workspace/training --num_nodes 1 --num_gpus 8 --final_hf_path /workspace/improved-hf \
        ++sft.max_num_epochs=4 ++policy.train_global_batch_size=32 ++policy.max_total_sequence_length=8192 \
        ++policy.optimizer.kwargs.lr=1e-5 ++policy.dtensor_cfg.tensor_parallel_size=8

The `++` overrides are checked against the trainer's typed config before submission, together with the
parallel layout (global batch vs micro-batch x data-parallel size, tensor parallel vs attention heads when the
model's config is readable here). Multi-node jobs start one torchrun per node with a c10d rendezvous on the
first node. With `--dependent_jobs N` each copy resumes from the latest checkpoint.

GRPO takes the same options; its `++` keys are NeMo-RL's grpo_math names (`++grpo.num_prompts_per_step=32
++grpo.num_generations_per_prompt=16 ++loss_fn.use_importance_sampling_correction=true`), and the rollout
batch is checked against the global batch and the data-parallel size before submission.
"""

from __future__ import annotations

import json
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.common.typed_config import Bounds
from skills_cli.inference.model_files import tokenizer_problem
from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.local_files import check_jsonl_file, check_output_dir
from skills_cli.pipeline.options import PARTITION, SUBMIT_OPTIONS, TIME, CommandSpec, Option, WrappedArguments
from skills_cli.pipeline.render import HEAD_NODE_ENV
from skills_cli.pipeline.shell import Raw, quote_argv
from skills_cli.training.config import SFTConfig, check_parallel_layout
from skills_cli.training.grpo_config import GRPOConfig, check_grpo_layout

RENDEZVOUS_PORT = 29500

TRAIN_SFT_OPTIONS = (
    Option("backend", str, "dtensor", "Policy backend.", choices=("dtensor", "megatron")),
    Option("hf_model", str, ..., "Hugging Face model folder (weights + tokenizer) to start from."),
    Option("training_data", str, ..., "JSONL: SFT rows with `messages` or `input`/`output`; GRPO problems with "
           "`problem` and `expected_answer`."),
    Option("validation_data", str | None, None, "Validation JSONL (validation loss every ++sft.val_period steps)."),
    Option("output_dir", str, ..., "Checkpoints, logs and metrics go here."),
    Option("final_hf_path", str | None, None, "Export the final model (safetensors + tokenizer) here."),
    Option("num_nodes", int, 1, "Nodes.", panel="Resources", bounds=Bounds(ge=1)),
    Option("num_gpus", int, 0, "GPUs per node (0: one CPU process).", panel="Resources", bounds=Bounds(ge=0)),
    Option("container", str, "main", "Container role.", panel="Resources"),
    Option("cache_dir", str | None, None, "HF cache folder for the job (sets HF_HOME)."),
    Option("wandb_project", str | None, None, "Log to wandb (WANDB_MODE applies) in this project."),
    Option("wandb_name", str | None, None, "wandb/swanlab run name (default: the experiment name)."),
    Option("swanlab_project", str | None, None, "Log to SwanLab (SWANLAB_MODE applies) in this project."),
    Option("disable_wandb", bool, False, "Never log to wandb, whatever the overrides say."),
    *SUBMIT_OPTIONS,
    PARTITION,
    TIME,
)


def launcher_overrides(values: dict) -> list[str]:
    """What the launcher sets; the user's `++` overrides come after and may refine, not contradict, these."""
    out = values["output_dir"]
    args = [f"++backend={values['backend']}", f"++policy.model_name={values['hf_model']}",
            f"++data.train_data={values['training_data']}", f"++output_dir={out}",
            f"++checkpointing.checkpoint_dir={out}/checkpoints", f"++logger.log_dir={out}/logs"]  # fmt: skip
    if values["validation_data"]:
        args.append(f"++data.val_data={values['validation_data']}")
    if values["final_hf_path"]:
        args.append(f"++final_hf_path={values['final_hf_path']}")
    name = values["wandb_name"] or values["expname"] or values.get("algorithm", "sft")
    if values["wandb_project"] and not values["disable_wandb"]:
        args += ["++logger.wandb_enabled=true", f"++logger.wandb.project={values['wandb_project']}",
                 f"++logger.wandb.name={name}"]  # fmt: skip
    if values["swanlab_project"]:
        args += ["++logger.swanlab_enabled=true", f"++logger.swanlab.project={values['swanlab_project']}",
                 f"++logger.swanlab.name={name}"]  # fmt: skip
    if values["backend"] == "megatron":
        args += ["++policy.dtensor_cfg.enabled=false", "++policy.megatron_cfg.enabled=true"]
    return args


def check_model(values: dict, config: SFTConfig, cluster: ClusterConfig) -> None:
    """What this machine can see of the model: existence (bare local jobs whose inputs no --run_after upstream
    makes) and heads vs tensor parallelism."""
    path = Path(values["hf_model"])
    local = cluster.executor is ExecutorKind.NONE and not values.get("run_after")
    if local and not (path / "config.json").is_file():
        raise UserError(f"--hf_model {path}: no Hugging Face model there (config.json missing)")
    if not (path / "config.json").is_file():
        return
    model = json.loads((path / "config.json").read_text())
    tp = (config.policy.dtensor_cfg.tensor_parallel_size if config.backend == "dtensor"
          else config.policy.megatron_cfg.tensor_model_parallel_size)  # fmt: skip
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = model.get(key)
        if heads and heads % tp:
            raise UserError(f"tensor parallel size {tp} does not divide {key}={heads} of {path}")
    tokenizer_dir = config.policy.tokenizer or str(path)
    problem = tokenizer_problem(tokenizer_dir) if local or tokenizer_dir == str(path) else None
    if problem:
        raise UserError(f"--hf_model {path}: {problem}; save the tokenizer with the model or set ++policy.tokenizer")
    if local:  # a folder, binary, empty or JSON-array file fails here, not in the job after submission
        check_jsonl_file(values["training_data"], "--training_data")
        if values["validation_data"]:
            check_jsonl_file(values["validation_data"], "--validation_data")
        check_output_dir(values["output_dir"], "--output_dir")


def torchrun_script(values: dict, cluster: ClusterConfig, overrides: list[str], module: str = "skills_cli.training.sft") -> str:
    nodes, gpus = values["num_nodes"], values["num_gpus"]
    argv = [cluster.python_executable, "-m", "torch.distributed.run", f"--nproc_per_node={max(gpus, 1)}"]
    if nodes > 1:
        argv += [f"--nnodes={nodes}", Raw('--node_rank="$SLURM_NODEID"'), "--rdzv_backend=c10d",
                 Raw(f'--rdzv_endpoint="${HEAD_NODE_ENV}:{RENDEZVOUS_PORT}"'), Raw('--rdzv_id="$SLURM_JOB_ID"')]  # fmt: skip
    else:
        argv.append("--standalone")
    argv += ["-m", module, *launcher_overrides(values), *overrides]
    return quote_argv(argv)


def _train_impl(algorithm: str, extra: WrappedArguments, values: dict) -> Submission:
    """Validate the trainer's config and layout here, then submit one torchrun job named after the algorithm."""
    ensure_log_dir_is_absolute(values["log_dir"])
    values = {**values, "algorithm": algorithm}
    overrides = list(extra.args)
    if values["disable_wandb"]:
        overrides.append("++logger.wandb_enabled=false")  # last, so it wins over the user's overrides
    launcher = launcher_overrides(values)
    config_class, check_layout = (SFTConfig, check_parallel_layout) if algorithm == "sft" else (GRPOConfig, check_grpo_layout)
    config = load_config(config_class, [*launcher, *overrides], where=f"train {algorithm}")
    if config.backend != values["backend"]:
        raise UserError(f"train {algorithm}: choose the backend with --backend, not ++backend")
    cluster = load_cluster_config(values["cluster"], values["config_dir"])
    check_layout(config, values["num_nodes"] * max(values["num_gpus"], 1))
    check_model(values, config, cluster)
    env = {"HF_HOME": values["cache_dir"]} if values["cache_dir"] else {}
    script = torchrun_script(values, cluster, overrides, module=f"skills_cli.training.{algorithm}")
    container = values["container"]
    if algorithm == "grpo" and config.policy.generation.backend == "vllm" and container == "main":
        container = "vllm"  # colocated vLLM rollouts run in-process: the job needs the vLLM image
    command = Command(argv=("bash", "-c", script), container=container, gpus=values["num_gpus"])
    job = Job(name=algorithm, commands=(command,), env=env,
              resources=Resources(nodes=values["num_nodes"], gpus_per_node=values["num_gpus"],
                                  time_limit=values["time"], partition=values["partition"]))  # fmt: skip
    from skills_cli.pipeline.commands.run_cmd import log_change

    return submit_jobs([job], cluster, submit_options(values, default_expname=algorithm), on_change=log_change)


def train_sft_impl(extra: WrappedArguments, **values) -> Submission:
    return _train_impl("sft", extra, values)


def train_grpo_impl(extra: WrappedArguments, **values) -> Submission:
    return _train_impl("grpo", extra, values)


TRAIN_SFT = CommandSpec(
    name="sft",
    help="Supervised fine-tuning (dtensor/FSDP2 or megatron) as a torchrun job; ++key=value configure the trainer "
    "with NeMo-RL's key names (++sft.max_num_epochs, ++policy.train_global_batch_size, ...).",
    options=TRAIN_SFT_OPTIONS,
    impl=train_sft_impl,
    extra_args="++key=value overrides of the SFT trainer",
    groups=("train", "nemo_rl"),
)


TRAIN_GRPO = CommandSpec(
    name="grpo",
    help="GRPO on math problems (rollouts from our torch engine or colocated vLLM, math-grader reward) as a torchrun "
    "job; ++key=value use NeMo-RL's grpo_math key names (++grpo.num_prompts_per_step, ++loss_fn.*, ...).",
    options=TRAIN_SFT_OPTIONS,
    impl=train_grpo_impl,
    extra_args="++key=value overrides of the GRPO trainer",
    groups=("train", "nemo_rl"),
)
