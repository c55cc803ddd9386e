"""Meta-device init of the dtensor policy: parameters cost nothing until sharded, buffers (RoPE tables) are
real, and the sharded model holds exactly the checkpoint's weights."""

from __future__ import annotations

import pytest
from test_sft_support import tiny_model

torch = pytest.importorskip("torch")


def test_empty_model_has_meta_parameters_and_real_buffers():
    from skills_cli.training.components.meta_init import empty_model
    from skills_cli.training.components.model import load_model

    empty, loaded = empty_model(tiny_model("qwen2")), load_model(tiny_model("qwen2"))
    assert all(p.device.type == "meta" for p in empty.parameters())
    buffers = dict(loaded.named_buffers())
    assert buffers and all(b.device.type == "cpu" for b in empty.buffers())
    for name, buffer in empty.named_buffers():
        assert torch.equal(buffer, buffers[name]), name  # e.g. rotary inv_freq, computed by the constructor
    assert [n for n, _ in empty.named_parameters()] == [n for n, _ in loaded.named_parameters()]


def test_policy_built_from_meta_holds_the_checkpoint_weights():
    from skills_cli.common.overrides import load_config
    from skills_cli.training.components.model import load_model
    from skills_cli.training.components.parallel import distributed_session
    from skills_cli.training.config import PolicyConfig
    from skills_cli.training.policy import build_policy

    config = load_config(PolicyConfig, [f"++model_name={tiny_model('qwen2')}"], where="policy")
    with distributed_session() as dist:
        policy = build_policy(config, dist, total_steps=1)
        state = policy.full_hf_state_dict()
    expected = load_model(tiny_model("qwen2")).state_dict()
    assert set(state) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name
