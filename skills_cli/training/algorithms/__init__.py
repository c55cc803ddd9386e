"""Training algorithms: one subfolder each (sft, grpo), registered in `ALGORITHMS` (torch-free).

An algorithm is its typed config (what `ns train <name>` checks `++key=value` overrides against before
submission), its layout check (world size -> data-parallel size, or a one-line error), the in-job module the
job runs under torchrun (a trainer built on `skills_cli/training/trainer.py`), its help, and which container
its job needs. `ns train <name>` and `ns nemo_rl <name>` are built from this registry, so a plugin that
registers an `Algorithm` (see `skills_cli/common/registry.py`) gets its own command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skills_cli.common.registry import Registry


def same_container(config: Any, container: str) -> str:
    return container


@dataclass(frozen=True)
class Algorithm:
    name: str
    config_class: type  # a frozen dataclass extending training.config.TrainerConfig; no torch import
    check_layout: Callable[[Any, int], int]  # (config, world size) -> data-parallel size; UserError when it cannot
    module: str  # the in-job program: `python -m <module> ++key=value ...`
    help: str
    # the container the job needs, from the config and the --container given (e.g. vLLM rollouts need vLLM's)
    container: Callable[[Any, str], str] = same_container


ALGORITHMS: Registry[Algorithm] = Registry("training algorithm", package=__name__)
