"""MMLU-Pro: 12,032 questions in 14 categories with up to ten options, A-J (TIGER-Lab/MMLU-Pro, MIT).

The hub stores the set as parquet, which the standard library cannot read, so the rows come from the hub's
datasets-server JSON API (`/rows`, 100 rows a page; $HF_TOKEN, when set, is sent for its higher rate limit).
Options keep the source order. The authors' evaluation drops options that read "N/A"; we drop them only at
the end of the list (one elsewhere would shift the letters after it, so it is kept). The expected letter is
checked against `answer_index`.
"""

from __future__ import annotations

import json

from skills_cli.common.errors import UserError
from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._choices import CHOICE_ROW_FIELDS, LETTERS, choice_row, hf_headers

API = "https://datasets-server.huggingface.co/rows?dataset=TIGER-Lab%2FMMLU-Pro&config=default&split="
URLS = {split: API + split for split in ("test", "validation")}
PAGE_ROWS = 100  # the API's largest page
FILLER_OPTION = "N/A"


def page_url(base: str, offset: int) -> str:
    return f"{base}&offset={offset}&length={PAGE_ROWS}"


def read_page(url: str) -> tuple[list[dict], int]:
    """(the page's source rows, the split's total row count); a page the API cut short is an error."""
    from skills_cli.evaluation.prepare_data import download_bytes

    try:
        page = json.loads(download_bytes(url, headers=hf_headers()))
        items, total = page["rows"], int(page["num_rows_total"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as error:
        raise UserError(f"{url}: not a datasets-server rows page ({type(error).__name__}: {error})") from None
    for item in items:
        if item.get("truncated_cells"):
            raise UserError(f"{url}: the API truncated {item['truncated_cells']} of row {item.get('row_idx')}")
    return [item["row"] for item in items], total


def fetch(split: str, url: str | None = None) -> list[dict]:
    """Every source row of the split, page by page (`url` is the API address without offset and length)."""
    base = url or URLS[split]
    rows: list[dict] = []
    total = None
    while total is None or len(rows) < total:
        page, total = read_page(page_url(base, len(rows)))
        if not page and len(rows) < total:
            raise UserError(f"{base}: empty page at offset {len(rows)} of {total} rows")
        rows.extend(page)
    return rows


def convert(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        row_id = f"mmlu_pro-{row['question_id']}"
        options = list(row["options"])
        while options and str(options[-1]).strip() == FILLER_OPTION:
            options.pop()
        index = int(row["answer_index"])
        if not 0 <= index < len(LETTERS) or LETTERS[index] != str(row["answer"]).strip():
            raise UserError(f"{row_id}: answer {row['answer']!r} disagrees with answer_index {index}")
        extra = {"solution": row["cot_content"]} if row.get("cot_content") else {}
        out.append(choice_row(row_id, row["question"], options, index, category=row["category"],
                              source=row.get("src", ""), **extra))  # fmt: skip
    return out


BENCHMARK = Benchmark(
    name="mmlu_pro",
    description="MMLU-Pro: 12k harder MMLU-style questions in 14 categories, up to 10 options (source order).",
    prompt_config="mcq/mmlu_pro",
    grader="mcq",
    splits=("test", "validation"),
    urls=URLS,
    fetch=fetch,
    convert=convert,
    subset_keys=("category",),
    row_fields=CHOICE_ROW_FIELDS,
)
BENCHMARKS.register(BENCHMARK)
