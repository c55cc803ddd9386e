"""The tokenizer and model config a trainer reads from the model folder (shared by every algorithm)."""

from __future__ import annotations

from skills_cli.common.errors import UserError


def load_tokenizer(path: str):
    """The tokenizer exactly as saved (tokenizer.json read verbatim, see inference.model_loading.load_tokenizer)."""
    from skills_cli.inference.model_files import tokenizer_problem
    from skills_cli.inference.model_loading import load_tokenizer as load_saved_tokenizer

    problem = tokenizer_problem(path)
    if problem:
        raise UserError(f"tokenizer: {problem}; save the tokenizer with the model or point policy.tokenizer at it")
    return load_saved_tokenizer(path)


def pad_id(tokenizer) -> int:
    """Padding never reaches the loss or (thanks to masks) attention; any id works, the tokenizer's is tidiest."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token_id is not None:
            return int(token_id)
    return 0


def model_config(path: str):
    """The model's transformers config (architecture numbers for the FLOP count)."""
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)
