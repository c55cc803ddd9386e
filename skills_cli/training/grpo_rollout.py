"""Rollouts for GRPO: generation on every data-parallel rank, weight refit into the engine, and the padded
micro-batches (with per-token advantages and logprobs) that the policy trains on.

Generation is data-parallel: each DP rank generates `num_generations_per_prompt` samples for its share of the
step's prompts (whole groups, so advantages need no communication). Ranks that differ only by their
model-parallel coordinate (TP/PP peers) must train on the same rollouts, so after generating, rollouts are
exchanged and every rank keeps those of the lowest global rank of its DP index (GPU sampling need not be
bitwise reproducible across peers). Sampling seeds are a function of (run seed, step, DP rank), which makes a
resumed run sample what the uninterrupted one would have.

Refit: the policy streams its full HF-named weights to every rank's engine (`Policy.rollout_weights`), in
buckets, so no rank ever holds a second full copy. Tokens of a rollout are aligned with the trainer's labels: the label at position t is token t+1,
so the i-th response token of a sample whose prompt has P tokens sits at label position P - 1 + i.
"""

from __future__ import annotations

from dataclasses import dataclass

from skills_cli.training.batching import MicroBatch, padded_micro_batch
from skills_cli.training.data import SFTSample


@dataclass
class Rollout:
    """One sampled response to one prompt, with what the loss needs."""

    prompt_ids: tuple[int, ...]
    response_ids: list[int]
    generation_logprobs: list[float]
    truncated: bool  # stopped by max_new_tokens, not an end-of-sequence token
    expected_answer: str
    reward: float = 0.0
    advantage: float = 0.0
    prev_logprobs: list[float] | None = None  # trainer's logprobs before the update
    reference_logprobs: list[float] | None = None
    loss_multiplier: float = 1.0  # 0 when overlong filtering drops the sample

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def engine_sampling_params(generation_config, stop_token_ids, seed: int, greedy: bool = False):
    """The rollout engine's SamplingParams for training rollouts (or greedy validation decoding)."""
    from skills_cli.inference.engine import SamplingParams

    if greedy:
        return SamplingParams(max_new_tokens=generation_config.max_new_tokens, temperature=1.0, top_p=1.0, top_k=1,
                              stop_token_ids=tuple(stop_token_ids), seed=seed)  # fmt: skip
    return SamplingParams(max_new_tokens=generation_config.max_new_tokens, temperature=generation_config.temperature,
                          top_p=generation_config.top_p, top_k=generation_config.top_k or 0,
                          stop_token_ids=tuple(stop_token_ids), seed=seed)  # fmt: skip


def sample_seed(run_seed: int, step: int, dp_rank: int, validation: bool = False) -> int:
    return (run_seed * 1_000_003 + step * 10_007 + dp_rank * 101 + (7 if validation else 0)) % (2**31 - 1)


def share_across_model_parallel_peers(items: list, dp_rank: int, rank: int) -> list:
    """Every rank keeps the items of the lowest global rank with its DP index (identical for TP/PP peers)."""
    import torch.distributed as dist

    if dist.get_world_size() == 1:
        return items
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, (dp_rank, rank, items))
    owners = sorted((r, payload) for d, r, payload in gathered if d == dp_rank)
    return owners[0][1]


# ---- micro-batches ----------------------------------------------------------------------------------------------


def rollout_sample(rollout: Rollout) -> SFTSample:
    """Prompt + response as a training sample: the response tokens are the targets."""
    mask = [0] * len(rollout.prompt_ids) + [1] * len(rollout.response_ids)
    return SFTSample(list(rollout.prompt_ids) + list(rollout.response_ids), mask)


def _per_token(rollouts: list[Rollout], length: int, values_of) -> object:
    """(rows, length) float32 tensor with each rollout's per-response-token values at their label positions."""
    import torch

    out = torch.zeros((len(rollouts), length), dtype=torch.float32)
    for row, rollout in enumerate(rollouts):
        values = values_of(rollout)
        if values is None:
            continue
        start = len(rollout.prompt_ids) - 1
        out[row, start : start + len(values)] = torch.tensor(values, dtype=torch.float32)
    return out


def rollout_micro_batch(rollouts: list[Rollout], pad_id: int) -> MicroBatch:
    """A padded micro-batch of rollouts carrying the per-token tensors the GRPO loss reads (as attributes)."""
    batch = padded_micro_batch([rollout_sample(r) for r in rollouts], pad_id)
    length = batch.input_ids.shape[1]
    batch.advantages = _per_token(rollouts, length, lambda r: [r.advantage] * len(r.response_ids))
    batch.generation_logprobs = _per_token(rollouts, length, lambda r: r.generation_logprobs)
    batch.prev_logprobs = _per_token(rollouts, length, lambda r: r.prev_logprobs)
    batch.reference_logprobs = _per_token(rollouts, length, lambda r: r.reference_logprobs)
    batch.loss_mask = _per_token(rollouts, length, lambda r: [r.loss_multiplier] * len(r.response_ids))
    batch.seq_weight = _per_token(rollouts, length, lambda r: [1.0 / max(len(r.response_ids), 1)] * len(r.response_ids))
    return batch


def micro_batches(rollouts: list[Rollout], size: int, pad_id: int) -> list[MicroBatch]:
    return [rollout_micro_batch(rollouts[i : i + size], pad_id) for i in range(0, len(rollouts), size)]


def response_values(batch: MicroBatch, per_token, rollouts: list[Rollout]) -> list[list[float]]:
    """Per-rollout lists of a (rows, length) tensor's values at the response label positions."""
    values = per_token.detach().float().cpu()
    out = []
    for row, rollout in enumerate(rollouts):
        start = len(rollout.prompt_ids) - 1
        out.append(values[row, start : start + len(rollout.response_ids)].tolist())
    return out


def buckets(pairs, max_bytes: int = 1 << 30):
    """(name, tensor) pairs grouped into lists of at most ~`max_bytes` (one oversized tensor is its own bucket)."""
    bucket, size = [], 0
    for name, tensor in pairs:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket
