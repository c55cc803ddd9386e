"""Policy backends behind one interface (`base.Policy`): `dtensor` (FSDP2 + DTensor TP) and `megatron`
(megatron-core). `build_policy` picks one from the `policy` config section that SFT and GRPO share."""

from __future__ import annotations

from skills_cli.common.errors import UserError
from skills_cli.training.config import PolicyConfig
from skills_cli.training.policy.base import LossFn, Policy

BACKENDS = ("dtensor", "megatron")

__all__ = ["BACKENDS", "LossFn", "Policy", "build_policy", "policy_backend"]


def policy_backend(config: PolicyConfig, requested: str | None = None, cuda: bool | None = None) -> str:
    """The backend to use: `requested` (e.g. SFT's `backend` key) when given, else NeMo-RL's rule
    (megatron_cfg.enabled selects megatron, otherwise dtensor). With `cuda` given, also what the backend cannot
    do on this kind of machine."""
    backend = requested or ("megatron" if config.megatron_cfg.enabled else "dtensor")
    if backend not in BACKENDS:
        raise UserError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if backend == "dtensor" and not config.dtensor_cfg.enabled:
        raise UserError("policy.dtensor_cfg.enabled=false leaves no backend to train with; use backend=dtensor "
                        "with dtensor_cfg enabled, or backend=megatron")  # fmt: skip
    if backend == "megatron" and config.lora_cfg.enabled:
        raise UserError("policy.lora_cfg.enabled=true is supported on backend=dtensor only")
    if backend == "megatron" and cuda is False and config.megatron_cfg.pipeline_model_parallel_size > 1:
        raise UserError("policy.megatron_cfg.pipeline_model_parallel_size > 1 needs GPUs (megatron's pipeline "
                        "schedules are CUDA-only); use 1 on CPU")  # fmt: skip
    if backend == "megatron" and cuda is False and config.megatron_cfg.activation_checkpointing:
        raise UserError("policy.megatron_cfg.activation_checkpointing needs GPUs (megatron's recomputation saves "
                        "and restores CUDA RNG states); use false on CPU")  # fmt: skip
    return backend


def build_policy(config: PolicyConfig, dist, total_steps: int, backend: str | None = None, seed: int = 42,
                 head: str = "lm") -> Policy:  # fmt: skip
    """The policy for this rank: loads the model from `config.model_name`, shards it, builds the optimizer and
    a schedule over `total_steps` optimizer steps. Collective (every rank calls it). `seed` seeds what the
    backend initialises randomly itself (megatron's RNG tracker); the weights come from the HF model. `head`:
    "lm" (a causal LM) or "scalar" (a score per token: PPO's critic, reward models)."""
    backend = policy_backend(config, backend)
    if backend == "megatron":
        from skills_cli.training.policy.megatron import MegatronPolicy

        return MegatronPolicy(config, dist, total_steps, seed=seed, head=head)
    from skills_cli.training.policy.dtensor import DTensorPolicy

    return DTensorPolicy(config, dist, total_steps, head=head)
