"""The verifier registry: one check per IFEval instruction id, and the readers of an instruction's arguments.

A verifier takes the response and that instruction's `kwargs` (a dict; None or an absent key both mean "not
given": the Hugging Face copy of the data fills every unused argument with None) and says whether the response
follows the instruction. Arguments an instruction needs but lacks, or that have the wrong type, raise
`InstructionArgumentError`, which the grader records as the sample's `grading_error`.

Verifiers live in the modules of `instructions/`, each registering itself with `@instruction(...)`; the registry
imports that folder on first lookup, like every registry of the package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skills_cli.common.registry import Registry

# the two relations IFEval's counting instructions use: "less than" (count < N) and "at least" (count >= N)
RELATIONS: dict[str, Callable[[int, int], bool]] = {
    "less than": lambda count, threshold: count < threshold,
    "at least": lambda count, threshold: count >= threshold,
}

Check = Callable[[str, Mapping[str, Any]], bool]  # (response, kwargs) -> followed


class InstructionArgumentError(ValueError):
    """An instruction's kwargs lack an argument it needs, or hold one of the wrong type."""


@dataclass(frozen=True)
class Verifier:
    instruction_id: str  # e.g. "punctuation:no_comma"
    description: str  # what counts as following it, in one line
    check: Check


VERIFIERS: Registry[Verifier] = Registry(
    "IFEval instruction",
    package="skills_cli.evaluation.graders.ifeval.instructions",
    key=lambda verifier: verifier.instruction_id,
)


def instruction(instruction_id: str, description: str) -> Callable[[Check], Check]:
    """Register the decorated function as the verifier of `instruction_id`."""

    def register(check: Check) -> Check:
        VERIFIERS.register(Verifier(instruction_id, description, check))
        return check

    return register


def integer(kwargs: Mapping[str, Any], name: str) -> int:
    value = _given(kwargs, name)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a JSON writer may have turned 3 into 3.0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InstructionArgumentError(f"argument {name!r} must be an integer, got {value!r}")
    return value


def text(kwargs: Mapping[str, Any], name: str) -> str:
    value = _given(kwargs, name)
    if not isinstance(value, str) or not value.strip():
        raise InstructionArgumentError(f"argument {name!r} must be a non-empty string, got {value!r}")
    return value.strip()


def texts(kwargs: Mapping[str, Any], name: str) -> list[str]:
    value = _given(kwargs, name)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise InstructionArgumentError(f"argument {name!r} must be a non-empty list of strings, got {value!r}")
    return [v.strip() for v in value]


def compare(count: int, kwargs: Mapping[str, Any], relation_name: str, threshold_name: str) -> bool:
    """`count` against the threshold under the relation, both read from the kwargs."""
    relation = text(kwargs, relation_name)
    if relation not in RELATIONS:
        raise InstructionArgumentError(f"argument {relation_name!r} must be one of {sorted(RELATIONS)}, "
                                       f"got {relation!r}")  # fmt: skip
    return RELATIONS[relation](count, integer(kwargs, threshold_name))


def _given(kwargs: Mapping[str, Any], name: str) -> Any:
    value = kwargs.get(name)
    if value is None:
        raise InstructionArgumentError(f"missing argument {name!r}")
    return value
