"""Metrics on hand-computed fixtures: pass@k edge cases, a 3-problem x 4-seed benchmark with every number
worked out in comments (majority ties, no-answers, per-seed std), greedy runs, subsets and the table text."""

from __future__ import annotations

import math

import pytest

from skills_cli.evaluation.metrics import (
    Sample,
    compute_metrics,
    compute_subset_metrics,
    format_table,
    pass_at_k,
)

KEY = "symbolic_correct"  # the math grader's key; any grader's key names the columns the same way


# -- pass_at_k ----------------------------------------------------------------------------------------------
def test_pass_at_k_no_correct_sample_is_zero():
    assert pass_at_k(5, 0, 1) == 0.0
    assert pass_at_k(5, 0, 5) == 0.0


def test_pass_at_k_all_correct_is_one():
    assert pass_at_k(5, 5, 1) == 1.0
    assert pass_at_k(5, 5, 3) == 1.0


def test_pass_at_k_with_k_equal_n_is_one_if_any_correct():
    # Drawing all n samples always includes the one correct sample.
    assert pass_at_k(8, 1, 8) == 1.0


def test_pass_at_k_matches_the_binomial_formula():
    # 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # k = 1 is the plain accuracy: 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4 = c/n
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    # 1 - C(7,3)/C(10,3) = 1 - 35/120 = 85/120
    assert pass_at_k(10, 3, 3) == pytest.approx(85 / 120)


def test_pass_at_k_is_stable_where_binomials_are_huge():
    # C(1000, 500) overflows a float; the product form does not. 1 - C(999,500)/C(1000,500) = 1 - 500/1000.
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)
    assert math.isfinite(pass_at_k(1000, 3, 400))


@pytest.mark.parametrize("n, c, k", [(4, 1, 0), (4, 1, 5), (4, 5, 2), (4, -1, 2)])
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# -- the 3-problem x 4-seed fixture -------------------------------------------------------------------------
def S(correct, answer, tokens=None, seconds=None):  # noqa: N802 (short constructor for readable fixtures)
    return Sample(correct=bool(correct), predicted_answer=answer, num_generated_tokens=tokens, generation_time=seconds)


# seed:            0                    1                     2                       3
PROBLEMS = [
    [S(1, "5", 10, 1.0), S(0, "3", 20, 2.0), S(1, "5", 30, 3.0), S(0, None, 40, None)],
    [S(0, "7", 50, 4.0), S(1, "8", 60, 5.0), S(1, " 8 ", None, 6.0), S(0, None, 70, 7.0)],
    # The two "1" answers were graded differently: majority takes the grade of the first one.
    [S(0, None, 60, None), S(0, None, 70, None), S(0, "1", 70, 8.0), S(1, "1", 70, 9.0)],
]
# correct (c):    P0 = 1 0 1 0 -> 2    P1 = 0 1 1 0 -> 2    P2 = 0 0 0 1 -> 1
# no answer (m):  P0 = 0 0 0 1 -> 1    P1 = 0 0 0 1 -> 1    P2 = 1 1 0 0 -> 2
# tokens: (10+20+30+40) + (50+60+70) + (60+70+70+70) = 100 + 180 + 270 = 550 over 11 reported -> 50
# seconds: 1+2+...+9 = 45 over 9 reported -> 5


def test_modes_come_in_print_order():
    assert list(compute_metrics(PROBLEMS, metric_key=KEY)) == [
        "pass@1[avg-of-4]",
        "majority@2",
        "pass@2",
        "majority@4",
        "pass@4",
    ]


def test_every_mode_shares_entries_tokens_and_seconds():
    for values in compute_metrics(PROBLEMS, metric_key=KEY).values():
        assert values["num_entries"] == 3
        assert values["avg_tokens"] == pytest.approx(50.0)
        assert values["gen_seconds"] == pytest.approx(5.0)


def test_average_of_n():
    values = compute_metrics(PROBLEMS, metric_key=KEY)["pass@1[avg-of-4]"]
    # (2/4 + 2/4 + 1/4) / 3 = 1.25 / 3 = 5/12 -> 41.67%
    assert values["symbolic_correct"] == pytest.approx(100 * 5 / 12)
    # (1/4 + 1/4 + 2/4) / 3 = 1/3
    assert values["no_answer"] == pytest.approx(100 / 3)
    # per-seed accuracy: seed0 1/3, seed1 1/3, seed2 2/3, seed3 1/3 -> 100/3, 100/3, 200/3, 100/3 (mean 125/3)
    # deviations -25/3 (x3) and +25: squares 3 * 625/9 + 625 = 2500/3; / (4 - 1) = 2500/9; sqrt = 50/3
    assert values["symbolic_correct_std"] == pytest.approx(50 / 3)


def test_pass_at_k_modes():
    metrics = compute_metrics(PROBLEMS, metric_key=KEY)
    # k=2, C(4,2)=6: P0 1 - C(2,2)/6 = 5/6, P1 5/6, P2 1 - C(3,2)/6 = 1/2 -> (5/6 + 5/6 + 3/6) / 3 = 13/18
    assert metrics["pass@2"]["symbolic_correct"] == pytest.approx(100 * 13 / 18)
    # all-no-answer chance C(m,2)/6: P0 0, P1 0, P2 C(2,2)/6 = 1/6 -> 1/18
    assert metrics["pass@2"]["no_answer"] == pytest.approx(100 / 18)
    # k=4 draws every sample: each problem has a correct one; none is all no-answer
    assert metrics["pass@4"]["symbolic_correct"] == pytest.approx(100.0)
    assert metrics["pass@4"]["no_answer"] == 0.0
    assert "symbolic_correct_std" not in metrics["pass@4"]


def test_majority_at_2_breaks_ties_by_first_answer_and_counts_no_answers():
    values = compute_metrics(PROBLEMS, metric_key=KEY)["majority@2"]
    # P0: "5" vs "3" tie -> "5" (first), correct. P1: "7" vs "8" tie -> "7" (first), wrong even though "8"
    # is right. P2: None, None -> no answer, wrong. -> correct 1/3, no_answer 1/3
    assert values["symbolic_correct"] == pytest.approx(100 / 3)
    assert values["no_answer"] == pytest.approx(100 / 3)


def test_majority_at_4_strips_answers_and_uses_first_grade():
    values = compute_metrics(PROBLEMS, metric_key=KEY)["majority@4"]
    # P0: "5" x2 beats "3" -> correct. P1: "8" and " 8 " are one answer (x2) beating "7" -> first "8" correct.
    # P2: "1" x2 -> the first "1" (seed 2) is graded wrong -> wrong. -> correct 2/3, no_answer 0
    assert values["symbolic_correct"] == pytest.approx(200 / 3)
    assert values["no_answer"] == 0.0


def test_max_k_stops_the_k_ladder():
    metrics = compute_metrics(PROBLEMS, max_k=2, metric_key=KEY)
    assert list(metrics) == ["pass@1[avg-of-4]", "majority@2", "pass@2"]
    # avg-of-n still averages all 4 seeds
    assert metrics["pass@1[avg-of-4]"]["symbolic_correct"] == pytest.approx(100 * 5 / 12)


def test_max_k_below_one_is_rejected():
    with pytest.raises(ValueError, match="max_k"):
        compute_metrics(PROBLEMS, max_k=0, metric_key=KEY)


def test_k_ladder_ends_with_n_when_n_is_not_a_power_of_two():
    six_seeds = [[S(i % 2, str(i)) for i in range(6)]]
    assert list(compute_metrics(six_seeds, metric_key=KEY)) == [
        "pass@1[avg-of-6]",
        "majority@2",
        "pass@2",
        "majority@4",
        "pass@4",
        "majority@6",
        "pass@6",
    ]
    # max_k above n is capped at n
    assert list(compute_metrics(six_seeds, max_k=100, metric_key=KEY))[-1] == "pass@6"
    # max_k=3 -> k in 1, 2, 3
    assert list(compute_metrics(six_seeds, max_k=3, metric_key=KEY))[-2:] == ["majority@3", "pass@3"]


# -- greedy, bad input --------------------------------------------------------------------------------------
def test_greedy_run():
    problems = [[S(1, "1", 10, 1.0)], [S(0, None, 20, None)], [S(0, "2", None, 2.0)], [S(1, "4", 30, 3.0)]]
    metrics = compute_metrics(problems, metric_key=KEY)
    assert list(metrics) == ["greedy"]
    assert metrics["greedy"] == pytest.approx(
        {
            "num_entries": 4,
            "avg_tokens": 20.0,  # (10 + 20 + 30) / 3
            "gen_seconds": 2.0,  # (1 + 2 + 3) / 3
            "symbolic_correct": 50.0,  # 2 of 4
            "no_answer": 25.0,  # 1 of 4
        }
    )


def test_nothing_reported_means_zero_tokens_and_seconds():
    metrics = compute_metrics([[S(1, "1")], [S(0, "2")]], metric_key=KEY)
    assert metrics["greedy"]["avg_tokens"] == 0.0
    assert metrics["greedy"]["gen_seconds"] == 0.0


def test_unequal_sample_counts_name_the_problem():
    problems = [[S(1, "1"), S(1, "1")], [S(1, "1"), S(1, "1")], [S(1, "1")]]
    with pytest.raises(ValueError, match="problem 2 has 1 samples, expected 2"):
        compute_metrics(problems, metric_key=KEY)


def test_no_problems_or_no_samples_are_rejected():
    with pytest.raises(ValueError, match="no problems"):
        compute_metrics([], metric_key=KEY)
    with pytest.raises(ValueError, match="no samples"):
        compute_metrics([[], []], metric_key=KEY)


# -- subsets ------------------------------------------------------------------------------------------------
def test_subset_metrics():
    results = compute_subset_metrics(PROBLEMS, ["algebra", "geometry", "algebra"], metric_key=KEY)
    assert list(results) == ["all", "algebra", "geometry"]
    assert results["all"] == compute_metrics(PROBLEMS, metric_key=KEY)

    algebra = results["algebra"]["pass@1[avg-of-4]"]  # P0 and P2
    assert algebra["num_entries"] == 2
    # (2/4 + 1/4) / 2 = 3/8
    assert algebra["symbolic_correct"] == pytest.approx(37.5)
    # per-seed: (1+0)/2, (0+0)/2, (1+0)/2, (0+1)/2 = 50, 0, 50, 50 (mean 37.5);
    # squares 3 * 12.5^2 + 37.5^2 = 468.75 + 1406.25 = 1875; / 3 = 625; sqrt = 25
    assert algebra["symbolic_correct_std"] == pytest.approx(25.0)
    # tokens P0 + P2: (10+20+30+40) + (60+70+70+70) = 100 + 270 = 370 over 8 = 46.25
    assert algebra["avg_tokens"] == pytest.approx(46.25)

    geometry = results["geometry"]  # P1 alone
    assert geometry["pass@1[avg-of-4]"]["symbolic_correct"] == pytest.approx(50.0)
    assert geometry["majority@2"]["symbolic_correct"] == 0.0  # "7" wins the tie
    assert geometry["majority@4"]["symbolic_correct"] == 100.0  # "8" wins 2 to 1


def test_subset_labels_must_match_problems():
    with pytest.raises(ValueError, match="2 subset labels for 3 problems"):
        compute_subset_metrics(PROBLEMS, ["a", "b"], metric_key=KEY)
    with pytest.raises(ValueError, match="reserved"):
        compute_subset_metrics(PROBLEMS, ["all", "b", "b"], metric_key=KEY)


# -- table --------------------------------------------------------------------------------------------------
def test_table_text():
    # Widths: evaluation_mode 16 ("pass@1[avg-of-4]"), num_entries 11, avg_tokens 10, symbolic_correct 16,
    # no_answer 9 -> 62 + 4 separators * 3 = 74. Title " toy " is 5 wide: 69 dashes, 34 left and 35 right.
    # Values from the tests above: 41.67% +- 50/3 = 16.67, 33.33%; 1/3 and 1/3; 13/18 = 72.22%, 1/18 = 5.56%.
    expected = (
        "---------------------------------- toy -----------------------------------\n"
        "evaluation_mode  | num_entries | avg_tokens | symbolic_correct | no_answer\n"
        "pass@1[avg-of-4] | 3           | 50         | 41.67% ± 16.67   | 33.33%\n"
        "majority@2       | 3           | 50         | 33.33%           | 33.33%\n"
        "pass@2           | 3           | 50         | 72.22%           | 5.56%\n"
        "majority@4       | 3           | 50         | 66.67%           | 0.00%\n"
        "pass@4           | 3           | 50         | 100.00%          | 0.00%\n"
    )
    assert format_table("toy", compute_metrics(PROBLEMS, metric_key=KEY), metric_key=KEY) == expected


def test_greedy_table_text():
    problems = [[S(1, "1", 10)], [S(0, None, 21)]]
    # avg_tokens 31/2 = 15.5 -> "16"; correct 1/2, no answer 1/2. Widths 15, 11, 10, 16, 9 -> 61 + 12 = 73;
    # title " greedy " is 8 wide: 65 dashes, 32 left and 33 right.
    expected = (
        "-------------------------------- greedy ---------------------------------\n"
        "evaluation_mode | num_entries | avg_tokens | symbolic_correct | no_answer\n"
        "greedy          | 2           | 16         | 50.00%           | 50.00%\n"
    )
    assert format_table("greedy", compute_metrics(problems, metric_key=KEY), metric_key=KEY) == expected


def test_the_metric_key_names_the_accuracy_columns():
    metrics = compute_metrics(PROBLEMS, metric_key="exact_match")
    assert metrics["pass@1[avg-of-4]"]["exact_match"] == pytest.approx(100 * 5 / 12)
    assert metrics["pass@1[avg-of-4]"]["exact_match_std"] == pytest.approx(50 / 3)
    assert not any(key.startswith("symbolic_correct") for values in metrics.values() for key in values)
    table = format_table("toy", metrics, metric_key="exact_match").splitlines()
    assert table[1] == "evaluation_mode  | num_entries | avg_tokens | exact_match    | no_answer"
    assert table[2] == "pass@1[avg-of-4] | 3           | 50         | 41.67% ± 16.67 | 33.33%"
