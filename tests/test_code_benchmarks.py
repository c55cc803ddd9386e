"""Code benchmarks (humaneval, mbpp, mbpp_sanitized) and the `code` grader: the converters rebuild the mirror from
the public source formats, prompts (MBPP's three-shot examples read from the prepared split), code extraction,
test programs, and every reference solution through the real sandbox (all pass) next to broken ones (none pass,
each with its error kind)."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import benchmarks_dir

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.benchmarks import get_benchmark
from skills_cli.evaluation.graders import GradeOptions
from skills_cli.evaluation.graders.code import PASSED_TESTS_KEY, grade_code_rows
from skills_cli.evaluation.graders.code.extract import extract_code
from skills_cli.evaluation.graders.code.programs import build_program
from skills_cli.evaluation.graders.code.verdict import judge
from skills_cli.evaluation.prepare_data import validate_rows
from skills_cli.prompts.prompt_config import load_prompt_config
from skills_cli.sandbox.client import Limits

MIRROR = benchmarks_dir()
CODE_BENCHMARKS = ("humaneval", "mbpp", "mbpp_sanitized")
SPLITS = {"humaneval": ("test",), "mbpp": ("test", "prompt"), "mbpp_sanitized": ("test", "prompt")}
# the slowest reference solution needs ~7 s of CPU alone; the test's limit keeps it passing on busy CI cores
CANONICAL_LIMITS = Limits(timeout=120.0)
BROKEN_LIMITS = Limits(timeout=3.0, memory_mb=256)


def mirror_rows(name: str, split: str = "test") -> list[dict]:
    return read_jsonl(MIRROR / name / f"{split}.jsonl")


def without_id(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key != "id"} for row in rows]


def fenced(code: str) -> str:
    return f"Here is my solution.\n\n```python\n{code}\n```\n"


def never_run(source: str):
    raise AssertionError(f"no sandbox run expected, got:\n{source}")


# ---- data: the source formats become exactly the mirror's rows ----------------------------------------------------


def source_files(tmp_path) -> dict[str, str]:
    """Each benchmark's source file in its upstream format (gzipped JSONL, JSONL of every task, one JSON array),
    rebuilt from the mirror, with a task outside both MBPP splits that the converters must drop."""
    humaneval = tmp_path / "HumanEval.jsonl.gz"
    humaneval.write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in without_id(mirror_rows("humaneval"))).encode())
    )
    mbpp = without_id(mirror_rows("mbpp", "prompt") + mirror_rows("mbpp"))
    mbpp.append({**mbpp[-1], "task_id": 600})
    (tmp_path / "mbpp.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mbpp))
    sanitized = without_id(mirror_rows("mbpp_sanitized", "prompt") + mirror_rows("mbpp_sanitized"))
    (tmp_path / "sanitized-mbpp.json").write_text(json.dumps(sanitized + [{**sanitized[0], "task_id": 900}], indent=2))
    files = {"humaneval": humaneval, "mbpp": tmp_path / "mbpp.jsonl", "mbpp_sanitized": tmp_path / "sanitized-mbpp.json"}  # fmt: skip
    return {name: path.as_uri() for name, path in files.items()}


def test_converters_rebuild_the_mirror_from_the_source_formats(tmp_path):
    urls = source_files(tmp_path)
    for name in CODE_BENCHMARKS:
        benchmark = get_benchmark(name)
        assert benchmark.splits == SPLITS[name] and benchmark.needs_sandbox and benchmark.grader == "code"
        assert benchmark.metric_keys == (PASSED_TESTS_KEY,) and benchmark.get_grader().grade_rows is grade_code_rows
        for split in benchmark.splits:
            rows = benchmark.convert(benchmark.fetch(split, urls[name]))
            assert rows == mirror_rows(name, split), (name, split)
            assert list(rows[0])[0] == "id"
            validate_rows(rows, f"{name}/{split}", benchmark.row_fields)


def test_a_source_in_the_wrong_format_is_one_error_line(tmp_path):
    not_gzip, not_array = tmp_path / "plain.jsonl", tmp_path / "object.json"
    not_gzip.write_text('{"task_id": "HumanEval/0"}\n')
    not_array.write_text('{"task_id": 2}')
    with pytest.raises(UserError, match="not gzipped JSONL"):
        get_benchmark("humaneval").fetch("test", not_gzip.as_uri())
    with pytest.raises(UserError, match="expected a JSON array"):
        get_benchmark("mbpp_sanitized").fetch("test", not_array.as_uri())


# ---- prompts: few-shot examples from a prepared split --------------------------------------------------------------

SHOT_CONFIG = """
user: "{examples}Task: {text}"
few_shot_examples:
  prefix: "Examples:\\n"
  template: "Task: {text}\\nAnswer: {code}\\n\\n"
  split: prompt
  ids: [t-3, t-1]
"""


def write_config(tmp_path, text: str = SHOT_CONFIG):
    path = tmp_path / "shots.yaml"
    path.write_text(text)
    return str(path)


def test_few_shot_examples_come_from_the_prepared_split_in_the_given_order(tmp_path):
    data = tmp_path / "mybench"
    write_jsonl_atomic(
        data / "prompt.jsonl", [{"id": f"t-{i}", "text": f"task {i}", "code": f"x = {i}"} for i in (1, 2, 3)]
    )
    config = load_prompt_config(write_config(tmp_path), data_dir=data)
    (message,) = config.messages({"text": "the real one"})
    assert (
        message["content"]
        == "Examples:\nTask: task 3\nAnswer: x = 3\n\nTask: task 1\nAnswer: x = 1\n\nTask: the real one"
    )
    unresolved = load_prompt_config(write_config(tmp_path))  # the launcher validates configs without the data
    with pytest.raises(UserError, match="rows of the prepared split 'prompt'.*data_dir"):
        unresolved.messages({"text": "t"})
    plain = load_prompt_config("generic/math", data_dir=data)  # a config without a split ignores the folder
    assert plain.messages({"problem": "1+1?"}) == load_prompt_config("generic/math").messages({"problem": "1+1?"})


def test_few_shot_split_errors_name_what_is_missing(tmp_path):
    data = tmp_path / "mybench"
    with pytest.raises(UserError, match=r"split 'prompt' is not prepared .*ns prepare_data mybench"):
        load_prompt_config(write_config(tmp_path), data_dir=data)
    write_jsonl_atomic(data / "prompt.jsonl", [{"id": "t-1", "text": "task", "code": "x"}])
    with pytest.raises(UserError, match="no row with id 't-3'"):
        load_prompt_config(write_config(tmp_path), data_dir=data)
    with pytest.raises(UserError, match="needs a split and either ids or match"):
        load_prompt_config(write_config(tmp_path, SHOT_CONFIG.replace("  ids: [t-3, t-1]\n", "")))
    with pytest.raises(UserError, match="both examples and split"):
        load_prompt_config(write_config(tmp_path, SHOT_CONFIG + "  examples: [{text: a, code: b}]\n"))
    write_jsonl_atomic(data / "prompt.jsonl", [{"id": "t-1", "text": "task"}, {"id": "t-3", "text": "task"}])
    with pytest.raises(UserError, match="few-shot example t-3 has no 'code'"):
        load_prompt_config(write_config(tmp_path), data_dir=data).messages({"text": "t"})


def test_code_prompts_render_every_row_and_mbpp_shows_the_papers_three_shots():
    for name in CODE_BENCHMARKS:
        config = load_prompt_config(get_benchmark(name).prompt_config, data_dir=MIRROR / name)
        rendered = [config.messages(row, number)[-1]["content"] for number, row in enumerate(mirror_rows(name), 1)]
        assert all("```python" in text for text in rendered), name
    mbpp = load_prompt_config("code/mbpp", data_dir=MIRROR / "mbpp")
    target = mirror_rows("mbpp")[0]
    text = mbpp.messages(target)[-1]["content"]
    shots = {row["task_id"]: row for row in mirror_rows("mbpp", "prompt")}
    positions = [text.index(shots[task]["text"]) for task in (2, 3, 4)] + [text.index(target["text"])]
    assert positions == sorted(positions) and all(shots[task]["text"] not in text for task in (1, 5, 6))
    assert text.endswith(target["test_list"][2]) and text.count("```python\n") == 3


# ---- extraction and test programs (no sandbox) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (fenced("def f():\n    return 1"), "def f():\n    return 1\n"),
        ("```python\nx = 1\n```\ntext\n```python\nx = 2\n```\n```\nnot python\n```", "x = 2\n"),  # last python block
        ("```\nx = 3\n```\nand\n```bash\nls\n```", "ls\n"),  # no python block: the last of any language
        ("```py\ny = 1\n```", "y = 1\n"),
        ("Sure:\n```python\ndef g():\n    return 2\n", "def g():\n    return 2\n"),  # cut off before the closing fence
        ("<think>```python\ndraft = 1\n```</think>\n```python\nfinal = 1\n```", "final = 1\n"),  # drafts in reasoning
        ("\n\n    return a + b\n\n", "    return a + b\n"),  # raw body-only completion keeps its indentation
        ("```python\n\n```", None),  # only empty blocks
        ("", None),
        (None, None),
    ],
)
def test_extract_code(answer, code):
    assert extract_code(answer) == code


HUMANEVAL_ROW = {"prompt": 'from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    """Sum."""\n',
                 "test": "def check(candidate):\n    assert candidate([1, 2]) == 3\n", "entry_point": "total"}  # fmt: skip


def test_humaneval_answers_are_completed_with_the_prompt():
    body = build_program(HUMANEVAL_ROW, "    return sum(xs)\n")
    assert body.candidate == HUMANEVAL_ROW["prompt"] + "    return sum(xs)\n"
    whole = build_program(HUMANEVAL_ROW, "from __future__ import annotations\ndef total(xs):\n    return sum(xs)\n")
    assert whole.candidate.startswith("from __future__ import annotations\n" + HUMANEVAL_ROW["prompt"])
    assert whole.candidate.endswith("\ndef total(xs):\n    return sum(xs)\n")
    indented = build_program(HUMANEVAL_ROW, "    def total(xs):\n        return sum(xs)\n")  # a block in a list item
    assert indented.candidate == HUMANEVAL_ROW["prompt"] + "\ndef total(xs):\n    return sum(xs)\n"
    for program in (body, whole, indented):
        compile(program.source, "main.py", "exec")
        assert program.source.rstrip().endswith("check(total)\nraise SystemExit(86)")


def test_mbpp_program_order_is_imports_code_setup_asserts():
    row = {"test_imports": ["import math"], "test_setup_code": "node = Node()", "test_list": ["assert f(node)"]}
    source = build_program(row, "  class Node: pass\n  def f(n): return True\n").source  # dedented
    order = [
        source.index(part) for part in ("import math", "class Node", "node = Node()", "assert f(node)", "SystemExit")
    ]
    assert order == sorted(order)
    compile(source, "main.py", "exec")


@pytest.mark.parametrize(
    ("row", "answer", "kind"),
    [
        (HUMANEVAL_ROW, "Sorry, I cannot help.\n```\n```", "no_code"),
        (HUMANEVAL_ROW, fenced("def total(xs):\n    return sum(xs"), "syntax_error"),
        (HUMANEVAL_ROW, "    return sum(xs\n", "syntax_error"),
        ({"test_list": ["assert f() =="]}, fenced("def f(): return 1"), "test_error"),  # malformed plug-in tests
        ({"test_list": "assert f() == 1"}, fenced("def f(): return 1"), "test_error"),
        ({**HUMANEVAL_ROW, "entry_point": "no such name"}, fenced("def f(): return 1"), "test_error"),
        ({"problem": "no tests at all"}, fenced("def f(): return 1"), "test_error"),
    ],
)
def test_failures_found_before_any_run(row, answer, kind):
    verdict = judge(row, answer, never_run)
    assert (verdict.passed, verdict.error_kind) == (False, kind) and verdict.excerpt
    assert (verdict.grading_error is not None) == (kind == "test_error")


# ---- through the real sandbox --------------------------------------------------------------------------------------


def canonical_answer(name: str, number: int, row: dict) -> str:
    """The reference solution as a model might give it: HumanEval alternates a bare body and a fenced function."""
    if name == "humaneval":
        return row["canonical_solution"] if number % 2 else fenced(row["prompt"] + row["canonical_solution"])
    return fenced(row["code"])


@pytest.mark.parametrize("name", CODE_BENCHMARKS)
def test_every_reference_solution_passes_in_the_sandbox(name, sandbox_url):
    rows = [{**row, "generation": canonical_answer(name, number, row)} for number, row in enumerate(mirror_rows(name))]
    options = GradeOptions(sandbox_url=sandbox_url, sandbox_workers=4)
    added = grade_code_rows(rows, "generation", options, CANONICAL_LIMITS)
    failed = [
        (row["id"], fields["error_kind"], fields["execution_error"])
        for row, fields in zip(rows, added, strict=True)
        if not fields[PASSED_TESTS_KEY]
    ]
    assert not failed and len(added) == len(rows)
    assert all(fields["error_kind"] is None and fields["grading_error"] is None for fields in added)


BROKEN = {
    "return None": ("    return None\n", "wrong_answer"),
    "exception": (fenced("def {name}(*args):\n    raise ValueError('no')"), "runtime_error"),
    "exit early": (fenced("import sys\nsys.exit(0)"), "runtime_error"),
    "wrong name": (fenced("def another_name(*args):\n    return 1"), "runtime_error"),
    "syntax error": (fenced("def {name}(*args)\n    return 1"), "syntax_error"),
    "sleeps forever": (fenced("import time\ndef {name}(*args):\n    while True:\n        time.sleep(1)"), "timeout"),
    "memory": (fenced("def {name}(*args):\n    return bytearray(2 * 1024**3)"), "memory"),
    "no code": ("I do not know.\n```\n```", "no_code"),
}


def broken_rows() -> list[dict]:
    """Each kind of breakage applied to the first problem of each benchmark."""
    rows = []
    for name in CODE_BENCHMARKS:
        for row in mirror_rows(name)[:1]:
            entry = row.get("entry_point") or row["test_list"][0].removeprefix("assert ").split("(")[0].strip()
            for label, (answer, kind) in BROKEN.items():
                if name != "humaneval" and label == "return None":  # MBPP answers are whole functions
                    answer = fenced(f"def {entry}(*args):\n    return None")
                if name == "humaneval" and label == "wrong name":  # the prompt's docstring-only stub returns None
                    kind = "wrong_answer"
                rows.append({**row, "generation": answer.replace("{name}", entry), "label": label, "kind": kind})
    return rows


def test_broken_solutions_all_fail_with_their_error_kinds(sandbox_url):
    rows = broken_rows()
    added = grade_code_rows(rows, "generation", GradeOptions(sandbox_url=sandbox_url, sandbox_workers=8), BROKEN_LIMITS)
    graded = [{**row, **fields} for row, fields in zip(rows, added, strict=True)]
    assert not any(row["grading_error"] for row in graded)
    found = [(row["id"], row["label"], row["error_kind"]) for row in graded]
    assert found == [(row["id"], row["label"], row["kind"]) for row in rows]
    assert not any(row[PASSED_TESTS_KEY] for row in graded)
    for row in graded:
        assert (row["predicted_answer"] is None) == (row["kind"] == "no_code")
        assert row["execution_error"] and len(row["execution_error"]) < 1000
    assert any("AssertionError" in row["execution_error"] for row in graded if row["kind"] == "wrong_answer")
    assert any("NameError" in row["execution_error"] for row in graded if row["label"] == "wrong name")


def test_an_unreachable_sandbox_is_one_error_line_and_answers_without_code_need_none(monkeypatch):
    from skills_cli.common.ports import free_port
    from skills_cli.evaluation.graders import code

    rows = [{**HUMANEVAL_ROW, "generation": None}, {**HUMANEVAL_ROW, "generation": fenced("def total(xs): return 3")}]
    nowhere = GradeOptions(sandbox_url=f"http://127.0.0.1:{free_port()}")
    assert [fields["error_kind"] for fields in grade_code_rows(rows[:1], "generation", nowhere)] == ["no_code"]
    monkeypatch.setattr(code, "SANDBOX_WAIT", 0.5)
    with pytest.raises(UserError, match="did not answer within 0.5 s"):
        grade_code_rows(rows, "generation", nowhere)
    monkeypatch.delenv("SKILLS_SANDBOX_PORT", raising=False)
    with pytest.raises(UserError, match=r"code grader: no sandbox address.*SKILLS_SANDBOX_PORT"):
        grade_code_rows(rows, "generation", GradeOptions())
