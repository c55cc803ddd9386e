"""Reward models (Bradley-Terry, a scalar head on a causal LM): config (torch-free, checked by `ns train rm`),
the loss and the trainer (`python -m` this package), on the preference-pair loop of `algorithms/dpo/pairs.py`."""

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.rm.config import RMConfig
from skills_cli.training.config import check_parallel_layout


def check_rm_layout(config: RMConfig, world_size: int) -> int:
    """The scalar head trains on the dtensor backend only; then the shared layout check."""
    if config.backend != "dtensor":
        raise UserError("a reward model trains on backend=dtensor only (its scalar head); use --backend dtensor")
    return check_parallel_layout(config, world_size)


ALGORITHMS.register(
    Algorithm(
        name="rm",
        config_class=RMConfig,
        check_layout=check_rm_layout,
        module=__name__,
        help="Reward model (Bradley-Terry on preference pairs, a scalar head on a causal LM; exports an HF "
        "AutoModelForSequenceClassification) as a torchrun job; ++key=value use NeMo-RL's rm.yaml loop names "
        "(++rm.max_num_epochs, ++rm.val_period, ...) and TRL's RewardTrainer options (++rm.center_rewards_coefficient).",
    )
)
