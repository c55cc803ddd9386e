"""Turn graded generations into an SFT training file (keep correct solutions, filter, deduplicate, downsample,
format) or, with ++mode=preference, into preference pairs (a correct and an incorrect solution to one problem).

    python -m skills_cli.training.prepare_data ++input_files=/workspace/sdg/solutions/output.jsonl \\
        ++output_path=/workspace/sft-data.jsonl ++prompt_config=generic/math ++prompt_template=qwen-instruct \\
        ++filters.remove_contaminated=false ++add_unlabeled=true ++filters.remove_no_think_tags=true \\
        ++filters.trim_solutions=false

The keys follow NeMo-Skills' `nemo_skills.training.prepare_data` (the NeMo-Skills tutorial's call runs unchanged); `input_files` is a
list of globs or one string of space-separated globs. Steps, in order, each logging one line
(`filters.dedup: dropped 3 of 120 (same problem and solution)`, or `filters.dedup: off`), then a summary line:

    correctness                   rows graded false by `correctness_key` (default symbolic_correct)
    unlabeled                     rows with no grade at all, unless ++add_unlabeled=true
    filters.remove_contaminated   problems that also appear in a benchmark file (`contamination_file(s)`),
                                  compared after normalization (case, spacing, unicode forms)
    filters.remove_no_think_tags  generations without a closing </think> (unfinished reasoning)
    filters.remove_think_tags     keep only what follows the last </think>
    filters.trim_solutions        cut the rest of the line after the last \\boxed{...}
    filters.drop_multi_boxed      solutions boxing more than one distinct answer
    filters.remove_len_outliers   solutions shorter than min_solution_length or longer than max_solution_length chars
    filters.dedup                 exact duplicates of (problem, solution)
    filters.max_per_problem       at most N solutions per problem, chosen with random_seed

Output rows are `{"messages": [system?, user, assistant]}` (the trainer applies the model's chat template) or,
with ++output_format=input_output, `{"input": rendered prompt, "output": solution}`, the prompt rendered by the
tokenizer's chat template (++tokenizer=PATH) or a named one (++prompt_template=qwen-instruct). Both carry
`problem` and `expected_answer` when the input row has them. The file is written atomically; bad input is one
`error:` line and exit status 2.

++mode=preference (for `ns train dpo` and `ns train rm`) keeps both grades: rows without a grade are dropped
(`unlabeled`), the filters above run from remove_contaminated to dedup, then each problem's correct solutions are
paired with its incorrect ones (`pairs`: the log line counts the problems paired and those skipped for having
only correct or only incorrect samples). At most ++max_pairs_per_problem pairs (null: every combination), drawn
with random_seed so that the first pairs of a problem use distinct chosen and distinct rejected solutions;
++prefer_shorter_chosen=true takes the shortest correct solutions first (DPO otherwise learns that longer is
better). A chosen solution identical to its rejected one is never written. Rows are
`{"prompt": [system?, user], "chosen": solution, "rejected": solution}` plus `problem` and `expected_answer`
(`components/preferences.py` reads them; the trainer applies the model's chat template).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import math
import os
import random
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.jsonl import iter_jsonl, write_jsonl_atomic
from skills_cli.common.overrides import load_config
from skills_cli.prompts import PromptConfig, load_prompt_config
from skills_cli.prompts.chat_templates import render, template_text

log = logging.getLogger("skills_cli.training.prepare_data")

# Kept on every output row when the input row has them: what the problem was and what it should give.
CARRIED_KEYS = ("problem", "expected_answer")
THINK_END = "</think>"


@dataclass(frozen=True)
class FiltersConfig:
    remove_contaminated: bool = True
    remove_no_think_tags: bool = False
    remove_think_tags: bool = False
    trim_solutions: bool = False
    drop_multi_boxed: bool = True
    remove_len_outliers: bool = True
    dedup: bool = True
    max_per_problem: int | None = None  # null: keep every solution

    def __post_init__(self) -> None:
        if self.max_per_problem is not None and self.max_per_problem < 1:
            raise UserError(f"filters.max_per_problem must be >= 1 or null, got {self.max_per_problem}")


@dataclass(frozen=True)
class PrepareSFTConfig:
    # Globs, each matching at least one file: a list, or a string of space-separated globs (NeMo-Skills' spelling;
    # a path containing spaces goes in a list).
    input_files: str | list[str]
    output_path: str
    prompt_config: str = "generic/math"
    prompt_template: str | None = None  # a named chat template (qwen-instruct, ...) or a Jinja file
    tokenizer: str | None = None  # its chat template wins over prompt_template
    mode: Literal["sft", "preference"] = "sft"
    output_format: Literal["messages", "input_output"] = "messages"
    generation_key: str = "generation"
    correctness_key: str = "symbolic_correct"
    add_unlabeled: bool = False
    # Benchmark rows whose `problem` must not be trained on (a row with `contaminated: false` is ignored, which
    # also accepts NeMo-Skills' check_contamination output). The two keys are merged; each takes globs.
    contamination_file: str | list[str] | None = None
    contamination_files: list[str] = field(default_factory=list)
    # Characters, not tokens: no tokenizer is needed, and the bounds catch empty and runaway generations.
    min_solution_length: int = 1
    max_solution_length: int = 100_000
    random_seed: int = 0
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    # Preference mode: pairs per problem (null: every correct x incorrect combination), and whether the shortest
    # correct solutions are chosen first.
    max_pairs_per_problem: int | None = 4
    prefer_shorter_chosen: bool = False

    def __post_init__(self) -> None:
        if not self.input_patterns:
            raise UserError("input_files is empty: give a glob or a list of globs")
        if not self.output_path:
            raise UserError("output_path is empty")
        if self.min_solution_length > self.max_solution_length:
            raise UserError(f"min_solution_length={self.min_solution_length} is above "
                            f"max_solution_length={self.max_solution_length}")  # fmt: skip
        if self.mode == "preference":
            self.check_preference_keys()

    def check_preference_keys(self) -> None:
        """Keys that mean nothing for pairs are refused rather than silently ignored."""
        if self.max_pairs_per_problem is not None and self.max_pairs_per_problem < 1:
            raise UserError(f"max_pairs_per_problem must be >= 1 or null, got {self.max_pairs_per_problem}")
        if self.output_format != "messages":
            raise UserError("mode=preference writes the prompt as chat messages (the DPO and RM trainers apply the "
                            "model's chat template): drop ++output_format=input_output")  # fmt: skip
        if self.add_unlabeled:
            raise UserError("mode=preference pairs correct with incorrect solutions: ungraded rows cannot be used, "
                            "drop ++add_unlabeled=true")  # fmt: skip
        if self.filters.max_per_problem is not None:
            raise UserError("mode=preference limits pairs, not solutions: use ++max_pairs_per_problem instead of "
                            "++filters.max_per_problem")  # fmt: skip

    @property
    def input_patterns(self) -> list[str]:
        return self.input_files.split() if isinstance(self.input_files, str) else list(self.input_files)

    @property
    def contamination_patterns(self) -> list[str]:
        return as_list(self.contamination_file) + list(self.contamination_files)


@dataclass(frozen=True)
class Sample:
    """One candidate training example: the input row and its (possibly edited) solution."""

    row: dict
    solution: str
    problem_key: tuple  # the values the prompt is built from: identifies "the same problem"


@dataclass
class PrepareReport:
    read: int = 0
    written: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    modified: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)  # preference mode: problems paired and skipped


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


# ---------------------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------------------


def expand_globs(patterns: Iterable[str], key: str) -> list[Path]:
    """Files matching each glob, sorted per glob, each file once; a glob matching nothing is an error."""
    files: dict[Path, Path] = {}  # resolved -> as given, so `a.jsonl` and `./a.jsonl` are read once
    for pattern in patterns:
        matches = [Path(m) for m in sorted(glob.glob(os.path.expanduser(pattern), recursive=True))]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise UserError(f"{key}: no file matches {pattern!r}")
        for match in matches:
            files.setdefault(match.resolve(), match)
    return list(files.values())


def required_fields(config: PrepareSFTConfig, prompt: PromptConfig) -> dict[str, str]:
    """Field name -> what needs it, for the error message when a row lacks it."""
    needed = {name: f"prompt {config.prompt_config}" for name in sorted(prompt.fields)}
    if config.filters.remove_contaminated:
        needed.setdefault("problem", "filters.remove_contaminated")  # contamination is decided on the problem text
    needed[config.generation_key] = "generation_key"
    return needed


def read_samples(files: list[Path], config: PrepareSFTConfig, prompt: PromptConfig) -> list[Sample]:
    """Every row of every input file, checked up front so a bad row fails before any filtering or writing."""
    needed = required_fields(config, prompt)
    samples = []
    for path in files:
        for number, row in enumerate(iter_jsonl(path), start=1):
            samples.append(sample_from_row(row, f"{path} row {number}", needed, config, prompt))
    return samples


def sample_from_row(
    row: dict, where: str, needed: dict[str, str], config: PrepareSFTConfig, prompt: PromptConfig
) -> Sample:
    missing = [name for name in needed if name not in row]
    if missing:
        raise UserError(f"{where}: no field {missing[0]!r} (needed by {needed[missing[0]]}; "
                        f"row fields: {', '.join(sorted(row)) or 'none'})")  # fmt: skip
    solution = row[config.generation_key]
    if not isinstance(solution, str):
        raise UserError(f"{where}: {config.generation_key!r} must be a string, got {type(solution).__name__}")
    grade = row.get(config.correctness_key)
    if grade is not None and not isinstance(grade, bool):
        raise UserError(f"{where}: {config.correctness_key!r} must be true, false or absent, got {grade!r}")
    problem_key = tuple(repr(row[name]) for name in sorted(prompt.fields))
    return Sample(row=row, solution=solution, problem_key=problem_key)


# ---------------------------------------------------------------------------------------------------------------
# Steps: each either keeps a subset of the samples or rewrites every solution
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    enabled: bool
    keep: Callable[[list[Sample]], list[Sample]] | None = None  # a dropping step
    rewrite: Callable[[str], str] | None = None  # an editing step
    why: str = ""


def is_graded_correct_or_unlabeled(sample: Sample, config: PrepareSFTConfig) -> bool:
    return sample.row.get(config.correctness_key) is not False


def is_labeled(sample: Sample, config: PrepareSFTConfig) -> bool:
    return sample.row.get(config.correctness_key) is not None


def normalize_problem(text: str) -> str:
    """Compare problems up to unicode forms, case and spacing: copies of benchmark problems rarely differ more."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", "", folded).rstrip(".")


def benchmark_problems(patterns: list[str]) -> set[str]:
    """Normalized problems of the benchmark files; rows marked `contaminated: false` (NeMo-Skills'
    check_contamination output) are not benchmark copies and are skipped."""
    problems = set()
    for path in expand_globs(patterns, "contamination_file"):
        for number, row in enumerate(iter_jsonl(path), start=1):
            if not isinstance(row.get("problem"), str):
                raise UserError(f"{path} row {number}: no string field 'problem' to check contamination against")
            if row.get("contaminated", True):
                problems.add(normalize_problem(row["problem"]))
    return problems


def contamination_step(config: PrepareSFTConfig) -> Step:
    name = "filters.remove_contaminated"
    if not config.filters.remove_contaminated:
        return Step(name, enabled=False)
    if not config.contamination_patterns:
        # Silently training on test problems is the worst outcome here, so the default asks for a file.
        raise UserError("filters.remove_contaminated=true needs ++contamination_file=BENCHMARK.jsonl (or a list); "
                        "pass ++filters.remove_contaminated=false to skip the check")  # fmt: skip
    problems = benchmark_problems(config.contamination_patterns)

    def not_in_benchmark(samples: list[Sample]) -> list[Sample]:
        return [s for s in samples if normalize_problem(str(s.row["problem"])) not in problems]

    return Step(name, True, keep=not_in_benchmark, why=f"problem in {len(problems)} benchmark problems")


def has_closed_thinking(solution: str) -> bool:
    # Reasoning templates often put the opening <think> in the prompt, so only the closing tag is required.
    return THINK_END in solution


def strip_thinking(solution: str) -> str:
    """The answer after the last </think>; unfinished reasoning (no </think>) is left for other filters."""
    if THINK_END not in solution:
        return solution
    return solution.rsplit(THINK_END, 1)[1].lstrip()


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete `\\boxed{...}`, nested braces matched; unclosed boxes are skipped."""
    spans = []
    for match in re.finditer(r"\\boxed\s*\{", text):
        depth = 0
        for index in range(match.end() - 1, len(text)):
            depth += {"{": 1, "}": -1}.get(text[index], 0)
            if depth == 0:
                spans.append((match.start(), index + 1, text[match.end() : index].strip()))
                break
    return spans


def trim_after_last_boxed(solution: str) -> str:
    """Keep the line holding the last boxed answer and nothing after it: what follows is usually rambling."""
    spans = boxed_spans(solution)
    if not spans:
        return solution
    line_end = solution.find("\n", spans[-1][1])
    return solution if line_end < 0 else solution[:line_end]


def distinct_boxed_answers(solution: str) -> set[str]:
    # The same answer boxed twice (in the reasoning and again in the summary) is one answer, not a hedge.
    return {re.sub(r"\s+", "", content) for _, _, content in boxed_spans(solution)}


def deduplicate(samples: list[Sample]) -> list[Sample]:
    seen: set[tuple] = set()
    kept = []
    for sample in samples:
        key = (sample.problem_key, sample.solution)
        if key not in seen:
            seen.add(key)
            kept.append(sample)
    return kept


def downsample_per_problem(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """At most `limit` solutions per problem, chosen at random but reproducibly; file order is preserved.

    Each problem draws from its own generator seeded with (seed, problem), so adding or removing other problems
    or input files does not change which solutions one problem keeps.
    """
    by_problem: dict[tuple, list[int]] = {}
    for index, sample in enumerate(samples):
        by_problem.setdefault(sample.problem_key, []).append(index)
    chosen: set[int] = set()
    for problem_key, indices in by_problem.items():
        if len(indices) <= limit:
            chosen.update(indices)
        else:
            chosen.update(random.Random(f"{seed}:{problem_key}").sample(indices, limit))
    return [sample for index, sample in enumerate(samples) if index in chosen]


def keeping(predicate: Callable[[Sample], bool]) -> Callable[[list[Sample]], list[Sample]]:
    return lambda samples: [s for s in samples if predicate(s)]


def pipeline_steps(config: PrepareSFTConfig) -> list[Step]:
    """The recipe, in order. Built before any input is read, so a missing benchmark file fails fast."""
    key, limit = config.correctness_key, config.filters.max_per_problem
    if config.mode == "preference":
        return [Step("unlabeled", True, keep=keeping(lambda s: is_labeled(s, config)),
                     why=f"no {key!r} grade: a pair needs graded solutions"), *filter_steps(config)]  # fmt: skip
    unlabeled_why = (f"add_unlabeled=true keeps rows without a {key!r} grade" if config.add_unlabeled
                     else f"no {key!r} grade; ++add_unlabeled=true keeps them")  # fmt: skip
    return [
        Step("correctness", True, keep=keeping(lambda s: is_graded_correct_or_unlabeled(s, config)),
             why=f"graded false by {key!r}"),
        # Nothing vouches for an ungraded solution, so keeping them is opt-in.
        Step("unlabeled", True, keep=keeping(lambda s: config.add_unlabeled or is_labeled(s, config)),
             why=unlabeled_why),
        *filter_steps(config),
        Step("filters.max_per_problem", limit is not None,
             keep=lambda samples: downsample_per_problem(samples, limit, config.random_seed),
             why=f"at most {limit} per problem, random_seed={config.random_seed}"),
    ]  # fmt: skip


def filter_steps(config: PrepareSFTConfig) -> list[Step]:
    """The filters both modes run: contamination, thinking, trimming, hedged answers, lengths, duplicates."""
    filters, low, high = config.filters, config.min_solution_length, config.max_solution_length
    return [
        contamination_step(config),
        Step("filters.remove_no_think_tags", filters.remove_no_think_tags,
             keep=keeping(lambda s: has_closed_thinking(s.solution)), why=f"no {THINK_END}"),
        Step("filters.remove_think_tags", filters.remove_think_tags, rewrite=strip_thinking),
        Step("filters.trim_solutions", filters.trim_solutions, rewrite=trim_after_last_boxed),
        Step("filters.drop_multi_boxed", filters.drop_multi_boxed,
             keep=keeping(lambda s: len(distinct_boxed_answers(s.solution)) <= 1), why="several distinct boxed answers"),
        # Lengths are measured after the edits above: the trained text is what must fit.
        Step("filters.remove_len_outliers", filters.remove_len_outliers,
             keep=keeping(lambda s: low <= len(s.solution) <= high), why=f"length outside [{low}, {high}] chars"),
        Step("filters.dedup", filters.dedup, keep=deduplicate, why="same problem and solution"),
    ]  # fmt: skip


def run_step(step: Step, samples: list[Sample], report: PrepareReport) -> list[Sample]:
    """Apply one step and log what it did, as `name: dropped X of N (why)`; a step that is off says so."""
    if not step.enabled:
        log.info("%s: off", step.name)
        return samples
    if step.rewrite is not None:
        kept = [dataclasses.replace(s, solution=step.rewrite(s.solution)) for s in samples]
        report.modified[step.name] = sum(old.solution != new.solution for old, new in zip(samples, kept, strict=True))
        detail = f"modified {report.modified[step.name]}"
    else:
        kept = step.keep(samples)
        detail = step.why
    report.dropped[step.name] = len(samples) - len(kept)
    log.info(
        "%s: dropped %d of %d%s", step.name, len(samples) - len(kept), len(samples), f" ({detail})" if detail else ""
    )
    return kept


# ---------------------------------------------------------------------------------------------------------------
# Preference pairs
# ---------------------------------------------------------------------------------------------------------------


def spread_combinations(rows: int, columns: int) -> Iterator[tuple[int, int]]:
    """Every (i, j) of a rows x columns grid once, in an order whose every prefix uses the rows and the columns
    as evenly as possible: (0, 0), (1, 1), ... along a diagonal, then the next diagonal. So the first pairs of a
    problem have distinct chosen and distinct rejected solutions. Step k is (k mod rows, (k + k // L) mod columns)
    with L = lcm(rows, columns): one block of L steps covers the cells with j - i = b (mod gcd), block b the b-th."""
    period = math.lcm(rows, columns)
    for k in range(rows * columns):
        yield k % rows, (k + k // period) % columns


def pick_pairs(correct: list[Sample], incorrect: list[Sample], config: PrepareSFTConfig, rng: random.Random,
               report: PrepareReport) -> list[tuple[Sample, Sample]]:  # fmt: skip
    """Up to max_pairs_per_problem (chosen, rejected) pairs of one problem; identical texts are never paired."""
    correct, incorrect = rng.sample(correct, len(correct)), rng.sample(incorrect, len(incorrect))
    if config.prefer_shorter_chosen:
        correct.sort(key=lambda s: len(s.solution))  # stable: equally long solutions stay in random order
    limit = config.max_pairs_per_problem or len(correct) * len(incorrect)
    pairs = []
    for i, j in spread_combinations(len(correct), len(incorrect)):
        if len(pairs) == limit:
            break
        if correct[i].solution == incorrect[j].solution:  # nothing to prefer (a text graded both ways)
            report.pairs["identical"] += 1
        else:
            pairs.append((correct[i], incorrect[j]))
    return pairs


def build_pairs(samples: list[Sample], config: PrepareSFTConfig, report: PrepareReport) -> list[tuple[Sample, Sample]]:
    """Pairs of every problem in file order, each problem drawing from its own generator seeded with (seed,
    problem) as filters.max_per_problem does; problems with one grade only are skipped and counted."""
    by_problem: dict[tuple, tuple[list[Sample], list[Sample]]] = {}
    for sample in samples:
        correct, incorrect = by_problem.setdefault(sample.problem_key, ([], []))
        (correct if sample.row[config.correctness_key] else incorrect).append(sample)
    report.pairs = {"problems": 0, "only_correct": 0, "only_incorrect": 0, "identical": 0}
    pairs = []
    for problem_key, (correct, incorrect) in by_problem.items():
        if not incorrect or not correct:
            report.pairs["only_correct" if correct else "only_incorrect"] += 1
            continue
        picked = pick_pairs(correct, incorrect, config, random.Random(f"{config.random_seed}:{problem_key}"), report)
        report.pairs["problems"] += bool(picked)
        pairs += picked
    counts, limit = report.pairs, config.max_pairs_per_problem
    log.info("pairs: %d pairs from %d problems (at most %s per problem, random_seed=%d); skipped %d problems with "
             "only correct and %d with only incorrect solutions; %d identical chosen and rejected left out", len(pairs),
             counts["problems"], "every combination" if limit is None else limit, config.random_seed,
             counts["only_correct"], counts["only_incorrect"], counts["identical"])  # fmt: skip
    if not pairs:
        raise UserError(f"no problem has both a correct and an incorrect solution left (see the counts above); "
                        f"{config.output_path} not written")  # fmt: skip
    return pairs


def preference_row(chosen: Sample, rejected: Sample, prompt: PromptConfig) -> dict:
    row = {"prompt": prompt.messages(chosen.row), "chosen": chosen.solution, "rejected": rejected.solution}
    row.update({key: chosen.row[key] for key in CARRIED_KEYS if key in chosen.row})
    return row


# ---------------------------------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------------------------------


def prompt_renderer(config: PrepareSFTConfig) -> Callable[[list[dict]], str] | None:
    """How `input` is rendered for input_output; None for messages. Bad template names fail either way."""
    template = template_text(config.prompt_template) if config.prompt_template else None
    if config.output_format == "messages":
        if config.prompt_template or config.tokenizer:
            log.info("output_format=messages: prompt_template/tokenizer unused (the trainer applies the chat template)")
        return None
    if config.tokenizer:
        return tokenizer_renderer(config.tokenizer)
    if template is not None:
        return lambda messages: render(template, messages, add_generation_prompt=True)
    raise UserError("output_format=input_output needs ++prompt_template=NAME (e.g. qwen-instruct) or "
                    "++tokenizer=PATH to render the prompt text")  # fmt: skip


def tokenizer_renderer(path: str) -> Callable[[list[dict]], str]:
    from skills_cli.inference.model_loading import load_tokenizer  # transformers stays out of import time

    if not Path(path).is_dir():
        raise UserError(f"tokenizer: no directory {path}")
    tokenizer = load_tokenizer(path)
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"tokenizer {path} has no chat template; use ++prompt_template=NAME instead")
    return lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def output_row(sample: Sample, prompt: PromptConfig, renderer: Callable[[list[dict]], str] | None) -> dict:
    messages = prompt.messages(sample.row)
    if renderer is None:
        row: dict = {"messages": [*messages, {"role": "assistant", "content": sample.solution}]}
    else:
        row = {"input": renderer(messages), "output": sample.solution}
    row.update({key: sample.row[key] for key in CARRIED_KEYS if key in sample.row})
    return row


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------


def prepare(config: PrepareSFTConfig) -> PrepareReport:
    """Read, filter, format (pair) and write; returns the counts that were logged."""
    prompt = load_prompt_config(config.prompt_config)
    # Inputs, templates and benchmark files are all checked before the (possibly large) read.
    files = expand_globs(config.input_patterns, "input_files")
    renderer = prompt_renderer(config)
    steps = pipeline_steps(config)
    report = PrepareReport()
    samples = read_samples(files, config, prompt)
    report.read = len(samples)
    for step in steps:
        samples = run_step(step, samples, report)
    if not samples:
        # An empty training file only fails later, inside the trainer, far from the cause.
        raise UserError(f"all {report.read} rows were dropped (see the counts above); {config.output_path} not written")
    if config.mode == "preference":
        rows = [preference_row(chosen, rejected, prompt) for chosen, rejected in build_pairs(samples, config, report)]
        written, output_format = f"{len(rows)} pairs from {report.read} rows", "preference"
    else:
        rows = [output_row(s, prompt, renderer) for s in samples]
        written, output_format = f"{len(rows)} of {report.read} rows", config.output_format
    write_jsonl_atomic(config.output_path, rows)
    report.written = len(rows)
    log.info("prepare_data: wrote %s to %s (%s format)", written, config.output_path, output_format)
    return report


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    prepare(load_config(PrepareSFTConfig, sys.argv[1:] if argv is None else argv, where="prepare_data"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
