"""seed 002's verl `main_ppo` keys mapped onto `ns train ppo`'s (torch-free; the table is docs/training/ppo.md).

verl spells overrides `critic.optim.lr=1e-5` (Hydra: no plus, `+key` to add one); `ns train ppo` accepts them
with or without pluses next to its own `++key=value`. A verl key becomes one or more of ours; keys that an `ns`
option sets are refused with the option to use; keys with nothing to do here are accepted with an info line;
a verl-only key with no counterpart is one error line. Our own keys pass through unchanged (and are checked
against the typed config afterwards).
"""

from __future__ import annotations

import logging

from skills_cli.common.errors import UserError

log = logging.getLogger("skills_cli")

# verl key -> our key, the value unchanged
RENAMED = {
    "data.train_batch_size": "ppo.num_prompts_per_step",
    "data.max_response_length": "policy.generation.max_new_tokens",
    "actor_rollout_ref.actor.optim.lr": "policy.optimizer.kwargs.lr",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": "policy.train_micro_batch_size",
    "actor_rollout_ref.actor.ppo_epochs": "ppo.ppo_epochs",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": "policy.logprob_batch_size",
    "actor_rollout_ref.rollout.tensor_model_parallel_size": "policy.generation.vllm_cfg.tensor_parallel_size",
    "actor_rollout_ref.rollout.gpu_memory_utilization": "policy.generation.vllm_cfg.gpu_memory_utilization",
    "actor_rollout_ref.rollout.n": "ppo.num_generations_per_prompt",
    "actor_rollout_ref.rollout.temperature": "policy.generation.temperature",
    "actor_rollout_ref.rollout.top_p": "policy.generation.top_p",
    "actor_rollout_ref.rollout.top_k": "policy.generation.top_k",
    "critic.optim.lr": "critic.optimizer.kwargs.lr",
    "critic.model.path": "critic.model_name",
    "critic.ppo_micro_batch_size_per_gpu": "critic.train_micro_batch_size",
    "trainer.val_before_train": "ppo.val_at_start",
    "trainer.total_epochs": "ppo.max_num_epochs",
    "trainer.total_training_steps": "ppo.max_num_steps",
    "val_generations_to_log_to_wandb": "logger.val_generations_to_log",
    "trainer.log_val_generations": "logger.val_generations_to_log",
}
# keys an `ns train` option sets
REFUSED = {
    "trainer.n_gpus_per_node": "--num_gpus",
    "trainer.nnodes": "--num_nodes",
    "data.train_files": "--training_data",
    "data.val_files": "--validation_data",
    "actor_rollout_ref.model.path": "--hf_model",
    "trainer.default_local_dir": "--output_dir",
}
# keys with nothing to set here, and why
IGNORED = {
    "trainer.default_hdfs_dir": "checkpoints stay under --output_dir",
    "data.val_batch_size": "validation decodes in engine batches of policy.generation.max_batch_size",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": "the reference's passes use policy.logprob_batch_size",
}
KL_TYPES = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3"}
TRACKERS = {"console": None, "wandb": "logger.wandb_enabled", "swanlab": "logger.swanlab_enabled",
            "tensorboard": "logger.tensorboard_enabled"}  # fmt: skip
VERL_ONLY = ("actor_rollout_ref.", "trainer.", "critic.optim.", "critic.model.", "reward_model.", "ray_init.")
DEFAULT_LENGTH = 512  # verl's data.max_prompt_length and data.max_response_length


def translate_verl_overrides(overrides: list[str]) -> list[str]:
    """The user's overrides with every verl key replaced by ours (see the module docstring)."""
    out, seen = [], {}
    for override in overrides:
        key, separator, value = override.lstrip("+").partition("=")
        if not separator:
            raise UserError(f"cannot parse override {override!r}: use key=value")
        seen[key] = value
        if key not in DEFERRED:
            out += translate_key(key, value, override)
    return out + deferred_overrides(seen)


def translate_key(key: str, value: str, override: str) -> list[str]:
    """Our overrides for one of the user's (their own `++key=value` when it is not verl's)."""
    if key in RENAMED:
        return [f"++{RENAMED[key]}={value}"]
    if key in REFUSED:
        raise UserError(f"{key}: set it with {REFUSED[key]} of ns train ppo, not as an override")
    if key in IGNORED:
        log.info("%s=%s accepted and ignored: %s", key, value, IGNORED[key])
        return []
    if key in SPECIAL:
        return SPECIAL[key](value)
    if key.startswith(VERL_ONLY):
        raise UserError(f"{key} (verl) has no counterpart in ns train ppo; docs/training/ppo.md lists the verl keys "
                        "it maps, and ++key=value sets any of its own")  # fmt: skip
    return [override if override.startswith("++") else f"++{key}={value}"]


def _clip_ratio(value: str) -> list[str]:
    return [f"++loss_fn.ratio_clip_min={value}", f"++loss_fn.ratio_clip_max={value}"]


def _kl_type(our_key: str):
    def translate(value: str) -> list[str]:
        if value not in KL_TYPES:
            raise UserError(f"KL estimator {value!r} has no counterpart here; use kl, mse or low_var_kl (k1, k2, k3)")
        return [f"++{our_key}={KL_TYPES[value]}"]

    return translate


def _loggers(value: str) -> list[str]:
    """trainer.logger=['console','swanlab'] (the shell may have eaten the quotes): the trackers to turn on."""
    names = [name.strip().strip("'\"") for name in value.strip().strip("[]").split(",") if name.strip()]
    unknown = [name for name in names if name not in TRACKERS]
    if unknown:
        raise UserError(f"trainer.logger: unknown logger {unknown[0]!r}; use {', '.join(TRACKERS)}")
    return [f"++{TRACKERS[name]}=true" for name in names if TRACKERS[name]]


def _every(our_key: str, off: list[str]):
    """verl's frequencies: a positive period, or -1 / 0 for never."""

    def translate(value: str) -> list[str]:
        try:
            period = int(value)
        except ValueError:
            raise UserError(f"{value!r} is not a whole number of steps (-1: never)") from None
        return [f"++{our_key}={period}"] if period > 0 else off

    return translate


def _tracker_field(field: str):
    def translate(value: str) -> list[str]:
        return [f"++logger.wandb.{field}={value}", f"++logger.swanlab.{field}={value}"]

    return translate


def _advantage_estimator(value: str) -> list[str]:
    if value != "gae":
        raise UserError(f"algorithm.adv_estimator={value}: ns train ppo uses GAE with a critic; for group "
                        "advantages without a critic use ns train grpo")  # fmt: skip
    return []


def _rollout_engine(value: str) -> list[str]:
    engines = {"vllm": "vllm", "hf": "torch"}
    if value not in engines:
        raise UserError(
            f"actor_rollout_ref.rollout.name={value}: our rollout engines are vllm and hf (our torch engine)"
        )
    return [f"++policy.generation.backend={engines[value]}"]


SPECIAL = {
    "actor_rollout_ref.actor.clip_ratio": _clip_ratio,
    "actor_rollout_ref.actor.kl_loss_type": _kl_type("loss_fn.reference_policy_kl_type"),
    "algorithm.kl_penalty": _kl_type("algorithm.kl_penalty"),
    "trainer.logger": _loggers,
    "trainer.save_freq": _every("checkpointing.save_period", ["++checkpointing.enabled=false"]),
    "trainer.test_freq": _every("ppo.val_period", ["++ppo.val_period=0"]),
    "trainer.project_name": _tracker_field("project"),
    "trainer.experiment_name": _tracker_field("name"),
    "algorithm.adv_estimator": _advantage_estimator,
    "actor_rollout_ref.rollout.name": _rollout_engine,
}

# keys whose translation needs another key's value: gathered first, translated together at the end
DEFERRED = ("data.max_prompt_length", "actor_rollout_ref.actor.ppo_mini_batch_size",
            "actor_rollout_ref.actor.use_kl_loss", "actor_rollout_ref.actor.kl_loss_coef")  # fmt: skip


def deferred_overrides(values: dict[str, str]) -> list[str]:
    """From the user's keys and values: the sequence length (prompt + response), the mini-batch in rollouts
    (verl counts prompts) and the KL loss."""
    out = []
    if "data.max_prompt_length" in values:
        response = _whole(values.get("data.max_response_length", DEFAULT_LENGTH), "data.max_response_length")
        prompt = _whole(values["data.max_prompt_length"], "data.max_prompt_length")
        out.append(f"++policy.max_total_sequence_length={prompt + response}")
    if "actor_rollout_ref.actor.ppo_mini_batch_size" in values:
        key, samples = "actor_rollout_ref.actor.ppo_mini_batch_size", "actor_rollout_ref.rollout.n"
        mini = _whole(values[key], key) * _whole(values.get(samples, 1), samples)
        out.append(f"++policy.train_global_batch_size={mini}")
    use_kl_loss = values.get("actor_rollout_ref.actor.use_kl_loss", "false").lower() == "true"
    if use_kl_loss:  # verl's default coefficient 0.001; the KL then leaves the reward (as in seed 002's verl)
        coef = values.get("actor_rollout_ref.actor.kl_loss_coef", "0.001")
        out += [f"++loss_fn.reference_policy_kl_penalty={coef}", "++algorithm.use_kl_in_reward=false"]
    elif "actor_rollout_ref.actor.kl_loss_coef" in values:
        log.info("actor_rollout_ref.actor.kl_loss_coef has no effect without actor_rollout_ref.actor.use_kl_loss=true")
    return out


def _whole(value, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value!r} must be a whole number") from None
