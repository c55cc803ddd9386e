"""Multiple choice: the `mcq` grader's letter extraction (written cases, including ones that must not match),
the three benchmarks' converters on small files in each source's real format (a local HTTP server or file://
URLs stand in for the hubs, which tests cannot reach), and grading end to end on generated questions."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic
from skills_cli.evaluation.benchmarks import get_benchmark, gpqa_diamond, mmlu, mmlu_pro
from skills_cli.evaluation.benchmarks._choices import LETTERS, choice_row
from skills_cli.evaluation.graders import GRADERS, GradeOptions
from skills_cli.evaluation.graders.mcq import extract_choice, grade_row
from skills_cli.evaluation.prepare_data import prepare
from skills_cli.evaluation.summarize import summarize_benchmark
from skills_cli.prompts.prompt_config import load_prompt_config

# -- extraction --------------------------------------------------------------------------------------------
# (generation, the chosen letter or None, the rule that decided); four options (A-D) unless the case says
FOUND = [
    (r"The sum is 12, so \boxed{C}.", "C", "boxed"),
    (r"$\boxed{\text{C}}$", "C", "boxed"),
    (r"\boxed{(C)}", "C", "boxed"),
    (r"\boxed{\textbf{(B)}}", "B", "boxed"),
    (r"\boxed{ d }", "D", "boxed"),
    (r"\boxed{C. 42}", "C", "boxed"),
    (r"\boxed{(A) 3 m/s}", "A", "boxed"),
    (r"First \boxed{A}, on reflection \boxed{B}", "B", "boxed"),
    (r"Answer: C but \boxed{D}", "D", "boxed"),
    (r"\boxed{E} is not an option; Answer: B", "B", "answer_phrase"),
    (r"\boxed{42}", "B", "boxed_option_text"),
    (r"so it is \boxed{ 7 }", "C", "boxed_option_text"),
    ("Answer: C", "C", "answer_phrase"),
    ("**Answer:** (C)", "C", "answer_phrase"),
    ("**Answer**: D", "D", "answer_phrase"),
    ("Answer: **B**", "B", "answer_phrase"),
    ("Final answer: C", "C", "answer_phrase"),
    ("Final Answer: $C$", "C", "answer_phrase"),
    ("The answer is C because the others fail.", "C", "answer_phrase"),
    ("the correct option is (C).", "C", "answer_phrase"),
    ("The correct answer is option B", "B", "answer_phrase"),
    ("So the best choice would be D.", "D", "answer_phrase"),
    ("The answer is 'B'.", "B", "answer_phrase"),
    ("answer: c", "C", "answer_phrase"),
    ("The answer is (b).", "B", "answer_phrase"),
    ("Answer: A\nThe answer is D\n(B) was tempting", "D", "answer_phrase"),
    ("Option (A) is too small and (B) too large.\nAnswer: C", "C", "answer_phrase"),
    ("(A) 12 is wrong\nWe pick (C)", "C", "parenthesized"),
    ("C) 42", "C", "letter_paren"),
    ("C", "C", "last_letter"),
    ("After checking each option, the pick is D.", "D", "last_letter"),
    ("**B**", "B", "last_letter"),
    ("I'm confident in B", "B", "last_letter"),
    ("Vitamin B12 matters here, so D.", "D", "last_letter"),
]
# (generation, why nothing may be read from it)
NOT_FOUND = [
    ("As a result, none of these works.", "the A of As is inside a word"),
    ("A good question. I think it depends.", "A and I followed by a lower-case word are English words"),
    ("the answer is a prime number", "a lower-case letter followed by a word is the article"),
    ("Answer: E", "E is beyond four options"),
    (r"\boxed{42, 7}", "a box holding no letter and no single option's text"),
    (r"\boxed{x}", "x is not an option letter"),
    ("B-cells and T-cells differ.", "letters joined by hyphens are words"),
    ("Answer: A's cousin", "a letter followed by 's is a word"),
    ("Option (A) is right\nbut I am not sure about anything now.", "the weak rules read only the last line"),
    ("", "empty"),
    (None, "no generation"),
    (r"The salt forms with \boxed{Cl}", "a box holding a word that begins with a letter"),
]
OPTIONS = ["3", "42", "7", "5"]


@pytest.mark.parametrize(("text", "letter", "rule"), FOUND)
def test_the_chosen_letter_and_its_rule_are_found(text, letter, rule):
    assert extract_choice(text, "ABCD", OPTIONS) == (letter, rule)


@pytest.mark.parametrize(("text", "why"), NOT_FOUND)
def test_no_letter_is_read_where_none_was_chosen(text, why):
    assert extract_choice(text, "ABCD", OPTIONS) == (None, None), why


def test_the_valid_letters_come_from_the_row_options():
    ten = {"options": [str(n) for n in range(10)], "expected_answer": "J", "generation": "Answer: J"}
    four = {**ten, "options": ten["options"][:4], "expected_answer": "D"}
    bare = {"expected_answer": "J", "generation": r"\boxed{J}"}  # no options: A-J
    assert grade_row(ten, "generation", GradeOptions())["choice_correct"] is True
    assert grade_row(four, "generation", GradeOptions())["predicted_answer"] is None
    assert grade_row(bare, "generation", GradeOptions())["predicted_answer"] == "J"


def test_a_custom_regex_rule_comes_first_and_a_bad_expected_answer_is_recorded_not_raised():
    row = {"options": OPTIONS, "expected_answer": "B", "generation": "Choice=[B] ... \\boxed{A}"}
    assert grade_row(row, "generation", GradeOptions(regex=r"Choice=\[(\w)\]")) == {
        "predicted_answer": "B", "choice_correct": True, "extraction": "regex", "grading_error": None}  # fmt: skip
    bad = grade_row({**row, "expected_answer": "42"}, "generation", GradeOptions())
    assert bad["choice_correct"] is False and "not one of the option letters ABCD" in bad["grading_error"]


# -- benchmark sources ---------------------------------------------------------------------------------------
class Hub:
    """A local HTTP server for the tests: serves `routes` (path with query -> body) and, for routes listed in
    `tokens`, only to a request whose Authorization header carries that token (as the gated hub does)."""

    def __init__(self):
        self.routes: dict[str, bytes] = {}
        self.tokens: dict[str, str] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                token = hub.tokens.get(self.path)
                if self.path not in hub.routes or (token and self.headers.get("Authorization") != f"Bearer {token}"):
                    self.send_error(404 if self.path not in hub.routes else 401)
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(hub.routes[self.path])

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def hub():
    server = Hub()
    yield server
    server.server.shutdown()


GPQA_HEADER = ["Pre-Revision Question", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
               "Incorrect Answer 3", "Explanation", "Record ID", "High-level domain", "Subdomain"]  # fmt: skip


def gpqa_csv(count: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(GPQA_HEADER)
    for n in range(count):
        domain = ("Physics", "Chemistry", "Biology")[n % 3]
        writer.writerow([f"old {n}", f"Question {n}, with a comma\nand a second line?", f" right {n}\n",
                         f"wrong {n}a", f"wrong {n}b", f"wrong {n}c", "because", f"rec{n:05d}", domain, "Sub"])  # fmt: skip
    return out.getvalue().encode()


def test_gpqa_sends_the_token_and_shuffles_each_question_reproducibly(hub, monkeypatch):
    hub.routes["/gpqa_diamond.csv"], hub.tokens["/gpqa_diamond.csv"] = gpqa_csv(400), "secret-token"
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError, match="Unauthorized"):  # the local copy wants the token, as the hub does
        gpqa_diamond.fetch("test", hub.url + "/gpqa_diamond.csv")
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    rows = gpqa_diamond.convert(gpqa_diamond.fetch("test", hub.url + "/gpqa_diamond.csv"))
    first = rows[0]
    assert first["id"] == "gpqa_diamond-rec00000" and first["problem"] == "Question 0, with a comma\nand a second line?"
    assert first["options"][LETTERS.index(first["expected_answer"])] == "right 0"
    assert sorted(first["options"]) == ["right 0", "wrong 0a", "wrong 0b", "wrong 0c"]
    assert first["options_text"].splitlines()[0] == f"(A) {first['options'][0]}"
    assert (first["domain"], first["subdomain"]) == ("Physics", "Sub")
    reversed_rows = gpqa_diamond.convert(list(reversed(gpqa_diamond.fetch("test", hub.url + "/gpqa_diamond.csv"))))
    assert {r["id"]: r["options"] for r in reversed_rows} == {r["id"]: r["options"] for r in rows}
    letters = Counter(row["expected_answer"] for row in rows)
    assert set(letters) == set("ABCD") and all(70 <= n <= 130 for n in letters.values()), letters


def test_gpqa_from_the_hub_without_a_token_is_one_clear_error(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(UserError, match=r"gated on the Hugging Face hub.*set \$HF_TOKEN"):
        gpqa_diamond.fetch("test")


def mmlu_pro_rows(count: int) -> list[dict]:
    rows = []
    for n in range(count):
        options = [f"opt {n}-{k}" for k in range(10 if n % 2 else 4)] + (["N/A", "N/A"] if n % 5 == 0 else [])
        rows.append({"question_id": 70 + n, "question": f"q{n}?", "options": options, "answer": LETTERS[n % 4],
                     "answer_index": n % 4, "cot_content": "", "category": ("law", "math")[n % 2],
                     "src": f"ori_mmlu-{n}"})  # fmt: skip
    return rows


def serve_mmlu_pro_pages(hub: Hub, base: str, rows: list[dict]) -> None:
    """The datasets-server `/rows` answer for every page the fetcher asks for."""
    for offset in range(0, len(rows), mmlu_pro.PAGE_ROWS):
        page = rows[offset : offset + mmlu_pro.PAGE_ROWS]
        body = {"features": [], "num_rows_total": len(rows), "num_rows_per_page": mmlu_pro.PAGE_ROWS, "partial": False,
                "rows": [{"row_idx": offset + i, "row": row, "truncated_cells": []} for i, row in enumerate(page)]}  # fmt: skip
        hub.routes[mmlu_pro.page_url(base, offset).removeprefix(hub.url)] = json.dumps(body).encode()


def test_mmlu_pro_reads_every_page_and_keeps_the_source_order(hub):
    base = hub.url + "/rows?dataset=TIGER-Lab%2FMMLU-Pro&config=default&split=test"
    source = mmlu_pro_rows(230)  # three pages
    serve_mmlu_pro_pages(hub, base, source)
    rows = mmlu_pro.convert(mmlu_pro.fetch("test", base))
    assert [row["id"] for row in rows] == [f"mmlu_pro-{70 + n}" for n in range(230)]
    assert rows[1]["options"] == [f"opt 1-{k}" for k in range(10)] and rows[1]["expected_answer"] == "B"
    assert len(rows[0]["options"]) == 4 and rows[0]["options_text"].endswith("(D) opt 0-3")  # N/A fillers dropped
    assert (rows[3]["category"], rows[3]["source"]) == ("math", "ori_mmlu-3")
    with pytest.raises(UserError, match="disagrees with answer_index"):
        mmlu_pro.convert([{**source[1], "answer": "C"}])


def test_mmlu_pro_refuses_a_page_the_api_truncated(hub):
    base = hub.url + "/rows?dataset=cut&config=default&split=test"
    body = {"num_rows_total": 1, "rows": [{"row_idx": 0, "row": {}, "truncated_cells": ["question"]}]}
    hub.routes[mmlu_pro.page_url(base, 0).removeprefix(hub.url)] = json.dumps(body).encode()
    with pytest.raises(UserError, match=r"truncated \['question'\] of row 0"):
        mmlu_pro.fetch("test", base)


def mmlu_archive(path: Path, bad_record: bool = False) -> str:
    """A tar in the original archive's layout: data/{test,val,dev}/<subject>_<folder>.csv, no header."""
    with tarfile.open(path, "w") as archive:
        for folder in ("test", "val", "dev", "auxiliary_train"):
            for subject in ("virology", "abstract_algebra"):
                out = io.StringIO()
                for n in range(3):
                    csv.writer(out).writerow([f"{subject} {folder} q{n}, really?", "w", "x", "y", "z", "ABCD"[n]])
                if bad_record:
                    out.write("only,three,fields\n")
                data = out.getvalue().encode()
                member = tarfile.TarInfo(f"data/{folder}/{subject}_{folder}.csv")
                member.size = len(data)
                archive.addfile(member, io.BytesIO(data))
    return path.as_uri()


def test_mmlu_reads_a_split_from_the_original_archive_and_prepares_it(tmp_path, monkeypatch):
    monkeypatch.setitem(mmlu.URLS, "validation", mmlu_archive(tmp_path / "data.tar"))
    (report,) = prepare("mmlu", tmp_path / "out", split="validation")
    rows = read_jsonl(tmp_path / "out" / "mmlu" / "validation.jsonl")
    assert "mmlu/validation: 6 rows" in report
    assert [row["id"] for row in rows[:4]] == ["mmlu-validation-abstract_algebra-0000",
        "mmlu-validation-abstract_algebra-0001", "mmlu-validation-abstract_algebra-0002",
        "mmlu-validation-virology-0000"]  # fmt: skip
    assert rows[2] == {"id": "mmlu-validation-abstract_algebra-0002", "problem": "abstract_algebra val q2, really?",
                       "options": ["w", "x", "y", "z"], "options_text": "(A) w\n(B) x\n(C) y\n(D) z",
                       "expected_answer": "C", "subject": "abstract_algebra"}  # fmt: skip
    with pytest.raises(UserError, match=r"data/test/abstract_algebra_test.csv:4: 3 fields"):
        mmlu.fetch("test", mmlu_archive(tmp_path / "bad.tar", bad_record=True))


def test_the_prompt_shows_the_options_and_asks_for_a_boxed_letter():
    row = choice_row("q1", "Which is prime?", ["4", "6", "7", "9"], 2)
    (message,) = load_prompt_config("generic/mcq").messages(row)
    assert "Which is prime?\n\n(A) 4\n(B) 6\n(C) 7\n(D) 9" in message["content"]
    assert "\\boxed{}" in message["content"]


# -- grading end to end on generated questions ----------------------------------------------------------------
STYLES = [
    lambda letter, text: f"{text} is the sum, so the answer is \\boxed{{{letter}}}.",
    lambda letter, text: f"Checking (A) and (B) first.\n**Answer:** ({letter})",
    lambda letter, text: f"Adding gives {text}. The correct option is {letter}.",
    lambda letter, text: f"\\boxed{{{text}}}",
    lambda letter, text: f"Adding up.\n\n{letter}",
    lambda letter, text: f"answer: {letter.lower()}",
]


def generated_questions(count: int, seed: int = 7) -> list[tuple[dict, str | None]]:
    """Addition questions with shuffled options (4 or 10) and a generation each: right, wrong or no answer in one
    of the styles above; returns (row with its generation, the letter the generation chose)."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        values = [a + b, *rng.sample([v for v in range(a + b - 20, a + b + 21) if v != a + b], 9)]
        values = values[: rng.choice((4, 10))]
        rng.shuffle(values)
        row = choice_row(f"gen-{n}", f"What is {a} + {b}?", [str(v) for v in values], values.index(a + b),
                         domain="small" if a + b < 100 else "large")  # fmt: skip
        chosen = rng.choice([row["expected_answer"]] * 2 + [rng.choice(LETTERS[: len(values)]), None])
        if chosen is None:
            generation = rng.choice(["As a result, I cannot tell.", "A hard one; I give up."])
        else:
            generation = rng.choice(STYLES)(chosen, row["options"][LETTERS.index(chosen)])
        out.append(({**row, "generation": generation}, chosen))
    return out


def test_generated_questions_grade_end_to_end_and_summarize_on_choice_correct(tmp_path):
    questions = generated_questions(300)
    results = tmp_path / "gpqa_diamond"  # named after a benchmark: its grader (mcq) and subsets are used
    write_jsonl_atomic(results / "output.jsonl", [row for row, _ in questions])
    done = subprocess.run([sys.executable, "-m", "skills_cli.evaluation.grade", "--results_dir", str(results)],
                          capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip
    expected_correct = sum(chosen == row["expected_answer"] for row, chosen in questions)
    assert done.returncode == 0 and f"{expected_correct}/300 correct, 0 grading errors" in done.stdout, done.stderr
    graded = read_jsonl(results / "output.jsonl")
    assert [row["predicted_answer"] for row in graded] == [chosen for _, chosen in questions]
    assert {row["extraction"] for row in graded} >= {"boxed", "answer_phrase", "boxed_option_text", "last_letter"}
    summary = summarize_benchmark(results, max_k=None)
    no_answer = sum(chosen is None for _, chosen in questions)
    assert summary.metric_key == "choice_correct"
    assert summary.metrics["greedy"]["choice_correct"] == pytest.approx(100 * expected_correct / 300)
    assert summary.metrics["greedy"]["no_answer"] == pytest.approx(100 * no_answer / 300)
    assert set(summary.subsets) == {"domain=small", "domain=large"}


def test_the_benchmarks_declare_the_mcq_grader_prompt_and_rows():
    assert GRADERS.get("mcq").metric_keys == ("choice_correct",)
    for name, prompt, splits in (("gpqa_diamond", "generic/mcq", ("test",)),
                                 ("mmlu_pro", "mcq/mmlu_pro", ("test", "validation")),
                                 ("mmlu", "mcq/mmlu", ("test", "validation", "dev"))):  # fmt: skip
        benchmark = get_benchmark(name)
        assert (benchmark.grader, benchmark.prompt_config, benchmark.splits) == ("mcq", prompt, splits)
        assert set(benchmark.urls) == set(splits) and benchmark.fetch is not None
        assert {"options", "options_text", "expected_answer"} <= set(benchmark.row_fields)


def grouped_questions(split: str, field: str, groups: dict[str, int]) -> list[dict]:
    """Questions `a + b` of each group (subject or category), in the prepared row format, with a worked answer."""
    rows = []
    for group, count in groups.items():
        for i in range(count):
            options = [str(i + k) for k in range(4)]
            question = choice_row(f"{split}-{group}-{i}", f"{group}: what is {i} + 0?", options, 0, **{field: group})
            rows.append({**question, "solution": f"A: Let's think step by step. {i} + 0 = {i}. The answer is (A)."})
    return rows


@pytest.mark.parametrize(("benchmark", "split", "field"), [("mmlu", "dev", "subject"),
                                                          ("mmlu_pro", "validation", "category")])  # fmt: skip
def test_the_papers_few_shot_prompts_show_five_examples_of_the_rows_own_group(tmp_path, benchmark, split, field):
    """MMLU: the five dev questions of the row's subject; MMLU-Pro: five worked answers of its category; read
    from the prepared split, never another group's, and in the split's order."""
    data = tmp_path / benchmark
    write_jsonl_atomic(data / f"{split}.jsonl", grouped_questions(split, field, {"algebra": 7, "virology": 5}))
    prompt = load_prompt_config(get_benchmark(benchmark).prompt_config, data_dir=data)
    row = grouped_questions("test", field, {"virology": 1})[0]
    (message,) = prompt.messages(row)
    text = message["content"]
    assert [f"virology: what is {i} + 0?" in text for i in range(5)] == [True] * 5
    assert "algebra" not in text and text.count("what is") == 6  # five examples, then the question itself
    assert text.index("virology: what is 4 + 0?") < text.rindex("virology: what is 0 + 0?")  # the question last
    if benchmark == "mmlu_pro":
        assert text.count("The answer is (A).") == 5 and text.endswith("A: Let's think step by step.")
    else:
        assert text.count("Answer: A") == 5 and text.startswith("The following are multiple choice questions")
    # an answer in either paper's format is read by the grader
    for said in ("... so the answer is (A).", "Answer: A"):
        assert grade_row({**row, "generation": said}, "generation", GradeOptions())["choice_correct"], said
