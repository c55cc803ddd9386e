"""Slurm's compact node lists (`skills-n[1-2],vm`, `gpu[001-003,7]x`, `r[1-2]n[1-2]`) as node names, in the order
`scontrol show hostnames` gives them, without a round trip or a Slurm client (a container node may have none)."""

from __future__ import annotations

import re

_RANGE_GROUP = re.compile(r"\[([^\]]*)\]")
NO_NODES = ("", "None assigned", "(null)")  # sacct's and squeue's words for a job that never got a node


def expand_hostlist(expression: str) -> list[str]:
    """The names of a node list, in order; [] for a job without nodes."""
    if expression.strip() in NO_NODES:
        return []
    names: list[str] = []
    for item in _top_level_items(expression):
        names += _expand_item(item)
    return names


def _top_level_items(expression: str) -> list[str]:
    """Split at the commas that are not inside brackets."""
    items, depth, current = [], 0, ""
    for char in expression.strip():
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    return [item for item in [*items, current] if item]


def _expand_item(item: str) -> list[str]:
    match = _RANGE_GROUP.search(item)
    numbers = _range_numbers(match.group(1)) if match else None
    if not match or numbers is None:
        return [item]  # a plain name, or brackets that hold no numeric ranges: the text as Slurm gave it
    prefix, rest = item[: match.start()], item[match.end() :]
    return [prefix + number + tail for number in numbers for tail in _expand_item(rest)]


def _range_numbers(ranges: str) -> list[str] | None:
    """`001-003,7` -> 001 002 003 7: the width of a range's first number pads the others (Slurm's rule); None
    when a part is not a number or a range of numbers."""
    numbers = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            return None
        numbers += [str(number).zfill(len(low)) for number in range(int(low), int(high or low) + 1)]
    return numbers
