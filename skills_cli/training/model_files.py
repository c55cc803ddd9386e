"""What a trainer can tell about an HF model folder from its config.json alone (torch-free, so the launcher can
check before submission): its architecture numbers and whether two models share a vocabulary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from skills_cli.common.errors import UserError

log = logging.getLogger("skills_cli")


def read_model_config(path: str | Path, what: str) -> dict | None:
    """The parsed config.json of the model at `path`, or None when it is not readable here (on the cluster only,
    or still being written by an upstream job): then one info line says what was not checked."""
    file = Path(path) / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        log.info("%s %s: no readable config.json here; not checked before submission", what, path)
        return None


def text_config(config: dict) -> dict:
    """The language model's section of a config (multimodal configs nest it under text_config)."""
    return config.get("text_config") or config


def check_same_vocabulary(policy_path: str, other_path: str, what: str) -> None:
    """Refuse `other_path` (a teacher, a critic, a reward model) whose vocabulary differs from the policy's: its
    token ids would mean other tokens. Unreadable configs are left to the job."""
    policy, other = read_model_config(policy_path, "policy.model_name"), read_model_config(other_path, what)
    if policy is None or other is None:
        return
    ours, theirs = text_config(policy).get("vocab_size"), text_config(other).get("vocab_size")
    if ours is not None and theirs is not None and ours != theirs:
        raise UserError(f"{what} {other_path} has a vocabulary of {theirs} tokens, the policy {policy_path} one of "
                        f"{ours}: they must share the tokenizer (token ids are compared one to one)")  # fmt: skip
