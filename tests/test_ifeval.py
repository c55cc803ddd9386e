"""IFEval: every instruction's verifier on responses written here (ones that follow it and ones that do not), the
text units they count, strict against loose, the grader on bad rows, real rows of the mirror with hand-written
responses, the benchmark's data and prompt, and the summary's instruction-level figures."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, benchmarks_dir

from skills_cli.common.artifacts import EVALUATION, read_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.benchmarks import get_benchmark
from skills_cli.evaluation.benchmarks.ifeval import convert
from skills_cli.evaluation.graders import GRADERS, GradeOptions
from skills_cli.evaluation.graders.ifeval.grading import judge, loose_variants
from skills_cli.evaluation.graders.ifeval.text import capital_words, count_words, detect_language, split_sentences
from skills_cli.evaluation.graders.ifeval.verifiers import VERIFIERS
from skills_cli.evaluation.prepare_data import prepare
from skills_cli.evaluation.summarize import main as summarize_main
from skills_cli.evaluation.summarize import summarize_benchmark
from skills_cli.prompts.prompt_config import load_prompt_config

GRADER = GRADERS.get("ifeval")
OPTIONS = GradeOptions()

LIST_OF_THREE = "Here is my list:\n* apples are red\n* pears are green\n  - plums are purple\n\nThat is all."
FENCED_JSON = '```json\n{"name": "Ada", "langs": ["en", "fr"]}\n```'
HINDI = "मुझे किताबें पढ़ना बहुत पसंद है क्योंकि वे मुझे नई दुनिया दिखाती हैं और मेरा ज्ञान बढ़ाती हैं।"
GERMAN = "Ich lese sehr gerne Bücher, weil sie mir neue Welten zeigen und mein Wissen jeden Tag erweitern."
LOWER = "the quiet river runs past the old mill and the children wave at the boats every morning."
UPPER = "THE QUIET RIVER RUNS PAST THE OLD MILL AND THE CHILDREN WAVE AT THE BOATS EVERY MORNING."

# (instruction id, kwargs, a response, whether it follows the instruction): each id has at least one of each
CASES = [
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 3},
     "We MUST act NOW, said the CEO.", True),
    ("change_case:capital_word_frequency", {"capital_relation": "at least", "capital_frequency": 3},
     "We MUST act soon, said the manager.", False),
    ("change_case:capital_word_frequency", {"capital_relation": "less than", "capital_frequency": 2},
     "Only NASA is shouted here.", True),
    ("change_case:capital_word_frequency", {"capital_relation": "less than", "capital_frequency": 2},
     "NASA and the U.S. both.", False),
    ("change_case:english_capital", {}, UPPER, True),
    ("change_case:english_capital", {}, UPPER[:-10] + "morning.", False),
    ("change_case:english_capital", {}, GERMAN.upper(), False),
    ("change_case:english_lowercase", {}, LOWER, True),
    ("change_case:english_lowercase", {}, LOWER.replace("the old", "the Old"), False),
    ("change_case:english_lowercase", {}, GERMAN.lower(), False),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about tea."},
     "write a haiku about tea.\n\nSteam curls from the cup", True),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about tea."},
     "Sure! Write a haiku about tea.\nSteam curls", False),
    ("combination:two_responses", {}, "First answer here.\n******\nSecond, different answer.", True),
    ("combination:two_responses", {}, "******\nSame text.\n******\nSame text.\n******", False),
    ("combination:two_responses", {}, "One.\n******\n\n******\nTwo.", False),
    ("combination:two_responses", {}, "Only one answer.", False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], see you at [place].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "Dear [name], see you at [place].", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye now.\n\nP.S. Bring snacks.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye now.\n\n**P. S.** Bring snacks.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Bye now. Bring snacks.", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. one\nP.P.S. two", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\nP.S. one more thing", False),
    ("detectable_format:constrained_response", {}, "My answer is maybe.", True),
    ("detectable_format:constrained_response", {}, "My answer is: maybe", False),
    ("detectable_format:json_format", {}, FENCED_JSON, True),
    ("detectable_format:json_format", {}, '  {"a": 1}  ', True),
    ("detectable_format:json_format", {}, 'Here it is: {"a": 1}', False),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nIntro text.\nSECTION 2\nMore text.", True),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "Section 1\nIntro text.\nSection 2\nMore text.", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, LIST_OF_THREE, True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, LIST_OF_THREE, False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* one\n---\n**bold line**\n-5 degrees", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *first* and **second** one.", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *first* and * * blank.", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 1}, "* a bullet\n* and another", False),
    ("detectable_format:title", {}, "<<Ode to Tea>>\nSteam rises.", True),
    ("detectable_format:title", {}, "<<   >>\nSteam rises.", False),
    ("detectable_format:title", {}, "<<Ode to\nTea>>", False),
    ("keywords:existence", {"keywords": ["river", "Mill"]}, LOWER, True),
    ("keywords:existence", {"keywords": ["river", "bridge"]}, LOWER, False),
    ("keywords:forbidden_words", {"forbidden_words": ["can"]}, "Light a candle; we could go.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["can"]}, "Yes, we CAN go.", False),
    ("keywords:frequency", {"keyword": "tea", "relation": "at least", "frequency": 2}, "Tea, more TEA.", True),
    ("keywords:frequency", {"keyword": "tea", "relation": "at least", "frequency": 3}, "Tea, more TEA.", False),
    ("keywords:frequency", {"keyword": "tea", "relation": "less than", "frequency": 2}, "One tea only.", True),
    ("keywords:frequency", {"keyword": "tea", "relation": "less than", "frequency": 1}, "One tea only.", False),
    ("keywords:letter_frequency", {"letter": "q", "let_relation": "at least", "let_frequency": 2},
     "Quick quiz.", True),
    ("keywords:letter_frequency", {"letter": "q", "let_relation": "less than", "let_frequency": 2},
     "Quick quiz.", False),
    ("keywords:letter_frequency", {"letter": "#", "let_relation": "at least", "let_frequency": 2}, "# a\n# b", True),
    ("language:response_language", {"language": "hi"}, HINDI, True),
    ("language:response_language", {"language": "hi"}, GERMAN, False),
    ("language:response_language", {"language": "de"}, GERMAN, True),
    ("language:response_language", {"language": "de"}, "12345 678", True),  # nothing to judge: not failed
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First we boil water.\n\n\"Then, we steep the leaves.", True),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First we boil water.\n\nAfter that we steep.", False),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "then"},
     "First.\n\nThen we steep.\n\nAnd drink.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n\n***\n\nTwo.\n\n***\n\nThree.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***\nOne.\n***\nTwo.\n***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n***\n***\nTwo.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "One.\n\nTwo.\n\nThree.", False),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "Dr. Smith left at 3.30 p.m. today. He was tired!", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "One here. Two here? Three here!", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3},
     "One here. Two here? Three here!", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "I don't like tea.", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "I don't like tea.", False),
    ("punctuation:no_comma", {}, "No commas at all here.", True),
    ("punctuation:no_comma", {}, "Well, there is one.", False),
    ("punctuation:no_comma", {}, "我们喜欢茶，也喜欢咖啡。", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, 'Done here. "Any other questions?"', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? I hope not.", False),
    ("startend:quotation", {}, ' "Wrapped in quotes." ', True),
    ("startend:quotation", {}, "“Typographic quotes.”", True),
    ("startend:quotation", {}, '"Opened but never closed.', False),
    ("startend:quotation", {}, '"', False),
]  # fmt: skip


@pytest.mark.parametrize(("instruction_id", "kwargs", "response", "followed"), CASES)
def test_each_instruction_on_written_responses(instruction_id, kwargs, response, followed):
    verdict = judge(instruction_id, kwargs, response)
    assert verdict.error is None
    assert verdict.strict is followed, (instruction_id, response)


def test_every_registered_instruction_has_a_following_and_a_failing_case():
    outcomes = {(case[0], case[3]) for case in CASES}
    for instruction_id in VERIFIERS.names():
        assert {(instruction_id, True), (instruction_id, False)} <= outcomes, instruction_id


# -- text units ---------------------------------------------------------------------------------------------
def test_sentences_split_at_terminators_but_not_after_abbreviations_initials_or_list_numbers():
    text = "Dr. Watson met J. K. Rowling in the U.S. last week. Really?! Yes... it was fun.\n1. Tea is good."
    assert split_sentences(text) == ["Dr. Watson met J. K. Rowling in the U.S. last week.", "Really?!",
                                     "Yes... it was fun.", "1. Tea is good."]  # fmt: skip
    assert split_sentences('He said "stop." Then he left') == ['He said "stop."', "Then he left"]
    assert split_sentences("The value is 3.5. Next.") == ["The value is 3.5.", "Next."]
    # all lower case (as `change_case:english_lowercase` asks) still has sentences; a lower-case letter is no initial
    assert split_sentences("so there i was. the sky is a. it is.") == ["so there i was.", "the sky is a.", "it is."]
    assert split_sentences("***\n\n") == [] and split_sentences("a heading\n\nthen text") == ["a heading\n\nthen text"]


def test_words_are_runs_of_word_characters_and_capital_words_are_whole_tokens():
    assert count_words("I don't like state-of-the-art 3.5 tea!") == 11
    assert count_words("  ") == 0
    assert capital_words("The U.S. and DON'T; COVID-19, AI-driven NASA I 2024") == ["U.S", "DON'T", "COVID-19", "NASA",
                                                                                  "I"]  # fmt: skip


def test_language_detection_is_deterministic_and_reports_base_codes():
    assert [detect_language(GERMAN) for _ in range(3)] == ["de"] * 3
    assert detect_language("这是一个用中文写的句子，我们正在测试语言检测。") == "zh"
    assert detect_language("!!! 123") is None


# -- strict and loose -----------------------------------------------------------------------------------------
def test_loose_variants_drop_the_first_and_last_lines_and_asterisks():
    assert loose_variants("Sure:\n*body*\nBye") == ["Sure:\n*body*\nBye", "*body*\nBye", "Sure:\n*body*", "*body*",
                                                    "Sure:\nbody\nBye", "body\nBye", "Sure:\nbody", "body"]  # fmt: skip
    assert loose_variants("one line") == ["one line"]


@pytest.mark.parametrize(("instruction_id", "kwargs", "response"), [
    ("detectable_format:json_format", {}, 'Sure! Here is the JSON:\n{"a": 1}'),  # a preamble line
    ("startend:quotation", {}, '"All wrapped up."\nLet me know if you need more.'),  # a closing remark
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, "Done.\n**Is there anything else?**"),
    ("change_case:english_lowercase", {}, "Here you go:\n" + LOWER),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Describe tea."}, "**Describe tea.**\nIt is a drink."),
])  # fmt: skip
def test_loose_forgives_what_strict_does_not(instruction_id, kwargs, response):
    verdict = judge(instruction_id, kwargs, response)
    assert (verdict.strict, verdict.loose, verdict.error) == (False, True, None)


def test_loose_still_fails_a_response_that_breaks_the_instruction():
    verdict = judge("punctuation:no_comma", {}, "Sure, here it is:\nA, B and C.\nBye, now.")
    assert (verdict.strict, verdict.loose) == (False, False)


# -- rows -------------------------------------------------------------------------------------------------
def grade(rows: list[dict]) -> list[dict]:
    return GRADER.grade_rows(rows, "generation", OPTIONS)


def test_a_row_reports_prompt_and_instruction_verdicts():
    row = {"instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}, {}],
           "generation": '"No commas, sadly."\nHope it helps, truly'}  # fmt: skip
    assert grade([row]) == [{"predicted_answer": row["generation"], "prompt_strict_accuracy": False,
                             "prompt_loose_accuracy": False, "follow_instruction_list_strict": [False, False],
                             "follow_instruction_list_loose": [False, True], "grading_error": None}]  # fmt: skip


def test_unknown_ids_bad_arguments_and_bad_rows_are_the_samples_errors():
    rows = [
        {"instruction_id_list": ["punctuation:no_comma", "detectable_format:haiku"], "kwargs": [{}, {}],
         "generation": "No commas here."},
        {"instruction_id_list": ["keywords:frequency"], "kwargs": [{"keyword": "tea", "relation": "at most",
                                                                    "frequency": 2}], "generation": "tea"},
        {"instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"relation": "at least"}],
         "generation": "tea"},
        {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}], "generation": "tea"},
        {"prompt": "no instructions", "generation": "tea"},
    ]  # fmt: skip
    graded = grade(rows)
    assert graded[0]["follow_instruction_list_strict"] == [True, False]
    assert graded[0]["grading_error"] == "unknown instruction id 'detectable_format:haiku'"
    assert "'relation' must be one of ['at least', 'less than'], got 'at most'" in graded[1]["grading_error"]
    assert graded[2]["grading_error"] == "length_constraints:number_words: missing argument 'num_words'"
    assert "kwargs must be a list of 1 objects" in graded[3]["grading_error"]
    assert "no instruction_id_list" in graded[4]["grading_error"]
    assert not any(row["prompt_strict_accuracy"] or row["prompt_loose_accuracy"] for row in graded)


def test_missing_kwargs_and_none_values_mean_not_given_and_empty_responses_follow_nothing():
    hub_style = {"num_highlights": None, "relation": None, "num_words": None, "keywords": None}
    rows = [{"instruction_id_list": ["punctuation:no_comma"], "generation": "No commas."},
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [hub_style], "generation": "No commas."},
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [None], "generation": "   "},
            {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "generation": None}]  # fmt: skip
    graded = grade(rows)
    assert [row["prompt_strict_accuracy"] for row in graded] == [True, True, False, False]
    assert [row["prompt_loose_accuracy"] for row in graded] == [True, True, False, False]
    assert [row["predicted_answer"] for row in graded] == ["No commas.", "No commas.", None, None]
    assert all(row["grading_error"] is None for row in graded)


# -- the mirror ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mirror_rows() -> dict[str, dict]:
    path = benchmarks_dir() / "ifeval" / "test.jsonl"
    if not path.is_file():
        if os.environ.get("SKILLS_BENCHMARKS_DIR"):
            pytest.fail(f"{path} is missing from $SKILLS_BENCHMARKS_DIR")
        pytest.skip("benchmark mirror not found (set SKILLS_BENCHMARKS_DIR)")
    return {row["id"]: row for row in read_jsonl(path)}


def test_every_instruction_id_of_the_data_has_a_verifier(mirror_rows):
    ids = {i for row in mirror_rows.values() for i in row["instruction_id_list"]}
    assert len(mirror_rows) == 541 and len(ids) == 25
    assert ids <= set(VERIFIERS.names())


RESIGNATION = (
    "Write an email to my boss telling him that I am quitting. The email must contain a title wrapped "
    "in double angular brackets, i.e. <<title>>.\n\n<<My Resignation>>\n\nDear Mr. Park,\n\nI am "
    "writing to resign from my position. My last day will be in two weeks.\n\nBest,\nLena"
)
RESUME = (
    '"Matthias Algiers\n\nSKILLS: carpentry and team leadership.\nEXPERIENCE: ten years of fine '
    'furniture making in Lyon.\nReferences on request."'
)
SNEAKERS = (
    "NIKE MAKES THE BETTER SNEAKER FOR MOST PEOPLE. " + "A NIKE SNEAKER IS LIGHT AND A PRADA SNEAKER IS "
    "EXPENSIVE. " * 5 + "\n\nP.S. THE BEST SNEAKER IS THE ONE YOU WEAR."
)
VIETNAMESE = (
    "Câu này nghe như lời dạy của bà ngoại vào mỗi bữa cơm tối.\n******\n"
    "Người viết câu này chắc chưa từng thức trắng đêm ru con ngủ."
)
OFFENCES = (
    "Punched tickets are not the only things the police [verb] each day.\n\nOffences are grasped "
    "too.\n\nThe police in [city] grasp much more."
)
PUNCHED_SECOND = OFFENCES.replace("Punched tickets", "Tickets punched")


@pytest.mark.parametrize(("row_id", "response", "strict", "loose"), [
    ("ifeval-1012", RESIGNATION, [True, True], [True, True]),
    ("ifeval-1040", RESUME, [True, True, True], [True, True, True]),
    ("ifeval-1219", SNEAKERS, [True, True, True], [True, True, True]),
    ("ifeval-1582", VIETNAMESE, [True, True, True], [True, True, True]),
    ("ifeval-2439", OFFENCES, [True, True, True], [True, True, True]),
    ("ifeval-2439", PUNCHED_SECOND, [True, False, True], [True, False, True]),
    ("ifeval-1040", RESUME.strip('"'), [True, True, False], [True, True, False]),
])  # fmt: skip
def test_real_rows_with_written_responses(mirror_rows, row_id, response, strict, loose):
    [graded] = grade([{**mirror_rows[row_id], "generation": response}])
    assert graded["follow_instruction_list_strict"] == strict
    assert graded["follow_instruction_list_loose"] == loose
    assert graded["prompt_strict_accuracy"] is all(strict) and graded["grading_error"] is None


def test_the_benchmark_converts_the_source_and_prompts_with_the_prompt_alone(mirror_rows):
    benchmark = get_benchmark("ifeval")
    assert (benchmark.grader, benchmark.row_fields) == ("ifeval", ("id", "prompt", "instruction_id_list", "kwargs"))
    assert benchmark.urls["test"].endswith("google-research/master/instruction_following_eval/data/input_data.jsonl")
    source = [{key: value for key, value in row.items() if key != "id"} for row in mirror_rows.values()]
    assert convert(source) == list(mirror_rows.values())  # the mirror is exactly our conversion, key order too
    assert [list(row) for row in convert(source[:1])] == [["id", "key", "prompt", "instruction_id_list", "kwargs"]]
    row = mirror_rows["ifeval-1012"]
    assert load_prompt_config(benchmark.prompt_config).messages(row) == [{"role": "user", "content": row["prompt"]}]


def test_prepare_reads_the_mirror_and_checks_the_row_fields(mirror_rows, tmp_path):
    assert prepare("ifeval", tmp_path / "data", mirror=benchmarks_dir())[0].startswith("ifeval/test: 541 rows from")
    broken = tmp_path / "mirror" / "ifeval" / "test.jsonl"
    write_jsonl_atomic(broken, [{k: v for k, v in row.items() if k != "kwargs"} for row in mirror_rows.values()])
    with pytest.raises(UserError, match="row 1 has no non-empty 'kwargs'"):
        prepare("ifeval", tmp_path / "data2", mirror=tmp_path / "mirror")


# -- grading and summarizing end to end -------------------------------------------------------------------
def write_results(folder, responses_per_seed: list[list[str]]) -> None:
    rows = [{"id": "p1", "instruction_id_list": ["punctuation:no_comma", "startend:quotation"], "kwargs": [{}, {}]},
            {"id": "p2", "instruction_id_list": ["detectable_format:title"], "kwargs": [{}]}]  # fmt: skip
    for seed, responses in enumerate(responses_per_seed):
        name = "output.jsonl" if len(responses_per_seed) == 1 else f"output-rs{seed}.jsonl"
        write_jsonl_atomic(
            folder / name, [{**row, "generation": text} for row, text in zip(rows, responses, strict=True)]
        )


def test_grade_then_summarize_shows_instruction_level_accuracy(tmp_path, capsys):
    results = tmp_path / "ifeval"  # named after the benchmark: its grader is used
    # p1: a comma (not followed, strictly or loosely) and the quotes (followed); p2: a title (followed)
    write_results(results, [['"Hello, world"', "Intro\n<<Title>>"]])
    done = subprocess.run([sys.executable, "-m", "skills_cli.evaluation.grade", "--results_dir", str(results)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "1/2 correct, 0 grading errors" in done.stdout, done.stderr
    summary = summarize_benchmark(results, max_k=None)
    greedy = summary.metrics["greedy"]
    assert (greedy["prompt_strict_accuracy"], greedy["prompt_loose_accuracy"]) == (50.0, 50.0)
    assert greedy["instruction_strict_accuracy"] == pytest.approx(200 / 3)
    assert summary.extra_keys == ("prompt_loose_accuracy", "instruction_strict_accuracy", "instruction_loose_accuracy")
    assert summarize_main([str(tmp_path), "--no_plot"]) == 0
    header, values = capsys.readouterr().out.splitlines()[1:3]
    assert header.split(" | ")[-3:] == ["prompt_loose_accuracy", "instruction_strict_accuracy",
                                        "instruction_loose_accuracy"]  # fmt: skip
    assert [cell.strip() for cell in values.split(" | ")[-3:]] == ["50.00%", "66.67%", "66.67%"]
    written = read_json_artifact(tmp_path / "metrics.json", EVALUATION)[1]
    assert written["ifeval"]["greedy"]["instruction_loose_accuracy"] == pytest.approx(200 / 3)


def test_with_seeds_the_figures_join_the_average_mode_only(tmp_path):
    results = tmp_path / "ifeval"
    write_results(results, [['"No commas"', "<<T>>"], ['"Comma, here"', "no title"]])
    for path in sorted(results.glob("output-rs*.jsonl")):
        rows = read_jsonl(path)
        write_jsonl_atomic(path, [{**row, **fields} for row, fields in zip(rows, grade(rows), strict=True)])
    summary = summarize_benchmark(results, max_k=None)
    assert list(summary.metrics) == ["pass@1[avg-of-2]", "pass@2"]  # free text: no majority vote
    average = summary.metrics["pass@1[avg-of-2]"]
    assert average["prompt_strict_accuracy"] == 50.0
    assert average["instruction_strict_accuracy"] == pytest.approx(100 * 4 / 6)  # 3 of 3, then 1 of 3
    assert "instruction_strict_accuracy" not in summary.metrics["pass@2"]


def test_the_docs_define_exactly_the_registered_instructions():
    page = (REPO / "docs" / "benchmarks" / "instruction_following.md").read_text()
    documented = re.findall(r"^\| `([a-z_]+:[a-z_]+)` \|", page, re.MULTILINE)
    assert sorted(documented) == list(VERIFIERS.names())
