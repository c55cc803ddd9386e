"""`language:*` and `change_case:*`: the response's language, all lower or upper case, all-capital words.

The language is `langdetect`'s verdict (see `skills_cli.evaluation.graders.ifeval.text`). A text it cannot
judge (no letters at all) does not fail a language instruction: there is no evidence of another language.
Upper and lower case follow Python's `str.isupper`/`str.islower`: every cased character is in that case and
there is at least one.
"""

from __future__ import annotations

from skills_cli.evaluation.graders.ifeval.text import capital_words, detect_language
from skills_cli.evaluation.graders.ifeval.verifiers import compare, instruction, text


def is_language(response: str, code: str) -> bool:
    detected = detect_language(response)
    return detected is None or detected == code.lower()


@instruction("language:response_language", "the whole response is in the language (ISO 639-1 code)")
def response_language(response: str, kwargs) -> bool:
    return is_language(response, text(kwargs, "language"))


@instruction("change_case:english_lowercase", "English, and no capital letter anywhere")
def english_lowercase(response: str, kwargs) -> bool:
    return response.islower() and is_language(response, "en")


@instruction("change_case:english_capital", "English, and no lower-case letter anywhere")
def english_capital(response: str, kwargs) -> bool:
    return response.isupper() and is_language(response, "en")


@instruction("change_case:capital_word_frequency", "the all-capital words are `less than`/`at least` N")
def capital_word_frequency(response: str, kwargs) -> bool:
    return compare(len(capital_words(response)), kwargs, "capital_relation", "capital_frequency")
