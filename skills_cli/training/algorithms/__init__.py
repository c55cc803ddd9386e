"""Training algorithms: one subfolder each (sft, grpo), registered in `ALGORITHMS` (torch-free).

An algorithm is its typed config (what `ns train <name>` checks `++key=value` overrides against before
submission), its layout check (world size -> data-parallel size, or a one-line error), the in-job module the
job runs under torchrun (a trainer built on `skills_cli/training/trainer.py`), its help, and which container
its job needs, and optionally a pre-submission check of the other models it names and a mapping of another
trainer's key names onto its own. `ns train <name>` and `ns nemo_rl <name>` are built from this registry, so a plugin that
registers an `Algorithm` (see `skills_cli/common/registry.py`) gets its own command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skills_cli.common.registry import Registry


def same_container(config: Any, container: str) -> str:
    return container


def no_models_to_check(config: Any) -> None:
    return None


def same_overrides(overrides: list[str]) -> list[str]:
    return overrides


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_class: type  # a frozen dataclass extending training.config.TrainerConfig; no torch import
    check_layout: Callable[[Any, int], int]  # (config, world size) -> data-parallel size; UserError when it cannot
    module: str  # the in-job program: `python -m <module> ++key=value ...`
    help: str
    # the container the job needs, from the config and the --container given (e.g. vLLM rollouts need vLLM's)
    container: Callable[[Any, str], str] = same_container
    # before submission, on the checked config: the other models it names (a teacher, a critic, a reward model)
    # against the policy's, where this machine can read their config.json (torch-free; UserError when wrong)
    check_models: Callable[[Any], None] = no_models_to_check
    # the user's `++key=value` overrides in another trainer's spelling (verl's `critic.optim.lr=...`) mapped onto
    # this algorithm's keys, before they are checked (torch-free; UserError for a key with no counterpart)
    translate_overrides: Callable[[list[str]], list[str]] = same_overrides


ALGORITHMS: Registry[Algorithm] = Registry("training algorithm", package=__name__)
