"""Benchmark metrics from graded generations: greedy, pass@1[avg-of-n], majority@k and pass@k.

Input is one list of `Sample`s per problem, one sample per seed in seed order (the lockstep read of
`output-rs0.jsonl ... output-rs{n-1}.jsonl`); a single sample per problem is a greedy run. Output is an
insertion-ordered dict `evaluation mode -> metrics`, and `format_table` prints it in the layout users
know from `ns summarize_results` (numbers illustrative; the k = 2 and k = 4 rows are left out here):

    --------------------------------- aime24 ---------------------------------
    evaluation_mode  | num_entries | avg_tokens | symbolic_correct | no_answer
    pass@1[avg-of-8] | 30          | 829        | 11.67% ± 4.21    | 0.00%
    majority@8       | 30          | 829        | 13.33%           | 0.00%
    pass@8           | 30          | 829        | 33.33%           | 0.00%

Definitions (n samples per problem, c of them correct, m of them without an answer):

- `greedy` (n == 1): share of correct samples; `no_answer` is the share of samples without an answer.
- `pass@1[avg-of-n]`: mean over problems of c / n; `no_answer` is the mean of m / n.
  `symbolic_correct_std` is the *sample* standard deviation (ddof=1) of the n per-seed accuracies, in
  percentage points: it estimates how much one more seed's accuracy would spread, which is what a reader
  comparing two single runs needs (the population std would understate it for n = 4 or 8).
- `pass@k`: mean over problems of the unbiased estimator `1 - C(n-c, k) / C(n, k)` (Chen et al. 2021),
  i.e. the chance that k samples drawn without replacement from the n contain a correct one.
  `no_answer` is its analogue for the no-answer indicator: the chance that all k drawn samples have no
  answer, `C(m, k) / C(n, k)`. It uses all n samples, not only the first k, so it is smoother than
  "the first k have no answer" and agrees with it at k == n.
- `majority@k`: uses the FIRST k samples. The most frequent answer (compared after `.strip()`, None
  ignored) wins; ties go to the answer seen first, never to the correct one, so the label cannot leak
  into the vote. The problem counts as correct if the first sample giving the winning answer is correct.
  If all k samples have no answer the problem is incorrect and counts toward `no_answer`.
- `rm_best@k` and `rm_majority@k` (NeMo-Skills' modes, present when every sample has a `reward_model_score`):
  from the FIRST k samples with an answer, `rm_best@k` takes the one the reward model scores highest (ties: the
  first), `rm_majority@k` votes with the scores as weights (each answer gets the sum of its samples' scores, the
  highest sum wins, ties to the answer seen first) and takes the first sample giving the winning answer. The
  problem counts as correct if that sample is; with no answer among the k it is incorrect and counts toward
  `no_answer`. Scores are used as they come (a reward model's scores may be negative: then an answer's extra
  samples lower its weight, exactly as NeMo-Skills sums them).

The accuracy columns are named after the grader's metric key (`symbolic_correct` for math, so the examples
above use it), the spread after the key with `_std` appended. Every mode also carries `num_entries` (problems), `avg_tokens` (mean `num_generated_tokens` over all
samples that report it, 0 if none) and `gen_seconds` (mean `generation_time`, likewise). Percentages
are 0-100.

Pure Python on purpose: this runs inside evaluation jobs and in the CLI's summary step, where no numpy or
torch is guaranteed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

GREEDY_MODE = "greedy"
REWARD_MODEL_SCORE_KEY = "reward_model_score"  # the result rows' field (`python -m skills_cli.inference.reward_model`)
ALL_SUBSET = "all"
_SEPARATOR = " | "


@dataclass(frozen=True)
class Sample:
    """One graded generation of one problem."""

    correct: bool
    predicted_answer: str | None  # None = no answer could be extracted
    num_generated_tokens: int | None = None
    generation_time: float | None = None  # seconds
    reward_model_score: float | None = None  # a reward model's score of the generation (rm_best@k, rm_majority@k)


# -- estimators ---------------------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that k of n samples (c correct), drawn without replacement, hold a correct one.

    Computed as `1 - prod_{i=n-c+1}^{n} (1 - k / i)`, which equals `1 - C(n-c, k) / C(n, k)` without the
    huge binomials (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got n={n}, k={k}")
    if not 0 <= c <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if n - c < k:
        # Fewer wrong samples than draws: every draw of k contains a correct one.
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _chance_all_k_have_no_answer(n: int, no_answers: int, k: int) -> float:
    """C(m, k) / C(n, k): the chance that k samples drawn from n are all among the m without an answer."""
    # Treat "has an answer" as success: all k lack an answer exactly when none of them "succeeds".
    return 1.0 - pass_at_k(n, n - no_answers, k)


def _weighted_vote(samples: Sequence[Sample], weight) -> Sample | None:
    """The first sample giving the answer (stripped, None ignored) whose samples' `weight`s sum highest, or None
    if no sample has an answer."""
    first_sample_of_answer: dict[str, Sample] = {}
    totals: dict[str, float] = {}
    for sample in samples:
        if sample.predicted_answer is None:
            continue
        # str() because JSON readers may hand over a number; the same text then still votes together.
        answer = str(sample.predicted_answer).strip()
        first_sample_of_answer.setdefault(answer, sample)
        totals[answer] = totals.get(answer, 0) + weight(sample)
    if not totals:
        return None
    # dicts keep insertion order and max() returns the first maximum, so a tie goes to the earliest answer.
    winner = max(totals, key=totals.__getitem__)
    return first_sample_of_answer[winner]


def _majority_vote(samples: Sequence[Sample]) -> Sample | None:
    """The first sample that gives the most frequent stripped answer, or None if no sample has an answer."""
    return _weighted_vote(samples, lambda sample: 1)


def _reward_model_vote(samples: Sequence[Sample]) -> Sample | None:
    """The first sample of the answer whose samples' reward-model scores sum highest (ties: the earliest answer)."""
    return _weighted_vote(samples, lambda sample: sample.reward_model_score)


def _reward_model_best(samples: Sequence[Sample]) -> Sample | None:
    """The answered sample with the highest reward-model score (the first of equal ones), or None."""
    answered = [sample for sample in samples if sample.predicted_answer is not None]
    return max(answered, key=lambda sample: sample.reward_model_score, default=None)


# -- helpers ------------------------------------------------------------------------------------------------
def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _percent(fraction: float) -> float:
    return 100.0 * fraction


def _num_correct(samples: Sequence[Sample]) -> int:
    return sum(1 for sample in samples if sample.correct)


def _num_no_answer(samples: Sequence[Sample]) -> int:
    return sum(1 for sample in samples if sample.predicted_answer is None)


def _samples_per_problem(problems: Sequence[Sequence[Sample]]) -> int:
    """The common sample count n; every problem must have the same n, since seeds are read in lockstep."""
    if not problems:
        raise ValueError("no problems to compute metrics on")
    n = len(problems[0])
    if n == 0:
        raise ValueError("problem 0 has no samples")
    for index, samples in enumerate(problems):
        if len(samples) != n:
            raise ValueError(f"problem {index} has {len(samples)} samples, expected {n} (as problem 0)")
    return n


def _k_values(n: int, max_k: int | None) -> list[int]:
    """1, 2, 4, ... up to the limit, plus the limit itself (n, or max_k when that is smaller)."""
    if max_k is not None and max_k < 1:
        raise ValueError(f"max_k must be >= 1, got {max_k}")
    limit = n if max_k is None else min(n, max_k)
    ks = []
    k = 1
    while k <= limit:
        ks.append(k)
        k *= 2
    if ks[-1] != limit:
        ks.append(limit)
    return ks


def _shared_metrics(problems: Sequence[Sequence[Sample]]) -> dict[str, float]:
    """Columns that do not depend on the evaluation mode: they describe all generated samples."""
    all_samples = [sample for samples in problems for sample in samples]
    tokens = [s.num_generated_tokens for s in all_samples if s.num_generated_tokens is not None]
    seconds = [s.generation_time for s in all_samples if s.generation_time is not None]
    return {"num_entries": len(problems), "avg_tokens": _mean(tokens), "gen_seconds": _mean(seconds)}


# -- one function per evaluation mode -----------------------------------------------------------------------
def _greedy_metrics(problems: Sequence[Sequence[Sample]], key: str) -> dict[str, float]:
    return {
        key: _percent(_mean(_num_correct(samples) for samples in problems)),
        "no_answer": _percent(_mean(_num_no_answer(samples) for samples in problems)),
    }


def _per_seed_accuracies(problems: Sequence[Sequence[Sample]], n: int) -> list[float]:
    """Accuracy (percent) of each seed's run over all problems: the spread of these is the run-to-run noise."""
    return [_percent(_mean(float(samples[seed].correct) for samples in problems)) for seed in range(n)]


def _average_of_n_metrics(problems: Sequence[Sequence[Sample]], n: int, key: str) -> dict[str, float]:
    return {
        key: _percent(_mean(_num_correct(samples) / n for samples in problems)),
        "no_answer": _percent(_mean(_num_no_answer(samples) / n for samples in problems)),
        # ddof=1 (sample std): see the module docstring; n >= 2 whenever this mode exists.
        _std_key(key): statistics.stdev(_per_seed_accuracies(problems, n)),
    }


def _pass_at_k_metrics(problems: Sequence[Sequence[Sample]], n: int, k: int, key: str) -> dict[str, float]:
    return {
        key: _percent(_mean(pass_at_k(n, _num_correct(samples), k) for samples in problems)),
        "no_answer": _percent(
            _mean(_chance_all_k_have_no_answer(n, _num_no_answer(samples), k) for samples in problems)
        ),
    }


def _chosen_at_k_metrics(problems: Sequence[Sequence[Sample]], k: int, key: str, choose) -> dict[str, float]:
    """Accuracy of the sample `choose` picks from each problem's first k (majority vote, reward-model pick)."""
    winners = [choose(samples[:k]) for samples in problems]
    return {
        key: _percent(_mean(float(w is not None and w.correct) for w in winners)),
        "no_answer": _percent(_mean(float(w is None) for w in winners)),
    }


# -- public entry points ------------------------------------------------------------------------------------
def compute_metrics(
    problems: list[list[Sample]], max_k: int | None = None, *, metric_key: str
) -> dict[str, dict[str, float]]:
    """Evaluation mode -> metrics, in print order (see the module docstring for every definition).

    `metric_key` names the accuracy (the grader's key, whose verdicts are the samples' `correct`).

    n == 1 gives only `greedy`. n > 1 gives `pass@1[avg-of-n]` (always over all n samples), then
    `majority@k` (`rm_best@k` and `rm_majority@k` when every sample has a reward-model score) and `pass@k` for
    k = 2, 4, 8, ... and n itself, stopping at `max_k` when given.
    """
    n = _samples_per_problem(problems)
    shared = _shared_metrics(problems)
    if n == 1:
        return {GREEDY_MODE: {**shared, **_greedy_metrics(problems, metric_key)}}

    metrics = {f"pass@1[avg-of-{n}]": {**shared, **_average_of_n_metrics(problems, n, metric_key)}}
    scored = all(sample.reward_model_score is not None for samples in problems for sample in samples)
    for k in _k_values(n, max_k):
        if k == 1:
            continue  # pass@1 equals pass@1[avg-of-n] and majority@1 is just the first seed
        metrics[f"majority@{k}"] = {**shared, **_chosen_at_k_metrics(problems, k, metric_key, _majority_vote)}
        if scored:
            metrics[f"rm_best@{k}"] = {**shared, **_chosen_at_k_metrics(problems, k, metric_key, _reward_model_best)}
            metrics[f"rm_majority@{k}"] = {**shared,
                                           **_chosen_at_k_metrics(problems, k, metric_key, _reward_model_vote)}  # fmt: skip
        metrics[f"pass@{k}"] = {**shared, **_pass_at_k_metrics(problems, n, k, metric_key)}
    return metrics


def compute_subset_metrics(
    problems: list[list[Sample]], subsets: list[str], max_k: int | None = None, *, metric_key: str
) -> dict[str, dict[str, dict[str, float]]]:
    """Subset -> `compute_metrics` on that subset's problems, with `"all"` first and then subsets sorted.

    `subsets[i]` labels problem i (e.g. "level 3", "algebra"); sorting makes the order independent of the
    order of the data file.
    """
    if len(subsets) != len(problems):
        raise ValueError(f"got {len(subsets)} subset labels for {len(problems)} problems")
    if ALL_SUBSET in subsets:
        raise ValueError(f"{ALL_SUBSET!r} is reserved for the metrics over all problems; rename that subset")
    results = {ALL_SUBSET: compute_metrics(problems, max_k, metric_key=metric_key)}
    for subset in sorted(set(subsets)):
        members = [samples for samples, label in zip(problems, subsets, strict=True) if label == subset]
        results[subset] = compute_metrics(members, max_k, metric_key=metric_key)
    return results


# -- table --------------------------------------------------------------------------------------------------
def _std_key(metric_key: str) -> str:
    return f"{metric_key}_std"


def table_columns(metric_key: str, extra_keys: tuple[str, ...] = ()) -> tuple[str, ...]:
    return ("evaluation_mode", "num_entries", "avg_tokens", metric_key, "no_answer", *extra_keys)


def _format_cell(column: str, mode: str, values: dict[str, float], metric_key: str) -> str:
    if column == "evaluation_mode":
        return mode
    if column not in values:
        return ""  # a further figure that only some modes have (IFEval's instruction-level accuracy)
    if column == "num_entries":
        return str(int(values[column]))
    if column == "avg_tokens":
        return f"{values[column]:.0f}"
    cell = f"{values[column]:.2f}%"
    # The run-to-run spread goes next to the accuracy it qualifies rather than into a sixth column, so the
    # five-column layout users know stays as it is; it is in percentage points, hence no second "%".
    if column == metric_key and _std_key(metric_key) in values:
        cell += f" ± {values[_std_key(metric_key)]:.2f}"
    return cell


def _table_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return _SEPARATOR.join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()


def _title_line(name: str, width: int) -> str:
    """` name ` centered in dashes over the table's width (an odd leftover dash goes to the right)."""
    title = f" {name} "
    left = max(width - len(title), 0) // 2
    right = max(width - len(title) - left, 0)
    return "-" * left + title + "-" * right


def format_table(
    name: str, metrics: dict[str, dict[str, float]], *, metric_key: str, extra_keys: tuple[str, ...] = ()
) -> str:
    """The plain-text table of one benchmark (or subset): a dashed title, a header and one row per mode.

    Columns are left-aligned to their widest cell and joined by " | "; trailing spaces are stripped so the
    text diffs cleanly. Percentages print as `11.67%`, `avg_tokens` as a rounded integer, and the
    `pass@1[avg-of-n]` accuracy as `11.67% ± 2.10` (sample std in percentage points). `extra_keys` are further
    percentage columns after `no_answer` (a grader's other verdicts and summary figures); a mode without one
    leaves its cell empty.
    """
    columns = table_columns(metric_key, extra_keys)
    rows = [list(columns)]
    rows += [[_format_cell(column, mode, values, metric_key) for column in columns] for mode, values in metrics.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    lines = [_title_line(name, sum(widths) + len(_SEPARATOR) * (len(widths) - 1))]
    lines += [_table_row(row, widths) for row in rows]
    return "\n".join(lines) + "\n"
