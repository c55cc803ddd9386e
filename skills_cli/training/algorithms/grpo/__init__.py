"""GRPO on math problems: config (torch-free, checked by `ns train grpo`), data and reward, rollouts, loss, and
the trainer (`python -m` this package)."""

from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.grpo.config import GRPOConfig, check_grpo_layout


def grpo_container(config: GRPOConfig, container: str) -> str:
    """Colocated vLLM rollouts run in-process: the job needs the vLLM image (unless another was chosen)."""
    if config.policy.generation.backend == "vllm" and container == "main":
        return "vllm"
    return container


ALGORITHMS.register(
    Algorithm(
        name="grpo",
        config_class=GRPOConfig,
        check_layout=check_grpo_layout,
        module=__name__,
        help="GRPO on math problems (rollouts from our torch engine or colocated vLLM, math-grader reward) as a "
        "torchrun job; ++key=value use NeMo-RL's grpo_math key names (++grpo.num_prompts_per_step, ++loss_fn.*, ...).",
        container=grpo_container,
    )
)
