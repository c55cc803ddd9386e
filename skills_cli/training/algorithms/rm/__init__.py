"""Reward models (Bradley-Terry, a scalar head on a causal LM): config (torch-free, checked by `ns train rm`),
the loss and the trainer (`python -m` this package), on the preference-pair loop of `algorithms/dpo/pairs.py`."""

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.rm.config import RMConfig
from skills_cli.training.config import check_parallel_layout

ALGORITHMS.register(
    Algorithm(
        name="rm",
        config_class=RMConfig,
        check_layout=check_parallel_layout,
        module=__name__,
        help="Reward model (Bradley-Terry on preference pairs, a scalar head on a causal LM; exports an HF "
        "AutoModelForSequenceClassification) as a torchrun job; ++key=value use NeMo-RL's rm.yaml loop names "
        "(++rm.max_num_epochs, ++rm.val_period, ...) and TRL's RewardTrainer options (++rm.center_rewards_coefficient).",
    )
)
