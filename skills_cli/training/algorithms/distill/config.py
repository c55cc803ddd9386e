"""Typed on-policy distillation configuration (torch-free): what `++key=value` overrides of `ns train distill` are
checked against.

Key names follow NeMo-RL's `distillation_math.yaml`: `distillation.num_prompts_per_step`,
`distillation.num_generations_per_prompt`, `distillation.topk_logits_k`, `loss_fn.kl_type` (forward, reverse,
mixed), `loss_fn.mixed_kl_weight`, `loss_fn.zero_outside_topk`, and a `teacher` section naming the frozen
teacher (`teacher.model_name`). The `policy` (the student), `data` and `logger` sections are GRPO's: the same
problems JSONL and prompt config, the same rollout engine settings (`policy.generation.*`). Defaults follow
NeMo-RL except where said (`loss_fn.kl_type` is `reverse` and `distillation.topk_logits_k` null, the exact KL
over the whole vocabulary; NeMo-RL's example uses `mixed` and 64).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from skills_cli.common.typed_config import bounded
from skills_cli.training.algorithms.grpo.config import (
    GRPODataConfig,
    GRPOLoggerConfig,
    GRPOPolicyConfig,
    MathEnvConfig,
    OnPolicyConfig,
    check_grpo_layout,
)
from skills_cli.training.config import CheckpointConfig, TrainerConfig


@dataclass(frozen=True)
class DistillationLoopConfig:
    num_prompts_per_step: int = bounded(128, ge=1)
    num_generations_per_prompt: int = bounded(1, ge=1)  # no group baseline here: one sample per prompt is enough
    max_num_steps: int = bounded(1000, ge=1)
    max_num_epochs: int = bounded(10, ge=1)
    # null: the KL over the whole vocabulary; k: over the teacher's k most likely tokens at each position (NeMo-RL)
    topk_logits_k: int | None = bounded(None, ge=1, why="null: the whole vocabulary")
    val_period: int = bounded(0, ge=0)  # pass@1 on data.val_data every N steps (0: never)
    val_at_start: bool = False
    max_val_samples: int = bounded(512, ge=1)
    seed: int = bounded(42, ge=0)
    overlong_filtering: bool = False  # truncated responses train nothing (loss multiplier 0)


@dataclass(frozen=True)
class DistillationLossConfig:
    # reverse: KL(student || teacher), mode seeking (on-policy distillation's usual choice); forward: KL(teacher ||
    # student); mixed: mixed_kl_weight x forward + (1 - mixed_kl_weight) x reverse
    kl_type: Literal["forward", "reverse", "mixed"] = "reverse"
    mixed_kl_weight: float = bounded(0.5, ge=0, le=1)
    # with topk_logits_k: false renormalizes both distributions over the teacher's top k tokens; true keeps the
    # student's full-vocabulary probabilities and counts its mass outside the top k against a teacher of ~0 there
    zero_outside_topk: bool = False


@dataclass(frozen=True)
class TeacherConfig:
    """The frozen teacher: an HF causal LM with the student's vocabulary (token ids are compared one to one)."""

    model_name: str = ""
    # false: the whole teacher on every rank (the fastest forward, for a teacher that fits one device beside the
    # student); true: FSDP-sharded over the data-parallel ranks (each holds 1/DP of its weights and gathers one
    # layer at a time for each forward), for a teacher larger than a device's share; either backend
    sharded: bool = False


@dataclass(frozen=True)
class DistillPolicyConfig(GRPOPolicyConfig):
    train_global_batch_size: int = 64  # NeMo-RL's: two optimizer steps per 128-prompt rollout batch


@dataclass(frozen=True)
class DistillEnvConfig:
    """How the samples' math reward is graded: a diagnostic only (`train/reward`), never part of the loss."""

    math: MathEnvConfig = field(default_factory=MathEnvConfig)


@dataclass(frozen=True)
class DistillConfig(OnPolicyConfig, TrainerConfig):
    loop_section: ClassVar[str] = "distillation"

    distillation: DistillationLoopConfig = field(default_factory=DistillationLoopConfig)
    loss_fn: DistillationLossConfig = field(default_factory=DistillationLossConfig)
    policy: DistillPolicyConfig = field(default_factory=DistillPolicyConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    env: DistillEnvConfig = field(default_factory=DistillEnvConfig)
    checkpointing: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(save_period=10))
    logger: GRPOLoggerConfig = field(default_factory=GRPOLoggerConfig)


def check_distill_layout(config: DistillConfig, world_size: int) -> int:
    """The data-parallel size, after GRPO's checks that rollouts split evenly into optimizer steps and ranks."""
    return check_grpo_layout(config, world_size)
