"""What a model folder must hold, checked without importing torch or transformers (the launcher uses it before
submitting; the trainers before loading)."""

from __future__ import annotations

from pathlib import Path

# what a Hugging Face tokenizer is saved as: the fast serialization, sentencepiece, or BPE vocabulary + merges
TOKENIZER_VOCAB_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "tiktoken.model",
)


def tokenizer_problem(path: str | Path) -> str | None:
    """Why `path` holds no loadable tokenizer (None when it has one): checked before loading, so a model folder
    saved without its tokenizer gets one clear sentence instead of transformers' conversion traceback."""
    path = Path(path)
    if not path.is_dir():
        return f"no directory at {path}"
    if not any((path / name).is_file() for name in TOKENIZER_VOCAB_FILES):
        return f"no tokenizer files in {path} (looked for {', '.join(TOKENIZER_VOCAB_FILES)})"
    return None
