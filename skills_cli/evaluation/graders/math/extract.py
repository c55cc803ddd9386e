"""Stage 0: pull the final answer out of a model's output (the last `\\boxed{}`, else a regex's last match)."""

from __future__ import annotations

import re

BOX_COMMANDS = ("\\boxed", "\\fbox")


def extract_answer(text: str | None, regex: str | None = None) -> str | None:
    """The last boxed answer in `text`; else group 1 of the last `regex` match; else None. Never raises."""
    if not isinstance(text, str):
        return None
    boxed = last_boxed_content(text)
    if boxed is not None:
        return boxed
    if regex:
        return _last_regex_match(text, regex)
    return None


def last_boxed_content(text: str) -> str | None:
    start = max(text.rfind(command) for command in BOX_COMMANDS)
    if start < 0:
        return None
    command = next(c for c in BOX_COMMANDS if text.startswith(c, start))
    position = start + len(command)
    if position < len(text) and (text[position].isalpha()):
        return None  # `\boxedsomething` is another command, not a box
    while position < len(text) and text[position] in " \t":
        position += 1
    if position < len(text) and text[position] == "{":
        return _braced_content(text, position)
    # `\boxed 5`: the argument runs to the next space or `$` (TeX would take one token; models mean the answer).
    match = re.match(r"[^\s$]+", text[position:])
    return match.group(0).rstrip(".,;") if match else None


def _braced_content(text: str, open_index: int) -> str | None:
    """The text inside the brace group opening at `open_index`; None when the group never closes (truncated)."""
    depth = 0
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1 : index].strip()
    return None


def _last_regex_match(text: str, regex: str) -> str | None:
    try:
        matches = list(re.finditer(regex, text))
    except (re.error, TypeError):
        return None
    if not matches:
        return None
    last = matches[-1]
    answer = last.group(1) if last.re.groups else last.group(0)
    return answer.strip() if answer is not None else None
