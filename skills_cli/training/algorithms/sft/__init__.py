"""Supervised fine-tuning: config (torch-free, checked by `ns train sft`), trainer (`python -m` this package)."""

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.sft.config import SFTConfig
from skills_cli.training.config import check_parallel_layout

ALGORITHMS.register(
    Algorithm(
        name="sft",
        config_class=SFTConfig,
        check_layout=check_parallel_layout,
        module=__name__,
        help="Supervised fine-tuning (dtensor/FSDP2 or megatron) as a torchrun job; ++key=value configure the trainer "
        "with NeMo-RL's key names (++sft.max_num_epochs, ++policy.train_global_batch_size, ...).",
    )
)
