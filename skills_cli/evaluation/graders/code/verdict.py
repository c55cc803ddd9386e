"""One answer's verdict: extract its code, build the test program, check its syntax here, run it in the sandbox,
and name how it failed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from skills_cli.evaluation.graders.code.extract import extract_code
from skills_cli.evaluation.graders.code.programs import PASSED_EXIT_CODE, MalformedTests, build_program
from skills_cli.sandbox.client import Execution

ERROR_KINDS = ("no_code", "syntax_error", "timeout", "wrong_answer", "runtime_error", "memory", "output_limit",
               "sandbox_error", "test_error")  # fmt: skip
EXCERPT_CHARS = 600  # the stderr tail kept in a row
# sandbox statuses that name the failure themselves
_STATUS_KINDS = {"timeout": "timeout", "memory": "memory", "output_limit": "output_limit"}
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_SYNTAX_EXCEPTIONS = {"SyntaxError", "IndentationError", "TabError"}

Run = Callable[[str], Execution]  # a program's source -> how its run ended


@dataclass(frozen=True)
class Verdict:
    code: str | None  # the extracted code (the row's predicted_answer)
    passed: bool = False
    error_kind: str | None = None  # one of ERROR_KINDS, None when it passed
    excerpt: str | None = None  # what went wrong, short
    grading_error: str | None = None  # the row could not be graded: its tests are malformed, the sandbox failed


def judge(row: dict, generation: str | None, run: Run) -> Verdict:
    """The verdict on one answer; never raises for a bad answer or a bad row."""
    code = extract_code(generation)
    if code is None:
        return Verdict(None, error_kind="no_code", excerpt="no code in the answer")
    try:
        program = build_program(row, code)
    except MalformedTests as error:
        return Verdict(code, error_kind="test_error", excerpt=str(error), grading_error=str(error))
    problem = syntax_problem(program.candidate)
    if problem is not None:  # found here: no run needed
        return Verdict(code, error_kind="syntax_error", excerpt=problem)
    problem = syntax_problem(program.source)
    if problem is not None:  # the answer compiles alone, so its tests are what does not
        message = f"the tests do not compile: {problem}"
        return Verdict(code, error_kind="test_error", excerpt=message, grading_error=message)
    return verdict_of_run(code, run(program.source))


def syntax_problem(source: str) -> str | None:
    """Why `source` does not compile (one line), or None. Compiling runs none of it."""
    try:
        compile(source, "main.py", "exec", dont_inherit=True)
    except SyntaxError as error:
        return f"{type(error).__name__}: {error.msg} (line {error.lineno})"
    except (ValueError, RecursionError, MemoryError) as error:  # null bytes; nesting too deep for the compiler
        return f"{type(error).__name__}: {error}"
    return None


def verdict_of_run(code: str, execution: Execution) -> Verdict:
    if execution.status == "error" and execution.exit_code == PASSED_EXIT_CODE:
        return Verdict(code, passed=True)
    if execution.status == "ok":
        return Verdict(code, error_kind="runtime_error", excerpt="the program exited (status 0) before its tests ran")
    if execution.status == "error":
        return Verdict(code, error_kind=kind_of_exception(execution.stderr), excerpt=excerpt(execution))
    if execution.status in _STATUS_KINDS:
        return Verdict(code, error_kind=_STATUS_KINDS[execution.status], excerpt=excerpt(execution))
    message = execution.message or f"sandbox status {execution.status!r}"
    return Verdict(code, error_kind="sandbox_error", excerpt=message, grading_error=message)


def kind_of_exception(stderr: str) -> str:
    """wrong_answer for a failed assert, syntax_error for code that compiled here but not there (exec, a
    different interpreter), runtime_error for any other ending."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    match = _EXCEPTION_LINE.match(lines[-1]) if lines else None
    name = match.group(1).rsplit(".", 1)[-1] if match else ""
    if name == "AssertionError":
        return "wrong_answer"
    return "syntax_error" if name in _SYNTAX_EXCEPTIONS else "runtime_error"


def excerpt(execution: Execution) -> str:
    """The run's one-line message and the tail of its stderr, bounded."""
    tail = execution.stderr.strip()
    if len(tail) > EXCERPT_CHARS:
        tail = "..." + tail[-EXCERPT_CHARS:]
    parts = [execution.message or (f"exit status {execution.exit_code}" if execution.exit_code else ""), tail]
    return "\n".join(part for part in parts if part)
