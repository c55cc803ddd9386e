"""HF export: a trained (sharded) model, or an average of checkpoints, as a `save_pretrained` directory.

The sharded parameters are gathered into a full state dict on rank 0 (CPU), loaded into a model built on the
meta device from the base model's config (no second random init, no second copy of the weights), and written
by transformers' own `save_pretrained` (safetensors, sharded files and index for large models, tied weights
handled). The tokenizer files and generation config are copied verbatim from the source directories, so the
export tokenizes exactly like the model it came from.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("skills_cli.sft")

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json")  # fmt: skip


def gather_full_state_dict(model) -> dict:
    """The full, unsharded state dict on rank 0 (CPU); an empty dict on the other ranks. Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def copy_tokenizer(tokenizer_dir: str | Path, output_dir: Path) -> None:
    copied = False
    for name in TOKENIZER_FILES:
        source = Path(tokenizer_dir) / name
        if source.is_file():
            shutil.copy2(source, output_dir / name)
            copied = True
    if not copied:
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(output_dir))


def empty_state_dict(base_model: str, head: str = "lm") -> dict:
    """Uninitialised float32 tensors with the names and shapes of the base model's state dict (with `head`)."""
    import torch
    from transformers import AutoConfig

    from skills_cli.training.components.heads import from_config

    with torch.device("meta"):
        model = from_config(AutoConfig.from_pretrained(base_model), head, dtype=torch.float32)
    return {name: torch.empty(tensor.shape, dtype=torch.float32) for name, tensor in model.state_dict().items()}


def save_hf_model(state_dict: dict, base_model: str | Path, output_dir: str | Path, dtype,
                  tokenizer_dir: str | Path | None = None, head: str = "lm") -> Path:  # fmt: skip
    """Write `state_dict` (full tensors) as an HF model with `base_model`'s architecture and `head` ("lm": a
    causal LM; "scalar": a sequence-classification model, see `heads.py`); returns the directory.

    A new (or empty) `output_dir` appears whole or not at all: the model is written to a hidden sibling and
    renamed into place, so a job killed mid-export leaves no half model that looks like a real one. An existing
    directory with files in it is written into as it is (it may hold the user's other files)."""
    output_dir = Path(output_dir)
    if output_dir.is_dir() and any(output_dir.iterdir()):
        return _write_hf_model(state_dict, base_model, output_dir, dtype, tokenizer_dir, head)
    staging = output_dir.parent / f".{output_dir.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # left by an export that was killed
    _write_hf_model(state_dict, base_model, staging, dtype, tokenizer_dir, head)
    if output_dir.is_dir():
        output_dir.rmdir()  # empty (checked above)
    staging.rename(output_dir)
    return output_dir


def _write_hf_model(state_dict: dict, base_model: str | Path, output_dir: Path, dtype, tokenizer_dir,
                    head: str = "lm") -> Path:  # fmt: skip
    import torch
    from transformers import AutoConfig, GenerationConfig

    from skills_cli.training.components.heads import from_config

    output_dir.mkdir(parents=True, exist_ok=True)
    config = AutoConfig.from_pretrained(str(base_model))
    if head == "scalar" and config.pad_token_id is None:
        # HF's sequence classification scores a row at its last non-pad token and needs the pad id to find it
        config.pad_token_id = _tokenizer_pad_id(tokenizer_dir or base_model)
    with torch.device("meta"):
        model = from_config(config, head, dtype=dtype)
    tensors = {name: tensor.to(dtype) for name, tensor in state_dict.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    # A tied LM head shares the embedding tensor, so the state dict may carry it under one name only.
    missing = [name for name in missing if not _is_tied(model, name)]
    if missing or unexpected:
        raise RuntimeError(f"state dict does not match {type(model).__name__}: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")  # fmt: skip
    model.tie_weights()
    model.save_pretrained(str(output_dir))
    if (Path(base_model) / "generation_config.json").is_file():
        GenerationConfig.from_pretrained(str(base_model)).save_pretrained(str(output_dir))
    copy_tokenizer(tokenizer_dir or base_model, output_dir)
    return output_dir


def _tokenizer_pad_id(tokenizer_dir) -> int | None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _is_tied(model, name: str) -> bool:
    return bool(getattr(model.config, "tie_word_embeddings", False)) and name == "lm_head.weight"
