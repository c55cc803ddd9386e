"""MFU accounting of the trainers: 6 x parameters per token plus causal attention per sequence, by hand."""

from __future__ import annotations

import pytest

from skills_cli.training.components.metrics import attention_flops_per_squared_token, model_flops_utilization


def test_attention_coefficient_of_a_qwen2_shape():
    from transformers import Qwen2Config

    config = Qwen2Config(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2)
    # QK^T and PV: 2 x 2 x s^2 x (heads x head_dim) FLOPs a layer over the full square, half of it causal, x3 with
    # backward: 6 x layers x 896 x s^2
    assert attention_flops_per_squared_token(config) == 6 * 24 * 896


def test_explicit_head_dim_is_used():
    from transformers import Qwen3Config

    config = Qwen3Config(hidden_size=1024, num_hidden_layers=2, num_attention_heads=16, head_dim=128)
    assert attention_flops_per_squared_token(config) == 6 * 2 * 16 * 128


def test_mfu_adds_attention_to_the_6n_rule():
    params, tokens_per_s, peak = 494_032_768, 100_000.0, 989e12
    six_n = model_flops_utilization(params, tokens_per_s, peak)
    assert six_n == pytest.approx(6 * params * tokens_per_s / peak)
    # two sequences of 1000 and 3000 tokens a second: attention adds c x (1000^2 + 3000^2) FLOP/s
    attention = 6 * 24 * 896 * (1000**2 + 3000**2)
    assert model_flops_utilization(params, tokens_per_s, peak, attention) == pytest.approx(six_n + attention / peak)
    assert model_flops_utilization(params, tokens_per_s, None, attention) is None
