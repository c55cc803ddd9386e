"""Direct preference optimization (and IPO, SimPO, conservative DPO): config (torch-free, checked by
`ns train dpo`), the loss, the loop shared with reward models over preference pairs (`pairs.py`), and the trainer
(`python -m` this package)."""

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.dpo.config import DPOConfig
from skills_cli.training.config import check_parallel_layout

ALGORITHMS.register(
    Algorithm(
        name="dpo",
        config_class=DPOConfig,
        check_layout=check_parallel_layout,
        module=__name__,
        help="DPO on preference pairs (prompt, chosen, rejected; IPO, SimPO and label smoothing as options) as a "
        "torchrun job; ++key=value use NeMo-RL's dpo.yaml key names (++dpo.reference_policy_kl_penalty, "
        "++dpo.sft_loss_weight, ++policy.train_global_batch_size, ...).",
    )
)
