"""The scalar head (critics and reward models): a per-token score through the policy, an export that plain HF
loads as a sequence-classification model scoring exactly as the policy did, and a stable start for resumes."""

from __future__ import annotations

import pytest
from test_sft_support import tiny_model

from skills_cli.training.components.heads import from_pretrained, is_scalar_model, scalar_architecture


@pytest.fixture(scope="module")
def trained_scalar(tmp_path_factory):
    """One optimizer step of a scalar policy started from a causal LM, exported: (export dir, scores by the policy
    of each row's tokens, the rows)."""
    import torch

    from skills_cli.training.components.batching import padded_micro_batch
    from skills_cli.training.components.data import SFTSample
    from skills_cli.training.components.parallel import distributed_session
    from skills_cli.training.config import PolicyConfig
    from skills_cli.training.policy import build_policy

    rows = [[5, 6, 7, 8, 9], [10, 11, 12]]
    batch = padded_micro_batch([SFTSample(r, [1] * len(r)) for r in rows], pad_id=0)
    seen = []

    def push_scores_up(logits, labels, _batch):
        assert logits.shape == (*labels.shape, 1)  # a score per token
        seen.append(logits.detach()[..., 0].clone())
        loss = -logits[..., 0].mean()
        return loss, {"loss": loss.detach()}

    with distributed_session() as dist:
        policy = build_policy(PolicyConfig(model_name=tiny_model(), precision="float32"), dist, 5, head="scalar")
        policy.forward_backward([batch], push_scores_up, train=True)
        policy.optimizer_step(1.0)
        policy.eval()
        policy.forward_backward([batch], push_scores_up, train=False)
        export = policy.export_hf(tmp_path_factory.mktemp("rm") / "final_hf", tiny_model())
    assert torch.count_nonzero(seen[0]) == 0, "a head started from a causal LM scores 0 everywhere"
    return export, seen[1], rows


def test_the_export_is_a_sequence_classification_model_scoring_like_the_policy(trained_scalar):
    import torch
    from transformers import AutoModelForSequenceClassification

    export, scores, rows = trained_scalar
    assert is_scalar_model(str(export)) and not is_scalar_model(tiny_model())
    model = AutoModelForSequenceClassification.from_pretrained(export).eval()
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    with torch.no_grad():
        for index, row in enumerate(rows):
            pooled = model(torch.tensor([row])).logits[0, 0]
            # HF reads the score at the last token: the policy's score there, after its training step
            assert float(pooled) == pytest.approx(float(scores[index, len(row) - 1]), abs=1e-5)
            assert float(pooled) != 0.0


def test_loading_a_trained_head_keeps_it_and_a_causal_lm_starts_at_zero(trained_scalar):
    import torch

    export, _, _ = trained_scalar
    fresh = from_pretrained(tiny_model(), "scalar", dtype=torch.float32)
    assert torch.count_nonzero(fresh.score.weight) == 0  # the same start on every load: resumes fingerprint it
    trained = from_pretrained(str(export), "scalar", dtype=torch.float32)
    assert torch.count_nonzero(trained.score.weight) > 0
    out = trained(input_ids=torch.tensor([[5, 6, 7]]))
    assert out.logits.shape == (1, 3, 1)


def test_architecture_names():
    from types import SimpleNamespace

    assert scalar_architecture(SimpleNamespace(architectures=["Qwen2ForCausalLM"])) == "Qwen2ForSequenceClassification"
    assert scalar_architecture(SimpleNamespace(architectures=["LlamaForSequenceClassification"])) == (
        "LlamaForSequenceClassification")  # fmt: skip
