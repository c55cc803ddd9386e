"""Loading what a model folder holds, the same way for the trainers, the embedded server and data preparation
(transformers is imported inside the functions; `model_files` is the torch-free half the launcher uses)."""

from __future__ import annotations

from pathlib import Path


def load_tokenizer(path: str | Path):
    """The tokenizer saved in `path`, with exactly the ids it was trained with.

    Reads tokenizer.json verbatim through `PreTrainedTokenizerFast`, so model-type specific classes (e.g.
    transformers 5.x swapping in Qwen2Tokenizer and its own pre-tokenizer for qwen2 configs) never apply.
    Directories without a tokenizer.json (sentencepiece-only checkpoints) fall back to AutoTokenizer.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(path)
    if (path / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    return AutoTokenizer.from_pretrained(str(path))
