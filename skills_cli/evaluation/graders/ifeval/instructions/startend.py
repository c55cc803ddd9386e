"""`startend:*` and `combination:*`: how the response ends or is wrapped, a repeated prompt, two responses."""

from __future__ import annotations

from skills_cli.evaluation.graders.ifeval.verifiers import instruction, text

# straight and typographic double quotes: both are "double quotation marks"
QUOTE_PAIRS = (('"', '"'), ("“", "”"))
RESPONSE_SEPARATOR = "******"  # the six asterisks `combination:two_responses` asks for


@instruction("startend:end_checker", "ends with the phrase (case-insensitive; closing quotes and spaces ignored)")
def end_checker(response: str, kwargs) -> bool:
    return response.strip().strip('"').lower().endswith(text(kwargs, "end_phrase").lower())


@instruction("startend:quotation", "the whole response is wrapped in double quotation marks")
def quotation(response: str, kwargs) -> bool:
    stripped = response.strip()
    return len(stripped) > 1 and any(stripped[0] == open_ and stripped[-1] == close for open_, close in QUOTE_PAIRS)


@instruction("combination:repeat_prompt", "starts with the request, repeated word for word (case-insensitive)")
def repeat_prompt(response: str, kwargs) -> bool:
    return response.strip().lower().startswith(text(kwargs, "prompt_to_repeat").lower())


@instruction("combination:two_responses", "exactly two different, non-empty responses separated by ******")
def two_responses(response: str, kwargs) -> bool:
    pieces = response.split(RESPONSE_SEPARATOR)
    # a separator may open or close the text; one between two others leaves an empty response: not allowed
    inner_blank = any(not piece.strip() for piece in pieces[1:-1])
    answers = [piece.strip() for piece in pieces if piece.strip()]
    return not inner_blank and len(answers) == 2 and answers[0] != answers[1]
