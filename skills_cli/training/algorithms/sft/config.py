"""Typed SFT configuration (torch-free): what `++key=value` overrides of `ns train sft` are checked against.

The key names follow NeMo-RL's `sft.yaml` (the NeMo-Skills tutorial passes `++sft.max_num_epochs=4
++policy.train_global_batch_size=32 ++policy.max_total_sequence_length=8192 ++policy.optimizer.kwargs.lr=1e-5
++policy.dtensor_cfg.tensor_parallel_size=8 ++policy.dtensor_cfg.sequence_parallel=true
++policy.dtensor_cfg.activation_checkpointing=true`), so those commands carry over unchanged. The sections
shared with other trainers are in `skills_cli/training/config.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded
from skills_cli.training.config import DataConfig, PolicyConfig, TrainerConfig


@dataclass(frozen=True)
class SFTLoopConfig:
    max_num_epochs: int = bounded(1, ge=1)
    max_num_steps: int | None = bounded(None, ge=1)  # stop earlier than the epochs allow
    val_period: int = bounded(0, ge=0)  # validation loss every N steps (0: never)
    val_batches: int = bounded(8, ge=1)
    val_global_batch_size: int | None = None  # samples per validation batch (null: policy.train_global_batch_size)
    val_at_start: bool = False
    seed: int = bounded(42, ge=0)

    def __post_init__(self) -> None:
        if self.val_global_batch_size is not None and self.val_global_batch_size < 1:
            raise UserError(f"sft.val_global_batch_size={self.val_global_batch_size}: give a positive number of "
                            f"samples (or null)")  # fmt: skip


@dataclass(frozen=True)
class SFTConfig(TrainerConfig):
    sft: SFTLoopConfig = field(default_factory=SFTLoopConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    data: DataConfig = field(default_factory=DataConfig)
