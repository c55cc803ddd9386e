"""The text units IFEval's instructions count: words, all-capital words, sentences, paragraphs, the language.

Our own small splitters, standard library only, so grading needs no tokenizer data downloaded at run time (NLTK's
sentence tokenizer, which the reference implementation uses, needs its `punkt` models fetched first):

- A word is a run of letters, digits or `_` (`\\w+`, Unicode-aware): "don't" is two words, "state-of-the-art"
  four, "3.5" two. That is the counting rule of the IFEval reference, so word limits mean what they meant there.
- An all-capital word is a token of letters/digits that may hold inner `'`, `’`, `.` or `-` ("U.S.", "DON'T",
  "COVID-19") and whose cased letters are all upper case; "I" and "A" count, as they do in the reference.
- Sentences: see `split_sentences`.
- Paragraphs come in two kinds, as the instructions define them: separated by the markdown divider `***`
  (`divider_paragraphs`) or by blank lines (`blank_line_paragraphs`).
- Language: `langdetect` (a port of Google's language-detection library: pure Python, its profiles ship in the
  wheel, so it works offline), made deterministic by seeding its factory with 0.
"""

from __future__ import annotations

import re
from functools import cache

_WORD = re.compile(r"\w+")
_CAPITAL_TOKEN = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")

# letters joined by periods: "U.S", "e.g", "a.m" (the final period is the terminator)
_DOTTED_LETTERS = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
# A candidate sentence end: a run of terminal punctuation, any closing quotes, brackets or markdown emphasis,
# then white space or the end of the text. (`3.5`, `example.com` and `a.m` have no space after the period.)
_TERMINATOR = re.compile(r"[.!?]+[\"'”’)\]*_]*(?=\s|$)")
# Words that end with a period without ending a sentence (lower case, without the final period). An abbreviation
# at the very end of the text still ends it.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st mt vs etc cf al approx ca fig figs vol vols pp eds dept inc ltd corp ph.d "
    "jan feb apr jun jul aug sep sept oct nov dec gen lt sgt capt rev".split()
)


def count_words(text: str) -> int:
    """How many `\\w+` runs the text holds."""
    return len(_WORD.findall(text))


def capital_words(text: str) -> list[str]:
    """The tokens whose cased letters are all upper case (a token with no letter, such as "2024", is not one)."""
    return [token for token in _CAPITAL_TOKEN.findall(text) if token.isupper()]


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order, each stripped.

    A sentence ends at `.`, `!` or `?` (or a run of them, `?!`, `...`; closing quotes and brackets stay with it)
    followed by white space or the end of the text. A single period does NOT end a sentence after a known
    abbreviation ("Dr.", "e.g.", "U.S."), after a capital initial ("J. K. Rowling") or after a list number at the
    start of a line ("1. First"); an ellipsis does not when the next word starts in lower case ("... and then").
    Line breaks alone do not end a sentence (a heading runs into the sentence after it, as in NLTK's punkt). A
    piece without a letter or digit (a divider `***`, a lone bullet) is no sentence.
    """
    sentences, start = [], 0
    for match in _TERMINATOR.finditer(text):
        if _ends_sentence(text, match):
            sentences.append(text[start : match.end()])
            start = match.end()
    sentences.append(text[start:])
    return [sentence.strip() for sentence in sentences if _WORD.search(sentence)]


def count_sentences(text: str) -> int:
    return len(split_sentences(text))


def _ends_sentence(text: str, match: re.Match) -> bool:
    terminator = match.group()
    if terminator[0] in "!?":
        return True
    if terminator.startswith(".."):  # an ellipsis trails off inside a sentence when lower case follows
        return not _next_word_is_lower_case(text, match.end())
    token, token_start = _token_before(text, match.start())
    if token.lower() in ABBREVIATIONS or _DOTTED_LETTERS.fullmatch(token) or (len(token) == 1 and token.isupper()):
        return not text[match.end() :].strip()  # "Dr.", "U.S.", "J.": only the end of the text ends them
    line_start = text.rfind("\n", 0, token_start) + 1
    # "1." opening a line numbers a list item; any other word's period ends the sentence, whatever the case of
    # the next word (an all-lower-case response still has sentences)
    return not (token.isdigit() and not text[line_start:token_start].strip())


def _token_before(text: str, end: int) -> tuple[str, int]:
    """The non-blank run that ends at `end`, without its opening quotes, brackets or emphasis, and its start."""
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    return text[start:end].lstrip("\"'“‘([*_"), start


def _next_word_is_lower_case(text: str, position: int) -> bool:
    rest = text[position:].lstrip()
    return bool(rest) and rest[0].islower()


def divider_paragraphs(text: str) -> list[str]:
    """The pieces between markdown dividers: runs of three or more `*` (on their own line or not)."""
    return re.split(r"\s*\*{3,}\s*", text)


def blank_line_paragraphs(text: str) -> list[str]:
    """The non-blank pieces between blank lines (a line holding only spaces is blank too), each stripped."""
    return [piece.strip() for piece in re.split(r"\n[ \t]*\n", text) if piece.strip()]


@cache
def _seeded_detector() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0  # langdetect samples at random: the seed makes a text's language the same every run


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of the text's language (`zh-cn` is reported as `zh`), or None when there is nothing to
    judge (no letters)."""
    from langdetect import LangDetectException, detect

    _seeded_detector()
    try:
        return detect(text).split("-")[0]
    except LangDetectException:
        return None
