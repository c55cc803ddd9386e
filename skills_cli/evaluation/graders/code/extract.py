"""Find the program in a model's answer: the last ```python block, else the last fenced block, else the raw text."""

from __future__ import annotations

import re

THINK_END = "</think>"
PYTHON_TAGS = frozenset({"python", "python3", "py"})
# a fence opens at the start of a line (indentation allowed), with an optional language tag, and closes at the
# next line that starts with ``` or, for an answer cut off mid-block, at the end of the text
_FENCED_BLOCK = re.compile(r"^[ \t]*```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.M | re.S)
_FENCE = re.compile(r"^[ \t]*```", re.M)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language tag in lower case, content) of every fenced block with content, in order."""
    return [(tag.lower(), body) for tag, body in _FENCED_BLOCK.findall(text) if body.strip()]


def extract_code(text: str | None) -> str | None:
    """The code of an answer, or None when it has none. Reasoning before the last `</think>` is ignored (drafts
    there are not the answer). Raw text (no fences) is the code itself: a base model's body-only completion keeps
    its indentation, so only blank lines around it are removed."""
    if not isinstance(text, str):
        return None
    answer = text.rsplit(THINK_END, 1)[-1]
    blocks = fenced_blocks(answer)
    python = [body for tag, body in blocks if tag in PYTHON_TAGS]
    if python or blocks:
        return (python or [body for _, body in blocks])[-1].rstrip() + "\n"
    if _FENCE.search(answer) or not answer.strip():
        return None  # only empty blocks, or nothing at all
    return answer.strip("\n").rstrip() + "\n"
