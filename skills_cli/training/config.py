"""The typed config sections every trainer shares (torch-free): policy, optimizer, scheduler, parallelism, LoRA,
checkpointing, logging, and `TrainerConfig`, the base of each algorithm's config.

Key names follow NeMo-RL's (`++policy.train_global_batch_size=32 ++policy.max_total_sequence_length=8192
++policy.optimizer.kwargs.lr=1e-5 ++policy.dtensor_cfg.tensor_parallel_size=8 ++checkpointing.save_period=100`),
so seed commands carry over unchanged. The algorithms' own sections live next to them
(`training/algorithms/<name>/config.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded


@dataclass(frozen=True)
class OptimizerKwargs:
    lr: float = bounded(5e-6, gt=0)
    weight_decay: float = bounded(0.1, ge=0)
    betas: list[float] = bounded(default_factory=lambda: [0.9, 0.98], ge=0, le=1)
    eps: float = bounded(1e-8, gt=0)


@dataclass(frozen=True)
class OptimizerConfig:
    name: Literal["adamw"] = "adamw"
    kwargs: OptimizerKwargs = field(default_factory=OptimizerKwargs)


@dataclass(frozen=True)
class SchedulerConfig:
    name: Literal["cosine", "constant", "linear"] = "constant"
    warmup_steps: int = bounded(0, ge=0)
    min_lr_ratio: float = bounded(0.0, ge=0, le=1)  # cosine/linear decay floor, as a fraction of lr


@dataclass(frozen=True)
class DTensorConfig:
    enabled: bool = True
    tensor_parallel_size: int = bounded(1, ge=1)
    sequence_parallel: bool = False
    activation_checkpointing: bool = False
    cpu_offload: bool = False
    # torch.compile's unit on GPUs: "layers" compiles each decoder layer, each an FSDP unit; "stack" (one data-
    # parallel rank, no tensor parallelism, CPU offload, activation checkpointing or LoRA; else "layers") makes
    # the whole model one FSDP unit and compiles the decoder stack as one graph: one compiled call and one compiled
    # backward a micro-batch instead of one per layer, for a longer first compilation (parallel.apply_fsdp)
    compile_scope: Literal["layers", "stack"] = "layers"


@dataclass(frozen=True)
class MegatronConfig:
    enabled: bool = False
    tensor_model_parallel_size: int = bounded(1, ge=1)
    pipeline_model_parallel_size: int = bounded(1, ge=1)
    use_distributed_optimizer: bool = True
    activation_checkpointing: bool = False


@dataclass(frozen=True)
class LoRAConfig:
    """LoRA adapters (dtensor backend): NeMo-RL's `policy.lora_cfg` keys."""

    enabled: bool = False
    dim: int = 8  # rank
    alpha: float = bounded(32.0, gt=0)  # the update is scaled by alpha / dim
    dropout: float = bounded(0.0, ge=0, le=0.99)
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])  # fmt: skip

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise UserError("policy.lora_cfg.dim must be >= 1")


@dataclass(frozen=True)
class SequencePackingConfig:
    enabled: bool = False
    algorithm: Literal["first_fit_decreasing"] = "first_fit_decreasing"


@dataclass(frozen=True)
class PolicyConfig:
    model_name: str = ""
    tokenizer: str | None = None  # default: model_name
    train_global_batch_size: int = 32
    train_micro_batch_size: int = 1
    max_total_sequence_length: int = 4096
    precision: Literal["bfloat16", "float32"] = "bfloat16"
    max_grad_norm: float | None = bounded(1.0, gt=0, also=(0,), why="0 or null: no clipping")
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    dtensor_cfg: DTensorConfig = field(default_factory=DTensorConfig)
    megatron_cfg: MegatronConfig = field(default_factory=MegatronConfig)
    sequence_packing: SequencePackingConfig = field(default_factory=SequencePackingConfig)
    lora_cfg: LoRAConfig = field(default_factory=LoRAConfig)

    @property
    def pack_capacity(self) -> int | None:
        """Tokens per packed row with sequence packing on, else None (padded micro-batches)."""
        return self.max_total_sequence_length if self.sequence_packing.enabled else None

    def __post_init__(self) -> None:
        for name in ("train_global_batch_size", "train_micro_batch_size", "max_total_sequence_length"):
            if getattr(self, name) < 1:
                raise UserError(f"policy.{name} must be >= 1")


@dataclass(frozen=True)
class DataConfig:
    """Chat-format JSONL data (SFT's, and any trainer that learns from conversations)."""

    train_data: str = ""
    val_data: str | None = None
    messages_key: str = "messages"  # chat format: a list of {role, content}
    input_key: str = "input"  # or a prompt/response pair
    output_key: str = "output"


@dataclass(frozen=True)
class ReferenceConfig:
    """The frozen reference policy beside the trained one (GRPO's and PPO's KL, DPO's on-the-fly reference)."""

    # false: the whole reference on every rank (the fastest forward, for a model that fits one device beside the
    # policy); true: FSDP-sharded over the data-parallel ranks, each holding 1/DP of it and gathering one layer at
    # a time for each forward (components/frozen.py), for models whose second copy does not fit
    sharded: bool = False


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = True
    checkpoint_dir: str = ""
    save_period: int = bounded(100, ge=1)
    keep_last_k: int | None = bounded(3, ge=1, why="null keeps every checkpoint")  # null: keep them all
    # save this long before $SKILLS_CLI_DEADLINE (the job's time limit)
    save_before_deadline_seconds: int = bounded(900, ge=0)


@dataclass(frozen=True)
class TrackerConfig:
    project: str = "skills-cli"
    name: str | None = None


@dataclass(frozen=True)
class WandbConfig(TrackerConfig):
    # null: WANDB_MODE from the environment, else wandb's default (online)
    mode: Literal["online", "offline", "disabled", "shared"] | None = None


@dataclass(frozen=True)
class SwanlabConfig(TrackerConfig):
    # null: SWANLAB_MODE from the environment, else swanlab's default (cloud)
    mode: Literal["cloud", "local", "offline", "disabled"] | None = None


@dataclass(frozen=True)
class LoggerConfig:
    log_dir: str = ""
    wandb_enabled: bool = False
    swanlab_enabled: bool = False
    tensorboard_enabled: bool = False
    wandb: WandbConfig = field(default_factory=WandbConfig)
    swanlab: SwanlabConfig = field(default_factory=SwanlabConfig)


@dataclass(frozen=True)
class TrainerConfig:
    """The sections every trainer has (what `training/trainer.py` reads); an algorithm's config extends it with
    its own loop section, `policy` and `data`."""

    backend: Literal["dtensor", "megatron"] = "dtensor"
    checkpointing: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    output_dir: str = ""
    final_hf_path: str | None = None


def check_parallel_layout(config, world_size: int) -> int:
    """The data-parallel size; a global batch it cannot split evenly is an error naming the valid values."""
    tp = config.policy.dtensor_cfg.tensor_parallel_size if config.backend == "dtensor" else (
        config.policy.megatron_cfg.tensor_model_parallel_size * config.policy.megatron_cfg.pipeline_model_parallel_size)  # fmt: skip
    if tp < 1 or world_size % tp:
        raise UserError(f"{world_size} GPUs cannot be split into model-parallel groups of {tp}")
    dp = world_size // tp
    micro, global_batch = config.policy.train_micro_batch_size, config.policy.train_global_batch_size
    if global_batch % (micro * dp):
        valid = [m for m in range(1, global_batch + 1) if global_batch % (m * dp) == 0]
        raise UserError(
            f"policy.train_global_batch_size={global_batch} is not divisible by train_micro_batch_size={micro} x "
            f"data-parallel size {dp}; valid micro-batch sizes: {', '.join(map(str, valid)) or 'none (change the global batch)'}"
        )
    return dp
