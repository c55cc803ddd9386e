"""Typed PPO configuration (torch-free): what `++key=value` overrides of `ns train ppo` are checked against.

The rollout side is GRPO's (`policy` with `policy.generation`, `data`, `env`, `loss_fn`: NeMo-RL's names, see
`algorithms/grpo/config.py`); PPO adds verl's `main_ppo` sections under verl's names where they fit ours:
`ppo` (the loop: verl's data.train_batch_size, rollout.n, actor.ppo_epochs, trainer.total_epochs),
`critic` (a second policy section: its own model, optimizer and micro-batch, verl's critic.* and
critic.cliprange_value) and `algorithm` (verl's algorithm.gamma, algorithm.lam, algorithm.use_kl_in_reward,
algorithm.kl_penalty, algorithm.kl_ctrl.*). seed 002's verl spelling is mapped onto these keys by
`verl_keys.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded
from skills_cli.training.algorithms.grpo.config import (
    EnvConfig,
    GRPODataConfig,
    GRPOLoggerConfig,
    GRPOPolicyConfig,
    LossConfig,
    OnPolicyConfig,
    check_grpo_layout,
)
from skills_cli.training.config import (
    CheckpointConfig,
    OptimizerConfig,
    OptimizerKwargs,
    PolicyConfig,
    ReferenceConfig,
    TrainerConfig,
)


@dataclass(frozen=True)
class PPOLoopConfig:
    """The loop. GRPO's trainer (the on-policy skeleton PPO builds on) reads the keys it shares with
    `grpo.*` from here (`PPOConfig.loop`)."""

    num_prompts_per_step: int = bounded(256, ge=1)  # verl data.train_batch_size
    num_generations_per_prompt: int = bounded(1, ge=1)  # verl actor_rollout_ref.rollout.n
    ppo_epochs: int = bounded(1, ge=1)  # passes over each rollout batch (actor and critic alike)
    max_num_steps: int = bounded(1_000_000, ge=1)
    max_num_epochs: int = bounded(1, ge=1)  # verl trainer.total_epochs
    normalize_advantages: bool = True  # whiten the GAE advantages over the step's valid tokens (as verl does)
    overlong_filtering: bool = False  # truncated responses train neither actor nor critic
    val_period: int = bounded(0, ge=0)  # verl trainer.test_freq
    val_at_start: bool = False  # verl trainer.val_before_train
    max_val_samples: int = bounded(256, ge=1)
    seed: int = bounded(42, ge=0)


@dataclass(frozen=True)
class PPOLossConfig(LossConfig):
    """GRPO's clipped policy loss; the KL term in the loss is off by default (verl actor.use_kl_loss=False)."""

    reference_policy_kl_penalty: float = 0.0  # verl actor.kl_loss_coef when actor.use_kl_loss


@dataclass(frozen=True)
class KLControlConfig:
    """verl's algorithm.kl_ctrl: the coefficient of the KL penalty in the reward, fixed or adaptive (Ziegler et
    al.: multiplied each step by 1 + clip(kl / target_kl - 1, -0.2, 0.2) x sequences / horizon)."""

    type: Literal["fixed", "adaptive"] = "fixed"
    kl_coef: float = bounded(0.001, ge=0, le=10)
    target_kl: float = bounded(0.1, gt=0, le=100)
    horizon: int = bounded(10000, ge=1)

    def __post_init__(self) -> None:
        if self.type == "adaptive" and self.kl_coef == 0:
            raise UserError("algorithm.kl_ctrl.kl_coef=0 with type=adaptive: an adaptive coefficient is multiplied "
                            "each step and never leaves 0; start it above 0 or use type=fixed")  # fmt: skip


@dataclass(frozen=True)
class PPOAlgorithmConfig:
    gamma: float = bounded(1.0, ge=0, le=1)  # discount
    lam: float = bounded(1.0, ge=0, le=1)  # GAE lambda
    # the token-level reward is the score at the last response token minus kl_coef x KL(actor || reference) at
    # every token (seed 002's verl put the KL in the reward whenever it was not in the loss)
    use_kl_in_reward: bool = True
    kl_penalty: Literal["k1", "k2", "k3"] = "k1"  # verl's kl (k1), mse (k2), low_var_kl (k3)
    kl_ctrl: KLControlConfig = field(default_factory=KLControlConfig)

    @property
    def kl_in_reward(self) -> bool:
        return self.use_kl_in_reward and self.kl_ctrl.kl_coef > 0


@dataclass(frozen=True)
class PPOPolicyConfig(GRPOPolicyConfig):
    train_global_batch_size: int = 64  # the mini-batch in rollouts (verl actor.ppo_mini_batch_size x rollout.n)


@dataclass(frozen=True)
class CriticOptimizerKwargs(OptimizerKwargs):
    lr: float = bounded(1e-5, gt=0)  # verl critic.optim.lr
    weight_decay: float = bounded(0.01, ge=0)


@dataclass(frozen=True)
class CriticOptimizerConfig(OptimizerConfig):
    kwargs: CriticOptimizerKwargs = field(default_factory=CriticOptimizerKwargs)


@dataclass(frozen=True)
class CriticConfig(PolicyConfig):
    """The critic: a second policy with a scalar head (a value per token), its own weights and optimizer.

    model_name "" starts it from the policy's checkpoint (its score layer at zero); its mini-batches, sequence
    length and packing are the policy's (train_global_batch_size, max_total_sequence_length and
    sequence_packing here are not read)."""

    optimizer: CriticOptimizerConfig = field(default_factory=CriticOptimizerConfig)
    cliprange_value: float = bounded(0.5, gt=0)  # new values stay within this of the rollout's values


@dataclass(frozen=True)
class PPOConfig(OnPolicyConfig, TrainerConfig):
    loop_section: ClassVar[str] = "ppo"

    ppo: PPOLoopConfig = field(default_factory=PPOLoopConfig)
    loss_fn: PPOLossConfig = field(default_factory=PPOLossConfig)
    policy: PPOPolicyConfig = field(default_factory=PPOPolicyConfig)
    critic: CriticConfig = field(default_factory=CriticConfig)
    algorithm: PPOAlgorithmConfig = field(default_factory=PPOAlgorithmConfig)
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    checkpointing: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(save_period=10))
    logger: GRPOLoggerConfig = field(default_factory=GRPOLoggerConfig)
    critic_hf_path: str | None = None  # the exported critic (default <output_dir>/critic_hf)

    @property
    def critic_model(self) -> str:
        return self.critic.model_name or self.policy.model_name


def check_critic_parallelism(config: PPOConfig, world_size: int, dp: int) -> None:
    """The critic trains on the policy's backend and rollouts: the same data-parallel ranks. On megatron it also
    shares megatron's process groups (one tensor/pipeline layout per process), so its sizes are the policy's."""
    if config.backend == "megatron":
        ours, theirs = config.critic.megatron_cfg, config.policy.megatron_cfg
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
            if getattr(ours, key) != getattr(theirs, key):
                raise UserError(f"critic.megatron_cfg.{key}={getattr(ours, key)} differs from policy.megatron_cfg."
                                f"{key}={getattr(theirs, key)}: on megatron the critic shares the policy's "
                                "process groups; set them equal")  # fmt: skip
        return
    critic_tp = config.critic.dtensor_cfg.tensor_parallel_size
    if world_size % critic_tp or world_size // critic_tp != dp:
        raise UserError(f"critic.dtensor_cfg.tensor_parallel_size={critic_tp} gives the critic another data-parallel "
                        f"layout than the policy's ({dp} ranks): the two train on the same rollouts; set it to the "
                        "policy's model-parallel size")  # fmt: skip


def check_ppo_layout(config: PPOConfig, world_size: int) -> int:
    """GRPO's layout rules (rollout batch vs global batch and ranks), the critic's micro-batch, and the KL
    settings that cannot work together; returns the data-parallel size."""
    dp = check_grpo_layout(config, world_size)
    global_batch, micro = config.policy.train_global_batch_size, config.critic.train_micro_batch_size
    if global_batch % (micro * dp):
        raise UserError(f"policy.train_global_batch_size={global_batch} is not divisible by "
                        f"critic.train_micro_batch_size={micro} x data-parallel size {dp}")  # fmt: skip
    check_critic_parallelism(config, world_size, dp)
    if config.algorithm.kl_in_reward and config.loss_fn.force_on_policy_ratio:
        raise UserError("loss_fn.force_on_policy_ratio=true skips the old-logprob pass that the KL in the reward "
                        "(algorithm.use_kl_in_reward) needs; leave it null or set algorithm.use_kl_in_reward=false")  # fmt: skip
    return dp
