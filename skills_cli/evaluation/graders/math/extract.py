"""Stage 0: pull the final answer out of a model's output, and say which rule found it.

Rules, first that finds something wins (`Extraction.path` names it):

- `boxed`: the last `\\boxed{}` / `\\fbox{}` (nested braces matched; `\\boxed 5` too), joined with the boxes just
  before it when only `,`, `and`, `\\quad` separate them (`\\boxed{2}, \\boxed{3}` is `2, 3`). A box wins over every
  rule below; only a "final answer" statement of a value after the last box overrides it. An unclosed last box (a
  truncated output) is no answer, since the model was still writing it.
- `regex`: group 1 of the last match of the caller's `regex` (the benchmark's own answer format).
- `answer_phrase`: what follows the last final-answer phrase ("the answer is", "The final answer is",
  "Final Answer:", "**Answer:**", GSM8K's `#### 18` line): its first math span, else the words up to the end of
  that sentence (after its last "is": "The largest $n$ is 34"). A clear phrase beats every later number, so
  "Final Answer: ... 28%. I hope it is correct. Note: ... 72%" is 28%.
- `whole_output`: an output that is nothing but an answer (`\\sqrt{51}`, `(3, 4]`, `\\text{yes}`): short, one
  line, no math delimiters, no words outside `\\text{}`.
- `last_math_span`: the last `$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]` or bare matrix environment (inline
  spans never cross a line, as in LaTeX); spans that are prose (an unpaired currency `$`) are skipped.
- `last_number`: the last number standing alone (not touching letters, braces or operators: `AZYUK2A`,
  `x = \\sqrt{51}` and `1+2i` have none), thousands separators, fractions, `%`, times allowed. The later of the
  last math span and the last number wins: what the output says last.
- `none`: nothing found.

A phrase or span that is a computation ending in a value (`100 - 72 = 28`, `2 + \\frac{5}{3} + 1 = \\frac{14}{3}`)
gives the value after its last `=`; one whose left side has variables (`y = 2x + 3`) is kept whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOX_COMMANDS = ("\\boxed", "\\fbox")

BOXED, REGEX, ANSWER_PHRASE, WHOLE_OUTPUT, LAST_MATH_SPAN, LAST_NUMBER, NONE = (
    "boxed",
    "regex",
    "answer_phrase",
    "whole_output",
    "last_math_span",
    "last_number",
    "none",
)


@dataclass(frozen=True)
class Extraction:
    answer: str | None
    path: str  # which rule found it: one of the names above


def extract_answer(text: str | None, regex: str | None = None) -> str | None:
    """The final answer in `text` by the rules above, or None. Never raises."""
    return extract_with_path(text, regex).answer


def extract_with_path(text: str | None, regex: str | None = None) -> Extraction:
    """The final answer and the rule that found it (see the module docstring). Never raises."""
    if not isinstance(text, str):
        return Extraction(None, NONE)
    boxes = _top_level_boxes(text)
    if boxes:
        return _boxed_answer(text, boxes)
    if regex:
        matched = _last_regex_match(text, regex)
        if matched is not None:
            return Extraction(matched, REGEX)
    phrase = _after_answer_phrase(text)
    if phrase:
        return Extraction(phrase, ANSWER_PHRASE)
    if _is_bare_answer(text):
        return Extraction(_final_value(text), WHOLE_OUTPUT)
    return _last_value(text)


_MAX_BARE_ANSWER = 100


def _is_bare_answer(text: str) -> bool:
    """An output that is only an answer (`\\sqrt{51}`, `(3, 4]`, `\\text{Evelyn}`): short, one line, no math
    delimiters (those are spans) and no words outside `\\text{}` (a bare word is not taken for an answer)."""
    text = text.strip()
    if not text or len(text) > _MAX_BARE_ANSWER or "\n" in text or _math_spans(text):
        return False
    return not _WORD_RE.search(_TEXT_ARGUMENT_RE.sub(" ", text))


# -- boxes ---------------------------------------------------------------------------------------------------------
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")
# What may stand between boxes that together give one answer: `\boxed{1}, \boxed{2}`,
# `\boxed{1} \text{ and } \boxed{2}`.
_BOX_GAP_RE = re.compile(
    r"(?:\s|[,;&$]|\\[()\[\],]|\\q?quad(?![a-zA-Z])|\\text\s*\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b)*"
)


def _top_level_boxes(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, content) of each box not inside another; content None for an unclosed box."""
    boxes: list[tuple[int, int, str | None]] = []
    for match in _BOX_RE.finditer(text):
        if boxes and (boxes[-1][2] is None or match.start() < boxes[-1][1]):
            continue  # inside the previous box (or after an unclosed one, which runs to the end)
        content, end = _box_argument(text, match.end())
        boxes.append((match.start(), end, content))
    return boxes


def _boxed_answer(text: str, boxes: list) -> Extraction:
    """The last box, joined with the boxes just before it when only `,` / `and` separate them.

    A later "final answer" phrase overrides it: `... = \\boxed{255}. Final Answer: The final answer is $10,455$`.
    An unclosed last box is a truncated output: no answer.
    """
    final_phrase = _after_answer_phrase(text[boxes[-1][1] :], final_only=True)
    if final_phrase and not _WORD_RE.search(_TEXT_ARGUMENT_RE.sub(" ", final_phrase)):
        return Extraction(final_phrase, ANSWER_PHRASE)  # a value, not "... is the final answer, I hope it is correct"
    if boxes[-1][2] is None:
        return Extraction(None, NONE)
    group = [boxes[-1]]
    for box in reversed(boxes[:-1]):
        if box[2] is None or not _BOX_GAP_RE.fullmatch(text[box[1] : group[0][0]]):
            break
        group.insert(0, box)
    answers = [_unwrap_box(content) for _, _, content in group]
    return Extraction(", ".join(dict.fromkeys(answers)), BOXED)  # `\\boxed{5} \\boxed{5}` is 5


def _unwrap_box(content: str) -> str:
    """`\\boxed{\\boxed{7}}` is 7."""
    inner = _top_level_boxes(content)
    if len(inner) == 1 and inner[0][0] == 0 and inner[0][1] >= len(content.rstrip()) and inner[0][2] is not None:
        return _unwrap_box(inner[0][2])
    return content


def _box_argument(text: str, position: int) -> tuple[str | None, int]:
    """The argument of a box command ending at `position`, and where it ends."""
    while position < len(text) and text[position] in " \t":
        position += 1
    if position < len(text) and text[position] == "{":
        close = _closing_brace(text, position)
        return (None, len(text)) if close is None else (text[position + 1 : close].strip(), close + 1)
    # `\boxed 5`: the argument runs to the next space or `$` (TeX would take one token; models mean the answer).
    match = re.match(r"[^\s$]+", text[position:])
    if match is None:
        return None, len(text)
    return match.group(0).rstrip(".,;"), position + match.end()


def last_boxed_content(text: str) -> str | None:
    """The content of the last box (the innermost when boxes nest); None without a closed box."""
    boxes = _top_level_boxes(text)
    if not boxes or boxes[-1][2] is None:
        return None
    return _unwrap_box(boxes[-1][2])


def _closing_brace(text: str, open_index: int) -> int | None:
    """Where the brace group opening at `open_index` closes; None when it never does (a truncated output)."""
    depth = 0
    for index in range(open_index, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
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


# -- answer phrases ------------------------------------------------------------------------------------------------
_PHRASE_RE = re.compile(
    r"(?P<final>\bfinal\s+answer\b(?:\s+is\b)?)"
    r"|\b(?:the\s+)?(?:correct\s+)?answer\s+(?:is|would\s+be|will\s+be)\b|\banswer\b(?=\s*\**\s*[:：])"
    r"|^####(?=\s)",  # GSM8K's own final-answer line
    re.IGNORECASE | re.MULTILINE,
)
# Words between the phrase and the value: "the answer is therefore $9$", "is equal to 9".
_FILLER_RE = re.compile(
    r"^(?:(?:therefore|thus|then|simply|just|equal\s+to|given\s+by|indeed|exactly)\b[\s,:]*)+", re.IGNORECASE
)
# A sentence ends at `.` before a space, a line break, `;`, `!`, `?`, or a clause ("5 because ...", "5, since").
_SENTENCE_END_RE = re.compile(r"\.(?=\s|$)|\n|;|!|\?|,?\s+(?:because|since|which|as|so|where|when)\b")
_VERB_RE = re.compile(r"\s(?:is|are|equals|was|were|be)\s", re.IGNORECASE)
_MAX_PHRASE_ANSWER = 120  # characters: longer text after "the answer is" is an explanation, not an answer
_DECORATION = " \t*_\"'`:："


def _after_answer_phrase(text: str, final_only: bool = False) -> str | None:
    """The answer after the last final-answer phrase that has one ("Final Answer: The final answer is $34$")."""
    for match in reversed(list(_PHRASE_RE.finditer(text))):
        if final_only and not match.group("final"):
            continue
        candidate = _answer_after(text[match.end() :])
        if candidate:
            return candidate
    return None


def _answer_after(rest: str) -> str | None:
    rest = _FILLER_RE.sub("", rest.lstrip(_DECORATION + "\n")).lstrip(_DECORATION + "\n")
    spans = _math_spans(rest)
    if spans and spans[0].start == 0:
        return _final_value(spans[0].content) or None
    end = _SENTENCE_END_RE.search(_mask_spans(rest, spans, "x"))  # no sentence ends inside math
    sentence = (rest[: end.start()] if end else rest).strip(_DECORATION + ".,")
    if not sentence or len(sentence) > _MAX_PHRASE_ANSWER:
        return None
    verbs = list(_VERB_RE.finditer(sentence))
    if verbs:  # "The largest $n$ is 34", "the volume of $ABCD$ is 120"
        return _answer_after(sentence[verbs[-1].end() :])
    if not _is_wordy(sentence):
        return _final_value(sentence) or None
    # "Final Answer: Jane started growing Sphere 3 hours ago": the one value the sentence states, if only one
    values = _math_spans(sentence) or _NUMBER_RE.findall(sentence)
    return _last_value(sentence).answer if len(values) == 1 else None


def _is_wordy(text: str) -> bool:
    """More than three words of prose outside math: an explanation, not an answer ("yes", "Monday" are fine)."""
    return len(_WORD_RE.findall(_mask_spans(text, _math_spans(text)))) > 3


# -- math spans and numbers ----------------------------------------------------------------------------------------
# `$$...$$` and `\[...\]` may span lines; `$...$` and `\(...\)` may not. `\$` is a dollar sign, never a delimiter.
_DELIMITER_RE = re.compile(r"\\\$|\$\$|\$|\\[()\[\]]|\\(begin|end)\{([pbvBV]?matrix)\}|\n")
_CLOSERS = {"$$": "$$", "$": "$", "\\(": "\\)", "\\[": "\\]"}
_SINGLE_LINE = frozenset({"$", "\\("})
_MAX_RESCANS = 3  # an unclosed opener is skipped and the text rescanned; a few times at most (linear time)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    content: str


def _math_spans(text: str) -> list[_Span]:
    """Every math span, in order, found in one pass over the delimiters (a regex with lazy bodies is quadratic on
    a long output full of unclosed `\\(`)."""
    spans: list[_Span] = []
    skip: set[int] = set()
    for _ in range(_MAX_RESCANS + 1):
        unclosed = _scan_spans(text, skip, spans)
        if unclosed is None:
            return spans
        skip.add(unclosed)
        spans.clear()
    return spans


def _scan_spans(text: str, skip: set[int], spans: list[_Span]) -> int | None:
    """Fill `spans`; the start of an opener that never closes (to rescan without it), else None."""
    opener: re.Match | None = None
    for token in _DELIMITER_RE.finditer(text):
        value = token.group(0)
        if opener is None:
            if value in _CLOSERS or token.group(1) == "begin":
                opener = None if token.start() in skip else token
            continue
        if value == "\n" and opener.group(0) in _SINGLE_LINE:
            opener = None  # inline math never crosses a line
        elif _closes(opener, token):
            start = opener.start() if opener.group(1) else opener.end()
            end = token.end() if opener.group(1) else token.start()
            spans.append(_Span(opener.start(), token.end(), text[start:end].strip()))
            opener = None
    return opener.start() if opener is not None else None


def _closes(opener: re.Match, token: re.Match) -> bool:
    if opener.group(1):  # \begin{pmatrix} closes at the \end of the same kind
        return token.group(1) == "end" and token.group(2) == opener.group(2)
    return token.group(0) == _CLOSERS[opener.group(0)]


def _mask_spans(text: str, spans: list[_Span], fill: str = " ") -> str:
    """`text` with every span replaced by `fill` characters (positions kept)."""
    pieces, position = [], 0
    for span in spans:
        pieces += [text[position : span.start], fill * (span.end - span.start)]
        position = span.end
    return "".join(pieces) + text[position:]


# A number standing alone: after the start, a space, `$`, `=`, `:` or `*`, and before the end, a space or
# punctuation. A digit touching letters, braces or operators is part of an expression (`\sqrt{51}`, `2k`, `1+2i`,
# `AZYUK2A`) and never a number of its own. Fractions (`2/3`, `\frac{2}{3}`), a trailing `%`, and times and
# ratios (`1:00 p.m.`, `3:2`) are numbers here.
_NUMBER_RE = re.compile(
    r"(?<![^\s$=:*])"
    r"(?:-?\\[dt]?frac\{\d+\}\{\d+\}"
    r"|\d+(?::\d+)+(?:\s?(?i:[ap]\.?m\.?))?"
    r"|-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?<=\d)(?:/\d+)?(?:\s?\\?%)?)"
    r"(?=$|[\s$;:!?)\]\"'*€£¥]|[.,](?!\d))"
)
_TEXT_ARGUMENT_RE = re.compile(r"\\(?:text\w*|math\w+|mbox|operatorname|begin|end)\s*\{[^{}]*\}")
_ENGLISH_RE = re.compile(
    r"(?<![\\a-zA-Z])(?:the|then|is|are|of|for|to|more|total|each|per|with|so|we|get)(?![a-zA-Z])", re.IGNORECASE
)
_LONG_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}")
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")


def _is_prose_span(content: str) -> bool:
    """`$5 and then $`: two currency signs, not math. Math spans hold no English outside `\\text{}`."""
    bare = _TEXT_ARGUMENT_RE.sub(" ", content)
    return bool(_ENGLISH_RE.search(bare)) or len(_LONG_WORD_RE.findall(bare)) >= 2


def _last_value(text: str) -> Extraction:
    """The later of the last math span and the last number outside math: the last thing the output states."""
    spans = _math_spans(text)
    span_value, span_end = None, -1
    for span in reversed(spans):
        if span.content and not _is_prose_span(span.content):
            span_value, span_end = _final_value(span.content) or None, span.end
            break
    numbers = list(_NUMBER_RE.finditer(_mask_spans(text, spans)))
    if numbers and numbers[-1].start() >= span_end:
        return Extraction(numbers[-1].group(0).strip(), LAST_NUMBER)
    if span_value:
        return Extraction(span_value, LAST_MATH_SPAN)
    return Extraction(None, NONE)


# -- values --------------------------------------------------------------------------------------------------------
_BARE_LETTER_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]")
_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")
_ALIGNMENT_RE = re.compile(r"^[\s&]+|[\s&]*(?:\\\\)?\s*$")


def _final_value(text: str) -> str:
    """`100 - 72 = 28` -> `28`: a computation gives its result; `y = 2x + 3` and `7 = 11a + c` stay whole."""
    text = text.strip().rstrip(".,;").strip()
    parts = _top_level_equals_parts(text)
    if len(parts) < 2:
        return text
    value = _ALIGNMENT_RE.sub("", parts[-1])
    if not _has_bare_letters(value) and (not _has_bare_letters(parts[0]) or len(parts) > 2):
        return value  # `f(-2) = 2 + 1 = 3` is 3 too
    return text  # an equation or an assignment, which the comparison reads


def _has_bare_letters(text: str) -> bool:
    return bool(_BARE_LETTER_RE.search(_COMMAND_RE.sub("", text)))


def _top_level_equals_parts(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "({[":
            depth += 1
        elif char in ")}]":
            depth -= 1
        elif char == "=" and depth == 0 and text[index - 1 : index] not in ("<", ">", "!", "\\"):
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts
