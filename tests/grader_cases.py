"""Equivalence cases for the math grader: (predicted, expected, equal) with where each group comes from.

Shared by tests/test_math_grader.py and bench/grading.py (which also runs plain math-verify on them). Cases taken
from public graders' test suites are facts (inputs and verdicts), cited per group; no code is copied. A few
upstream verdicts depend on settings we do not use (e.g. rounding to 2 decimals) and were left out; where our
verdict differs on purpose the line says why.

`math500_cases()` adds the 500 MATH-500 expected answers, boxed inside a sentence with light reformatting, graded
against themselves (must be correct) and against a neighbouring problem's answer (must be incorrect; the few
neighbours that are the same answer are listed in MATH500_SAME_ANSWER_PAIRS, checked by hand).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GraderCase:
    """One pair. `is_output`: `predicted` is a whole model output, graded through `grade()` (boxed extraction)."""

    predicted: str
    expected: str
    equal: bool
    source: str
    is_output: bool = False

    @property
    def id(self) -> str:
        return f"{self.source}:{self.predicted[:40]}|{self.expected[:40]}|{self.equal}"


def _group(source: str, rows: list[tuple[str, str, bool]], both_ways: bool = False) -> list[GraderCase]:
    cases = [GraderCase(predicted, expected, equal, source) for predicted, expected, equal in rows]
    if both_ways:
        cases += [GraderCase(expected, predicted, equal, source) for predicted, expected, equal in rows]
    return cases


# NVIDIA/NeMo-Skills tests/test_math_equal.py (their test checks both directions, so do we).
NEMO_SKILLS = _group(
    "NeMo-Skills",
    [
        ("5", "5", True),
        ("5", "5.0", True),
        ("1/2", "0.5", True),
        ("\\frac{1}{2}", "0.5", True),
        ("918\\frac{1}{2}", "918.5", True),
        ("x^2+2x+1", "x^2 + 2*x + 1", True),
        ("x^2+2x+1", "x^2 + 2*x - (-1)", True),
        ("y = x^2+2x+1", "2x+ 1+x^2", True),
        ("odd", "\\text{odd}", True),
        ("E", "\\mathrm{E}", True),
        ("A", "\\textbf{A}", True),
        ("f'", "f'", True),
        ("185", "185\\", True),
        ("185\\", "185\\", True),
        (".185", "0.185", True),
        ("\\frac {1}{2}", "0.5", True),
        ("17\\text{ any text}", "17", True),
        ("\\$10", "10", True),
        ("10%", "10", True),
        ("10\\%", "10", True),
        ("2.5", "\\frac{5}{2}", True),
        ("\\frac{1}{3}", "\\dfrac{1}{3}", True),
        ("(r+5)(r+5)", "(r+5)^2", True),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{\\sqrt{3}}{3} \\approx 0.577", True),
        ("C", "C. x = 42", True),
        (
            "\\begin{pmatrix}0&0&0\\\\0&1&0\\\\0&0&1\\end{pmatrix}",
            "\\begin{bmatrix} 0 & 0 & 0 \\\\ 0 & 1 & 0 \\\\ 0 & 0 & 1 \\end{bmatrix}",
            True,
        ),
        ("5", "5.001", False),
        ("x^2+2x+1", "x^3+2x+1", False),
        ("odd", "\\text{oddd}", False),
        ("E", "\\mathrm{E}*2", False),
        ("\\sqrt{67},-\\sqrt{85}", "\\sqrt{67}", False),
    ],
    both_ways=True,
)

# hendrycks/math modeling/math_equivalence_test.py
HENDRYCKS = _group(
    "hendrycks-MATH",
    [
        ("\\tfrac{1}{2} + \\frac1{72}", "\\frac{1}{2} + 2/3", False),
        # Upstream says False (its string grader is order-sensitive); a bare list of values is a set of solutions
        # to us, as in math-verify. Kept with our verdict; the next case keeps the upstream point (not a permutation).
        ("10, 4, -2", "4, 10, -2", True),
        ("10, 4, 2", "4, 12, 2", False),
        ("\\tfrac{1}{2} +\\! \\frac1{72}", "\\dfrac{1}{2} +\\frac{1}{72}", True),
        ("10\\text{ units}", "10 ", True),
        ("10\\text{ units}", "100 ", False),
        ("10", "\\$10", True),
        ("\\left(x-2\\right)\\left(x+2\\right)", "(x-2)(x+2)", True),
        ("0.1, 4, 2", "4, .1, 2", True),  # upstream False for the same reason as above
        ("0.1", ".1", True),
        ("10\\%", "10", True),
        ("10\\sqrt{3} + \\sqrt4", "10\\sqrt3 + \\sqrt{4}", True),
        ("\\frac34i", "\\frac{3}{4}i", True),
        ("\\tfrac83", "\\frac{8}{3}", True),
        ("5x - 7y + 11z + 4 = 0", "x + y - z + 2 = 0", False),
        ("1/2", "\\frac{1}{2}", True),
    ],
)

# QwenLM/Qwen2.5-Math evaluation/grader.py (its unittest class and the pairs in _test_math_equal).
QWEN = _group(
    "Qwen2.5-Math",
    [
        ("10", "10", True),
        ("10", "20", False),
        ("10%", "0.1", True),
        ("10%", "0.2", False),
        ("[1, 2, 3]", "[1, 2, 3]", True),
        ("[1, 2, 3]", "[1, 2, 4]", False),
        ("(1, 2, 3)", "(1, 2, 3)", True),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", True),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", False),
        ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}", True),
        ("x = y", "x = y", True),
        ("x = y", "x = z", False),
        ("x = 10", "10", True),
        ("10", "x = 10", True),
        ("0.0833333333333333", "\\frac{1}{12}", True),
        ("(1,4.5)", "(1,\\frac{9}{2})", True),
        ("\\frac{x}{7}+\\frac{2}{7}", "\\frac{x+2}{7}", True),
        ("\\sec^2(y)", "\\tan^2(y)+1", True),
        (
            "\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\end{pmatrix}",
            "(\\begin{pmatrix}-\\frac{7}{4}&-2\\\\4&\\frac{1}{4}\\\\\\end{pmatrix})",
            True,
        ),
        ("-34x-45y+20z-100=0", "34x+45y-20z+100=0", True),
        ("\\frac{100}{3}", "33.3", False),
        (
            "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{2\\sqrt{33}+15}",
            "\\frac{\\sqrt{\\sqrt{11}+\\sqrt{194}}}{15+2\\sqrt{33}}",
            True,
        ),
        ("(+5)(b+2)", "(a+5)(b+2)", False),
        ("\\frac{1+\\sqrt{5}}{2}", "2", False),
        ("\\frac{34}{16}+\\frac{\\sqrt{1358}}{16}", "4", False),
        ("1", "1\\sqrt{19}", False),
        ("x+1", "x+2n+1", False),
    ],
)

# huggingface/Math-Verify tests/test_all.py, test_numina_cases.py, test_open_thoughts.py, test_strict.py
# (answer-level pairs; cases about finding the answer in free prose are out of scope for a boxed grader).
MATH_VERIFY = _group(
    "Math-Verify",
    [
        ("-5", "-5", True),
        ("7,425,000", "7425000", True),
        ("1000.0", "1000", True),
        ("1,000.0", "1000.0", True),
        (".4", "0.4", True),
        ("1,000.99", "1000.99", True),
        ("\\$1,000.99", "1000.99", True),
        ("\\frac{10}{9}", "10/9", True),
        ("-\\frac{10}{9}", "-10/9", True),
        ("[0,1)", "[0,1)", True),
        ("[0,1)", "[0,9)", False),
        ("[0,9)", "(0,9)", False),
        ("\\frac13", "1/3", True),
        ("\\frac3{3}", "1", True),
        ("\\sqrt3", "\\sqrt{3}", True),
        ("\\cfrac{1}{3}", "1/3", True),
        ("\\dfrac{1}{3}", "1/3", True),
        ("\\tfrac{1}{3}", "1/3", True),
        ("\\left( \\frac{1}{3} \\right)", "1/3", True),
        ("\\frac{1}{3} \\text{meters}", "1/3", True),
        ("\\frac{1}{3} \\textbf{meters}", "1/3", True),
        ("k = \\frac{1}{3}", "1/3", True),
        ("28 percent", "28\\%", True),
        ("28 pct", "28\\%", True),
        ("28 %", "28\\%", True),
        ("28", "28\\%", True),
        ("28", "0.28", False),
        ("28", "28/100", False),
        ("28/100", "28", False),
        ("28", "\\frac{28}{100}", False),
        ("2-2p", "2-2p", True),
        (
            "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}",
            "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}",
            True,
        ),
        ("28\\%", "28\\%", True),
        ("14{,}916", "14{,}916", True),
        ("12\\text{ and }13", "12\\text{ and }13", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
        ("\\frac{14}{3}", "\\frac{14}{3}", True),
        ("\\text{Evelyn}", "\\text{Evelyn}", True),
        ("3\\sqrt{13}", "3\\sqrt{13}", True),
        ("15\\mbox{ cm}^2", "15\\mbox{ cm}^2", True),
        ("-2,1", "-2,1", True),
        ("204_5", "204_5", True),
        ("(6,31,-1)", "(6,31,-1)", True),
        ("1 \\pm \\sqrt{19}", "1 \\pm \\sqrt{19}", True),
        ("3 \\pm 2 \\sqrt{2}", "3 \\pm 2 \\sqrt{2}", True),
        ("\\{1\\pm\\sqrt{5},-2\\}", "\\{1\\pm\\sqrt{5},-2\\}", True),
        ("2 \\sin b \\cos a", "2 \\sin b \\cos a", True),
        ("125\\textnormal{ miles}", "125 miles", True),
        (
            "[-1, -\\tfrac12) \\cup (-\\tfrac12, 0) \\cup (0, 1) \\cup (1, \\infty)",
            "[-1, -\\frac{1}{2}) \\cup (-\\frac{1}{2}, 0) \\cup (0, 1) \\cup (1, \\infty)",
            True,
        ),
        ("\\sqrt 2+\\sqrt 5", "\\sqrt{2}+\\sqrt{5}", True),
        ("\\frac94\\pi", "\\frac{9}{4}\\pi", True),
        ("x \\geq 5", "x >= 5", True),
        ("x \\lt 3", "x < 3", True),
        ("x <= 2", "x \\leq 2", True),
        ("x \\gt 5", "x > 5", True),
        ("x \\neq 3", "x != 3", True),
        ("x < 5", "x > 5", False),
        ("x \\leq 5", "x \\geq 5", False),
        ("5 \\geq x", "x \\leq 5", True),
        ("5 \\leq x", "x \\geq 5", True),
        ("x = 5+5+1 = 7 =11", "x = 11", True),
        ("11a+c", "7 = 11a+c", False),
        ("x=11", "11", True),
        ("x\\approx11", "11", True),
        ("x=1/3\\approx1.3", "1/3", True),
        ("-x > -1", "x < 1", True),
        ("x > -1", "x < 1", False),
        ("-x >= -1", "x <= 1", True),
        ("0", "a +3z = 0", False),
        ("1", "2x + z = 1", False),
        ("0", "a^2 + b = 0", False),
        ("1", "k=1", True),
        ("k=1", "1", True),
        ("y=-\\frac{1}{2}x+\\frac{3}{4}", "2x+4y-3=0", True),
        ("x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 1", True),
        (
            "\\left[\\begin{array}{cc}1 & 2 \\\\3 & 4\\end{array}\\right]",
            "\\begin{pmatrix}1 & 2 \\\\3 & 4\\end{pmatrix}",
            True,
        ),
        ("\\begin{pmatrix}0 & 0 \\\\0 & 0\\end{pmatrix}", "\\begin{bmatrix}0 & 0 \\\\0 & 0\\end{bmatrix}", True),
        (
            "\\begin{pmatrix}\\frac{1}{2} & \\frac{3}{4} \\\\ \\frac{5}{6} & \\frac{7}{8}\\end{pmatrix}",
            "\\begin{pmatrix}\\frac{1}{2} & \\frac{3}{4} \\\\ \\frac{5}{6} & \\frac{7}{8}\\end{pmatrix}",
            True,
        ),
        ("\\begin{pmatrix}1 & 2 \\\\ 3 & 5\\end{pmatrix}", "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix}", False),
        ("$0.0833333333333333$", "$\\frac{1}{12}$", True),
        ("\\frac{1}{3x^{2/3}}", "\\frac{1}{3\\sqrt[3]{x}^2}", True),
        ("$(+5)(b+2)$", "$(a+5)(b+2)$", False),
        ("\\frac{1+\\sqrt{5}}{2}", "2", False),
        ("$1$", "$1\\sqrt{19}$", False),
        ("$x+1$", "$x+2n+1$", False),
        ("\\left( \\frac{4}{3}, -\\frac{1}{3} \\right)", "(\\frac{4}{3}, -\\frac{1}{3})", True),
        ("\\{1,3\\}", "(3,1)", False),
        ("\\{1,3\\}", "(1,3)", True),
        ("\\text{(C)}", "\\text{C}", True),
        ("11,\\! 111,\\! 111,\\! 100", "11111111100", True),
        ("32,\\! 349", "32349", True),
        ("32, 349", "32349", False),
        ("(2,12) \\cup (12,102)", "(2, 12) \\cup (12, 102)", True),
        ("E", "\\text{E}", True),
        ("1,2", "1,2", True),
        ("\\sqrt{17}", "4.123105625617661", True),
        ("4\\sqrt{2}", "4", False),
        # test_numina_cases.py
        ("(3,2)", "(p,q)=(3,2)", True),
        ("\\{-12, -11, -10, -8, -7, -6\\}", "-12;-11;-10;-8;-7;-6", True),
        ("(3,2,7)", "(p,q,r)=(3,2,7)", True),
        ("-5, \\frac{14}{3}", "x = -5,\\ p = \\frac{14}{3}", True),
        ("-10,-8,4", "a=4,\\,-8,\\,-10", True),
        ("6,8", "6 \\text{ and } 8", True),
        ("odd", "\\text{odd}", True),
        ("e", "\\text{e}", True),
        ("E", "\\text{E}", True),
        ("\\text{E}", "d", False),
        ("1,2,3", "1 and 2 and 3", True),
        ("21,16,11", "21,16 or 11", True),
        ("Even", "\\text{Even}", True),
        (
            "(3, 37, 3, 13), (3, 17, 3, 7), (3, 3, 2, 3), (17,3,3,7), (37,3,3,13)",
            "(37,3,3,13),(17,3,3,7),(3,37,3,13),(3,17,3,7),(3,3,2,3)",
            True,
        ),
        (
            "(4, 0, 6), (4, -2, 6), (0, 0, 6), (0, -2, 6), (4, 0, 0), (4, -2, 0), (0, 0, 0), (0, -2, 0)",
            "(0;0;0),(0;-2;0),(0;0;6),(0;-2;6),(4;0;0),(4;-2;0),(4;0;6),(4;-2;6)",
            True,
        ),
        ("7:32", "S_{MBCN}:S=7:32", True),
        ("\\frac{1}{\\sqrt{6}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", True),
        ("11:21", "V_{1}:V_{2}=11:21", True),
        ("1", "A:B=1", True),
        ("(0,1)", "0<f(x)<1", True),
        ("{1,3}", "(1,3)", True),
        (
            "(3, 37, 3, 13), (3, 17, 3, 7), (3, 3, 2, 3), (3,17,3,7), (17,3,3,7), (37,3,3,13)",
            "(37,3,3,13),(17,3,3,7),(3,37,3,13),(3,17,3,7),(3,3,2,3)",
            True,
        ),
        (
            "(3, 37, 3, 13), (3, 17, 3, 7), (3, 3, 2, 3), (3,17,3,7), (17,3,3,7), (37,3,3,13)",
            "(37,3,3),(17,3,3,7),(3,37,3,13),(3,17,3,7),(3,3,2,3)",
            False,
        ),
        ("x \\in [-2,7]", "-2 \\le x \\le 7", True),
        ("-2 \\le x \\le 7", "x \\in [-2,7]", True),
        # test_open_thoughts.py
        ("(x, y) = (5, 8) \\quad \\text{and} \\quad (8, 5)", "(5, 8), (8, 5)", True),
        ("2, 3, 5, 7, 13", "2, 3, 5, 7, 13", True),
        ("f(y) = y", "f(y) = y", True),
        ("\\text{The midpoints form a regular hexagon}", "\\text{The midpoints form a regular hexagon}", True),
        ("a_{37} = 19, \\quad a_3 = 2", "a_3 = 2, a_{37} = 19", True),
        ("(2, 2), (1, 3), (3, 3)", "(2, 2), (1, 3), (3, 3)", True),
        ("(1, +\\infty)", "(1, +\\infty)", True),
        (
            "x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}",
            "x = \\frac{1}{2}, x = \\frac{-1 \\pm \\sqrt{13}}{4}",
            True,
        ),
        ("0.06 \\text{ yuan}", "0.06 \\text{ yuan}", True),
        ("667", "667", True),
        ("6 \\text{ and } 8", "6 \\text{ and } 8", True),
        ("k \\ge 2", "k \\ge 2", True),
        ("1", "|AB|=1", True),
        ("1", "f(x)=1", True),
        (
            "\\dfrac{108 + 31\\sqrt{5}}{216}, \\dfrac{108 - 31\\sqrt{5}}{216}",
            "x_{1}=\\frac{1}{2}+\\frac{31\\sqrt{5}}{216},\\quad x_{2}=\\frac{1}{2}-\\frac{31\\sqrt{5}}{216}",
            True,
        ),
        # test_strict.py
        ("n=1, 2, 3", "n=1, 2, 3", True),
        ("n=1, 2, 3", "n=2, 3, 4", False),
        ("D = (0, 1)", "D = (0, 1)", True),
        ("D = (0, 1.5)", "D = (0, 1)", False),
        ("19, 46, \\text{ and } 82", "19, 46, and 82", True),
        ("21, 36, and 82", "19, 46, and 82", False),
        ("1 - \\frac{1}{\\mathrm{e}}", "1 - \\frac{1}{\\mathrm{e}}", True),
        ("2021", "\\pm 2021", False),
        ("\\{-2021, 2021\\}", "\\pm 2021", True),
        ("1:00", "12:00", False),
        ("12:00", "12:00", True),
    ],
)


# Our own cases, by kind of answer.
INTEGERS = _group(
    "own:integers",
    [
        ("42", "42", True),
        ("042", "42", True),
        ("+42", "42", True),
        ("42.0", "42", True),
        ("42.00", "42", True),
        ("41", "42", False),
        ("-42", "42", False),
        ("0", "0", True),
        ("-0", "0", True),
        ("0", "1", False),
        ("1000000", "1000001", False),
        ("1000000.0", "1000001", False),
        ("123456789012345678901234567890", "123456789012345678901234567890", True),
        ("123456789012345678901234567891", "123456789012345678901234567890", False),
        ("2^{10}", "1024", True),
        ("2^{100}", "1267650600228229401496703205376", True),
        ("10!", "3628800", True),
        ("\\binom{6}{2}", "15", True),
        ("\\dbinom{10}{3}", "120", True),
        ("\\binom{6}{2}", "12", False),
        ("3 \\cdot 4", "12", True),
        ("3 \\times 4", "12", True),
        ("3 \\times 4", "13", False),
    ],
)

DECIMALS = _group(
    "own:decimals",
    [
        ("0.5", "0.50", True),
        ("3.14", "3.140", True),
        ("3.14", "3.15", False),
        ("0.0000672", ".0000672", True),
        ("0.000067", ".0000672", False),
        ("2.718281828", "2.718281828", True),
        ("1.5", "\\frac{3}{2}", True),
        ("0.375", "\\frac{3}{8}", True),
        ("0.38", "\\frac{3}{8}", False),
        ("0.3333333", "\\frac{1}{3}", True),
        ("0.333", "\\frac{1}{3}", False),
        ("0.6666667", "\\frac{2}{3}", True),
        ("326.5", "326.5", True),
        ("326.50", "\\frac{653}{2}", True),
        ("18.9", "\\$18.90", True),
        ("18.09", "\\$18.90", False),
        ("1.0", "1", True),
        ("-2.5", "-\\frac{5}{2}", True),
        ("2.5", "-\\frac{5}{2}", False),
    ],
)

FRACTIONS = _group(
    "own:fractions",
    [
        ("\\frac{2}{4}", "\\frac{1}{2}", True),
        ("\\frac{1}{2}", "1/2", True),
        ("\\dfrac{3}{56}", "\\frac{3}{56}", True),
        ("\\frac{3}{56}", "\\frac{3}{65}", False),
        ("\\frac 59", "\\frac{5}{9}", True),
        ("\\frac9{19}", "\\frac{9}{19}", True),
        ("\\frac{9}{19}", "\\frac{19}{9}", False),
        ("-\\frac{35}{9}", "\\frac{-35}{9}", True),
        ("-\\frac{35}{9}", "\\frac{35}{-9}", True),
        ("-\\frac{35}{9}", "\\frac{35}{9}", False),
        ("\\frac{448}{15625}", "\\frac{448}{15625}", True),
        ("\\frac{448}{15625}", "0.028672", True),
        ("\\frac{1997}{2}", "998.5", True),
        ("\\frac{11+9a}{20}", "\\frac{9a+11}{20}", True),
        ("\\frac{11+9a}{20}", "\\frac{11a+9}{20}", False),
        ("\\frac{11}{2}", "5\\frac{1}{2}", True),
        ("\\tfrac{13}{15}", "\\frac{13}{15}", True),
        ("(\\frac{1}{2})", "\\frac{1}{2}", True),
        ("\\frac{\\frac{1}{2}}{3}", "\\frac{1}{6}", True),
        ("\\frac{1}{\\frac{1}{2}}", "2", True),
    ],
)

MIXED_NUMBERS = _group(
    "own:mixed-numbers",
    [
        ("1\\frac{4}{5}", "\\frac{9}{5}", True),
        ("1\\frac{4}{5}", "1.8", True),
        ("137 \\frac{1}{2}", "137.5", True),
        ("137 \\frac{1}{2}", "\\frac{275}{2}", True),
        ("2\\frac{1}{3}", "\\frac{7}{3}", True),
        ("2\\frac{1}{3}", "\\frac{2}{3}", False),
        ("-1\\frac{1}{2}", "-1.5", True),
    ],
)

PERCENTS = _group(
    "own:percents",
    [
        ("50\\%", "0.5", True),
        ("50\\%", "50", True),
        ("50", "50\\%", True),
        ("0.5", "50\\%", True),
        ("50\\%", "\\frac{1}{2}", True),
        ("50\\%", "5", False),
        ("12.5\\%", "0.125", True),
        ("12.5%", "12.5", True),
        ("25\\%", "20\\%", False),
        ("33\\frac{1}{3}\\%", "\\frac{1}{3}", True),
        ("40 percent", "40\\%", True),
    ],
)

THOUSANDS = _group(
    "own:thousands",
    [
        ("2,125", "2125", True),
        ("2125", "2,125", True),
        ("10,\\!080", "10080", True),
        ("10{,}080", "10080", True),
        ("58,500", "58500", True),
        ("1,234,567", "1234567", True),
        ("1,234,567", "1234568", False),
        ("\\$32,\\!348", "32348", True),
        ("28,800", "28800", True),
        ("2,125", "2, 125", False),
        ("27,648", "27648.0", True),
    ],
)

UNITS_AND_TEXT = _group(
    "own:units-text",
    [
        ("864 \\mbox{ inches}^2", "864", True),
        ("864", "864 \\mbox{ inches}^2", True),
        ("5.4 \\text{ cents}", "5.4", True),
        ("5.4", "5.4 \\text{ cents}", True),
        ("15 cm^2", "15\\mbox{ cm}^2", True),
        ("16 cm^2", "15\\mbox{ cm}^2", False),
        ("125 miles", "125", True),
        ("27 \\text{ miles}", "27", True),
        ("\\text{Evelyn}", "\\text{Evelyn}", True),
        ("Evelyn", "\\text{Evelyn}", True),
        ("evelyn", "\\text{Evelyn}", True),
        ("Carla", "\\text{Evelyn}", False),
        ("\\text{east}", "\\text{east}", True),
        ("\\text{west}", "\\text{east}", False),
        ("\\text{even}", "\\text{even}", True),
        ("\\text{odd}", "\\text{even}", False),
        ("\\text{ellipse}", "\\text{ellipse}", True),
        ("\\text{parabola}", "\\text{ellipse}", False),
        ("\\textbf{Navin}", "\\text{Navin}", True),
        ("\\$36", "36", True),
        ("36 \\text{ dollars}", "\\$36", True),
        ("\\$ 36.00", "\\$36", True),
        ("35 \\text{ dollars}", "\\$36", False),
        ("12 \\text{ inches}", "12", True),
        ("\\text{12}", "12", True),
        ("18 \\text{ square units}", "18", True),
        ("4 \\text{ hours}", "4", True),
    ],
)

DEGREES = _group(
    "own:degrees",
    [
        ("90^\\circ", "90", True),
        ("90", "90^\\circ", True),
        ("90^{\\circ}", "90^\\circ", True),
        ("90\\circ", "90^\\circ", True),
        ("90 degrees", "90^\\circ", True),
        ("90\\text{ degrees}", "90^\\circ", True),
        ("90\u00b0", "90^\\circ", True),
        ("45^\\circ", "90^\\circ", False),
        ("\\frac{270}{7}", "\\frac{270}7\\text{ degrees}", True),
        ("38.57", "\\frac{270}7\\text{ degrees}", False),
        ("106^\\circ", "106^\\circ", True),
    ],
)

RADICALS = _group(
    "own:radicals",
    [
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt{3}}{2}", False),
        ("2\\sqrt{3}", "\\sqrt{12}", True),
        ("3\\sqrt{13}", "\\sqrt{117}", True),
        ("3\\sqrt{13}", "\\sqrt{118}", False),
        ("\\sqrt{51}", "\\sqrt{51}", True),
        ("11\\sqrt2", "11\\sqrt{2}", True),
        ("11\\sqrt2", "\\sqrt{242}", True),
        ("70 \\sqrt{2}", "70\\sqrt2", True),
        ("\\frac{3\\sqrt{3}}{4}", "\\frac{3}{4}\\sqrt{3}", True),
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),
        ("\\frac{\\sqrt{3}}{3}", "\\sqrt{3}", False),
        ("\\sqrt[3]{8}", "2", True),
        ("\\sqrt[3]{16}", "2\\sqrt[3]{2}", True),
        ("2^{1/2}", "\\sqrt{2}", True),
        ("1+2\\sqrt{3}", "2\\sqrt{3}+1", True),
        ("1+2\\sqrt{3}", "1-2\\sqrt{3}", False),
        ("11 \\sqrt{5} + 11", "11(\\sqrt5+1)", True),
        ("\\frac{\\sqrt{21}}{5}", "\\sqrt{\\frac{21}{25}}", True),
        ("0.7071", "\\frac{\\sqrt{2}}{2}", False),
        ("-\\sqrt{3}", "-\\sqrt3", True),
        ("-\\sqrt{3}", "\\sqrt{3}", False),
        ("\\sqrt{5}", "\u221a5", True),
    ],
)

PI_EXPRESSIONS = _group(
    "own:pi",
    [
        ("\\pi", "\\pi", True),
        ("3.14159", "\\pi", False),
        ("3.14", "\\pi", False),
        ("\\frac{\\pi}{2}", "\\pi/2", True),
        ("-\\frac{\\pi}{6}", "-\\pi/6", True),
        ("\\frac{\\pi}{6}", "-\\frac{\\pi}{6}", False),
        ("288 \\pi", "288\\pi", True),
        ("\\pi \\cdot 288", "288\\pi", True),
        ("18+2\\pi", "2\\pi+18", True),
        ("18+2\\pi", "18+\\pi", False),
        ("\\frac{20000}{\\pi}", "20000/\\pi", True),
        ("7\\pi", "7 \\pi", True),
        ("12\\pi", "\\pi\\cdot12", True),
        ("\\frac{9\\pi}{4}", "\\frac94\\pi", True),
        ("\\frac{\\pi^2}{8}", "\\frac{1}{8}\\pi^2", True),
        ("2\\pi r", "2 r \\pi", True),
        ("\\frac{\\pi r}{h+r}", "\\frac{r\\pi}{r+h}", True),
    ],
)

INTERVALS = _group(
    "own:intervals",
    [
        ("(3,4]", "(3,4]", True),
        ("(3,4)", "(3,4]", False),
        ("[3,4]", "(3,4]", False),
        ("(2,\\infty)", "(2, \\infty)", True),
        ("(2,+\\infty)", "(2,\\infty)", True),
        ("[2,\\infty)", "(2,\\infty)", False),
        ("(-\\infty, 0]", "(-\\infty,0]", True),
        ("(-\\infty, 0)", "(-\\infty,0]", False),
        ("(-\\infty,2)\\cup(3,\\infty)", "(-\\infty, 2) \\cup (3, \\infty)", True),
        ("(3,\\infty)\\cup(-\\infty,2)", "(-\\infty, 2) \\cup (3, \\infty)", True),
        ("(-\\infty,2]\\cup(3,\\infty)", "(-\\infty, 2) \\cup (3, \\infty)", False),
        ("(0,9) \\cup (9,36)", "(0,9)\\cup(9,36)", True),
        ("(0,36)", "(0,9)\\cup(9,36)", False),
        ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "(\\frac35, \\frac83]", True),
        ("(0.6,\\frac{8}{3}]", "\\left(\\frac{3}{5},\\frac{8}{3}\\right]", True),
        ("[\\frac{\\pi^2}{8}, \\frac{5\\pi^2}{4}]", "\\left[ \\frac{\\pi^2}{8}, \\frac{5 \\pi^2}{4} \\right]", True),
        ("[-2,7]", "x \\in [-2,7]", True),
        ("[-2,7)", "x \\in [-2,7]", False),
        ("(-\\sqrt{3}, \\sqrt{3})", "(-\\sqrt3,\\sqrt3)", True),
        ("(-\\sqrt{3}, \\sqrt{2})", "(-\\sqrt3,\\sqrt3)", False),
        ("\\{-1\\} \\cup [0,7)", "\\{-1\\}\\cup[0,7)", True),
    ],
)

TUPLES = _group(
    "own:tuples",
    [
        ("(1,2)", "(1, 2)", True),
        ("(2,1)", "(1,2)", False),
        ("(6,31,-1)", "(6, 31, -1)", True),
        ("(6,-1,31)", "(6, 31, -1)", False),
        ("(6,31)", "(6, 31, -1)", False),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\frac{\\pi}{2})", True),
        ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("(3, \\pi)", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
        ("(\\frac{3}{2}, -13)", "\\left( \\frac{3}{2}, -13 \\right)", True),
        ("(1.5, -13)", "\\left( \\frac{3}{2}, -13 \\right)", True),
        ("(-2,1)", "(-2, 1)", True),
        ("(1,-2)", "(-2, 1)", False),
        ("(1,-16,-4,43)", "(1, -16, -4, 43)", True),
        ("(15,-29)", "(15, -29)", True),
        ("(-15,29)", "(15, -29)", False),
        ("(8,-2)", "(8, -2)", True),
        ("(x,y)=(8,-2)", "(8,-2)", True),
        ("(2, 4)", "(2,4)", True),
    ],
)

SETS_AND_SOLUTIONS = _group(
    "own:sets-solutions",
    [
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("\\{1,2\\}", "\\{1,3\\}", False),
        ("\\{1,2\\}", "\\{1,2,3\\}", False),
        ("1, 2", "2, 1", True),
        ("3, 5, 7", "7, 5, 3", True),
        ("3, 5, 7", "3, 5", False),
        ("3, 5, 7", "3, 5, 8", False),
        ("x=1, x=2", "1, 2", True),
        ("x = 2 \\text{ or } x = 1", "1, 2", True),
        ("1 \\pm \\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", True),
        ("1-\\sqrt{19}, 1+\\sqrt{19}", "1 \\pm \\sqrt{19}", True),
        ("1+\\sqrt{19}", "1 \\pm \\sqrt{19}", False),
        ("3 \\pm 2\\sqrt2", "3 \\pm 2 \\sqrt{2}", True),
        ("3+2\\sqrt{2}, 3-2\\sqrt{2}", "3 \\pm 2 \\sqrt{2}", True),
        ("-2, 1+\\sqrt5, 1-\\sqrt5", "\\{1\\pm\\sqrt{5},-2\\}", True),
        ("-2, 1+\\sqrt5", "\\{1\\pm\\sqrt{5},-2\\}", False),
        ("(1, 2), (3, 4)", "(3, 4), (1, 2)", True),
        ("(1, 2), (4, 3)", "(3, 4), (1, 2)", False),
        ("\\pm 2", "2, -2", True),
        ("2", "\\pm 2", False),
        ("-\\frac{1}{2}, 3", "3, -0.5", True),
    ],
)

MATRICES = _group(
    "own:matrices",
    [
        (
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
            "\\begin{pmatrix} -\\frac13 \\\\ \\frac23 \\\\ \\frac53 \\end{pmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix} 1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
            "\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
            False,
        ),
        ("\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}", "\\begin{pmatrix}-2\\\\-14\\\\-7\\end{pmatrix}", True),
        ("(-2, -14, -7)", "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}", True),
        ("(-2, -7, -14)", "\\begin{pmatrix} -2 \\\\ -14 \\\\ -7 \\end{pmatrix}", False),
        ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}", True),
        (
            "\\begin{bmatrix} -1 & 0 \\\\ 0 & -1 \\end{bmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & 1 \\end{pmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            False,
        ),
        (
            "\\begin{pmatrix} -1 & 0 & 0 \\\\ 0 & -1 & 0 \\end{pmatrix}",
            "\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
            False,
        ),
        ("\\begin{pmatrix} 0.2 \\\\ -3.6 \\end{pmatrix}", "\\begin{pmatrix} 1/5 \\\\ -18/5 \\end{pmatrix}", True),
        (
            "\\begin{pmatrix} 16/49 \\\\ 48/49 \\\\ 24/49 \\end{pmatrix}",
            "\\begin{pmatrix} \\frac{16}{49} \\\\ \\frac{48}{49} \\\\ \\frac{24}{49} \\end{pmatrix}",
            True,
        ),
        (
            "\\begin{pmatrix} \\sqrt{2} & 0 \\\\ 0 & \\sqrt{2} \\end{pmatrix}",
            "\\begin{pmatrix} \\sqrt2 & 0 \\\\ 0 & 2^{1/2} \\end{pmatrix}",
            True,
        ),
    ],
)

EQUATIONS = _group(
    "own:equations",
    [
        ("x=3", "3", True),
        ("x = 3", "3", True),
        ("3", "x=3", True),
        ("y = 3", "3", True),
        ("x=4", "3", False),
        ("y = 2x + 3", "y=2x+3", True),
        ("y = 3 + 2x", "y = 2x + 3", True),
        ("y = 2x - 3", "y = 2x + 3", False),
        ("2x - y + 3 = 0", "y = 2x + 3", True),
        ("y = -2x", "y=-2x", True),
        ("2x + y = 0", "y = -2x", True),
        ("y = 2x", "y = -2x", False),
        ("5x - 7y + 11z + 4 = 0", "5x - 7y + 11z + 4 = 0", True),
        ("-5x + 7y - 11z - 4 = 0", "5x - 7y + 11z + 4 = 0", True),
        ("10x - 14y + 22z + 8 = 0", "5x - 7y + 11z + 4 = 0", True),
        ("5x - 7y + 11z - 4 = 0", "5x - 7y + 11z + 4 = 0", False),
        ("f(x) = x^2", "x^2", True),
        ("a = 5", "b = 5", False),
        ("x^2 + y^2 = 25", "y^2 + x^2 = 25", True),
        ("x^2 + y^2 = 5", "x^2 + y^2 = 25", False),
    ],
)

POLYNOMIALS_AND_EXPRESSIONS = _group(
    "own:expressions",
    [
        ("p - q", "p-q", True),
        ("-q + p", "p - q", True),
        ("q - p", "p - q", False),
        ("x^5 - x^4 + x^3 - x^2 + x - 1", "x^5-x^4+x^3-x^2+x-1", True),
        ("(x-1)(x^4+x^2+1)", "x^5 - x^4 + x^3 - x^2 + x - 1", True),
        ("(x+1)(x^4+x^2+1)", "x^5 - x^4 + x^3 - x^2 + x - 1", False),
        ("x^3+3x-6", "x^3 + 3x - 6", True),
        ("x^3+3x+6", "x^3 + 3x - 6", False),
        ("(a+5)(b+2)", "ab+2a+5b+10", True),
        ("(a+5)(b+2)", "(a+2)(b+5)", False),
        ("6r^2-4r-24", "2(3r^2-2r-12)", True),
        ("8n^2 + 4n + 1", "8n^2+4n+1", True),
        ("8n^2 + 4n - 1", "8n^2+4n+1", False),
        ("15x - 80", "5(3x-16)", True),
        ("-13x+3", "3-13x", True),
        ("x^2+2x+1", "(x+1)^2", True),
        ("x^2+1", "(x+1)^2", False),
        ("\\frac{x^2-1}{x-1}", "x+1", True),
        ("x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1", "\\frac{x^9-1}{x-1}", True),
        ("\\cot x", "\\frac{\\cos x}{\\sin x}", True),
        ("\\cot x", "\\tan x", False),
        ("\\sin^2 x + \\cos^2 x", "1", True),
        ("2\\sin x \\cos x", "\\sin 2x", True),
        ("e^{2x}", "(e^x)^2", True),
        ("\\ln 8", "3\\ln 2", True),
        ("\\log_2 8", "3", True),
        ("|x-1|", "|1-x|", True),
        ("|x|", "x", False),
        ("\\frac{1}{x} + \\frac{1}{y}", "\\frac{x+y}{xy}", True),
        ("\\frac{1}{x} + \\frac{1}{y}", "\\frac{1}{x+y}", False),
        ("n(n+1)/2", "\\frac{n^2+n}{2}", True),
        ("2^n", "2^{n}", True),
        ("2^{n+1}", "2\\cdot 2^n", True),
        ("2^{n+1}", "2^n", False),
    ],
)

LATEX_VARIANTS = _group(
    "own:latex-variants",
    [
        ("\\dfrac{17}{50}", "\\frac{17}{50}", True),
        ("\\left( 1, 2 \\right)", "(1,2)", True),
        ("\\left[ 1, 2 \\right)", "[1,2)", True),
        ("10,\\!080", "10,080", True),
        ("1\\,000", "1000", True),
        ("\\displaystyle\\frac{1}{2}", "\\frac12", True),
        ("$\\frac{1}{2}$", "\\frac{1}{2}", True),
        ("\\(\\frac{1}{2}\\)", "\\frac{1}{2}", True),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
        ("\\frac{1}{2}.", "\\frac{1}{2}", True),
        ("\\frac{1}{2}\\,", "\\frac{1}{2}", True),
        ("\\mathbf{7}", "7", True),
        ("4210_{5}", "4210_5", True),
        ("4210_5", "4201_5", False),
        ("2516_8", "2516_8", True),
        ("1358", "2516_8", False),
        ("\\text{(B)}", "\\text{(B)}", True),
        ("B", "\\text{(B)}", True),
        ("(B)", "\\text{(B)}", True),
        ("\\textbf{(B)}", "\\text{(B)}", True),
        ("C", "\\text{(B)}", False),
        ("\\text{(E)}", "E", True),
        ("\\text{(D)}", "E", False),
    ],
)

NEGATIVES_AND_SCIENTIFIC = _group(
    "own:negatives-scientific",
    [
        ("-7", "-7", True),
        ("- 7", "-7", True),
        ("\u22127", "-7", True),
        ("7", "-7", False),
        ("-(7)", "-7", True),
        ("-\\frac{24}{25}", "-0.96", True),
        ("\\frac{24}{25}", "-0.96", False),
        ("1.5 \\times 10^{3}", "1500", True),
        ("1.5\\times10^3", "1500", True),
        ("1.5e3", "1500", True),
        ("1.5 \\times 10^{-3}", "0.0015", True),
        ("1.5 \\times 10^{4}", "1500", False),
        ("6.02 \\times 10^{23}", "602000000000000000000000", True),
        ("3 \\cdot 10^{5}", "300000", True),
        ("10^{-2}", "0.01", True),
    ],
)

COMPLEX_NUMBERS = _group(
    "own:complex",
    [
        ("1+2i", "2i+1", True),
        ("1+2i", "1-2i", False),
        ("6 - 5i", "6-5i", True),
        ("-5i + 6", "6-5i", True),
        ("6 + 5i", "6-5i", False),
        ("-2 + 7i", "7i-2", True),
        ("1+274i", "1 + 274i", True),
        ("1 - 12i", "1-12i", True),
        ("1 + 12i", "1-12i", False),
        ("\\frac{3}{4}i", "\\frac34i", True),
        ("i^2", "-1", True),
        ("(1+i)^2", "2i", True),
        ("\\frac{1}{i}", "-i", True),
    ],
)

CLEAR_NEGATIVES = _group(
    "own:clear-negatives",
    [
        ("\\pi", "3.14159", False),
        ("\\sqrt{2}", "1.41421", False),
        ("e", "2.71828", False),
        ("(1,2)", "(2,1)", False),
        ("(1,2)", "[1,2]", False),
        ("[1,2)", "[1,2]", False),
        ("1", "-1", False),
        ("\\frac{1}{2}", "\\frac{1}{3}", False),
        ("x", "y", False),
        ("2x", "x^2", False),
        ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt{2}}{2}", False),
        ("12", "\\text{twelve}", False),
        ("", "5", False),
        ("5", "", False),
        ("\\text{none}", "0", False),
        ("\\infty", "0", False),
        ("\\infty", "-\\infty", False),
        ("9", "(9)", True),
        ("5x", "5", False),
        ("1,2", "12", False),
        ("\\frac{1}{2}x", "\\frac{1}{2x}", False),
    ],
)

# Spellings a model might produce for the same answer, and near misses (ours; found while comparing graders).
MODEL_SPELLINGS = _group(
    "own:model-spellings",
    [
        ("4\\frac{2}{3}", "\\frac{14}{3}", True),
        ("\\frac{14}{3}", "4 \\frac{2}{3}", True),
        ("137 1/2", "137 \\frac{1}{2}", True),
        ("1(4)/(5)", "1\\frac{4}{5}", False),
        ("-\\pi/6", "-\\frac{\\pi}{6}", True),
        ("2516_{8}", "2516_8", True),
        ("\\text{C}", "\\text{(C)}", True),
        ("18 dollars", "18", True),
        ("\\$18.00", "18", True),
        ("1{,}080", "1080", True),
        ("x=\\frac{1}{2}", "\\frac12", True),
        ("\\frac{1}{2}\\text{ hour}", "0.5", True),
        ("3.5\\text{ hrs}", "\\frac72", True),
        ("0.577", "\\frac{\\sqrt{3}}{3}", False),
        ("\\mathbb{R}", "(-\\infty,\\infty)", True),
        ("x \\in (-\\infty, 0]", "(-\\infty,0]", True),
        ("x\\le 0", "(-\\infty,0]", True),
        ("x < 0", "(-\\infty,0]", False),
        ("x > 2", "(2, \\infty)", True),
        ("-1 < x \\leq 2", "(-1, 2]", True),
        ("-1 \\leq x \\leq 2", "(-1, 2]", False),
        ("\\{3\\}", "3", True),
        ("\\{3, 4\\}", "3", False),
        ("3, 3", "3", True),  # a value listed twice is still one value
        ("3, 4", "3", False),
        ("\\frac{x}{2}+3", "y = \\frac{x}{2} + 3", True),
        ("y=\\frac{1}{2}x+3", "y = \\frac{x}{2} + 3", True),
        ("45^{\\circ}", "\\frac{\\pi}{4}", False),
        ("\\text{Yes}", "yes", True),
        ("\\text{No}", "yes", False),
        ("\\text{Monday}", "\\text{Tuesday}", False),
        ("10^{6}", "1,000,000", True),
        ("e^{i\\pi}", "-1", True),
        ("\\log 100", "2", False),
        ("\\angle ABC = 30^\\circ", "30", True),
        ("m\\angle A = 30", "30", True),
        ("\\$\\,1{,}234.50", "1234.5", True),
        ("1.2345\\times 10^{3}", "1234.5", True),
        ("\\frac{1}{6}", "0.1667", False),
        ("\\frac16", "0.16666667", True),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(1,2)", True),
        ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "(2,1)", False),
        ("\\begin{pmatrix}1&2\\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", False),
        ("x^2 - 1 = 0", "x^2 = 1", True),
        ("x=\\pm 1", "1,-1", True),
        ("(x-2)^2+(y+3)^2=25", "x^2-4x+y^2+6y-12=0", True),
        ("\\frac{n(n+1)}{2}", "\\binom{n+1}{2}", True),
        ("\\sqrt[4]{16}", "2", True),
        ("\\frac{10!}{8!}", "90", True),
        ("\\tan^{-1}(1)", "\\frac{\\pi}{4}", True),
        ("\\sin(\\pi/6)", "\\frac12", True),
        ("1 - 2\\sin^2 x", "\\cos(2x)", True),
        ("0.\\overline{3}", "\\frac13", True),
        ("0.1\\overline{6}", "\\frac16", True),
        ("0.\\overline{3}", "0.3", False),
        ("\\frac{-1+\\sqrt{5}}{2}", "\\frac{\\sqrt5-1}{2}", True),
        ("\\frac{-1-\\sqrt{5}}{2}", "\\frac{\\sqrt5-1}{2}", False),
    ],
)

# The traps a careful human decides one way (policy in the package docstring); both directions are checked.
POLICY_TRAPS = _group(
    "own:policy-traps",
    [
        ("0.5", "\\frac{1}{2}", True),
        ("\\frac12", "0.5", True),
        ("\\dfrac{1}{2}", "1/2", True),
        ("1/2", "2", False),
        ("\\frac{1}{2}", "\\frac{2}{1}", False),
        ("10\\%", "0.1", True),  # a percent matches its fraction and its number
        ("10\\%", "10", True),
        ("10\\%", "1", False),
        ("0.1", "10", False),
        ("[1,2]", "(1,2)", False),
        ("[1,2)", "[1,2]", False),
        ("(1,2]", "(1,2]", True),
        ("(-\\infty,1]", "(-\\infty,1)", False),
        ("\\{1,2\\}", "\\{2,1\\}", True),
        ("(1,2)", "(2,1)", False),  # a point, ordered
        ("5\\text{ cm}", "5", True),
        ("5 \\text{cm}^2", "5", True),
        ("6\\text{ cm}", "5", False),
        ("5cm", "5 \\text{ cm}", True),
        ("5m", "5", False),  # m may be a variable: only common unit names are dropped when glued
        ("5 \\text{ cm}", "5 \\text{ m}", False),  # units differ (both sides name one)
        ("3 dollars", "3 cents", False),
        ("4 hrs", "4 \\text{ hours}", True),
        ("15\\mbox{ cm}^2", "15 \\text{ square centimeters}", True),
        ("90 degrees", "90 \\text{ radians}", False),
        ("12 million", "12000000", True),  # a scale word multiplies; it is not a unit
        ("12 million", "12", False),
        ("1.5 billion dollars", "1500000000", True),
        ("\\varnothing", "\\emptyset", True),
        ("\\emptyset", "0", False),
        ("1,000", "1000", True),
        ("1{,}000", "1000", True),
        ("(1,000)", "1000", False),  # a tuple, not a number
        ("1,000", "1", False),
        ("1,000,000", "10^6", True),
        ("90^\\circ", "90", True),
        ("90^\\circ", "\\frac{\\pi}{2}", False),  # degrees are not radians
        ("x=5", "5", True),
        ("x = 5", "x = 6", False),
        ("5", "x = 6", False),
        ("\\pi/2", "\\frac{\\pi}{2}", True),
        ("2\\pi", "\\pi \\cdot 2", True),
        ("6.28", "2\\pi", False),
        ("\\sqrt{8}", "2\\sqrt{2}", True),
        ("\\sqrt{8}", "2\\sqrt{3}", False),
        ("\\sqrt2/2", "\\frac{1}{\\sqrt{2}}", True),
        ("1.2 \\times 10^{3}", "1200", True),
        ("1.2e3", "1200", True),
        ("1.2 \\times 10^{-3}", "1200", False),
        ("-0", "0", True),
        ("-0.0", "0", True),
        ("-1", "1", False),
        ("2, 3", "3, 2", True),  # a bare list of solutions is a set
        ("2, 3", "2, 3, 4", False),
        ("(2, 3)", "(3, 2)", False),
        ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", False),
        ("\\begin{bmatrix} 1 & 0 \\\\ 0 & 1 \\end{bmatrix}", "\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", True),
        ("x \\geq 5", "x \\ge 5", True),
        ("x \\geq 5", "[5, \\infty)", True),
        ("x > 5", "[5, \\infty)", False),
        ("x \\geq 5", "x \\leq 5", False),
        ("\\frac{1}{3}", "0.33", False),  # a rounded decimal is not the fraction
        ("\\frac{1}{3}", "0.333333333", True),
    ],
    both_ways=True,
)

# Answers that are not mathematics: compared as text, never symbolically (times, ratios, words, sentences).
NON_MATH = _group(
    "own:non-math",
    [
        ("1:00", "1:00", True),
        ("01:00", "1:00", True),
        ("1:00", "12:00", False),
        ("1:00", "1", False),
        ("1:30", "1.5", False),
        ("3:15 PM", "3:15 \\text{ p.m.}", True),
        ("3:15 AM", "3:15 PM", False),
        ("3:15 \\text{ a.m.}", "3:15 \\text{ p.m.}", False),
        ("3:2", "3:2", True),
        ("3 : 2", "3:2", True),
        ("3:2", "2:3", False),
        ("6:4", "3:2", False),  # ratios are asked in simplest form
        ("3:2", "1.5", False),  # a ratio is not its quotient
        ("1:2:3", "1:2:3", True),
        ("1:2:3", "1:2", False),
        ("a:b", "3:2", False),
        ("\\text{yes}", "Yes", True),
        ("yes", "no", False),
        ("\\text{Monday}", "monday", True),
        ("Monday", "Tuesday", False),
        ("\\text{north}", "\\text{south}", False),
        ("\\text{The sequence diverges}", "\\text{converges}", False),
        ("It is impossible to determine the value", "5", False),
        ("2^{nd}", "2", False),
        ("3 to 2", "3:2", False),
        ("\\text{no solution}", "\\emptyset", False),
    ],
    both_ways=True,
)

# Boxed-extraction cases: `predicted` is a model output, graded through `grade()`.
OUTPUTS = [
    GraderCase(text, expected, equal, "own:outputs", is_output=True)
    for text, expected, equal in [
        ("So the answer is $\\boxed{18}$.", "18", True),
        ("We get \\boxed{17} first, then correct it: the answer is \\boxed{18}.", "18", True),
        ("We get \\boxed{18} first, then correct it: the answer is \\boxed{17}.", "18", False),
        ("Thus $x = \\boxed{\\frac{\\sqrt{3}}{3}}$.", "\\frac{\\sqrt{3}}{3}", True),
        ("The set is $\\boxed{\\{1, 2\\}}$", "\\{2,1\\}", True),
        ("Final: \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("Answer: \\boxed 5.", "5", True),
        ("Answer: \\fbox{42}", "42", True),
        ("No box at all, the answer is 42.", "42", True),
        ("Truncated \\boxed{\\frac{1}{2}", "\\frac{1}{2}", False),
        ("\\boxed{}", "0", False),
        # no box: the answer phrase, the last math span, the last number (extract.py)
        ("The answer is 9.", "9", True),
        ("The answer is 9.", "8", False),
        ("The final answer is $\\frac{1}{2}$.", "0.5", True),
        ("Final Answer: The final answer is 34. I hope it is correct.", "34", True),
        ("Final Answer: The final answer is 34. I hope it is correct. Note: earlier we had 35.", "35", False),
        ("**Answer:** 12", "12", True),
        ("**Answer:** 12", "21", False),
        ("The answer is 12 apples, since 4 + 8 = 12.", "12", True),
        ("So we need $x = 5$ and $y = 7$.", "7", True),
        ("So we need $x = 5$ and $y = 7$.", "5", False),  # the last span, not a middle one
        ("Therefore \\(\\frac{\\sqrt{3}}{2}\\)", "\\frac{\\sqrt3}{2}", True),
        ("Therefore \\[ 2\\sqrt{2} \\]", "\\sqrt{8}", True),
        ("The solution set is $x \\geq 5$.", "[5, \\infty)", True),
        ("The solution set is $x > 5$.", "[5, \\infty)", False),
        (
            "The rotation matrix is \\begin{pmatrix} 0 & -1 \\\\ 1 & 0 \\end{pmatrix}.",
            "\\begin{pmatrix}0&-1\\\\1&0\\end{pmatrix}",
            True,
        ),
        (
            "The rotation matrix is \\begin{pmatrix} 0 & 1 \\\\ -1 & 0 \\end{pmatrix}.",
            "\\begin{pmatrix}0&-1\\\\1&0\\end{pmatrix}",
            False,
        ),
        ("The answer is 5. Check: 5 + 3 = 8 and 8 > 7, so 5 works.", "5", True),
        ("The answer is 5. Check: 5 + 3 = 8 and 8 > 7, so 5 works.", "7", False),  # the phrase beats later numbers
        ("She has 3 apples left, so she pays 18 dollars in total.", "18", True),
        ("AZYUK2A", "2", False),
        ("$\\boxed{255}$ then. Final Answer: The final answer is $10,455$.", "10455", True),
        ("$\\boxed{255}$ then. Final Answer: The final answer is $10,455$.", "255", False),
        ("\\boxed{2}, \\boxed{3}", "\\{2, 3\\}", True),
        ("\\boxed{2} is wrong, so it must be \\boxed{3}", "2, 3", False),
        ("so $\\boxed{15\\frac{39}{40}}$ or $\\boxed{\\frac{639}{40}}$ inches.", "\\frac{639}{40}", True),
        ("so $\\boxed{15}$ or $\\boxed{16}$", "15", False),  # two different answers: a hedge
        ("The meeting starts at 1:00 PM.", "1:00", True),
        ("The answer is Monday.", "\\text{Monday}", True),
        ("The answer is Tuesday.", "\\text{Monday}", False),
        ("The answer is yes.", "\\text{Yes}", True),
        ("The answer is no.", "\\text{Yes}", False),
    ]
]

CASES: list[GraderCase] = (
    NEMO_SKILLS
    + HENDRYCKS
    + QWEN
    + MATH_VERIFY
    + INTEGERS
    + DECIMALS
    + FRACTIONS
    + MIXED_NUMBERS
    + PERCENTS
    + THOUSANDS
    + UNITS_AND_TEXT
    + DEGREES
    + RADICALS
    + PI_EXPRESSIONS
    + INTERVALS
    + TUPLES
    + SETS_AND_SOLUTIONS
    + MATRICES
    + EQUATIONS
    + POLYNOMIALS_AND_EXPRESSIONS
    + LATEX_VARIANTS
    + NEGATIVES_AND_SCIENTIFIC
    + COMPLEX_NUMBERS
    + CLEAR_NEGATIVES
    + MODEL_SPELLINGS
    + POLICY_TRAPS
    + NON_MATH
    + OUTPUTS
)


# ---------------------------------------------------------------------------------------------------------------
# MATH-500 expected answers against themselves and against their neighbour
# ---------------------------------------------------------------------------------------------------------------

# Problem i is paired with problem i + 1 for the must-be-incorrect cases. These neighbours have the same answer
# (checked by hand) and are skipped.
MATH500_SAME_ANSWER_PAIRS: frozenset[int] = frozenset({22, 186, 403})  # 5 vs x=5, 7 vs 7, 3 vs 3


def benchmarks_dir() -> Path:
    """$SKILLS_BENCHMARKS_DIR, else ../shared/data/benchmarks next to the repository."""
    configured = os.environ.get("SKILLS_BENCHMARKS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "benchmarks"


def load_expected_answers(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["expected_answer"] for line in handle if line.strip()]


def reformat_lightly(answer: str, variant: int) -> str:
    """A harmless rewrite a model might produce: same answer, different spelling."""
    if variant == 1:
        return answer.replace("\\frac", "\\dfrac")
    if variant == 2:
        return re.sub(r",(?!\\!|\})", ", ", answer)  # not inside the thousands separators `,\!` and `{,}`
    if variant == 3:
        return f" {answer} "
    return answer


def model_output(answer: str) -> str:
    return f"Putting the steps together, the final answer is $\\boxed{{{answer}}}$."


def math500_cases(data_dir: Path | None = None) -> list[GraderCase]:
    """Self pairs (equal) and neighbour pairs (not equal) for every MATH-500 answer; [] when the file is absent."""
    path = (data_dir or benchmarks_dir()) / "math500" / "test.jsonl"
    if not path.exists():
        return []
    answers = load_expected_answers(path)
    cases = []
    for index, answer in enumerate(answers):
        text = model_output(reformat_lightly(answer, index % 4))
        cases.append(GraderCase(text, answer, True, f"math500:self:{index}", is_output=True))
        neighbour = (index + 1) % len(answers)
        if index not in MATH500_SAME_ANSWER_PAIRS:
            other = model_output(reformat_lightly(answers[neighbour], index % 4))
            cases.append(GraderCase(other, answer, False, f"math500:other:{index}", is_output=True))
    return cases
