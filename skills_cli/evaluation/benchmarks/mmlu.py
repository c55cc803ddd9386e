"""MMLU: 14,042 four-option questions in 57 subjects (Hendrycks et al. 2021, MIT).

The source is the authors' original archive, a tar of header-less CSV files `data/<folder>/<subject>_<folder>.csv`
(question, A, B, C, D, answer letter) with folders `test`, `val` (our split `validation`) and `dev` (five
questions per subject, the paper's few-shot examples). Options keep the source order; rows keep the file order,
subjects in alphabetical order.
"""

from __future__ import annotations

import io
import re
import tarfile

from skills_cli.common.errors import UserError
from skills_cli.evaluation.benchmarks import BENCHMARKS, Benchmark
from skills_cli.evaluation.benchmarks._choices import CHOICE_ROW_FIELDS, answer_index, choice_row, csv_records

ARCHIVE = "https://people.eecs.berkeley.edu/~hendrycks/data.tar"
FOLDERS = {"test": "test", "validation": "val", "dev": "dev"}  # our split -> the archive's folder
URLS = {split: ARCHIVE for split in FOLDERS}
NUM_OPTIONS = 4


def subject_files(archive: tarfile.TarFile, folder: str) -> dict[str, tarfile.TarInfo]:
    """subject -> its CSV member for one folder (`data/test/abstract_algebra_test.csv` -> abstract_algebra)."""
    pattern = re.compile(rf"(?:^|/){folder}/(\w+)_{folder}\.csv$")
    files = {}
    for member in archive.getmembers():
        match = pattern.search(member.name)
        if match and member.isfile():
            files[match.group(1)] = member
    return dict(sorted(files.items()))


def subject_rows(archive: tarfile.TarFile, member: tarfile.TarInfo, subject: str, split: str) -> list[dict]:
    records = csv_records(archive.extractfile(member).read(), member.name)
    rows = []
    for number, record in enumerate(records, 1):
        if len(record) != NUM_OPTIONS + 2:
            raise UserError(f"{member.name}:{number}: {len(record)} fields, expected question, A-D and the answer")
        rows.append({"split": split, "subject": subject, "index": number - 1, "question": record[0],
                     "choices": record[1 : NUM_OPTIONS + 1], "answer": record[-1]})  # fmt: skip
    return rows


def fetch(split: str, url: str | None = None) -> list[dict]:
    """The split's questions from the archive, one source row per CSV record."""
    from skills_cli.evaluation.prepare_data import download_bytes

    url = url or URLS[split]
    try:
        archive = tarfile.open(fileobj=io.BytesIO(download_bytes(url)))
    except tarfile.TarError as error:
        raise UserError(f"{url}: not a tar archive ({error})") from None
    with archive:
        files = subject_files(archive, FOLDERS[split])
        if not files:
            raise UserError(f"{url}: no {FOLDERS[split]}/<subject>_{FOLDERS[split]}.csv files in the archive")
        return [row for subject, member in files.items() for row in subject_rows(archive, member, subject, split)]


def convert(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        row_id = f"mmlu-{row['split']}-{row['subject']}-{row['index']:04d}"
        out.append(choice_row(row_id, row["question"], row["choices"], answer_index(row["answer"], row_id),
                              subject=row["subject"]))  # fmt: skip
    return out


BENCHMARK = Benchmark(
    name="mmlu",
    description="MMLU: 14k four-option questions in 57 subjects (source order).",
    prompt_config="mcq/mmlu",
    grader="mcq",
    splits=tuple(FOLDERS),
    urls=URLS,
    fetch=fetch,
    convert=convert,
    subset_keys=("subject",),
    row_fields=CHOICE_ROW_FIELDS,
)
BENCHMARKS.register(BENCHMARK)
