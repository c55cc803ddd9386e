"""GRPO on math problems: config (torch-free, checked by `ns train grpo`), data and reward, rollouts, loss, and
the trainer (`python -m` this package)."""

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.grpo.config import GRPOConfig, check_grpo_layout


def check_reward_model_config(config: GRPOConfig) -> None:
    """Before submission: env.reward_model.model_name, where this machine can read its config.json, must be a
    sequence-classification model with one score (a causal LM given by mistake fails here, not in the job)."""
    path = config.env.reward_model.model_name
    if path is None:
        return
    from skills_cli.inference.reward_model import architecture_problem
    from skills_cli.training.model_files import read_model_config

    model_config = read_model_config(path, "env.reward_model.model_name")
    problem = architecture_problem(model_config, path) if model_config is not None else None
    if problem:
        raise UserError(f"env.reward_model.model_name: {problem}")


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
        check_models=check_reward_model_config,
    )
)
