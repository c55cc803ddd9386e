"""Typed reward-model configuration (torch-free): what `++key=value` overrides of `ns train rm` are checked against.

The loop keys are NeMo-RL's `rm.yaml` ones (`rm.max_num_epochs`, `rm.max_num_steps`, `rm.val_period`, ...: the
pair loop shared with DPO, `dpo/config.py`); TRL's RewardTrainer options take TRL's names
(`rm.center_rewards_coefficient`, a per-pair margin column `data.margin_key`). The global batch counts pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skills_cli.common.typed_config import bounded
from skills_cli.training.algorithms.dpo.config import PairLoopConfig
from skills_cli.training.components.preferences import PreferenceDataConfig
from skills_cli.training.config import PolicyConfig, TrainerConfig


@dataclass(frozen=True)
class RMLoopConfig(PairLoopConfig):
    # adds coefficient x (r_chosen + r_rejected)^2 per pair, pulling the scores' mean towards 0 (TRL's option)
    center_rewards_coefficient: float = bounded(0.0, ge=0)


@dataclass(frozen=True)
class RMDataConfig(PreferenceDataConfig):
    margin_key: str | None = None  # row field of a margin the chosen score must beat the rejected one by


@dataclass(frozen=True)
class RMConfig(TrainerConfig):
    rm: RMLoopConfig = field(default_factory=RMLoopConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: RMDataConfig = field(default_factory=RMDataConfig)
