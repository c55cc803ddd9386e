"""AdamW and the learning-rate schedule (constant / cosine / linear, each after a linear warm-up): a torch
LambdaLR for torch optimizers, `StepSchedule` for megatron's optimizer wrappers."""

from __future__ import annotations

import math

from skills_cli.training.config import OptimizerConfig, SchedulerConfig


def build_optimizer(parameters: list, config: OptimizerConfig):
    """torch's AdamW; on GPUs its fused kernel (one pass over each parameter's state, where the default foreach
    implementation makes several: those took ~20 ms of a 0.8 s DPO step of a 0.5B model on an H100). The
    transformers Trainer's default optimizer is the fused one too."""
    import torch

    kwargs = config.kwargs
    fused = bool(parameters) and all(parameter.is_cuda for parameter in parameters)
    return torch.optim.AdamW(parameters, lr=kwargs.lr, betas=tuple(kwargs.betas), eps=kwargs.eps,
                             weight_decay=kwargs.weight_decay, fused=fused or None)  # fmt: skip


# how an optimizer's update runs on this machine (fused / foreach kernels, CUDA-graph capturable), not state
IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable")


def implementation_flags(optimizer) -> list[dict]:
    """Each param group's `IMPLEMENTATION_KEYS`, to put back after `load_state_dict`: torch restores a param
    group's every key from the saved state, so a checkpoint written before AdamW was fused on GPUs (or on
    another machine) would switch the update back to the kernels it was saved with."""
    return [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]


def set_implementation_flags(optimizer, flags: list[dict]) -> None:
    for group, kept in zip(optimizer.param_groups, flags, strict=True):
        group.update(kept)


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


class StepSchedule:
    """The same schedule for an optimizer that is not a torch.optim.Optimizer (megatron's wrappers): the
    learning rate for step n is `lr x lr_multiplier(n)`, written into every param group before each step.
    Its state is the step count, like LambdaLR's."""

    def __init__(self, base_lr: float, config: SchedulerConfig, total_steps: int):
        self.base_lr, self.config, self.total_steps = base_lr, config, total_steps
        self.step_count = 0

    def get_lr(self) -> float:
        return self.base_lr * lr_multiplier(self.step_count, self.config, self.total_steps)

    def apply(self, param_groups) -> None:
        for group in param_groups:
            group["lr"] = self.get_lr()

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
