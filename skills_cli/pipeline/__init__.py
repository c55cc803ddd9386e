"""Layer 3, the launcher: stage compilers, job graphs, executors, and the Python API of every command.

    from skills_cli.pipeline import run_cmd, wrap_arguments
    run_cmd(ctx=wrap_arguments("python prepare.py"), cluster="slurm", expname="prep", run_after=["download"])

Each function takes the same arguments as its `ns` command and validates them the same way.
"""

from __future__ import annotations

from skills_cli.pipeline.commands import (
    CANCEL,
    CONVERT,
    EVAL,
    GENERATE,
    LOGS,
    PREPARE_DATA,
    REPORT,
    RUN_CMD,
    SETUP,
    START_SERVER,
    STATUS,
    SUMMARIZE_RESULTS,
    TRAIN_DISTILL,
    TRAIN_DPO,
    TRAIN_GRPO,
    TRAIN_PPO,
    TRAIN_RM,
    TRAIN_SFT,
)
from skills_cli.pipeline.options import wrap_arguments

run_cmd = RUN_CMD.python_api
generate = GENERATE.python_api
start_server = START_SERVER.python_api
prepare_data = PREPARE_DATA.python_api
eval = EVAL.python_api  # noqa: A001  (the command's name, as in NeMo-Skills)
summarize_results = SUMMARIZE_RESULTS.python_api
train_sft = TRAIN_SFT.python_api
train_grpo = TRAIN_GRPO.python_api
train_ppo = TRAIN_PPO.python_api
train_dpo = TRAIN_DPO.python_api
train_rm = TRAIN_RM.python_api
train_distill = TRAIN_DISTILL.python_api
convert = CONVERT.python_api
setup = SETUP.python_api
status = STATUS.python_api
logs = LOGS.python_api
cancel = CANCEL.python_api
report = REPORT.python_api


def __getattr__(name: str):
    """`train_<algorithm>` for algorithms that plugins register (the built-in ones are defined above)."""
    if name.startswith("train_"):
        from skills_cli.pipeline.commands.train import train_command
        from skills_cli.training.algorithms import ALGORITHMS

        if name[len("train_") :] in ALGORITHMS:
            return train_command(ALGORITHMS.get(name[len("train_") :])).python_api
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "cancel", "convert", "eval", "generate", "logs", "prepare_data", "report", "run_cmd", "setup", "start_server", "status",
    "summarize_results", "train_distill", "train_dpo", "train_grpo", "train_ppo", "train_rm", "train_sft",
    "wrap_arguments",
]  # fmt: skip
