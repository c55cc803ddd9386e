"""Benchmarks and graders are registries: a plugin (a module outside the package, named in $SKILLS_CLI_PLUGINS)
adds a benchmark with its own data, prompt, grader and metric key, and `ns prepare_data`, `ns eval` (generation,
grading, summary) and `grade.py` use them without any change to the package; math stays the default."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
from conftest import run_ns
from test_eval_e2e import FAST, tiny_model  # noqa: F401 (tiny_model: a fixture)

from skills_cli.common.artifacts import EVALUATION, read_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.evaluation import grade
from skills_cli.evaluation.benchmarks import BENCHMARKS, get_benchmark, grader_for_results
from skills_cli.evaluation.graders import GRADERS
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.store import JobState, Store

PLUGIN_NAME = "toy_echo_benchmark"
# "Echo the word": locally generated data, its own prompt file, a grader that compares the last word exactly
# and reports `exact_match` (not math's `symbolic_correct`).
PLUGIN = """
from pathlib import Path

from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.graders import GRADERS, Grader

WORDS = ("apple", "river", "stone", "cloud")
PROMPT = Path(__file__).with_name("echo.yaml")
PROMPT.write_text('system: ""\\nuser: "Repeat this word and nothing else: {problem}"\\n')


def generate(split):
    return [{"id": f"echo-{i}", "problem": word, "expected_answer": word} for i, word in enumerate(WORDS)]


def grade_echo(generation, expected, options):
    words = (generation or "").split()
    predicted = words[-1].strip(".,!?\\"'").lower() if words else None
    return {"predicted_answer": predicted, "exact_match": predicted == expected}


GRADERS.register(Grader("echo", "The last word equals the expected word.", ("exact_match",), grade_echo))
BENCHMARKS.register(Benchmark(name="toy", description="Echo a word.", prompt_config=str(PROMPT), grader="echo",
                              generate=generate))
"""


@pytest.fixture
def toy_registered(tmp_path, monkeypatch):
    """The plugin imported into this process (its entries removed again afterwards)."""
    folder = tmp_path / "in_process"
    folder.mkdir()
    (folder / f"{PLUGIN_NAME}.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(folder))
    importlib.import_module(PLUGIN_NAME)
    yield
    BENCHMARKS.unregister("toy")
    GRADERS.unregister("echo")
    sys.modules.pop(PLUGIN_NAME, None)


def write_results(folder, rows):
    folder.mkdir(parents=True)
    (folder / "output.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_benchmarks_name_their_grader_and_its_keys(toy_registered):
    toy = get_benchmark("toy")
    assert toy.get_grader() is GRADERS.get("echo") and toy.metric_keys == ("exact_match",)
    assert get_benchmark("gsm8k").metric_keys == ("symbolic_correct",)
    assert grader_for_results("toy").name == "echo"
    assert grader_for_results("my-own-folder").name == "math"  # results of no known benchmark: math, as before


def test_grade_uses_the_benchmarks_grader_on_right_and_wrong_answers(toy_registered, tmp_path, capsys):
    rows = [{"id": "1", "expected_answer": "apple", "generation": "Sure: apple."},
            {"id": "2", "expected_answer": "river", "generation": "stone"},
            {"id": "3", "expected_answer": "cloud", "generation": ""}]  # fmt: skip
    results = write_results(tmp_path / "r" / "toy", rows)
    assert grade.main(["--results_dir", str(results)]) == 0  # the folder's name picks the benchmark
    assert capsys.readouterr().out.strip().endswith("output.jsonl: 1/3 correct, 0 grading errors")
    graded = read_jsonl(results / "output.jsonl")
    assert [(r["predicted_answer"], r["exact_match"]) for r in graded] == [("apple", True), ("stone", False),
                                                                            (None, False)]  # fmt: skip
    assert not any("symbolic_correct" in row for row in graded)
    # the same rows elsewhere are math unless told: --benchmark, or --grader
    other = write_results(tmp_path / "elsewhere", rows)
    assert grade.main([str(other / "output.jsonl"), "--benchmark", "toy"]) == 0
    assert [r["exact_match"] for r in read_jsonl(other / "output.jsonl")] == [True, False, False]
    assert grade.main([str(other / "output.jsonl"), "--grader", "math"]) == 0
    assert [r["symbolic_correct"] for r in read_jsonl(other / "output.jsonl")] == [False, False, False]


def test_an_unknown_grader_is_one_error_line(toy_registered, tmp_path, capsys):
    results = write_results(tmp_path / "r", [{"id": "1", "expected_answer": "1", "generation": "1"}])
    assert grade.main(["--results_dir", str(results), "--grader", "ech"]) == 2
    assert (
        "unknown grader 'ech' (did you mean 'echo'?); known: code, echo, ifeval, math, mcq" in capsys.readouterr().err
    )
    with pytest.raises(UserError, match="unknown benchmark 'toyy'; known: aime24, .*, toy"):
        get_benchmark("toyy")


def test_summary_of_a_plugin_benchmark_uses_its_metric_key(toy_registered, tmp_path):
    from skills_cli.evaluation.summarize import summarize

    rows = [{"id": str(i), "expected_answer": "a", "predicted_answer": "a" if i < 3 else None,
             "exact_match": i < 3} for i in range(4)]  # fmt: skip
    write_results(tmp_path / "r" / "toy", rows)
    (result,), written = summarize(tmp_path / "r", make_plot=False)
    assert result.metric_key == "exact_match"
    assert result.metrics["greedy"]["exact_match"] == 75.0 and result.metrics["greedy"]["no_answer"] == 25.0
    assert read_json_artifact(written, EVALUATION)[1] == {"toy": result.metrics}


def test_ns_prepares_evaluates_and_summarizes_a_benchmark_from_a_folder(tmp_path, tiny_model):  # noqa: F811
    """--benchmarks_dir: a folder of benchmark modules outside the package, seen by `ns` and by every job."""
    folder = tmp_path / "my_benchmarks"
    folder.mkdir()
    (folder / "toy_echo.py").write_text(PLUGIN)
    data, output = tmp_path / "data", tmp_path / "evals"
    prepared = run_ns("prepare_data", "toy", "--output_dir", str(data), "--benchmarks_dir", str(folder),
                      check=True).stdout  # fmt: skip
    assert "toy/test: 4 rows from generated locally" in prepared
    run_ns("eval", "--benchmarks", "toy", "--data_dir", str(data), "--output_dir", str(output), "--model", tiny_model,
           "--server_type", "hf", "--expname", "toy-eval", "--benchmarks_dir", str(folder), *FAST.split(),
           check=True)  # fmt: skip
    store = Store()
    records = wait(store.jobs("toy-eval"), store, timeout=900, poll=1.0)
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), run_ns("logs", "toy-eval").stdout[-3000:]
    graded = read_jsonl(output / "eval-results" / "toy" / "output.jsonl")
    assert len(graded) == 4 and all("exact_match" in row and "predicted_answer" in row for row in graded)
    assert not any("symbolic_correct" in row for row in graded)
    metrics = read_json_artifact(output / "metrics.json", EVALUATION)[1]
    assert list(metrics) == ["toy"] and list(metrics["toy"]) == ["greedy"]
    greedy = metrics["toy"]["greedy"]
    assert greedy["num_entries"] == 4 and 0.0 <= greedy["exact_match"] <= 100.0 and "symbolic_correct" not in greedy
    summary_log = run_ns("logs", "toy-eval", "summarize", check=True).stdout
    assert "evaluation_mode | num_entries | avg_tokens | exact_match | no_answer" in summary_log


def test_a_benchmarks_folder_names_itself_in_errors(tmp_path, monkeypatch):
    from skills_cli.evaluation.benchmarks import BENCHMARKS_DIR_ENV

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "oops.py").write_text("raise RuntimeError('my typo')\n")
    monkeypatch.setenv(BENCHMARKS_DIR_ENV, str(broken))
    with pytest.raises(UserError, match=r"benchmark plug-in .*oops.py cannot be loaded: RuntimeError: my typo"):
        get_benchmark("gsm8k")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(BENCHMARKS_DIR_ENV, str(empty))
    with pytest.raises(
        UserError, match=rf"unknown benchmark 'nope'; known: aime24, .*; plug-in folders searched: {empty}"
    ):
        get_benchmark("nope")
    result = run_ns("eval", "--benchmarks", "nope", "--benchmarks_dir", str(empty), "--output_dir", str(tmp_path / "o"),
                    "--server_address", "http://127.0.0.1:1/v1", "--dry_run")  # fmt: skip
    assert result.returncode == 2 and f"plug-in folders searched: {empty}" in result.stderr, result.stderr
