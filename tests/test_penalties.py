"""engine/penalties.py: vLLM's logit bias, repetition, frequency and presence penalties on a batch of rows,
checked against a hand-written per-token reference, and the SamplingParams fields that ask for them."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from skills_cli.common.errors import UserError  # noqa: E402
from skills_cli.inference.engine.params import SamplingParams  # noqa: E402
from skills_cli.inference.engine.penalties import apply_penalties, needs_penalties, token_counts  # noqa: E402

VOCAB = 12


def params(**penalties) -> SamplingParams:
    return SamplingParams(max_new_tokens=4, **penalties)


def reference_row(logits: list[float], prompt: list[int], output: list[int], p: SamplingParams) -> list[float]:
    """The definition, one token at a time: bias, then repetition on seen tokens, then frequency and presence."""
    row = list(logits)
    for token, bias in p.logit_bias:
        row[token] += bias
    for token in set(prompt) | set(output):
        row[token] = row[token] / p.repetition_penalty if row[token] > 0 else row[token] * p.repetition_penalty
    for token in set(output):
        row[token] -= p.frequency_penalty * output.count(token) + p.presence_penalty
    return row


def test_penalties_match_the_per_token_definition():
    torch.manual_seed(0)
    logits = torch.randn(4, VOCAB, dtype=torch.float64)
    prompts = [[1, 2, 2, 3], [4], [5, 6], [0, 7]]
    outputs = [[2, 2, 9, 9, 9], [], [6, 11, 11], [7]]
    rows = [
        params(repetition_penalty=1.7, frequency_penalty=0.5, presence_penalty=-0.3),
        params(presence_penalty=1.0),  # an empty output: nothing is penalised but the prompt's repetition (1)
        params(logit_bias=((3, 5.0), (11, -2.5)), frequency_penalty=2.0),
        params(repetition_penalty=0.5),  # below 1 rewards repeats
    ]
    expected = [reference_row(logits[i].tolist(), prompts[i], outputs[i], p) for i, p in enumerate(rows)]
    result = apply_penalties(logits.clone(), prompts, outputs, rows)
    assert torch.allclose(result, torch.tensor(expected, dtype=torch.float64))


def test_neutral_rows_are_left_untouched():
    logits = torch.randn(3, VOCAB)
    original = logits.clone()
    rows = [params(), params(frequency_penalty=1.0), params()]
    result = apply_penalties(logits, [[1], [1], [1]], [[2, 2], [2, 2], [2, 2]], rows)
    assert torch.equal(result[0], original[0]) and torch.equal(result[2], original[2])
    assert result[1, 2] == pytest.approx(original[1, 2].item() - 2.0)
    assert apply_penalties(original.clone(), [[1]] * 3, [[2]] * 3, [params()] * 3).equal(original)


def test_token_counts_ignore_padding():
    counts = token_counts([[3, 3, 1], []], VOCAB, torch.device("cpu"))
    assert counts.shape == (2, VOCAB) and counts[0, 3] == 2 and counts[0, 1] == 1 and counts[1].sum() == 0


def test_needs_penalties_and_validation():
    assert not needs_penalties(params())
    assert all(
        needs_penalties(params(**field))
        for field in ({"presence_penalty": 0.1}, {"frequency_penalty": -0.1}, {"repetition_penalty": 1.1},
                      {"logit_bias": ((0, 1.0),)})
    )  # fmt: skip
    for bad in ({"presence_penalty": 2.5}, {"frequency_penalty": float("nan")}, {"repetition_penalty": 0},
                {"logit_bias": ((-1, 1.0),)}, {"logit_bias": {1: 2.0}}):  # fmt: skip
        with pytest.raises(UserError):
            params(**bad)
