"""PPO with a critic (verl's `main_ppo` shape) on math problems: config (torch-free, checked by `ns train ppo`),
verl's key names mapped onto ours (`verl_keys.py`), GAE and the value loss (`core.py`), the critic, the metrics
under verl's names, and the trainer (`python -m` this package), built on GRPO's rollouts and reward."""

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms import ALGORITHMS, Algorithm
from skills_cli.training.algorithms.grpo import grpo_container
from skills_cli.training.algorithms.ppo.config import PPOConfig, check_ppo_layout
from skills_cli.training.algorithms.ppo.verl_keys import translate_verl_overrides

DECODER_SUFFIXES = ("ForCausalLM", "ForSequenceClassification")


def check_critic_model(config: PPOConfig) -> None:
    """Before submission, where this machine can read config.json: a critic from another path must be a decoder
    (a causal LM or a sequence-classification model) with the policy's vocabulary (it reads the policy's tokens)."""
    if not config.critic.model_name or config.critic.model_name == config.policy.model_name:
        return
    from skills_cli.training.model_files import check_same_vocabulary, read_model_config

    path = config.critic.model_name
    model_config = read_model_config(path, "critic.model_name")
    if model_config is None:
        return
    architectures = model_config.get("architectures") or []
    if not any(name.endswith(DECODER_SUFFIXES) for name in architectures):
        raise UserError(f"critic.model_name {path} is a {', '.join(architectures) or 'model of no architecture'}, "
                        "not a causal LM or a sequence-classification model: a critic is a decoder with a value "
                        "head over the policy's tokens")  # fmt: skip
    check_same_vocabulary(config.policy.model_name, path, "critic.model_name")


ALGORITHMS.register(
    Algorithm(
        name="ppo",
        config_class=PPOConfig,
        check_layout=check_ppo_layout,
        module=__name__,
        help="PPO with a critic on math problems (verl's main_ppo: GAE, clipped policy and value losses, KL in the "
        "reward with a fixed or adaptive coefficient or in the loss, rollouts from our torch engine or colocated "
        "vLLM) as a torchrun job; ++key=value use our keys (++ppo.*, ++critic.*, ++algorithm.*, GRPO's ++policy.*) "
        "and seed 002's verl keys (critic.optim.lr=1e-5 algorithm.kl_ctrl.kl_coef=0.001 ...) are mapped onto them.",
        container=grpo_container,
        check_models=check_critic_model,
        translate_overrides=translate_verl_overrides,
    )
)
