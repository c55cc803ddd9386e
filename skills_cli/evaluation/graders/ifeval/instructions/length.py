"""`length_constraints:*`: how many words, sentences or paragraphs, and the first word of the n-th paragraph.

Words and sentences are counted as `skills_cli.evaluation.graders.ifeval.text` defines them. Paragraphs are
separated by the markdown divider `***` for `number_paragraphs` and by blank lines for
`nth_paragraph_first_word`, as the two instructions tell the model.
"""

from __future__ import annotations

from skills_cli.evaluation.graders.ifeval.text import (
    blank_line_paragraphs,
    count_sentences,
    count_words,
    divider_paragraphs,
)
from skills_cli.evaluation.graders.ifeval.verifiers import InstructionArgumentError, compare, instruction, integer, text

# what `nth_paragraph_first_word` cuts off a paragraph's first word: "Summary:" and "Summary," are "summary"
_WORD_END = set(".,;:?!'\"")


@instruction("length_constraints:number_words", "the word count is `less than`/`at least` N")
def number_words(response: str, kwargs) -> bool:
    return compare(count_words(response), kwargs, "relation", "num_words")


@instruction("length_constraints:number_sentences", "the sentence count is `less than`/`at least` N")
def number_sentences(response: str, kwargs) -> bool:
    return compare(count_sentences(response), kwargs, "relation", "num_sentences")


@instruction("length_constraints:number_paragraphs", "exactly N paragraphs separated by `***`, none of them empty")
def number_paragraphs(response: str, kwargs) -> bool:
    paragraphs = divider_paragraphs(response)
    # a divider before the first or after the last paragraph is harmless; two dividers in a row are not
    if paragraphs and not paragraphs[0].strip():
        paragraphs = paragraphs[1:]
    if paragraphs and not paragraphs[-1].strip():
        paragraphs = paragraphs[:-1]
    if any(not paragraph.strip() for paragraph in paragraphs):
        return False
    return len(paragraphs) == integer(kwargs, "num_paragraphs")


@instruction("length_constraints:nth_paragraph_first_word",
             "exactly N blank-line-separated paragraphs, and paragraph n starts with the word (case-insensitive)")  # fmt: skip
def nth_paragraph_first_word(response: str, kwargs) -> bool:
    expected, nth = integer(kwargs, "num_paragraphs"), integer(kwargs, "nth_paragraph")
    first_word = text(kwargs, "first_word").lower()
    if nth < 1:
        raise InstructionArgumentError(f"argument 'nth_paragraph' must be at least 1, got {nth}")
    paragraphs = blank_line_paragraphs(response)
    if len(paragraphs) != expected or nth > len(paragraphs):
        return False
    return _first_word(paragraphs[nth - 1]) == first_word


def _first_word(paragraph: str) -> str:
    """The paragraph's first word, lower case, without opening quotes and from its first punctuation mark on."""
    word = paragraph.split()[0].lstrip("'\"")
    for index, character in enumerate(word):
        if character in _WORD_END:
            return word[:index].lower()
    return word.lower()
