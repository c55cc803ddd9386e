"""Typed GRPO configuration (torch-free): what `++key=value` overrides of `ns train grpo` are checked against.

Key names follow NeMo-RL's `grpo_math_1B.yaml` (`grpo.num_prompts_per_step`, `grpo.num_generations_per_prompt`,
`loss_fn.reference_policy_kl_penalty`, `loss_fn.use_importance_sampling_correction`, `policy.generation.*`,
`logger.swanlab_enabled`, ...), so the seed commands carry over. The `policy` section is the shared one
(`skills_cli/training/config.py`) plus `policy.generation`; defaults follow NeMo-RL where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import bounded
from skills_cli.inference.config import MAX_TOKENS_TO_GENERATE
from skills_cli.training.config import (
    CheckpointConfig,
    LoggerConfig,
    PolicyConfig,
    ReferenceConfig,
    SequencePackingConfig,
    TrainerConfig,
    check_parallel_layout,
)


@dataclass(frozen=True)
class GRPOLoopConfig:
    num_prompts_per_step: int = 32
    num_generations_per_prompt: int = 16
    max_num_steps: int = bounded(1_000_000, ge=1)
    max_num_epochs: int = bounded(1, ge=1)
    normalize_rewards: bool = True  # divide advantages by the group std (only where std > 0)
    use_leave_one_out_baseline: bool = True  # baseline = mean of the *other* rewards of the group
    overlong_filtering: bool = False  # truncated responses train nothing (loss multiplier 0)
    val_period: int = bounded(0, ge=0)  # pass@1 on data.val_data every N steps (0: never)
    val_at_start: bool = False
    max_val_samples: int = bounded(256, ge=1)
    seed: int = bounded(42, ge=0)

    def __post_init__(self) -> None:
        if self.num_generations_per_prompt < 2:
            raise UserError(f"grpo.num_generations_per_prompt={self.num_generations_per_prompt}: GRPO needs at least 2 "
                            "generations per prompt (the advantage is a reward relative to the prompt's other samples)")  # fmt: skip
        if self.num_prompts_per_step < 1:
            raise UserError("grpo.num_prompts_per_step must be >= 1")


@dataclass(frozen=True)
class LossConfig:
    reference_policy_kl_penalty: float = 0.01  # 0 skips the reference model entirely
    reference_policy_kl_type: Literal["k1", "k2", "k3"] = "k3"
    kl_input_clamp_value: float = bounded(20.0, gt=0)
    kl_output_clamp_value: float = bounded(10.0, gt=0)
    ratio_clip_min: float = bounded(0.2, ge=0, le=1)  # the ratio is clipped to [1 - ratio_clip_min, 1 + ratio_clip_max]
    ratio_clip_max: float = bounded(0.2, ge=0)
    ratio_clip_c: float | None = None  # dual clip for negative advantages (> 1, e.g. 3)
    token_level_loss: bool = True  # False: per-sequence mean, then mean over sequences
    use_importance_sampling_correction: bool = False  # weight tokens by exp(train_logprob - generation_logprob)
    # upper clamp of that weight (None: no clamp)
    truncated_importance_sampling_ratio: float | None = bounded(2.0, gt=0)
    use_on_policy_kl_approximation: bool = False
    # ratio = 1 and no old-logprob pass: None (default) does so exactly when there is one optimizer step per
    # rollout batch (the old logprobs then equal the current ones); true forces it, false always recomputes
    force_on_policy_ratio: bool | None = None

    def __post_init__(self) -> None:
        if self.ratio_clip_c is not None and self.ratio_clip_c <= 1:
            raise UserError(f"loss_fn.ratio_clip_c={self.ratio_clip_c} must be > 1 (or null)")
        if self.reference_policy_kl_penalty < 0:
            raise UserError("loss_fn.reference_policy_kl_penalty must be >= 0")


@dataclass(frozen=True)
class VllmConfig:
    gpu_memory_utilization: float = bounded(0.6, gt=0, le=1)
    tensor_parallel_size: int = bounded(1, ge=1)
    enforce_eager: bool = False


@dataclass(frozen=True)
class ColocatedConfig:
    enabled: bool = True
    # torch engine: while the policy trains, keep the KV cache and the captured decode graphs when the cache is at
    # most this size (re-allocating and re-capturing them every step costs more than the memory is worth);
    # larger caches are freed (0: always free)
    keep_kv_cache_up_to_gib: float = bounded(2.0, ge=0)


@dataclass(frozen=True)
class GenerationConfig:
    backend: Literal["torch", "vllm"] = "torch"  # torch: our in-process engine (CPU and GPU, no extra install)
    max_new_tokens: int = bounded(512, ge=1, le=MAX_TOKENS_TO_GENERATE,
                                  why="no model's context is anywhere near 10M tokens")  # fmt: skip
    temperature: float = 1.0
    top_p: float = bounded(1.0, gt=0, le=1)
    top_k: int | None = bounded(None, ge=1, also=(0,), why="0 or null: no top-k cut")
    max_batch_size: int = bounded(256, ge=1)  # sequences decoded at once by the engine
    # rollouts run to max_new_tokens past EOS (vLLM's and verl's ignore_eos): for throughput benchmarks with fixed
    # response lengths, never for learning (every response counts as truncated)
    ignore_eos: bool = False
    val_temperature: float = bounded(0.0, ge=0)  # validation decodes greedily by default (pass@1 of the policy's mode)
    colocated: ColocatedConfig = field(default_factory=ColocatedConfig)
    vllm_cfg: VllmConfig = field(default_factory=VllmConfig)

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise UserError("policy.generation.temperature must be > 0 for training rollouts (sampling); "
                            "use val_temperature=0 for greedy validation")  # fmt: skip
        if self.max_new_tokens < 1:
            raise UserError("policy.generation.max_new_tokens must be >= 1")


@dataclass(frozen=True)
class GRPOPolicyConfig(PolicyConfig):
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    # micro-batch of the logprob passes (default: train_micro_batch_size)
    logprob_batch_size: int | None = bounded(None, ge=1)
    train_global_batch_size: int = 512  # NeMo-RL's default: one optimizer step per 32 x 16 rollout batch
    max_total_sequence_length: int = 1024
    # on, as in NeMo-RL's grpo_math_1B: prompt + answer rows are short, packing makes far fewer, fuller passes
    sequence_packing: SequencePackingConfig = field(default_factory=lambda: SequencePackingConfig(enabled=True))


@dataclass(frozen=True)
class GRPODataConfig:
    train_data: str = ""  # JSONL with a problem and its expected answer per row
    val_data: str | None = None
    prompt_config: str = "generic/math"  # packaged name or a YAML path (skills_cli/prompts)
    problem_key: str = "problem"
    answer_key: str = "expected_answer"


@dataclass(frozen=True)
class MathEnvConfig:
    grader_timeout: float = bounded(2.0, gt=0)  # seconds per answer; a timeout or grader error is reward 0
    truncated_reward: Literal["grade", "zero"] = "zero"  # a response cut at max_new_tokens: graded, or 0
    # boxed: only a \boxed{} answer earns reward (what the prompt asks for; the evaluation grader also reads
    # prose and a last number, which a policy could learn to game); any: every rule of the evaluation grader
    answer_format: Literal["boxed", "any"] = "boxed"
    # the math reward's weight in the reward: reward = weight * math + env.reward_model.weight * score (0: the
    # reward model alone; the math grade is still computed and logged as train/accuracy)
    weight: float = bounded(1.0, ge=0)


@dataclass(frozen=True)
class RewardModelEnvConfig:
    """A trained reward model (`ns train rm`'s final_hf: an HF sequence-classification model) scoring every
    rollout in process on each rank, alone or mixed with the math reward."""

    model_name: str | None = None  # its folder (None: no reward model)
    weight: float = bounded(1.0, ge=0)
    # none: the raw score; sigmoid: 1 / (1 + exp(-score)), in (0, 1) as the math reward is; batch: standardized
    # over the step's rollouts (all data-parallel ranks) to mean 0 and std 1
    normalization: Literal["none", "sigmoid", "batch"] = "none"
    batch_size: int = bounded(16, ge=1)  # responses scored at once


@dataclass(frozen=True)
class EnvConfig:
    math: MathEnvConfig = field(default_factory=MathEnvConfig)
    # "package.module:function" replacing the math reward: function(response, expected_answer, truncated) -> float
    reward_function: str | None = None
    reward_model: RewardModelEnvConfig = field(default_factory=RewardModelEnvConfig)

    def __post_init__(self) -> None:
        if self.reward_model.model_name is None and self.math.weight == 0:
            raise UserError("env.math.weight=0 leaves no reward: set env.reward_model.model_name (a trained reward "
                            "model) or a math weight above 0")  # fmt: skip
        if self.reward_model.model_name is not None and self.math.weight == 0 and self.reward_model.weight == 0:
            raise UserError("env.math.weight and env.reward_model.weight are both 0: the reward would always be 0")


@dataclass(frozen=True)
class GRPOLoggerConfig(LoggerConfig):
    # validation generations logged as a table (and a JSONL) each validation
    val_generations_to_log: int = bounded(0, ge=0)


class OnPolicyConfig:
    """What the on-policy skeleton (`GRPOTrainer`) reads of GRPO's, PPO's and distillation's configs: the loop
    section (`grpo`, `ppo` or `distillation`, named by `loop_section`) and the rollouts a step samples."""

    loop_section: ClassVar[str] = "grpo"

    @property
    def loop(self):
        return getattr(self, self.loop_section)

    @property
    def rollouts_per_step(self) -> int:
        return self.loop.num_prompts_per_step * self.loop.num_generations_per_prompt


@dataclass(frozen=True)
class GRPOConfig(OnPolicyConfig, TrainerConfig):
    grpo: GRPOLoopConfig = field(default_factory=GRPOLoopConfig)
    loss_fn: LossConfig = field(default_factory=LossConfig)
    policy: GRPOPolicyConfig = field(default_factory=GRPOPolicyConfig)
    data: GRPODataConfig = field(default_factory=GRPODataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    checkpointing: CheckpointConfig = field(default_factory=lambda: CheckpointConfig(save_period=10))
    logger: GRPOLoggerConfig = field(default_factory=GRPOLoggerConfig)


def check_grpo_layout(config: OnPolicyConfig, world_size: int) -> int:
    """The data-parallel size, after checking that rollouts split evenly into optimizer steps and ranks (GRPO's,
    PPO's and distillation's rule: messages name the config's own loop section)."""
    dp = check_parallel_layout(config, world_size)
    policy = config.policy
    if policy.max_total_sequence_length - policy.generation.max_new_tokens < 1:
        raise UserError(f"policy.generation.max_new_tokens={policy.generation.max_new_tokens} leaves no room for the "
                        f"prompt in policy.max_total_sequence_length={policy.max_total_sequence_length}")  # fmt: skip
    rollouts, global_batch = config.rollouts_per_step, config.policy.train_global_batch_size
    if rollouts % global_batch:
        valid = [b for b in range(1, rollouts + 1) if rollouts % b == 0]
        raise UserError(
            f"the rollout batch ({config.loop.num_prompts_per_step} prompts x {config.loop.num_generations_per_prompt} "
            f"generations = {rollouts}) is not divisible by policy.train_global_batch_size={global_batch}; "
            f"valid global batch sizes: {', '.join(map(str, valid))}"
        )
    if config.loop.num_prompts_per_step % dp:
        raise UserError(f"{config.loop_section}.num_prompts_per_step={config.loop.num_prompts_per_step} must be "
                        f"divisible by the data-parallel size {dp} (each rank generates whole prompt groups)")  # fmt: skip
    return dp
