"""Preference pairs from graded generations (`python -m skills_cli.training.prepare_data ++mode=preference`): which
problems pair and which are skipped (and counted), how many pairs and which ones (spread over the solutions,
seeded, shortest chosen first on request), the SFT filters applied before pairing, never an identical chosen and
rejected, the rows `components/preferences.py` reads, and one-line errors with nothing written."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from skills_cli.common.overrides import load_config
from skills_cli.training.prepare_data import PrepareSFTConfig, main, prepare, spread_combinations

ADD, MUL, SUB, DIV = "What is 2+3?", "Compute 7*6.", "What is 9-4?", "What is 8/2?"
BENCH = "Benchmark problem: find x if x+1=3."
DIV_TEXT = "<think>8/2=4</think>\\boxed{4}"

# (tag, problem, expected answer, generation, grade); grade None: no `symbolic_correct` key.
GRADED = [
    ("add-short", ADD, "5", "<think>2+3=5</think>\\boxed{5}", True),
    ("add-long", ADD, "5", "<think>two plus three is five</think>So \\boxed{5}.", True),
    ("add-duplicate", ADD, "5", "<think>2+3=5</think>\\boxed{5}", True),
    ("add-six", ADD, "5", "<think>2+3=6</think>\\boxed{6}", False),
    ("add-seven", ADD, "5", "<think>guess</think>\\boxed{7}", False),
    ("add-concat", ADD, "5", "<think>2 next to 3</think>\\boxed{23}", False),
    ("add-unlabeled", ADD, "5", "<think>5</think>\\boxed{5}", None),
    ("add-hedged", ADD, "5", "<think>\\boxed{4} or \\boxed{5}</think>\\boxed{4}", False),
    ("mul-think", MUL, "42", "<think>7*6=42</think>\\boxed{42}", True),
    ("mul-bare", MUL, "42", "\\boxed{42}", True),
    ("mul-truncated", MUL, "42", "7*6 is 4", False),
    ("sub-six", SUB, "5", "<think>9-4=6</think>\\boxed{6}", False),
    ("sub-four", SUB, "5", "<think>9-4=4</think>\\boxed{4}", False),
    ("bench-right", BENCH, "2", "<think>x=2</think>\\boxed{2}", True),
    ("bench-wrong", BENCH, "2", "<think>x=3</think>\\boxed{3}", False),
    # the same text graded both ways (two graders disagreeing): never a pair
    ("div-right", DIV, "4", DIV_TEXT, True),
    ("div-wrong", DIV, "4", DIV_TEXT, False),
]
SOLUTION = {tag: generation for tag, _, _, generation, _ in GRADED}
GRADES = {(problem, generation, grade) for _, problem, _, generation, grade in GRADED}
ADD_CORRECT = [SOLUTION["add-short"], SOLUTION["add-long"]]
ADD_INCORRECT = [SOLUTION["add-six"], SOLUTION["add-seven"], SOLUTION["add-concat"]]
PREFERENCE = "++mode=preference"


def graded_row(problem: str, answer: str, generation: str, grade: bool | None) -> dict:
    row = {"problem": problem, "expected_answer": answer, "generation": generation}
    return row if grade is None else {**row, "symbolic_correct": grade}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def graded(tmp_path) -> Path:
    return write_jsonl(tmp_path / "output-rs0.jsonl", [graded_row(*row[1:]) for row in GRADED])


@pytest.fixture
def benchmark(tmp_path) -> Path:
    return write_jsonl(tmp_path / "test.jsonl", [{"problem": "benchmark problem: find x if x + 1 = 3"}])


@pytest.fixture(autouse=True)
def info_logs(caplog):
    caplog.set_level(logging.INFO, logger="skills_cli.training.prepare_data")
    return caplog


def pairs_of(source: Path, out: Path, *overrides: str, mode: str = PREFERENCE):
    """Run in-process through the real `++key=value` loader; returns (report, output rows)."""
    config = load_config(PrepareSFTConfig, [f"++input_files={source}", f"++output_path={out}", mode, *overrides],
                         where="prepare_data")  # fmt: skip
    report = prepare(config)
    return report, [json.loads(line) for line in out.read_text().splitlines()]


def by_problem(rows: list[dict]) -> dict[str, list[tuple[str, str]]]:
    grouped: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        grouped.setdefault(row["problem"], []).append((row["chosen"], row["rejected"]))
    return grouped


def log_lines(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_pairs_correct_with_incorrect_solutions_and_counts_skipped_problems(graded, benchmark, tmp_path, caplog):
    out = tmp_path / "pairs.jsonl"
    report, rows = pairs_of(graded, out, f"++contamination_file={benchmark}")
    assert report.read == 17 and report.written == 6
    assert report.dropped == {"unlabeled": 1, "filters.remove_contaminated": 2, "filters.drop_multi_boxed": 1,
                              "filters.remove_len_outliers": 0, "filters.dedup": 2}  # fmt: skip
    # SUB has only incorrect solutions; DIV only a correct one once dedup dropped its identical twin
    assert report.pairs == {"problems": 2, "only_correct": 1, "only_incorrect": 1, "identical": 0}
    grouped = by_problem(rows)
    assert set(grouped) == {ADD, MUL}
    assert len(grouped[ADD]) == 4 and len(grouped[MUL]) == 2  # the default max_pairs_per_problem=4, and 2 x 1
    for problem, pairs in grouped.items():
        for chosen, rejected in pairs:  # a correct and an incorrect solution of this problem
            assert (problem, chosen, True) in GRADES and (problem, rejected, False) in GRADES and chosen != rejected
        assert len(set(pairs)) == len(pairs)
    # spread: the 4 pairs of 2 correct x 3 incorrect use each correct twice and every incorrect solution
    assert sorted(chosen for chosen, _ in grouped[ADD]) == sorted(ADD_CORRECT * 2)
    assert {rejected for _, rejected in grouped[ADD]} == set(ADD_INCORRECT)
    lines = log_lines(caplog)
    assert "unlabeled: dropped 1 of 17 (no 'symbolic_correct' grade: a pair needs graded solutions)" in lines
    assert ("pairs: 6 pairs from 2 problems (at most 4 per problem, random_seed=0); skipped 1 problems with only "
            "correct and 1 with only incorrect solutions; 0 identical chosen and rejected left out") in lines  # fmt: skip
    assert lines[-1] == f"prepare_data: wrote 6 pairs from 17 rows to {out} (preference format)"


def test_prompt_is_the_sft_modes_chat_without_the_answer(graded, benchmark, tmp_path):
    common = (f"++contamination_file={benchmark}", "++prompt_config=generic/math")
    _, pairs = pairs_of(graded, tmp_path / "pairs.jsonl", *common)
    _, sft = pairs_of(graded, tmp_path / "sft.jsonl", *common, mode="++mode=sft")
    sft_prompts = {row["problem"]: row["messages"][:-1] for row in sft}
    for row in pairs:
        assert set(row) == {"prompt", "chosen", "rejected", "problem", "expected_answer"}
        assert row["prompt"] == sft_prompts[row["problem"]] and row["prompt"][-1]["role"] == "user"
        assert isinstance(row["chosen"], str) and isinstance(row["rejected"], str)
    assert {row["expected_answer"] for row in pairs if row["problem"] == MUL} == {"42"}


def test_every_combination_or_one_pair_per_problem_shortest_chosen_first(graded, benchmark, tmp_path, caplog):
    common = (graded, tmp_path / "p.jsonl", f"++contamination_file={benchmark}")
    report, rows = pairs_of(*common, "++max_pairs_per_problem=null")
    assert sorted(by_problem(rows)[ADD]) == sorted((c, r) for c in ADD_CORRECT for r in ADD_INCORRECT)
    assert report.written == 6 + 2
    assert any("(at most every combination per problem" in line for line in log_lines(caplog))
    _, rows = pairs_of(*common, "++max_pairs_per_problem=1", "++prefer_shorter_chosen=true")
    grouped = by_problem(rows)
    assert [len(pairs) for pairs in grouped.values()] == [1, 1]
    assert grouped[ADD][0][0] == SOLUTION["add-short"] and grouped[MUL][0][0] == SOLUTION["mul-bare"]


def test_choice_is_seeded_and_independent_of_other_problems(graded, benchmark, tmp_path):
    def add_pairs(*extra: str, source: Path = graded) -> list[tuple[str, str]]:
        _, rows = pairs_of(source, tmp_path / "p.jsonl", f"++contamination_file={benchmark}",
                           "++max_pairs_per_problem=2", *extra)  # fmt: skip
        return by_problem(rows)[ADD]

    first = add_pairs()
    assert first == add_pairs()  # same seed, same pairs in the same order
    assert len({c for c, _ in first}) == 2 and len({r for _, r in first}) == 2  # distinct sides first
    assert any(add_pairs(f"++random_seed={seed}") != first for seed in range(1, 10))
    # another problem's rows (or their absence) do not change ADD's pairs
    only_add = write_jsonl(tmp_path / "add.jsonl", [graded_row(*row[1:]) for row in GRADED if row[1] == ADD])
    assert add_pairs(source=only_add) == first


def test_filters_run_before_pairing(graded, benchmark, tmp_path):
    # without its unfinished (no </think>) solutions MUL has no incorrect one left: skipped, counted
    report, rows = pairs_of(graded, tmp_path / "p.jsonl", f"++contamination_file={benchmark}",
                            "++filters.remove_no_think_tags=true")  # fmt: skip
    assert report.dropped["filters.remove_no_think_tags"] == 2
    assert set(by_problem(rows)) == {ADD} and report.pairs["only_correct"] == 2
    # contamination off: BENCH pairs; the length bound drops MUL's two short answers, leaving it one grade
    report, rows = pairs_of(graded, tmp_path / "p.jsonl", "++filters.remove_contaminated=false",
                            "++min_solution_length=20")  # fmt: skip
    assert by_problem(rows)[BENCH] == [(SOLUTION["bench-right"], SOLUTION["bench-wrong"])]
    assert report.dropped["filters.remove_len_outliers"] == 2 and set(by_problem(rows)) == {ADD, BENCH}
    # remove_think_tags pairs the answers only
    _, rows = pairs_of(graded, tmp_path / "p.jsonl", f"++contamination_file={benchmark}",
                       "++filters.remove_think_tags=true")  # fmt: skip
    assert all("think>" not in row["chosen"] + row["rejected"] for row in rows)


def test_identical_chosen_and_rejected_are_never_written(graded, benchmark, tmp_path, caplog):
    report, rows = pairs_of(graded, tmp_path / "p.jsonl", f"++contamination_file={benchmark}", "++filters.dedup=false",
                            "++max_pairs_per_problem=null")  # fmt: skip
    assert DIV not in by_problem(rows) and report.pairs["identical"] == 1
    assert all(row["chosen"] != row["rejected"] for row in rows)
    # the duplicated correct ADD solution pairs twice with each incorrect one: rows, not identical texts
    assert len(by_problem(rows)[ADD]) == 3 * 3
    assert any(line.endswith("; 1 identical chosen and rejected left out") for line in log_lines(caplog))


def test_spread_combinations_cover_the_grid_with_distinct_sides_first():
    for rows, columns in [(1, 1), (1, 4), (3, 1), (2, 3), (3, 3), (4, 6), (6, 4), (5, 3)]:
        order = list(spread_combinations(rows, columns))
        assert sorted(order) == [(i, j) for i in range(rows) for j in range(columns)]
        prefix = order[: min(rows, columns)]
        assert len({i for i, _ in prefix}) == len({j for _, j in prefix}) == len(prefix)
        first_block = order[: math.lcm(rows, columns)]  # every row and every column before any repeats twice
        assert {i for i, _ in first_block} == set(range(rows)) and {j for _, j in first_block} == set(range(columns))


def test_the_preference_reader_loads_the_pairs(graded, benchmark, tmp_path):
    pytest.importorskip("transformers")
    from skills_cli.inference.model_loading import load_tokenizer
    from skills_cli.inference.tiny_model import build_tiny_model
    from skills_cli.training.components.preferences import PreferenceDataConfig, load_preference_dataset

    model = build_tiny_model(tmp_path / "tiny", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1)
    out = tmp_path / "pairs.jsonl"
    pairs_of(graded, out, f"++contamination_file={benchmark}")
    dataset = load_preference_dataset(str(out), load_tokenizer(model), PreferenceDataConfig(), max_length=512)
    assert len(dataset.pairs) == dataset.num_rows == 6 and dataset.num_identical_pairs_dropped == 0
    for pair in dataset.pairs:  # the same prompt on both sides, different completions
        assert pair.chosen.input_ids != pair.rejected.input_ids and pair.chosen.num_valid_tokens > 0


def test_runs_as_a_module(graded, tmp_path):
    out = tmp_path / "pairs.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "skills_cli.training.prepare_data", f"++input_files={tmp_path}/output-rs*.jsonl",
         f"++output_path={out}", PREFERENCE, "++filters.remove_contaminated=false", "++max_pairs_per_problem=1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 3  # ADD, MUL, BENCH
    assert f"prepare_data: wrote 3 pairs from 17 rows to {out} (preference format)" in result.stderr


def run_main_error(capsys, *overrides: str) -> str:
    """The error line printed by `main` (which must exit with status 2 and print only that line)."""
    assert main(list(overrides)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_no_problem_with_both_grades_is_an_error_and_writes_nothing(tmp_path, capsys):
    rows = [graded_row(ADD, "5", "\\boxed{5}", True), graded_row(MUL, "42", "\\boxed{4}", False),
            graded_row(SUB, "5", "\\boxed{5}", None)]  # fmt: skip
    source, out = write_jsonl(tmp_path / "g.jsonl", rows), tmp_path / "p.jsonl"
    error = run_main_error(capsys, f"++input_files={source}", f"++output_path={out}", PREFERENCE,
                           "++filters.remove_contaminated=false")  # fmt: skip
    assert error == (f"error: no problem has both a correct and an incorrect solution left (see the counts above); "
                     f"{out} not written")  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize(("override", "message"), [
    ("++output_format=input_output", "mode=preference writes the prompt as chat messages"),
    ("++add_unlabeled=true", "ungraded rows cannot be used, drop ++add_unlabeled=true"),
    ("++filters.max_per_problem=2", "use ++max_pairs_per_problem instead of ++filters.max_per_problem"),
    ("++max_pairs_per_problem=0", "max_pairs_per_problem must be >= 1 or null, got 0"),
    ("++mode=pairs", "'pairs' is not one of"),
    ("++max_pairs_per_problm=2", "did you mean 'max_pairs_per_problem'?"),
])  # fmt: skip
def test_bad_configuration_is_one_error_line(graded, tmp_path, capsys, override, message):
    out = tmp_path / "p.jsonl"
    error = run_main_error(capsys, f"++input_files={graded}", f"++output_path={out}", PREFERENCE,
                           "++filters.remove_contaminated=false", override)  # fmt: skip
    assert message in error and not out.exists()


def test_a_bad_grade_names_file_and_row(tmp_path, capsys):
    rows = [graded_row(ADD, "5", "\\boxed{5}", True), {"problem": ADD, "generation": "x", "symbolic_correct": 1}]
    source = write_jsonl(tmp_path / "g.jsonl", rows)
    error = run_main_error(capsys, f"++input_files={source}", f"++output_path={tmp_path / 'p.jsonl'}", PREFERENCE,
                           "++filters.remove_contaminated=false")  # fmt: skip
    assert error == f"error: {source} row 2: 'symbolic_correct' must be true, false or absent, got 1"
