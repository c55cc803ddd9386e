"""Every `ns` command as a CommandSpec; the CLI and the Python API are both built from this list."""

from __future__ import annotations

from skills_cli.pipeline.commands.convert import CONVERT
from skills_cli.pipeline.commands.evaluate import EVAL, PREPARE_DATA, SUMMARIZE_RESULTS
from skills_cli.pipeline.commands.follow import CANCEL, LOGS, STATUS
from skills_cli.pipeline.commands.generate import GENERATE
from skills_cli.pipeline.commands.report import REPORT
from skills_cli.pipeline.commands.run_cmd import RUN_CMD
from skills_cli.pipeline.commands.setup import SETUP
from skills_cli.pipeline.commands.start_server import START_SERVER
from skills_cli.pipeline.commands.train import (
    TRAIN_DISTILL,
    TRAIN_DPO,
    TRAIN_GRPO,
    TRAIN_PPO,
    TRAIN_RM,
    TRAIN_SFT,
    train_commands,
)

COMMANDS = (
    RUN_CMD,
    GENERATE,
    START_SERVER,
    PREPARE_DATA,
    EVAL,
    SUMMARIZE_RESULTS,
    *train_commands(),
    CONVERT,
    SETUP,
    STATUS,
    LOGS,
    CANCEL,
    REPORT,
)

__all__ = [
    "COMMANDS",
    "TRAIN_DISTILL",
    "TRAIN_DPO",
    "TRAIN_GRPO",
    "TRAIN_PPO",
    "TRAIN_RM",
    "TRAIN_SFT",
]  # the built-in trainers, for the Python API
