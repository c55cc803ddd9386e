"""Test programs: the answer's code with the row's tests, as one Python program the sandbox runs.

Which tests a row has is told by its fields (see the package docstring): `entry_point` + `test` is the
check-function shape (HumanEval), `test_list` the assert-list shape (MBPP, MBPP sanitized).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

# The program runs as `python main.py`; like the reference harnesses, which import or exec the answer, we keep
# its `if __name__ == "__main__":` demo code (often asserts of the model's own, or input()) from running. The
# module is registered under its new name so that pickling and dataclasses still find it.
NOT_MAIN = 'import sys as _sys\n__name__ = "solution"\n_sys.modules[__name__] = _sys.modules["__main__"]\n'
# the exit status of a program that ran past its last test: an answer that exits early (sys.exit(0)) must not
# pass untested. A status, not a printed marker: a verbose answer's output may be cut at the sandbox's cap.
PASSED_EXIT_CODE = 86


_FUTURE_IMPORT = re.compile(r"^from[ \t]+__future__[ \t]+import[^\n]*(?:\n|\Z)", re.M)


class MalformedTests(ValueError):
    """The row's tests cannot make a program (missing or wrongly typed fields): the row's fault, not the answer's."""


@dataclass(frozen=True)
class Program:
    candidate: str  # the answer's code as it will run (a body-only answer completed with the prompt)
    source: str  # the whole program: candidate, tests, then the exit with PASSED_EXIT_CODE


def string_field(row: dict, name: str) -> str:
    value = row.get(name)
    if not isinstance(value, str):
        raise MalformedTests(f"row has no string field {name!r} for its tests")
    return value


def lines_field(row: dict, name: str, default: list | None = None) -> list[str]:
    value = row.get(name, default)
    if not isinstance(value, list) or not all(isinstance(line, str) for line in value):
        raise MalformedTests(f"row field {name!r} is not a list of strings")
    return value


def defines_at_top_level(code: str, name: str) -> bool:
    """Whether `code` is a whole definition of function `name` (a `def` at column 0) rather than its body."""
    return re.search(rf"^(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.M) is not None


def check_function_program(row: dict, code: str) -> Program:
    """HumanEval shape: `prompt` (signature and docstring), `test` (defines `check(candidate)`), `entry_point`.

    A whole function is run after the prompt, so the prompt's imports and helper functions stay available
    (its own docstring-only stub is then redefined); a body-only answer continues the prompt's function."""
    prompt, test, entry_point = (string_field(row, name) for name in ("prompt", "test", "entry_point"))
    if not entry_point.isidentifier():
        raise MalformedTests(f"entry_point {entry_point!r} is not a Python name")
    tests = [test, f"check({entry_point})"]
    whole = textwrap.dedent(code)  # a whole function may come indented (a fenced block inside a list item)
    if defines_at_top_level(whole, entry_point):
        futures, whole = split_future_imports(whole)
        return assemble(futures, prompt + "\n" + whole, tests)
    return assemble("", prompt + code, tests)


def assert_list_program(row: dict, code: str) -> Program:
    """MBPP shape: `test_imports` lines (optional) before the code; `test_setup_code` (optional) after it, since
    it may use the code's definitions (MBPP task 367 builds trees of the answer's Node class); then the
    `test_list` asserts."""
    imports = lines_field(row, "test_imports", [])
    setup = row.get("test_setup_code") or ""
    if not isinstance(setup, str):
        raise MalformedTests("row field 'test_setup_code' is not a string")
    asserts = lines_field(row, "test_list")
    if not asserts:
        raise MalformedTests("row has an empty 'test_list'")
    futures, code = split_future_imports(textwrap.dedent(code))
    return assemble(futures, code, [setup, "\n".join(asserts)], before="\n".join(imports))


def split_future_imports(code: str) -> tuple[str, str]:
    """(the answer's `from __future__ import` lines, the rest): Python accepts them only at the top of a program."""
    futures = _FUTURE_IMPORT.findall(code)
    return "".join(line.rstrip("\n") + "\n" for line in futures), _FUTURE_IMPORT.sub("", code)


def assemble(futures: str, candidate: str, tests: list[str], before: str = "") -> Program:
    lines = [futures + NOT_MAIN + before, candidate, *tests, f"raise SystemExit({PASSED_EXIT_CODE})\n"]
    return Program(futures + candidate, "\n".join(lines))


def build_program(row: dict, code: str) -> Program:
    """The row's test program for this code; MalformedTests when the row has neither shape."""
    if "entry_point" in row or "test" in row:
        return check_function_program(row, code)
    if "test_list" in row:
        return assert_list_program(row, code)
    raise MalformedTests("row has no tests: neither 'entry_point' + 'test' nor 'test_list'")
