"""Typed DPO configuration (torch-free): what `++key=value` overrides of `ns train dpo` are checked against.

Key names follow NeMo-RL's `dpo.yaml` (`dpo.reference_policy_kl_penalty` is beta, `dpo.preference_average_log_probs`,
`dpo.preference_loss_weight`, `dpo.sft_loss_weight`, `dpo.max_num_epochs`, `dpo.max_num_steps`, `dpo.val_period`,
...); the variants NeMo-RL lacks take TRL's names (`dpo.label_smoothing`, `dpo.simpo_gamma`). The global batch
counts pairs (NeMo-RL: the model sees twice as many sequences). `PairLoopConfig` is shared with the reward-model
trainer (`algorithms/rm`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded
from skills_cli.training.components.preferences import PreferenceDataConfig
from skills_cli.training.config import DTensorConfig, PolicyConfig, ReferenceConfig, TrainerConfig


@dataclass(frozen=True)
class PairLoopConfig:
    """The loop of a trainer on preference pairs (NeMo-RL's `dpo.*` / `rm.*` loop keys)."""

    max_num_epochs: int = bounded(1, ge=1)
    max_num_steps: int | None = bounded(None, ge=1)  # stop earlier than the epochs allow
    val_period: int = bounded(0, ge=0)  # validation every N steps (0: never)
    val_batches: int = bounded(8, ge=1)
    val_global_batch_size: int | None = bounded(None, ge=1)  # pairs per validation batch (null: the training one)
    val_at_start: bool = False
    seed: int = bounded(42, ge=0)


@dataclass(frozen=True)
class DPOLoopConfig(PairLoopConfig):
    reference_policy_kl_penalty: float = bounded(0.05, gt=0)  # beta
    preference_loss: Literal["dpo", "ipo", "simpo"] = "dpo"
    preference_average_log_probs: bool = False  # a sequence's log-probability is its per-token mean, not its sum
    sft_average_log_probs: bool | None = None  # the SFT term's (null: as preference_average_log_probs)
    preference_loss_weight: float = bounded(1.0, ge=0)
    sft_loss_weight: float = bounded(0.0, ge=0)  # NLL of the chosen completion added to the loss
    label_smoothing: float = bounded(0.0, ge=0, le=0.5)  # conservative DPO: the labels are flipped with this rate
    simpo_gamma: float = bounded(0.5, ge=0)  # SimPO's target margin (in reward units)
    reference_logprobs: Literal["precomputed", "on_the_fly"] = "precomputed"

    def __post_init__(self) -> None:
        if self.preference_loss_weight == 0 and self.sft_loss_weight == 0:
            raise UserError("dpo.preference_loss_weight and dpo.sft_loss_weight are both 0: nothing to train")
        if self.label_smoothing == 0.5:
            raise UserError("dpo.label_smoothing=0.5 makes every pair a coin flip: nothing to learn (use < 0.5)")
        if self.preference_loss == "ipo" and self.label_smoothing:
            raise UserError("dpo.label_smoothing applies to the dpo and simpo losses, not to ipo")


@dataclass(frozen=True)
class DPOPolicyConfig(PolicyConfig):
    # on one GPU the decoder stack compiles as one graph (bench/dpo_step.py: 0.73 s against 0.88 s a step per layer
    # on an H100, for ~100 s more compilation at the start); ignored with several ranks (components/parallel.py)
    dtensor_cfg: DTensorConfig = field(default_factory=lambda: DTensorConfig(compile_scope="stack"))


@dataclass(frozen=True)
class DPOConfig(TrainerConfig):
    dpo: DPOLoopConfig = field(default_factory=DPOLoopConfig)
    policy: DPOPolicyConfig = field(default_factory=DPOPolicyConfig)
    data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)  # with dpo.reference_logprobs=on_the_fly
