"""AdamW and the learning-rate schedule (constant / cosine / linear, each after a linear warm-up)."""

from __future__ import annotations

import math

from skills_cli.training.config import OptimizerConfig, SchedulerConfig


def build_optimizer(parameters, config: OptimizerConfig):
    import torch

    kwargs = config.kwargs
    return torch.optim.AdamW(parameters, lr=kwargs.lr, betas=tuple(kwargs.betas), eps=kwargs.eps,
                             weight_decay=kwargs.weight_decay)  # fmt: skip


def lr_multiplier(step: int, config: SchedulerConfig, total_steps: int) -> float:
    """The factor applied to the base learning rate at optimizer step `step` (0-based).

    Warm-up ramps linearly to 1 over `warmup_steps` (its first step already uses 1/warmup_steps, never 0);
    cosine and linear then decay to `min_lr_ratio` at the last step.
    """
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    if config.name == "constant":
        return 1.0
    decay_steps = max(1, total_steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    if config.name == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * shape


def build_scheduler(optimizer, config: SchedulerConfig, total_steps: int):
    """A LambdaLR: its state (the step count) is saved in checkpoints, the schedule itself is recomputed."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, config, total_steps))
