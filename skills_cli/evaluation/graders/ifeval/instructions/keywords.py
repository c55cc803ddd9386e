"""`keywords:*`: words that must appear, must not appear, or appear a number of times; a letter's frequency.

Keywords are matched literally and without regard to case. Existence and frequency count the keyword wherever
it occurs, inside longer words too ("cat" in "category"), as the IFEval reference does; forbidden words count
only as whole words ("can" does not forbid "candle"), as the instruction says "words".
"""

from __future__ import annotations

import re

from skills_cli.evaluation.graders.ifeval.verifiers import InstructionArgumentError, compare, instruction, text, texts


@instruction("keywords:existence", "every keyword appears (case-insensitive, anywhere)")
def keywords_exist(response: str, kwargs) -> bool:
    lowered = response.lower()
    return all(keyword.lower() in lowered for keyword in texts(kwargs, "keywords"))


@instruction("keywords:forbidden_words", "no forbidden word appears as a whole word (case-insensitive)")
def no_forbidden_words(response: str, kwargs) -> bool:
    return not any(re.search(rf"\b{re.escape(word)}\b", response, re.IGNORECASE)
                   for word in texts(kwargs, "forbidden_words"))  # fmt: skip


@instruction("keywords:frequency", "the keyword's occurrences (case-insensitive) are `less than`/`at least` N")
def keyword_frequency(response: str, kwargs) -> bool:
    occurrences = response.lower().count(text(kwargs, "keyword").lower())
    return compare(occurrences, kwargs, "relation", "frequency")


@instruction("keywords:letter_frequency", "the letter's occurrences (either case) are `less than`/`at least` N")
def letter_frequency(response: str, kwargs) -> bool:
    letter = text(kwargs, "letter").lower()
    if len(letter) != 1:
        raise InstructionArgumentError(f"argument 'letter' must be one character, got {letter!r}")
    # any one character is counted as given (the data asks for "#" and "!" once each)
    return compare(response.lower().count(letter), kwargs, "let_relation", "let_frequency")
