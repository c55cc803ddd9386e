"""`detectable_format:*`: bullet lists, highlighted sections, numbered sections, JSON, a title, fixed answers."""

from __future__ import annotations

import json
import re

from skills_cli.evaluation.graders.ifeval.verifiers import instruction, integer, text

# a markdown bullet item: optional indentation, `*`, `-` or `+`, white space, then text ("**bold**" lines,
# `---` rules and "-5 degrees" are not items)
_BULLET = re.compile(r"^[ \t]*[*+-][ \t]+\S", re.MULTILINE)
# `**text**` or `*text*` on one line, without inner asterisks
_HIGHLIGHT = re.compile(r"\*\*([^\n*]+)\*\*|\*([^\n*]+)\*")
_TITLE = re.compile(r"<<([^\n]+?)>>")
# an optional opening code fence (```, ```json in any case) and an optional closing one around the JSON
_JSON_FENCES = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


@instruction("detectable_format:number_bullet_lists", "exactly N markdown bullet items (`* `, `- ` or `+ ` lines)")
def number_bullet_lists(response: str, kwargs) -> bool:
    return len(_BULLET.findall(response)) == integer(kwargs, "num_bullets")


@instruction("detectable_format:number_highlighted_sections", "at least N non-blank `*highlighted*` spans")
def number_highlighted_sections(response: str, kwargs) -> bool:
    spans = [double or single for double, single in _HIGHLIGHT.findall(response)]
    return sum(bool(span.strip()) for span in spans) >= integer(kwargs, "num_highlights")


@instruction("detectable_format:multiple_sections", "at least N section markers (`<splitter> <number>`, case as given)")
def multiple_sections(response: str, kwargs) -> bool:
    marker = re.compile(rf"(?<!\w){re.escape(text(kwargs, 'section_spliter'))}\s*\d+")
    return len(marker.findall(response)) >= integer(kwargs, "num_sections")


@instruction("detectable_format:json_format", "the whole response parses as JSON (``` or ```json fences allowed)")
def json_format(response: str, kwargs) -> bool:
    try:
        json.loads(_JSON_FENCES.sub("", response.strip()))
    except ValueError:
        return False
    return True


@instruction("detectable_format:title", "a title in double angular brackets, <<like this>>, on one line")
def title(response: str, kwargs) -> bool:
    return any(found.strip() for found in _TITLE.findall(response))


@instruction("detectable_format:constrained_response", "contains one of 'My answer is yes./no./maybe.'")
def constrained_response(response: str, kwargs) -> bool:
    return any(option in response for option in CONSTRAINED_OPTIONS)
