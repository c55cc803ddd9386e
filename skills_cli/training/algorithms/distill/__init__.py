"""On-policy distillation (NeMo-RL's): config (torch-free, checked by `ns train distill`), the KL loss against a
frozen teacher, and the trainer on GRPO's on-policy skeleton (`python -m` this package)."""

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.distill.config import DistillConfig, check_distill_layout
from skills_cli.training.algorithms.grpo import grpo_container


def check_teacher(config: DistillConfig) -> None:
    """Before submission: a teacher whose config.json this machine can read must share the student's vocabulary."""
    from skills_cli.training.model_files import check_same_vocabulary

    if config.teacher.model_name:
        check_same_vocabulary(config.policy.model_name, config.teacher.model_name, "teacher.model_name")


ALGORITHMS.register(
    Algorithm(
        name="distill",
        config_class=DistillConfig,
        check_layout=check_distill_layout,
        module=__name__,
        help="On-policy distillation as a torchrun job: the student samples, a frozen teacher with the same "
        "vocabulary (++teacher.model_name) scores every sampled token, and the loss is the per-token KL "
        "(++loss_fn.kl_type=reverse|forward|mixed, ++distillation.topk_logits_k); NeMo-RL's distillation key names.",
        container=grpo_container,  # the same rollout engines (vLLM's image for vLLM rollouts)
        check_models=check_teacher,
    )
)
