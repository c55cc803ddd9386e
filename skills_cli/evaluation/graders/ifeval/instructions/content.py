"""`detectable_content:*` and `punctuation:*`: placeholders, a postscript, no commas."""

from __future__ import annotations

import re

from skills_cli.evaluation.graders.ifeval.verifiers import instruction, integer, text

# a placeholder: square brackets on one line, [like this]
_PLACEHOLDER = re.compile(r"\[[^\n\]]*\]")
# what may open the postscript's line before its marker: indentation, markdown emphasis or a quote mark ("**P.S.**")
_LINE_OPENING = r"^[ \t>*_]*"
# commas in any script a response may be written in: ASCII, full-width (CJK) and Arabic
COMMAS = ",，،"


@instruction("detectable_content:number_placeholders", "at least N [placeholders] in square brackets")
def number_placeholders(response: str, kwargs) -> bool:
    return len(_PLACEHOLDER.findall(response)) >= integer(kwargs, "num_placeholders")


@instruction("detectable_content:postscript", "a line starts with the postscript marker (P.S., P.P.S, ...)")
def postscript(response: str, kwargs) -> bool:
    return re.search(_LINE_OPENING + marker_pattern(text(kwargs, "postscript_marker")), response,
                     re.MULTILINE | re.IGNORECASE) is not None  # fmt: skip


def marker_pattern(marker: str) -> str:
    """The marker as a pattern: a space may follow each inner period ("P. S.") and a marker with periods may
    drop its final one ("P.P.S" and "P.P.S." both mark a postscript)."""
    parts = marker.rstrip(".").split(".")
    return r"\.\s?".join(re.escape(part) for part in parts) + (r"\.?" if "." in marker else "")


@instruction("punctuation:no_comma", "no comma anywhere (ASCII, full-width or Arabic)")
def no_comma(response: str, kwargs) -> bool:
    return not any(comma in response for comma in COMMAS)
