"""PPO's pieces against hand-computed values: token rewards, GAE, whitening, the clipped value loss, the KL
controllers; the checks of its config (KL controller out of range, a critic of another vocabulary or
architecture) and the mapping of seed 002's verl keys onto ours."""

from __future__ import annotations

import json
import math

import pytest
import torch

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.training.algorithms.ppo import check_critic_model
from skills_cli.training.algorithms.ppo.config import PPOConfig, check_ppo_layout
from skills_cli.training.algorithms.ppo.core import KLController, clipped_value_loss, gae, token_rewards, whiten
from skills_cli.training.algorithms.ppo.verl_keys import translate_verl_overrides


def test_token_rewards_put_the_score_on_the_last_token_and_the_kl_penalty_on_each():
    assert token_rewards(1.0, [0.1, -0.2, 0.3], 0.5, 3) == pytest.approx([-0.05, 0.1, 0.85])
    assert token_rewards(2.0, None, 0.0, 3) == [0.0, 0.0, 2.0]
    assert token_rewards(1.0, [0.4, 0.4], 0.0, 2) == [0.0, 1.0]  # beta 0: no penalty
    assert token_rewards(1.0, None, 0.0, 0) == []


def test_gae_against_hand_computed_values():
    # gamma 0.9, lam 0.8: delta_2 = 1 - 0.7 = 0.3; delta_1 = 0.9 * 0.7 - 0.6 = 0.03; delta_0 = 0.9 * 0.6 - 0.5 = 0.04
    # A_2 = 0.3, A_1 = 0.03 + 0.72 * 0.3 = 0.246, A_0 = 0.04 + 0.72 * 0.246 = 0.21712; R = A + V
    advantages, returns = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.8)
    assert advantages == pytest.approx([0.21712, 0.246, 0.3])
    assert returns == pytest.approx([0.71712, 0.846, 1.0])
    # gamma = lam = 1: every token's advantage is the score minus its value (the return is the score)
    advantages, returns = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=1.0, lam=1.0)
    assert advantages == pytest.approx([0.5, 0.4, 0.3]) and returns == pytest.approx([1.0, 1.0, 1.0])
    # lam = 0: one-step TD errors
    advantages, _ = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.7], gamma=0.9, lam=0.0)
    assert advantages == pytest.approx([0.04, 0.03, 0.3])


def test_whiten_uses_the_population_mean_and_unbiased_variance():
    values = [1.0, 2.0, 3.0, 4.0]
    std = math.sqrt(5 / 3)  # squared deviations 2.25 + 0.25 + 0.25 + 2.25 over 3
    got = whiten(values, sum(values), sum(v * v for v in values), len(values))
    assert got == pytest.approx([-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std], rel=1e-6)
    # the population may be larger than this rank's values (other ranks' tokens)
    assert whiten([1.0], 10.0, 30.0, 4) == pytest.approx([-1.5 / std], rel=1e-6)


def test_clipped_value_loss_against_hand_computed_values():
    # token 0: clipped value 0.5 + 0.2 = 0.7; (1 - 2)^2 = 1 < (0.7 - 2)^2 = 1.69 -> 0.5 * 1.69, clipped
    # token 1: within range (0.4 = 0.5 - 0.1): 0.5 * 0.4^2 = 0.08, not clipped; token 2 is masked
    vpreds = torch.tensor([[1.0, 0.4, 5.0]], requires_grad=True)
    old, returns, mask = torch.tensor([[0.5, 0.5, 0.0]]), torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[1, 1, 0]])
    loss, metrics = clipped_value_loss(vpreds, old, returns, mask, cliprange=0.2, global_count=4)
    assert loss.item() == pytest.approx((0.845 + 0.08) / 4)
    assert metrics["vf_clipfrac"].item() == 1 and metrics["num_tokens"].item() == 2
    assert metrics["vpred"].item() == pytest.approx(1.4)
    loss.backward()
    # the clipped token's loss does not depend on the new value: only token 1 has a gradient, (0.4 - 0) / 4
    assert vpreds.grad[0].tolist() == pytest.approx([0.0, 0.1, 0.0])


def test_adaptive_kl_controller_against_hand_computed_values():
    controller = KLController(0.1, adaptive=True, target=6.0, horizon=10000)
    controller.update(3.0, 256)  # error 3/6 - 1 = -0.5, clipped to -0.2: x (1 - 0.2 * 256 / 10000)
    assert controller.value == pytest.approx(0.1 * 0.99488)
    controller.update(6.6, 100)  # error 0.1: x (1 + 0.1 * 100 / 10000)
    assert controller.value == pytest.approx(0.1 * 0.99488 * 1.001)
    fixed = KLController(0.1)
    fixed.update(100.0, 256)
    assert fixed.value == 0.1


@pytest.mark.parametrize("override,message", [
    ("++algorithm.kl_ctrl.kl_coef=-0.1", "algorithm.kl_ctrl.kl_coef"),
    ("++algorithm.kl_ctrl.target_kl=0", "algorithm.kl_ctrl.target_kl"),
    ("++algorithm.kl_ctrl.horizon=0", "algorithm.kl_ctrl.horizon"),
    ("++algorithm.kl_ctrl.type=pid", "algorithm.kl_ctrl.type"),
    ("++algorithm.gamma=1.5", "algorithm.gamma"),
    ("++critic.cliprange_value=0", "critic.cliprange_value"),
])  # fmt: skip
def test_kl_controller_and_gae_settings_out_of_range_are_one_error_line(override, message):
    with pytest.raises(UserError) as error:
        load_config(PPOConfig, [override], where="ppo")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_adaptive_controller_cannot_start_at_zero():
    with pytest.raises(UserError, match="never leaves 0"):
        load_config(PPOConfig, ["++algorithm.kl_ctrl.type=adaptive", "++algorithm.kl_ctrl.kl_coef=0"])


def test_layout_checks_the_critic_micro_batch_and_the_kl_settings():
    config = load_config(PPOConfig, ["++ppo.num_prompts_per_step=8", "++policy.train_global_batch_size=4",
                                     "++critic.train_micro_batch_size=3"])  # fmt: skip
    with pytest.raises(UserError, match="critic.train_micro_batch_size=3"):
        check_ppo_layout(config, 1)
    forced = load_config(PPOConfig, ["++ppo.num_prompts_per_step=8", "++policy.train_global_batch_size=8",
                                     "++loss_fn.force_on_policy_ratio=true"])  # fmt: skip
    with pytest.raises(UserError, match="force_on_policy_ratio"):
        check_ppo_layout(forced, 1)
    tensor_parallel = load_config(PPOConfig, ["++policy.dtensor_cfg.tensor_parallel_size=2"])
    with pytest.raises(UserError, match="another data-parallel layout than the policy's"):
        check_ppo_layout(tensor_parallel, 4)
    both = load_config(
        PPOConfig, ["++policy.dtensor_cfg.tensor_parallel_size=2", "++critic.dtensor_cfg.tensor_parallel_size=2"]
    )
    assert check_ppo_layout(both, 4) == 2
    megatron = [
        "++backend=megatron",
        "++policy.megatron_cfg.enabled=true",
        "++policy.megatron_cfg.tensor_model_parallel_size=2",
    ]
    with pytest.raises(UserError, match=r"critic.megatron_cfg.tensor_model_parallel_size=1 differs from policy"):
        check_ppo_layout(load_config(PPOConfig, megatron), 4)
    same = load_config(PPOConfig, [*megatron, "++critic.megatron_cfg.tensor_model_parallel_size=2"])
    assert check_ppo_layout(same, 4) == 2


def model_config_dir(path, vocab_size: int, architecture: str = "LlamaForCausalLM"):
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": [architecture], "vocab_size": vocab_size}))
    return path


def test_a_critic_of_another_vocabulary_or_architecture_is_refused(tmp_path):
    policy = model_config_dir(tmp_path / "policy", 32000)

    def config(critic):
        return load_config(PPOConfig, [f"++policy.model_name={policy}", f"++critic.model_name={critic}"])

    with pytest.raises(UserError, match="vocabulary of 151936 tokens, the policy .* one of 32000") as error:
        check_critic_model(config(model_config_dir(tmp_path / "other", 151936)))
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="BertModel, not a causal LM or a sequence-classification model"):
        check_critic_model(config(model_config_dir(tmp_path / "bert", 32000, "BertModel")))
    check_critic_model(config(model_config_dir(tmp_path / "rm", 32000, "LlamaForSequenceClassification")))
    check_critic_model(config(tmp_path / "not-here"))  # unreadable here: left to the job
    check_critic_model(load_config(PPOConfig, [f"++policy.model_name={policy}"]))  # the policy's own


SEED_002_KEYS = [  # seed 002's verl quickstart, less the keys `ns train ppo` options set
    "trainer.logger=[console,swanlab]", "data.train_batch_size=256", "data.val_batch_size=1312",
    "data.max_prompt_length=512", "data.max_response_length=256", "actor_rollout_ref.actor.optim.lr=1e-6",
    "actor_rollout_ref.actor.ppo_mini_batch_size=64", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1", "actor_rollout_ref.rollout.gpu_memory_utilization=0.4",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4", "critic.optim.lr=1e-5",
    "critic.model.path=Qwen/Qwen2.5-0.5B-Instruct", "critic.ppo_micro_batch_size_per_gpu=4",
    "algorithm.kl_ctrl.kl_coef=0.001", "+trainer.val_before_train=False", "trainer.default_hdfs_dir=null",
    "trainer.save_freq=10", "trainer.test_freq=10", "trainer.total_epochs=15",
]  # fmt: skip


def test_seed_002_verl_keys_map_onto_ours():
    translated = translate_verl_overrides(SEED_002_KEYS)
    assert translated == [
        "++logger.swanlab_enabled=true", "++ppo.num_prompts_per_step=256", "++policy.generation.max_new_tokens=256",
        "++policy.optimizer.kwargs.lr=1e-6", "++policy.train_micro_batch_size=4", "++policy.logprob_batch_size=8",
        "++policy.generation.vllm_cfg.tensor_parallel_size=1",
        "++policy.generation.vllm_cfg.gpu_memory_utilization=0.4", "++critic.optimizer.kwargs.lr=1e-5",
        "++critic.model_name=Qwen/Qwen2.5-0.5B-Instruct", "++critic.train_micro_batch_size=4",
        "++algorithm.kl_ctrl.kl_coef=0.001", "++ppo.val_at_start=False", "++checkpointing.save_period=10",
        "++ppo.val_period=10", "++ppo.max_num_epochs=15", "++policy.max_total_sequence_length=768",
        "++policy.train_global_batch_size=64",
    ]  # fmt: skip
    config = load_config(PPOConfig, translated, where="ppo")
    assert config.critic.optimizer.kwargs.lr == 1e-5 and config.algorithm.kl_in_reward
    assert config.policy.max_total_sequence_length - config.policy.generation.max_new_tokens == 512


@pytest.mark.parametrize("override,message", [
    ("trainer.n_gpus_per_node=1", "set it with --num_gpus"),
    ("trainer.nnodes=1", "set it with --num_nodes"),
    ("data.train_files=/data/train.parquet", "set it with --training_data"),
    ("data.val_files=/data/test.parquet", "set it with --validation_data"),
    ("actor_rollout_ref.model.path=Qwen/Qwen2.5-0.5B-Instruct", "set it with --hf_model"),
    ("trainer.logger=[console,mlflow]", "unknown logger 'mlflow'"),
    ("actor_rollout_ref.actor.entropy_coeff=0.01", "has no counterpart in ns train ppo"),
    ("algorithm.adv_estimator=grpo", "use ns train grpo"),
])  # fmt: skip
def test_verl_keys_that_an_option_sets_or_that_have_no_counterpart_are_refused(override, message):
    with pytest.raises(UserError, match=message):
        translate_verl_overrides([override])


def test_verl_kl_loss_and_our_own_keys():
    assert translate_verl_overrides(["actor_rollout_ref.actor.use_kl_loss=True",
                                     "actor_rollout_ref.actor.kl_loss_coef=0.01",
                                     "actor_rollout_ref.actor.kl_loss_type=low_var_kl"]) == [
        "++loss_fn.reference_policy_kl_type=k3", "++loss_fn.reference_policy_kl_penalty=0.01",
        "++algorithm.use_kl_in_reward=false"]  # fmt: skip
    assert translate_verl_overrides(["++ppo.ppo_epochs=2", "critic.cliprange_value=0.2", "trainer.save_freq=-1"]) == [
        "++ppo.ppo_epochs=2", "++critic.cliprange_value=0.2", "++checkpointing.enabled=false"]  # fmt: skip
