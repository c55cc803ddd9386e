"""Stage 1: remove formatting noise so that equal answers become equal strings.

`$`, `\\left`/`\\right`, `\\dfrac`, spacing commands, `\\text{}` wrappers and trailing units, degrees,
currency, thousands separators and trailing dots all go; spaces are squashed (kept only after a command name).
"""

from __future__ import annotations

import re

from skills_cli.evaluation.graders.math.extract import BOX_COMMANDS, last_boxed_content
from skills_cli.evaluation.graders.math.relations import SIMPLE_LHS_RE

_UNICODE_REPLACEMENTS = {
    "\u2212": "-",
    "\u2013": "-",
    "\u00d7": "\\times ",
    "\u00b7": "\\cdot ",
    "\u22c5": "\\cdot ",
    "\u00f7": "\\div ",
    "\u03c0": "\\pi ",
    "\u221a": "\\sqrt",
    "\u221e": "\\infty ",
    "\u00b0": "^\\circ",
    "\u2264": "\\leq ",
    "\u2265": "\\geq ",
    "\u2260": "\\neq ",
    "\u222a": "\\cup ",
    "\u00a0": " ",
    "\uff0c": ",",
    "\u00b2": "^2",
    "\u00b3": "^3",
}
_UNICODE_RE = re.compile("|".join(re.escape(key) for key in _UNICODE_REPLACEMENTS))

# `10,\!080` and `14{,}916` are how MATH writes thousands; they are never list separators.
_LATEX_THOUSANDS_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!)\s*(?=\d{3}(?!\d))")
_SIZING_RE = re.compile(r"\\(?:left|right|[bB]igg?[lrm]?)(?![a-zA-Z])\.?")
_THIN_SPACE_RE = re.compile(r"(?<!\\)\\[,;: ]|\\q?quad(?![a-zA-Z])|~")
_COMMAND_ALIASES = [
    (re.compile(r"\\[dtc]frac(?![a-zA-Z])"), r"\\frac"),
    (re.compile(r"\\[dt]binom(?![a-zA-Z])"), r"\\binom"),
    (re.compile(r"\\(?:le|leqslant)(?![a-zA-Z])"), r"\\leq"),
    (re.compile(r"\\(?:ge|geqslant)(?![a-zA-Z])"), r"\\geq"),
    (re.compile(r"\\ne(?![a-zA-Z])"), r"\\neq"),
    (re.compile(r"\\lt(?![a-zA-Z])"), "<"),
    (re.compile(r"\\gt(?![a-zA-Z])"), ">"),
    (re.compile(r"<="), r"\\leq "),
    (re.compile(r">="), r"\\geq "),
    (re.compile(r"!="), r"\\neq "),
    (re.compile(r"\\(?:displaystyle|textstyle|mathstrut|!)"), ""),
    (re.compile(r"\\varnothing(?![a-zA-Z])|^\\\{\s*\\\}$"), r"\\emptyset"),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\\?\$"), ""),
]
_PERCENT_WORD_RE = re.compile(r"(?<=[\d}])\s*(?:percentage|percent|pct)\b", re.IGNORECASE)
_DEGREE_RE = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree(?![a-zA-Z])")
_TEXT_COMMAND_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textsf|texttt|mathrm|mathbf|mathit|mathsf|mathtt|mbox|"
    r"hbox|operatorname)\s*\{([^{}]*)\}"
)
_REALS_RE = re.compile(r"^\\mathbb\s*\{?\s*R\s*\}?$|^\\R$")
_CONNECTIVE_TEXT_RE = re.compile(r"\s*(?:and|or)\s*", re.IGNORECASE)
_CONNECTIVE_WORD_RE = re.compile(r"\s*\b(?:and|or)\b\s*")
_UNIT_EXPONENT_RE = re.compile(r"\s*\^\s*\{?\s*[23]\s*\}?")
# `137 1/2` is a mixed number; squashing the space would make it 1371/2.
_SPACED_MIXED_NUMBER_RE = re.compile(r"^(-?\d+) (\d+)/(\d+)$")
# `12 million` is 12 \\times 10^{6}, not 12 with a unit
_SCALE_WORD_RE = re.compile(r"^([-+]?\d[\d,]*(?:\.\d+)?)\s*(thousand|million|billion|trillion)\b", re.IGNORECASE)
_SCALE_EXPONENTS = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12}
# `5cm`: a unit glued to a number (only common unit names: `5m` could be 5 times m)
_GLUED_UNIT_RE = re.compile(r"^([-+]?[\d.,]*\d)(?:cm|mm|km|kg|mg|ml|ft|hrs?|mins?|secs?|mph|kph)(?:\^?[23])?$")
_PLAIN_THOUSANDS_RE = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACE_RE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])|\s+")
_SINGLE_CHAR_SCRIPT_RE = re.compile(r"([\^_])\{(\w)\}")
_SINGLE_DIGIT_SQRT_RE = re.compile(r"\\sqrt\{(\d)\}")
_ELEMENT_OF_RE = re.compile(r"^[a-zA-Z](?:_\w)?\\in(?![a-zA-Z])")
_APPROX_RE = re.compile(r"\\approx|\\sim(?![a-zA-Z])")
KNOWN_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh ln log exp sqrt pi frac mod".split()
)


def normalize_answer(answer: str) -> str:
    """A canonical spelling of one answer: noise removed, spaces squashed (kept only after a command name)."""
    text = _strip_delimiters(answer)
    text = _UNICODE_RE.sub(lambda match: _UNICODE_REPLACEMENTS[match.group(0)], text)
    text = _LATEX_THOUSANDS_RE.sub("", text)
    text = _SIZING_RE.sub("", text)
    text = _THIN_SPACE_RE.sub(" ", text)
    for pattern, replacement in _COMMAND_ALIASES:
        text = pattern.sub(replacement, text)
    text = _PERCENT_WORD_RE.sub("%", text)
    text = _DEGREE_RE.sub("", text)
    text = _REALS_RE.sub(r"(-\\infty,\\infty)", text)
    text = _unwrap_text_commands(text)
    text = _keep_exact_side_of_approximation(text)
    text = " ".join(text.split())
    text = _SPACED_MIXED_NUMBER_RE.sub(r"\1\\frac{\2}{\3}", text)
    text = _GLUED_UNIT_RE.sub(r"\1", text)
    text = _SCALE_WORD_RE.sub(_scaled, text)
    text = _drop_trailing_unit_words(text)
    text = _CONNECTIVE_WORD_RE.sub(",", text) if (" and " in text or " or " in text) else text
    if _PLAIN_THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    text = _SPACE_RE.sub(lambda match: match.group(1) + " " if match.group(1) else "", text)
    text = _SINGLE_CHAR_SCRIPT_RE.sub(r"\1\2", text)
    text = _SINGLE_DIGIT_SQRT_RE.sub(r"\\sqrt\1", text)
    text = _ELEMENT_OF_RE.sub("", text)
    return _strip_trailing_punctuation(text)


def _strip_delimiters(text: str) -> str:
    """Remove math-mode delimiters and a box around the whole answer (golds are sometimes stored boxed)."""
    text = text.strip()
    for _ in range(3):
        before = text
        text = text.strip().strip("$").strip()
        for opening, closing in (("\\(", "\\)"), ("\\[", "\\]")):
            if text.startswith(opening) and text.endswith(closing):
                text = text[len(opening) : -len(closing)].strip()
        if text.startswith(BOX_COMMANDS):
            inner = last_boxed_content(text)
            if inner is not None and text.rstrip(". ").endswith("}"):
                text = inner
        if text == before:
            break
    return text


def _unwrap_text_commands(text: str) -> str:
    """`\\text{ and }` becomes a list comma, a trailing `\\text{cm}^2` (a unit) is dropped, others keep their words."""
    for _ in range(5):  # nested wrappers (`\text{\textbf{A}}`) unwrap from the inside out
        match = _TEXT_COMMAND_RE.search(text)
        if match is None:
            return text
        text = _replace_text_command(text, match)
    return text


def _replace_text_command(text: str, match: re.Match) -> str:
    content = match.group(1)
    before, after = text[: match.start()], text[match.end() :]
    if _CONNECTIVE_TEXT_RE.fullmatch(content):
        return f"{before},{after}"
    trailing = _UNIT_EXPONENT_RE.sub("", after, count=1) if after.lstrip().startswith("^") else after
    is_trailing_unit = not trailing.strip(" .") and any(char.isdigit() or char == "}" for char in before)
    if is_trailing_unit and re.search(r"[a-zA-Z]", content) and not re.fullmatch(r"\s*[a-zA-Z]\s*", content):
        return before.rstrip()
    return f"{before}{content}{after}"


def _keep_exact_side_of_approximation(text: str) -> str:
    """`\\frac{\\sqrt3}{3} \\approx 0.577` keeps the exact left side; `x \\approx 11` keeps the value."""
    parts = _APPROX_RE.split(text)
    if len(parts) < 2:
        return text
    left = parts[0].strip()
    if not left or SIMPLE_LHS_RE.fullmatch(left.replace(" ", "")):
        return parts[-1].strip()
    return left


def _scaled(match: re.Match) -> str:
    return f"{match.group(1).replace(',', '')}\\times10^{{{_SCALE_EXPONENTS[match.group(2).lower()]}}}"


def _drop_trailing_unit_words(text: str) -> str:
    """`125 miles` -> `125`, `10 cm^2` -> `10`: words after a value are units (split, no regex, so no backtracking)."""
    words = text.split(" ")
    while len(words) > 1 and _looks_like_unit(words[-1]) and not words[-2].endswith(("\\", "=")):
        previous = " ".join(words[:-1])
        if not any(char.isdigit() for char in previous) or re.search(r"\\[a-zA-Z]+$", previous):
            break
        words.pop()
    return " ".join(words)


def _looks_like_unit(word: str) -> bool:
    core = _UNIT_EXPONENT_RE.sub("", word).rstrip(".")
    return len(core) >= 2 and core.isalpha() and core.isascii() and core.lower() not in KNOWN_WORDS


def _strip_trailing_punctuation(text: str) -> str:
    text = text.strip()
    while text and (text[-1] in ".,;:" or text.endswith("\\")) and not text.endswith("\\\\"):
        text = text[:-1].rstrip()
    return text
