"""Multiple choice: find the option letter a model chose and compare it with the expected letter.

The `mcq` grader is a row grader: the valid letters come from the row's `options` list (four options: A-D;
MMLU-Pro's ten: A-J); a row without `options` accepts A-J. It adds `predicted_answer` (the letter, or None),
`choice_correct` (the headline), `extraction` (the rule that found the letter, or None) and `grading_error`
(a row it could not grade: no valid expected letter).

Rules, strongest first; the first rule with a match decides, and within a rule the LAST match wins (a model
restates its final choice at the end). A letter outside the row's range never counts as a match.

1. `regex`: group 1 of the last match of `--regex`, when one is given (a benchmark's own answer format).
2. `boxed`: the last `\\boxed{...}` holding a letter: `\\boxed{C}`, `\\boxed{(C)}`, `\\boxed{\\text{C}}`,
   `\\boxed{C. 42}`, lower case too. A box holding exactly the text of one option (`\\boxed{42}`) chooses that
   option (`boxed_option_text`).
3. `answer_phrase`: an explicit statement: `Answer: C`, `**Answer:** (C)`, `Final answer: C`, "the answer is C",
   "the correct option is (C)", "the best choice would be C". A lower-case letter counts only when nothing but
   punctuation follows it ("answer: c."), so "the answer is a prime" is not read as option A.
4-6. On the LAST non-empty line only (the earlier lines are reasoning that discusses every option):
   `parenthesized` `(C)`, then `letter_paren` `C)`, then `last_letter`: the last standalone capital letter.
   Standalone means the letter is a whole token: no letter, digit, `_`, `-`, `'` or backslash touches it, so
   the "A" of "As a result" or "B-cells" never counts. "A" and "I" are also English words: followed by a
   space and a lower-case word ("A good choice", "I think") they are not read as options.
"""

from __future__ import annotations

import re
import string
from typing import Any

from skills_cli.evaluation.graders import GRADERS, GRADING_ERROR_KEY, PREDICTED_ANSWER_KEY, GradeOptions, Grader

CHOICE_CORRECT_KEY = "choice_correct"
EXTRACTION_KEY = "extraction"
DEFAULT_NUM_OPTIONS = 10  # rows without an `options` list: A-J (MMLU-Pro's range, the widest of our benchmarks)
LETTERS = string.ascii_uppercase

# a letter that is a whole token (see the module docstring)
_TOKEN_BEFORE = r"(?<![A-Za-z0-9_\\-])"
_TOKEN_AFTER = r"(?![A-Za-z0-9_-])(?!['’][A-Za-z])"  # "C'" closes a quote; "I'm", "A's" are words
# "A"/"I" followed by a lower-case word are the English article and pronoun
_ENGLISH_WORD_AFTER = re.compile(r"\s+[a-z]")
# what may sit between an answer phrase and its letter: markdown emphasis, math delimiters, "option"
_FILLER = r"(?:[\s*_$:'\"“”‘’]|\\\(|\\\[|\\text\{|\\textbf\{|\\mathrm\{|(?i:option|choice|letter)\b)*"
_ANSWER_PHRASE = re.compile(
    r"(?i:\b(?:final\s+answer|answer|(?:correct|right|best)\s+(?:option|choice|letter))"
    r"(?:\s+(?:is|would\s+be|should\s+be|must\s+be|will\s+be)\b|\s*[:=]|\*\*\s*:))"
    + _FILLER
    + r"[(\[]?\s*([A-Za-z])"
    + _TOKEN_AFTER
)
# a lower-case letter counts when closing punctuation or the end of the line follows it at once
_LOWER_CASE_END = re.compile(r"[)\]}*$.'\"”’]|[ \t]*(?:\n|$)")
_PARENTHESIZED = re.compile(r"\(\s*([A-Z])\s*\)")
_LETTER_PAREN = re.compile(_TOKEN_BEFORE + r"(?<!\()([A-Z])\)")
_STANDALONE = re.compile(_TOKEN_BEFORE + r"([A-Z])" + _TOKEN_AFTER)
_BRACE_TOKEN = re.compile(r"\\boxed\s*\{|[{}]")
# wrappers a letter may wear inside a box: \text{C}, (C), C., **C**
_BOX_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_BOXED_LETTER = re.compile(r"[\s(\[*]*([A-Za-z])(?:[\s)\]*]*(?:[.:)]\s*.*)?)$", re.S)


def valid_letters(num_options: int) -> str:
    return LETTERS[: max(1, min(num_options, len(LETTERS)))]


def extract_choice(text: str | None, letters: str, options: list[str] | None = None,
                   regex: str | None = None) -> tuple[str | None, str | None]:  # fmt: skip
    """(the chosen letter, the rule that found it), or (None, None). `letters` are the valid ones; `options`
    (the option texts) let a box holding an option's text choose it. Never raises."""
    if not isinstance(text, str):
        return None, None
    rules = (
        ("regex", lambda: _by_regex(text, regex, letters)),
        ("boxed", lambda: _by_box(text, letters)),
        ("boxed_option_text", lambda: _by_boxed_option_text(text, options or [], letters)),
        ("answer_phrase", lambda: _by_answer_phrase(text, letters)),
        ("parenthesized", lambda: _last_in(_PARENTHESIZED, _last_line(text), letters)),
        ("letter_paren", lambda: _last_in(_LETTER_PAREN, _last_line(text), letters)),
        ("last_letter", lambda: _last_standalone(_last_line(text), letters)),
    )
    for name, rule in rules:
        letter = rule()
        if letter is not None:
            return letter, name
    return None, None


def _by_regex(text: str, regex: str | None, letters: str) -> str | None:
    if not regex:
        return None
    try:
        found = [match.group(1) for match in re.finditer(regex, text)]
    except (re.error, IndexError):
        return None
    chosen = [letter.strip().upper() for letter in found if letter and letter.strip().upper() in letters]
    return chosen[-1] if chosen else None


def _boxes(text: str) -> list[str]:
    """The contents of every complete `\\boxed{...}`, in the order they open (nested braces matched). One pass
    with a stack of open braces: a truncated output full of unclosed boxes costs linear time, not quadratic."""
    open_braces: list[int | None] = []  # content start of each open box; None for a plain brace
    found = []
    for match in _BRACE_TOKEN.finditer(text):
        if match.group() == "}":
            start = open_braces.pop() if open_braces else None
            if start is not None:
                found.append((start, text[start : match.start()]))
        else:
            open_braces.append(match.end() if match.group() != "{" else None)
    return [content for _, content in sorted(found)]


def _unwrap_box(content: str) -> str:
    previous = None
    while previous != content:
        previous, content = content, _BOX_WRAPPERS.sub(r"\1", content)
    return content.strip()


def _by_box(text: str, letters: str) -> str | None:
    for content in reversed(_boxes(text)):
        match = _BOXED_LETTER.match(_unwrap_box(content))
        if match and match.group(1).upper() in letters:
            return match.group(1).upper()
    return None


def _normal_option_text(text: str) -> str:
    return " ".join(_unwrap_box(text).strip("$ .").lower().split())


def _by_boxed_option_text(text: str, options: list[str], letters: str) -> str | None:
    """The last box whose content is exactly one option's text (models that box `42` instead of its letter)."""
    normal = [_normal_option_text(str(option)) for option in options[: len(letters)]]
    for content in reversed(_boxes(text)):
        matches = [index for index, option in enumerate(normal) if option and option == _normal_option_text(content)]
        if len(matches) == 1:
            return letters[matches[0]]
    return None


def _by_answer_phrase(text: str, letters: str) -> str | None:
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        letter = match.group(1)
        if letter.islower() and not _LOWER_CASE_END.match(text, match.end()):
            continue  # "the answer is a prime number": the article, not option A
        if letter.upper() in letters:
            return letter.upper()
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _last_in(pattern: re.Pattern, text: str, letters: str) -> str | None:
    found = [match.group(1) for match in pattern.finditer(text) if match.group(1) in letters]
    return found[-1] if found else None


def _last_standalone(text: str, letters: str) -> str | None:
    for match in reversed(list(_STANDALONE.finditer(text))):
        letter = match.group(1)
        if letter in "AI" and _ENGLISH_WORD_AFTER.match(text, match.end()):
            continue
        if letter in letters:
            return letter
    return None


def row_letters(row: dict) -> str:
    options = row.get("options")
    return valid_letters(len(options) if isinstance(options, list) and options else DEFAULT_NUM_OPTIONS)


def grade_row(row: dict, generation_key: str, options: GradeOptions) -> dict[str, Any]:
    """One row's fields; a row without a valid expected letter is graded incorrect with a `grading_error`."""
    letters = row_letters(row)
    choices = row.get("options") if isinstance(row.get("options"), list) else None
    predicted, rule = extract_choice(row.get(generation_key), letters, choices, options.regex)
    expected = str(row.get("expected_answer", "")).strip().upper()
    error = None
    if len(expected) != 1 or expected not in letters:
        error = f"expected answer {row.get('expected_answer')!r} is not one of the option letters {letters}"
    return {PREDICTED_ANSWER_KEY: predicted, CHOICE_CORRECT_KEY: error is None and predicted == expected,
            EXTRACTION_KEY: rule, GRADING_ERROR_KEY: error}  # fmt: skip


def grade_rows(rows: list[dict], generation_key: str, options: GradeOptions) -> list[dict[str, Any]]:
    return [grade_row(row, generation_key, options) for row in rows]


MCQ_GRADER = GRADERS.register(
    Grader(
        name="mcq",
        description="Multiple choice: the chosen option letter (\\boxed{}, an answer phrase, a final (C) or letter) "
        "against the expected letter; the valid letters come from the row's options.",
        metric_keys=(CHOICE_CORRECT_KEY,),
        grade_rows=grade_rows,
    )
)
