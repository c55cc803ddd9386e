"""The decision: every stage in order of cost, each deciding or handing the pair on (see the package docstring)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from skills_cli.evaluation.graders.math.expression import expressions_equal, relations_proportional
from skills_cli.evaluation.graders.math.extract import NONE, extract_with_path
from skills_cli.evaluation.graders.math.normalize import KNOWN_WORDS, normalize_answer
from skills_cli.evaluation.graders.math.numeric import numbers_equal, parse_number
from skills_cli.evaluation.graders.math.relations import (
    SIMPLE_LHS_RE,
    has_relation,
    inequality_as_interval,
    looks_like_interval,
    split_relation,
    strip_assignments,
)
from skills_cli.evaluation.graders.math.structures import Node, parse_structure
from skills_cli.evaluation.graders.math.symbolic import GradingError, refusal_reason, symbolic_equal
from skills_cli.evaluation.graders.math.textual import (
    colon_forms_equal,
    has_colon,
    meridiem_conflict,
    unit_conflict,
    worth_symbolic_check,
)


@dataclass(frozen=True)
class GradeResult:
    """The grade of one model output: the extracted answer, whether it is correct, and what went wrong, if anything."""

    predicted_answer: str | None
    correct: bool
    error: str | None = None
    # the extraction rule that found the answer (boxed, regex, answer_phrase, ...: see extract.py); not part of
    # equality, which is about the grade
    extraction: str = field(default=NONE, compare=False)


def math_equal(predicted: str | None, expected: str, timeout: float = 2.0) -> bool:
    """True when `predicted` and `expected` are the same answer; errors and timeouts count as not equal."""
    return _compare(predicted, expected, timeout)[0]


def grade(text: str | None, expected: str, regex: str | None = None, timeout: float = 2.0) -> GradeResult:
    """Extract the answer from a model output and compare it with `expected`."""
    extraction = extract_with_path(text, regex)
    if extraction.answer is None:
        return GradeResult(predicted_answer=None, correct=False, extraction=extraction.path)
    correct, error = _compare(extraction.answer, expected, timeout)
    return GradeResult(extraction.answer, correct, error, extraction.path)


_MAX_ANSWER_LENGTH = 20_000


def _compare(predicted, expected, timeout: float) -> tuple[bool, str | None]:
    """(equal, error): never raises, so one odd answer cannot crash an evaluation run."""
    if predicted is None or expected is None:
        return False, None
    predicted, expected = str(predicted), str(expected)
    if max(len(predicted), len(expected)) > _MAX_ANSWER_LENGTH and predicted.strip() != expected.strip():
        # Every stage is linear in the length, but a 1 MB "answer" is a runaway generation, not an answer.
        return False, f"refused: answer of {max(len(predicted), len(expected))} characters"
    try:
        return _Judge(timeout).answers_equal(predicted, expected), None
    except GradingError as error:
        return False, str(error)
    except Exception as error:  # a grader bug must cost one answer, not the run
        return False, f"{type(error).__name__}: {error}"


_CHOICE_RE = re.compile(r"\(?([A-J])\)?")
_CHOICE_PREFIX_RE = re.compile(r"\(?([A-J])(?:\)|\.|:|$)")
_PROSE_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{4,}")


def _choice_verdict(predicted: str, expected: str) -> bool | None:
    """Multiple choice: when one side is a bare letter, the other must start with the same letter."""
    for letter_side, other in ((expected, predicted), (predicted, expected)):
        letter = _CHOICE_RE.fullmatch(letter_side)
        if letter:
            chosen = _CHOICE_RE.fullmatch(other) or _CHOICE_PREFIX_RE.match(other)
            return bool(chosen) and chosen.group(1) == letter.group(1)
    return None


def _is_prose(text: str) -> bool:
    return any(word.lower() not in KNOWN_WORDS for word in _PROSE_RE.findall(text))


_UNORDERED = frozenset({"set", "list", "plusminus"})


class _Judge:
    """One comparison, with its symbolic-time budget (the deadline covers every symbolic call it makes)."""

    def __init__(self, timeout: float):
        self.timeout = max(float(timeout), 0.01)
        self.deadline = time.monotonic() + self.timeout

    def answers_equal(self, predicted: str, expected: str) -> bool:
        if meridiem_conflict(predicted, expected) or unit_conflict(predicted, expected):
            return False  # normalization drops `a.m.` / `p.m.` and units
        predicted, expected = normalize_answer(predicted), normalize_answer(expected)
        if not predicted or not expected:
            return False
        if predicted == expected:
            return True
        choice = _choice_verdict(predicted, expected)
        if choice is not None:
            return choice
        predicted, expected = self.strip_one_sided_assignment(predicted, expected)
        predicted, expected = self.inequality_against_interval(predicted, expected)
        if predicted == expected:
            return True
        return self.nodes_equal(parse_structure(predicted), parse_structure(expected))

    @staticmethod
    def inequality_against_interval(predicted: str, expected: str) -> tuple[str, str]:
        """`x \\leq 0` vs `(-\\infty, 0]`: the inequality is rewritten as the interval it describes."""
        if looks_like_interval(expected):
            predicted = inequality_as_interval(predicted) or predicted
        elif looks_like_interval(predicted):
            expected = inequality_as_interval(expected) or expected
        return predicted, expected

    @staticmethod
    def strip_one_sided_assignment(predicted: str, expected: str) -> tuple[str, str]:
        """`x = 3` vs `3`: names are dropped only when the other side has no `=` of its own.

        Lists lose them item by item: `(x,y) = (5,8), (8,5)` vs `(5,8), (8,5)`.
        """
        if "=" in predicted and "=" not in expected:
            predicted = strip_assignments(predicted)
        elif "=" in expected and "=" not in predicted:
            expected = strip_assignments(expected)
        return predicted, expected

    def nodes_equal(self, predicted: Node, expected: Node) -> bool:
        if predicted.kind == "scalar" and expected.kind == "scalar":
            return self.scalars_equal(predicted.text, expected.text)
        if predicted.kind == "matrix" or expected.kind == "matrix":
            return self.matrices_equal(predicted, expected)
        if predicted.kind == "tuple" or expected.kind == "tuple":
            return self.tuples_equal(predicted, expected)
        if predicted.kind == "union" or expected.kind == "union":
            return predicted.kind == expected.kind and self.unordered_equal(predicted.items, expected.items)
        if predicted.kind in _UNORDERED and expected.kind in _UNORDERED:
            return self.unordered_equal(predicted.items, expected.items)
        collection, other = (predicted, expected) if expected.kind == "scalar" else (expected, predicted)
        if other.kind == "scalar" and collection.kind in ("set", "list") and len(collection.items) <= 64:
            # \\{3\\} vs 3: the only solution, written as a set; `15\\frac{39}{40}, \\frac{639}{40}` (two boxes, one
            # value in two forms) vs 15.975. Every item must be that value: `3, 4` is not 3.
            return all(self.nodes_equal(item, other) for item in collection.items)
        return False  # a single value against a collection

    def tuples_equal(self, predicted: Node, expected: Node) -> bool:
        if predicted.kind == expected.kind == "tuple" and predicted.brackets != expected.brackets:
            return False  # (1, 2] is not [1, 2]; a point (1, 2) is not [1, 2]
        # A tuple against a bare list or a set reads the other side in its written order.
        loose = predicted if predicted.kind != "tuple" else expected
        if loose.kind not in ("tuple", "list", "set"):  # not a \pm pair, whose order means nothing
            return False
        return self.ordered_equal(predicted.items, expected.items)

    def matrices_equal(self, predicted: Node, expected: Node) -> bool:
        if predicted.kind == expected.kind == "matrix":
            if len(predicted.items) != len(expected.items):
                return False
            return all(
                self.ordered_equal(p.items, e.items) for p, e in zip(predicted.items, expected.items, strict=True)
            )
        matrix, other = (predicted, expected) if predicted.kind == "matrix" else (expected, predicted)
        if other.kind != "tuple" or other.brackets != "()":
            return False
        # A column or row vector written as a tuple: (1, 2) vs \begin{pmatrix} 1 \\ 2 \end{pmatrix}.
        entries = tuple(cell for row in matrix.items for cell in row.items)
        if len(matrix.items) > 1 and any(len(row.items) > 1 for row in matrix.items):
            return False
        return self.ordered_equal(entries, other.items)

    def ordered_equal(self, predicted: tuple, expected: tuple) -> bool:
        return len(predicted) == len(expected) and all(
            self.nodes_equal(p, e) for p, e in zip(predicted, expected, strict=True)
        )

    def unordered_equal(self, predicted: tuple, expected: tuple) -> bool:
        """Set equality: every item on each side equals some item on the other.

        Duplicates do not count (a solution listed twice is still one solution), so sizes may differ.
        """
        if not predicted or not expected or max(len(predicted), len(expected)) > 64:
            return False
        return all(any(self.nodes_equal(p, e) for p in predicted) for e in expected) and all(
            any(self.nodes_equal(p, e) for e in expected) for p in predicted
        )

    def scalars_equal(self, predicted: str, expected: str) -> bool:
        if predicted == expected:
            return True
        if predicted.isalpha() and len(predicted) >= 3 and predicted.casefold() == expected.casefold():
            return True  # `Yes` vs `yes`: words, not products of variables
        if _is_prose(predicted) or _is_prose(expected):
            return predicted.casefold() == expected.casefold()
        predicted, expected = self.strip_one_sided_assignment(predicted, expected)
        if has_colon(predicted) or has_colon(expected):
            return colon_forms_equal(predicted, expected)  # times and ratios: never symbolic
        predicted_number, expected_number = parse_number(predicted), parse_number(expected)
        if predicted_number is not None and expected_number is not None:
            return numbers_equal(predicted_number, expected_number)
        if has_relation(predicted) != has_relation(expected):
            return False  # `a + 3z = 0` is not the value 0; `x < 5` is not 5
        relation_verdict = self.relations_verdict(predicted, expected)
        if relation_verdict is not None:
            return relation_verdict
        verdict = expressions_equal(predicted, expected, predicted_number, expected_number)
        if verdict is not None:
            return verdict
        return self.symbolic_equal(predicted, expected)

    def relations_verdict(self, predicted: str, expected: str) -> bool | None:
        predicted_relation, expected_relation = split_relation(predicted), split_relation(expected)
        if predicted_relation is None or expected_relation is None:
            return None
        if predicted_relation.operator != expected_relation.operator:
            return False
        if predicted_relation.operator == "=" and predicted_relation.left == expected_relation.left:
            if SIMPLE_LHS_RE.fullmatch(predicted_relation.left):  # y = ... vs y = ...: compare the values
                return self.nodes_equal(
                    parse_structure(predicted_relation.right), parse_structure(expected_relation.right)
                )
        verdict = relations_proportional(predicted_relation, expected_relation)
        if verdict is not None:
            return verdict
        return self.scalars_equal(predicted_relation.left, expected_relation.left) and self.scalars_equal(
            predicted_relation.right, expected_relation.right
        )

    def symbolic_equal(self, predicted: str, expected: str) -> bool:
        if not worth_symbolic_check(predicted, expected):
            return False  # no notation beyond the evaluator's, or not mathematics: sympy cannot do better
        refusal = refusal_reason(predicted) or refusal_reason(expected)
        if refusal:
            raise GradingError(f"refused: {refusal}")
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise GradingError(f"timeout: symbolic budget of {self.timeout:g}s spent")
        return symbolic_equal(predicted, expected, remaining)


# ---------------------------------------------------------------------------------------------------------------
# Symbolic fallback: math-verify in a killable worker process
