"""GPQA diamond: 198 graduate-level questions in biology, physics and chemistry, four options each
(Rein et al. 2023, CC-BY-4.0; gated on the Hugging Face hub: accept its terms, then set $HF_TOKEN).

The source CSV gives the correct answer and three incorrect ones in separate columns, so the order shown is
ours: each question's four answers are shuffled by a `random.Random` seeded with the SHA-256 of
`gpqa_diamond:<Record ID>`. The order is therefore the same on every machine and every run, independent of
the file's row order, and the correct letter is spread evenly over A-D across questions.
"""

from __future__ import annotations

import hashlib
import random

from skills_cli.common.errors import UserError
from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._choices import CHOICE_ROW_FIELDS, HF_TOKEN_ENV, choice_row, csv_dicts, hf_headers

URLS = {"test": "https://huggingface.co/datasets/Idavidrein/gpqa/resolve/main/gpqa_diamond.csv"}
ANSWER_COLUMNS = ("Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")
COLUMNS = ("Record ID", "Question", *ANSWER_COLUMNS, "High-level domain", "Subdomain")


def fetch(split: str, url: str | None = None) -> list[dict]:
    """The source CSV's rows. The hub needs a token of an account that accepted the set's terms; another
    URL (a lab's mirror, a file:// copy) is read without one."""
    from skills_cli.evaluation.prepare_data import download_bytes

    url = url or URLS[split]
    headers = hf_headers()
    if url.startswith("https://huggingface.co/") and not headers:
        raise UserError(f"gpqa_diamond is gated on the Hugging Face hub: accept its terms at "
                        f"https://huggingface.co/datasets/Idavidrein/gpqa, then set ${HF_TOKEN_ENV} to a token "
                        "of that account (or prepare it from a mirror: --data_dir)")  # fmt: skip
    return csv_dicts(download_bytes(url, headers=headers), url, COLUMNS)


def answer_order(record_id: str) -> list[int]:
    """The order in which the answers (0 = the correct one, 1-3 the incorrect ones) are shown."""
    seed = int.from_bytes(hashlib.sha256(f"gpqa_diamond:{record_id}".encode()).digest()[:8], "big")
    order = list(range(len(ANSWER_COLUMNS)))
    random.Random(seed).shuffle(order)
    return order


def convert(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        record_id = row["Record ID"].strip()
        order = answer_order(record_id)
        options = [row[ANSWER_COLUMNS[index]] for index in order]
        out.append(choice_row(f"gpqa_diamond-{record_id}", row["Question"], options, order.index(0),
                              domain=row["High-level domain"].strip(), subdomain=row["Subdomain"].strip()))  # fmt: skip
    return out


BENCHMARK = Benchmark(
    name="gpqa_diamond",
    description="GPQA diamond: 198 expert-written science questions, 4 options (shuffled per question, fixed seed).",
    prompt_config="generic/mcq",
    grader="mcq",
    urls=URLS,
    fetch=fetch,
    convert=convert,
    subset_keys=("domain",),
    row_fields=CHOICE_ROW_FIELDS,
)
BENCHMARKS.register(BENCHMARK)
