"""The fused per-token log-probabilities (training/components/logprobs.py) against the textbook log-softmax: values
and gradients, with temperature, ignored positions, row chunks and a low-precision dtype."""

from __future__ import annotations

import pytest
import torch

from skills_cli.training.components.data import IGNORE_INDEX
from skills_cli.training.components.logprobs import token_logprobs


def textbook(logits, labels, temperature):
    logprobs = (logits.float() / temperature).log_softmax(-1)
    valid = labels != IGNORE_INDEX
    picked = logprobs.gather(-1, torch.where(valid, labels, 0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, picked, torch.zeros_like(picked))


def case(rows=3, length=7, vocab=50, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, length, vocab, generator=generator) * 3
    labels = torch.randint(0, vocab, (rows, length), generator=generator)
    labels[0, :2] = IGNORE_INDEX
    labels[2, -1] = IGNORE_INDEX
    weights = torch.randn(rows, length, generator=generator)
    return logits, labels, weights


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_values_and_gradients_equal_the_textbook_ones(temperature):
    logits, labels, weights = case()
    ours_in = logits.clone().requires_grad_(True)
    ref_in = logits.clone().requires_grad_(True)
    ours = token_logprobs(ours_in, labels, temperature)
    ref = textbook(ref_in, labels, temperature)
    assert ours.shape == labels.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.all(ours[labels == IGNORE_INDEX] == 0)
    (ours * weights).sum().backward()
    (ref * weights).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-5, atol=1e-6)
    assert torch.all(ours_in.grad[labels == IGNORE_INDEX] == 0)


def test_row_chunks_change_nothing(monkeypatch):
    logits, labels, weights = case(rows=4, length=9)
    results = []
    for chunk in (1024, 5):  # one chunk, then several with a ragged last one
        monkeypatch.setattr("skills_cli.training.components.logprobs.EAGER_CHUNK_ROWS", chunk)
        leaf = logits.clone().requires_grad_(True)
        values = token_logprobs(leaf, labels, 0.9)
        (values * weights).sum().backward()
        results.append((values.detach(), leaf.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_bfloat16_logits_get_a_bfloat16_gradient_close_to_the_fp32_one():
    logits, labels, weights = case(vocab=300)
    low = logits.to(torch.bfloat16).requires_grad_(True)
    (token_logprobs(low, labels) * weights).sum().backward()
    assert low.grad.dtype == torch.bfloat16
    exact = low.detach().float().requires_grad_(True)
    (textbook(exact, labels, 1.0) * weights).sum().backward()
    torch.testing.assert_close(low.grad.float(), exact.grad, rtol=2e-2, atol=2e-3)


def test_without_grad_it_returns_the_values_only():
    logits, labels, _ = case()
    with torch.no_grad():
        values = token_logprobs(logits.requires_grad_(True), labels)
    assert not values.requires_grad
    torch.testing.assert_close(values, textbook(logits.detach(), labels, 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled kernels run on CUDA only")
def test_the_compiled_cuda_kernels_match_the_textbook_ones():
    logits, labels, weights = case(rows=4, length=33, vocab=1000)
    for rows in (4, 3):  # a second token count: the kernels must not be specialised on the first
        fast = logits[:rows].cuda().to(torch.bfloat16).requires_grad_(True)
        exact = fast.detach().float().requires_grad_(True)
        cut_labels, cut_weights = labels[:rows].cuda(), weights[:rows].cuda()
        values = token_logprobs(fast, cut_labels, 0.8)
        torch.testing.assert_close(values, textbook(exact, cut_labels, 0.8), rtol=1e-4, atol=1e-4)
        (values * cut_weights).sum().backward()
        (textbook(exact, cut_labels, 0.8) * cut_weights).sum().backward()
        torch.testing.assert_close(fast.grad.float(), exact.grad, rtol=2e-2, atol=2e-3)
