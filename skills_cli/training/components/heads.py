"""What sits on top of the decoder: the LM head (next-token logits) or a scalar head (one score per token).

`head="lm"` is the HF causal LM (`AutoModelForCausalLM`): SFT, GRPO, DPO, distillation and PPO's actor train
it. `head="scalar"` is the HF sequence-classification model with one label (`AutoModelForSequenceClassification`,
num_labels=1: the decoder under `model.*` and a bias-free `score` linear layer), the value head of PPO's critic
and of a reward model. Its forward is replaced by a per-token one: `.logits` is (rows, length, 1), a score at
every position, so the policy's loss contract (`policy/base.py`) and packed micro-batches work unchanged; an
algorithm reads the positions it needs (every response token for a critic, the last token of each sequence for
a reward model). The exported directory is a plain sequence-classification model: `AutoModelForSequenceClassification`
loads it and, as HF does, scores a sequence at its last token that is not the pad token.

Starting a scalar head from a causal LM (a critic from the policy's checkpoint) keeps the decoder's weights and
starts `score` at zero: every score is 0 at first (a critic's values, a reward model's margins), the start is
the same on every load (so the model fingerprint a resume checks is stable), and the first step's gradient of
`score` is the hidden state itself, so it learns from there.
"""

from __future__ import annotations

import contextlib
import types
from typing import Literal

Head = Literal["lm", "scalar"]
HEADS = ("lm", "scalar")


def auto_class(head: Head):
    """The transformers auto class of a head."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if head == "lm":
        return AutoModelForCausalLM
    if head == "scalar":
        return AutoModelForSequenceClassification
    raise ValueError(f"unknown head {head!r} (one of {', '.join(HEADS)})")


def head_config(config, head: Head):
    """`config` (an HF model config) set up for `head`: one label and a sequence-classification architecture
    for a scalar head, unchanged for the LM head."""
    if head != "scalar":
        return config
    config.num_labels = 1
    config.architectures = [scalar_architecture(config)]
    return config


def scalar_architecture(config) -> str:
    """`LlamaForCausalLM` -> `LlamaForSequenceClassification` (and so on for other decoders)."""
    base = (config.architectures or [f"{type(config).__name__.removesuffix('Config')}ForCausalLM"])[0]
    for suffix in ("ForCausalLM", "ForSequenceClassification", "ForTokenClassification"):
        if base.endswith(suffix):
            return base.removesuffix(suffix) + "ForSequenceClassification"
    return base


def per_token_scores(model):
    """Make a sequence-classification `model` return a score per token (`.logits` of shape (rows, length, 1))
    instead of one pooled score per row; returns it."""

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        kwargs.pop("labels", None)
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            **kwargs).last_hidden_state  # fmt: skip
        return types.SimpleNamespace(logits=self.score(hidden))

    model.forward = types.MethodType(forward, model)
    return model


def from_pretrained(path: str, head: Head, **kwargs):
    """The model of `path` with `head` (a scalar head's `score` is new when `path` is a causal LM)."""
    from transformers import AutoConfig

    config = head_config(AutoConfig.from_pretrained(path), head)
    new_head = head == "scalar" and not is_scalar_model(path)
    with _quiet_transformers(new_head):  # its load report would call the expected new `score` a missing weight
        model = auto_class(head).from_pretrained(path, config=config, **kwargs)
    if head != "scalar":
        return model
    if new_head:
        import torch

        with torch.no_grad():
            model.score.weight.zero_()
    return per_token_scores(model)


@contextlib.contextmanager
def _quiet_transformers(quiet: bool):
    """transformers' warnings off inside the block when `quiet` (its errors still show)."""
    if not quiet:
        yield
        return
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def from_config(config, head: Head, **kwargs):
    """A model of `config` with `head` (weights initialised as transformers does, or on meta under a context)."""
    model = auto_class(head).from_config(head_config(config, head), **kwargs)
    return per_token_scores(model) if head == "scalar" else model


def is_scalar_model(path: str) -> bool:
    """Whether the HF model at `path` is a sequence-classification model (a reward model or a critic)."""
    import json
    from pathlib import Path

    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or [])
