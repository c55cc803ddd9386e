"""SFT data preparation (`python -m skills_cli.training.prepare_data`): each filter drops exactly what it should and
says so in the log, both output formats, contamination, reproducible downsampling, seed 003's command line and
one-line errors with exit status 2."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config
from skills_cli.prompts import load_prompt_config
from skills_cli.prompts.chat_templates import CHATML, render
from skills_cli.training.prepare_data import PrepareSFTConfig, main, prepare

ADD = "What is 2+3?"
MUL = "Compute 7*6."
BENCH = "Benchmark problem: find x if x+1=3."
LONG = "<think>" + "carry the digits " * 12 + "</think>\\boxed{42}"  # 229 chars

# (tag, problem, expected answer, generation, grade); grade None means the row has no `symbolic_correct` key.
GRADED = [
    ("think", ADD, "5", "<think>2+3=5</think>The sum is \\boxed{5}.", True),
    ("duplicate", ADD, "5", "<think>2+3=5</think>The sum is \\boxed{5}.", True),
    ("incorrect", ADD, "5", "<think>hmm</think>\\boxed{6}", False),
    ("unlabeled", ADD, "5", "<think>add them</think>So \\boxed{5}.", None),
    ("no-think", ADD, "5", "2 + 3 = 5, so \\boxed{5}.", True),
    ("multi-boxed", ADD, "5", "<think>maybe \\boxed{4}</think> no, \\boxed{5}.", True),
    ("same-box-twice", ADD, "5", "<think>it is \\boxed{5}</think>Final: \\boxed{ 5 }", True),
    ("trailing", MUL, "42", "<think>7*6=42</think>Thus \\boxed{42}.\nI hope this helps!", True),
    ("long", MUL, "42", LONG, True),
    ("sixes", MUL, "42", "<think>six sevens</think>\\boxed{42}", True),
    ("sevens", MUL, "42", "<think>seven sixes</think>\\boxed{42}", True),
    ("truncated", MUL, "42", "<think>7*6 is 4", None),
    ("contaminated", BENCH, "2", "<think>x=2</think>\\boxed{2}", True),
]
SOLUTION = {tag: generation for tag, _, _, generation, _ in GRADED}
# The benchmark spells the problem with other case and spacing, and without the final dot.
BENCHMARK = [{"problem": "Benchmark  PROBLEM: find x if x+1=3", "expected_answer": "2"}, {"problem": "1+1?"}]


def graded_row(problem: str, answer: str, generation: str, grade: bool | None) -> dict:
    row = {"problem": problem, "expected_answer": answer, "generation": generation}
    return row if grade is None else {**row, "symbolic_correct": grade}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def graded(tmp_path) -> Path:
    return write_jsonl(tmp_path / "output.jsonl", [graded_row(*row[1:]) for row in GRADED])


@pytest.fixture
def benchmark(tmp_path) -> Path:
    return write_jsonl(tmp_path / "aime.jsonl", BENCHMARK)


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="skills_cli.training.prepare_data")
    return caplog


def run_prepare(*overrides: str):
    """Run in-process through the real `++key=value` loader; returns (report, output rows)."""
    config = load_config(PrepareSFTConfig, overrides, where="prepare_data")
    report = prepare(config)
    return report, [json.loads(line) for line in Path(config.output_path).read_text().splitlines()]


def solutions(rows: list[dict]) -> list[str]:
    return [row["messages"][-1]["content"] if "messages" in row else row["output"] for row in rows]


def log_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_defaults_drop_incorrect_unlabeled_contaminated_multi_boxed_and_duplicates(graded, benchmark, tmp_path, caplog):
    out = tmp_path / "sft.jsonl"
    report, rows = run_prepare(f"++input_files={graded}", f"++output_path={out}", f"++contamination_file={benchmark}")
    assert report.read == 13 and report.written == 7
    assert report.dropped == {
        "correctness": 1,
        "unlabeled": 2,
        "filters.remove_contaminated": 1,
        "filters.drop_multi_boxed": 1,
        "filters.remove_len_outliers": 0,
        "filters.dedup": 1,
    }
    kept = ["think", "no-think", "same-box-twice", "trailing", "long", "sixes", "sevens"]
    assert solutions(rows) == [SOLUTION[tag] for tag in kept]
    lines = log_lines(caplog)
    for line in [
        "correctness: dropped 1 of 13 (graded false by 'symbolic_correct')",
        "unlabeled: dropped 2 of 12 (no 'symbolic_correct' grade; ++add_unlabeled=true keeps them)",
        "filters.remove_contaminated: dropped 1 of 10 (problem in 2 benchmark problems)",
        "filters.remove_no_think_tags: off",
        "filters.remove_think_tags: off",
        "filters.trim_solutions: off",
        "filters.drop_multi_boxed: dropped 1 of 9 (several distinct boxed answers)",
        "filters.remove_len_outliers: dropped 0 of 8 (length outside [1, 100000] chars)",
        "filters.dedup: dropped 1 of 8 (same problem and solution)",
        "filters.max_per_problem: off",
        f"prepare_data: wrote 7 of 13 rows to {out} (messages format)",
    ]:
        assert line in lines
    assert lines[-1].startswith("prepare_data: wrote 7 of 13")  # the summary comes last


def test_messages_rows_are_the_prompt_config_chat_plus_the_solution(graded, benchmark, tmp_path):
    _, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}"
    )
    user = load_prompt_config("generic/math").messages({"problem": ADD})
    assert rows[0] == {
        "messages": [*user, {"role": "assistant", "content": SOLUTION["think"]}],
        "problem": ADD,
        "expected_answer": "5",
    }
    assert [m["role"] for m in rows[0]["messages"]] == ["user", "assistant"]  # generic/math has no system message
    assert ADD in rows[0]["messages"][0]["content"] and "\\boxed{}" in rows[0]["messages"][0]["content"]


def test_add_unlabeled_and_remove_no_think_tags(graded, tmp_path, caplog):
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", "++filters.remove_contaminated=false",
        "++add_unlabeled=true", "++filters.remove_no_think_tags=true",
    )  # fmt: skip
    assert report.dropped["unlabeled"] == 0
    assert report.dropped["filters.remove_no_think_tags"] == 2  # "no-think" and the truncated unlabeled one
    kept = ["think", "unlabeled", "same-box-twice", "trailing", "long", "sixes", "sevens", "contaminated"]
    assert solutions(rows) == [SOLUTION[tag] for tag in kept]
    assert "filters.remove_no_think_tags: dropped 2 of 12 (no </think>)" in log_lines(caplog)
    assert "filters.remove_contaminated: off" in log_lines(caplog)


def test_trim_solutions_cuts_the_rest_of_the_line_after_the_last_box(graded, benchmark, tmp_path, caplog):
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
        "++filters.trim_solutions=true",
    )  # fmt: skip
    assert report.modified == {"filters.trim_solutions": 1}
    assert "<think>7*6=42</think>Thus \\boxed{42}." in solutions(rows)
    assert not any("I hope this helps" in s for s in solutions(rows))
    assert SOLUTION["think"] in solutions(rows)  # nothing after its box: untouched
    assert "filters.trim_solutions: dropped 0 of 9 (modified 1)" in log_lines(caplog)


def test_remove_think_tags_keeps_only_the_answer_part(graded, benchmark, tmp_path):
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
        "++filters.remove_think_tags=true",
    )  # fmt: skip
    assert report.modified["filters.remove_think_tags"] == 8  # all but "no-think"
    assert "The sum is \\boxed{5}." in solutions(rows)
    assert not any("<think>" in s or "</think>" in s for s in solutions(rows))
    # Stripping the hedged reasoning leaves a single boxed answer, so the multi-boxed row survives.
    assert report.dropped["filters.drop_multi_boxed"] == 0
    assert "no, \\boxed{5}." in solutions(rows)


def test_drop_multi_boxed_off_keeps_hedged_answers(graded, benchmark, tmp_path, caplog):
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
        "++filters.drop_multi_boxed=false",
    )  # fmt: skip
    assert SOLUTION["multi-boxed"] in solutions(rows) and report.written == 8
    assert "filters.drop_multi_boxed: off" in log_lines(caplog)


def test_length_outliers_use_min_and_max_solution_length(graded, benchmark, tmp_path, caplog):
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
        "++max_solution_length=150", "++min_solution_length=36",
    )  # fmt: skip
    # "long" is over 150 chars; "no-think" (24) and "sixes" (35) are under 36; "sevens" is exactly 36 and stays.
    assert [len(SOLUTION[tag]) for tag in ("long", "no-think", "sixes", "sevens")] == [229, 24, 35, 36]
    assert report.dropped["filters.remove_len_outliers"] == 3
    assert not {SOLUTION["long"], SOLUTION["no-think"], SOLUTION["sixes"]} & set(solutions(rows))
    assert SOLUTION["sevens"] in solutions(rows)
    assert "filters.remove_len_outliers: dropped 3 of 8 (length outside [36, 150] chars)" in log_lines(caplog)


def test_dedup_off_keeps_exact_duplicates(graded, benchmark, tmp_path):
    _, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
        "++filters.dedup=false",
    )  # fmt: skip
    assert solutions(rows).count(SOLUTION["think"]) == 2


def test_contamination_honours_contaminated_false_from_a_checked_file(graded, tmp_path):
    checked = write_jsonl(tmp_path / "checked.jsonl", [{"problem": BENCH, "contaminated": False}])
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_files=[{checked}]"
    )
    assert report.dropped["filters.remove_contaminated"] == 0  # NeMo-Skills' check said "not contaminated"
    assert BENCH in {row["problem"] for row in rows}


def test_contamination_files_and_globs_are_merged(graded, benchmark, tmp_path):
    other = write_jsonl(tmp_path / "other-bench.jsonl", [{"problem": "  what IS 2+3 ?"}])
    report, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}",
        f"++contamination_file={tmp_path / 'aime*.jsonl'}", f"++contamination_files=[{other}]",
    )  # fmt: skip
    # BENCH through the glob, and every ADD row through the other file ("what is 2+3?" up to case and spacing)
    assert {row["problem"] for row in rows} == {MUL}
    assert report.dropped["filters.remove_contaminated"] == 1 + 5


def test_max_per_problem_is_deterministic_and_independent_of_other_problems(graded, benchmark, tmp_path, caplog):
    def picked(*extra: str, source: Path = graded) -> list[str]:
        _, rows = run_prepare(
            f"++input_files={source}", f"++output_path={tmp_path / 'o.jsonl'}", f"++contamination_file={benchmark}",
            "++filters.max_per_problem=2", *extra,
        )  # fmt: skip
        return solutions(rows)

    first = picked()
    assert first == picked()  # same seed, same choice
    assert len(first) == 4  # two of the three ADD solutions, two of the four MUL ones
    assert sum(s in first for s in (SOLUTION["trailing"], SOLUTION["long"], SOLUTION["sixes"], SOLUTION["sevens"])) == 2
    assert "filters.max_per_problem: dropped 3 of 7 (at most 2 per problem, random_seed=0)" in log_lines(caplog)
    # Order stays file order, whichever rows are chosen.
    order = [s for s in dict.fromkeys(generation for _, _, _, generation, _ in GRADED) if s in first]
    assert first == order
    # The seed matters: some seed picks differently.
    assert any(picked(f"++random_seed={seed}") != first for seed in range(1, 10))
    # Removing the ADD problem does not change which MUL solutions are kept.
    only_mul = write_jsonl(tmp_path / "mul.jsonl", [graded_row(*row[1:]) for row in GRADED if row[1] == MUL])
    assert picked(source=only_mul) == [s for s in first if s in {SOLUTION[t] for t, p, *_ in GRADED if p == MUL}]


def test_input_output_with_the_named_qwen_instruct_template(graded, tmp_path):
    _, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", "++filters.remove_contaminated=false",
        "++output_format=input_output", "++prompt_template=qwen-instruct",
    )  # fmt: skip
    user = load_prompt_config("generic/math").messages({"problem": ADD})[0]["content"]
    assert rows[0] == {
        "input": f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n",
        "output": SOLUTION["think"],
        "problem": ADD,
        "expected_answer": "5",
    }


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    pytest.importorskip("transformers")
    from skills_cli.inference.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny"), hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)


def test_input_output_with_a_tokenizer_chat_template_wins_over_prompt_template(graded, tmp_path, tiny_tokenizer_dir):
    from skills_cli.inference.model_loading import load_tokenizer

    _, rows = run_prepare(
        f"++input_files={graded}", f"++output_path={tmp_path / 'o.jsonl'}", "++filters.remove_contaminated=false",
        "++output_format=input_output", f"++tokenizer={tiny_tokenizer_dir}", "++prompt_template=llama3-instruct",
    )  # fmt: skip
    messages = load_prompt_config("generic/math").messages({"problem": MUL})
    expected = load_tokenizer(tiny_tokenizer_dir).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    mul = next(row for row in rows if row["problem"] == MUL)
    assert mul["input"] == expected == render(CHATML, messages)  # the tiny model's template is ChatML, not llama3
    assert mul["output"] == SOLUTION["trailing"]


def test_seed_003_command_line_runs_as_a_module(graded, tmp_path):
    out = tmp_path / "sft-data.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "skills_cli.training.prepare_data", f"++input_files={graded}", f"++output_path={out}",
         "++prompt_config=generic/math", "++prompt_template=qwen-instruct", "++filters.remove_contaminated=false",
         "++add_unlabeled=true", "++filters.remove_no_think_tags=true", "++filters.trim_solutions=false"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and all(row["messages"][-1]["role"] == "assistant" for row in rows)
    assert "filters.remove_no_think_tags: dropped 2 of 12 (no </think>)" in result.stderr
    assert "filters.trim_solutions: off" in result.stderr
    assert f"prepare_data: wrote 8 of 13 rows to {out} (messages format)" in result.stderr


def test_importing_the_module_loads_no_transformers_or_torch():
    probe = "import sys, skills_cli.training.prepare_data; print(sorted({'transformers', 'torch'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_globs_and_lists_of_globs_read_every_matching_file(graded, tmp_path):
    write_jsonl(tmp_path / "output-rs1.jsonl", [graded_row(MUL, "42", "<think>42</think>\\boxed{42}", True)])
    common = (f"++output_path={tmp_path / 'o.jsonl'}", "++filters.remove_contaminated=false")
    report, _ = run_prepare(f"++input_files={tmp_path / 'output*.jsonl'}", *common)
    assert report.read == 14
    report, _ = run_prepare(f"++input_files=[{graded}, {tmp_path / 'output-rs*.jsonl'}]", *common)
    assert report.read == 14
    # NeMo-Skills' spelling: one string, globs separated by spaces; a file matched twice is read once.
    report, _ = run_prepare(
        f"++input_files={graded} {tmp_path / 'output-rs*.jsonl'} {tmp_path / 'output*.jsonl'}", *common
    )
    assert report.read == 14


def run_main_error(capsys, *overrides: str) -> str:
    """The error line printed by `main` (which must exit with status 2 and print only that line)."""
    assert main(list(overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_missing_input_glob_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    error = run_main_error(capsys, f"++input_files={tmp_path / 'nothing*.jsonl'}", f"++output_path={out}")
    assert error == f"error: input_files: no file matches '{tmp_path / 'nothing*.jsonl'}'"
    assert not out.exists()


def test_row_without_the_prompt_field_names_file_and_row(tmp_path, capsys):
    rows = [graded_row(ADD, "5", "\\boxed{5}", True), graded_row(ADD, "5", "\\boxed{5}", True), {"generation": "x"}]
    source = write_jsonl(tmp_path / "gen.jsonl", rows)
    out = tmp_path / "o.jsonl"
    error = run_main_error(
        capsys, f"++input_files={source}", f"++output_path={out}", "++filters.remove_contaminated=false"
    )
    assert error == f"error: {source} row 3: no field 'problem' (needed by prompt generic/math; row fields: generation)"
    assert not out.exists()  # nothing is written when any row is bad


def test_row_without_a_generation_names_file_and_row(tmp_path, capsys):
    source = write_jsonl(tmp_path / "gen.jsonl", [{"problem": ADD, "output": "\\boxed{5}"}])
    error = run_main_error(capsys, f"++input_files={source}", f"++output_path={tmp_path / 'o'}",
                           "++filters.remove_contaminated=false")  # fmt: skip
    assert (
        error == f"error: {source} row 1: no field 'generation' (needed by generation_key; row fields: output, problem)"
    )
    # ... and the key is configurable
    assert main([f"++input_files={source}", f"++output_path={tmp_path / 'o'}", "++filters.remove_contaminated=false",
                 "++generation_key=output", "++add_unlabeled=true"]) == 0  # fmt: skip


def test_bad_values_in_rows_are_errors(tmp_path, capsys):
    source = write_jsonl(
        tmp_path / "a.jsonl", [graded_row(ADD, "5", "\\boxed{5}", True), graded_row(ADD, "5", None, True)]
    )
    common = (f"++output_path={tmp_path / 'o'}", "++filters.remove_contaminated=false")
    assert run_main_error(capsys, f"++input_files={source}", *common) == (
        f"error: {source} row 2: 'generation' must be a string, got NoneType"
    )
    source = write_jsonl(tmp_path / "b.jsonl", [{"problem": ADD, "generation": "x", "symbolic_correct": "yes"}])
    assert "'symbolic_correct' must be true, false or absent" in run_main_error(
        capsys, f"++input_files={source}", *common
    )
    source.write_text('{"problem": "a", "generation": "b"}\n{not json\n')
    assert run_main_error(capsys, f"++input_files={source}", *common).startswith(f"error: {source}:2: malformed JSON")


def test_configuration_errors(graded, tmp_path, capsys):
    out = f"++output_path={tmp_path / 'o'}"
    assert "did you mean 'dedup'?" in run_main_error(capsys, f"++input_files={graded}", out, "++filters.dedupe=false")
    assert "needs ++contamination_file=" in run_main_error(capsys, f"++input_files={graded}", out)
    no_template = run_main_error(capsys, f"++input_files={graded}", out, "++filters.remove_contaminated=false",
                                 "++output_format=input_output")  # fmt: skip
    assert "needs ++prompt_template=NAME" in no_template
    assert "not a known template" in run_main_error(
        capsys, f"++input_files={graded}", out, "++filters.remove_contaminated=false", "++prompt_template=qwen-instrct"
    )
    assert "'chat' is not one of" in run_main_error(capsys, f"++input_files={graded}", out, "++output_format=chat")
    assert "max_per_problem must be >= 1" in run_main_error(
        capsys, f"++input_files={graded}", out, "++filters.remove_contaminated=false", "++filters.max_per_problem=0"
    )
    missing_bench = run_main_error(
        capsys, f"++input_files={graded}", out, f"++contamination_file={tmp_path / 'x.jsonl'}"
    )
    assert "contamination_file: no file matches" in missing_bench
    assert "prompt config 'generic/nope' not found" in run_main_error(
        capsys, f"++input_files={graded}", out, "++filters.remove_contaminated=false", "++prompt_config=generic/nope"
    )


def test_everything_dropped_is_an_error_and_writes_nothing(tmp_path, capsys):
    source = write_jsonl(tmp_path / "bad.jsonl", [graded_row(ADD, "5", "\\boxed{6}", False)])
    out = tmp_path / "o.jsonl"
    error = run_main_error(
        capsys, f"++input_files={source}", f"++output_path={out}", "++filters.remove_contaminated=false"
    )
    assert error == f"error: all 1 rows were dropped (see the counts above); {out} not written"
    assert not out.exists()


def test_prepare_raises_user_error_for_library_callers(tmp_path):
    config = PrepareSFTConfig(input_files=str(tmp_path / "none.jsonl"), output_path=str(tmp_path / "o"))
    with pytest.raises(UserError, match="no file matches"):
        prepare(config)
