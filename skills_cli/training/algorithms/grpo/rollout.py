"""Rollouts for GRPO: generation on every data-parallel rank, weight refit into the engine, and the micro-batches
(with per-token advantages and logprobs) that the policy trains on: padded (one rollout per row), or packed
(`policy.sequence_packing.enabled`: rollouts placed first-fit-decreasing into rows of
`max_total_sequence_length` tokens, positions restarting and attention kept inside each rollout, exactly as
SFT packs samples; GRPO's prompt + response rows are short, so packing turns dozens of mostly-padding passes
into a few full ones).

Generation is data-parallel: each DP rank generates `num_generations_per_prompt` samples for its share of the
step's prompts (whole groups, so advantages need no communication). Ranks that differ only by their
model-parallel coordinate (TP/PP peers) must train on the same rollouts, so after generating, rollouts are
exchanged and every rank keeps those of the lowest global rank of its DP index (GPU sampling need not be
bitwise reproducible across peers). Sampling seeds are a function of (run seed, step, DP rank), which makes a
resumed run sample what the uninterrupted one would have.

Refit: the policy streams its full HF-named weights to every rank's engine (`Policy.rollout_weights`), in
buckets, so no rank ever holds a second full copy. Tokens of a rollout are aligned with the trainer's labels: the label at position t is token t+1,
so the i-th response token of a sample whose prompt has P tokens, placed at offset o of its row, sits at label
position o + P - 1 + i.
"""

from __future__ import annotations

from dataclasses import dataclass

from skills_cli.training.components.batching import MicroBatch, packed_micro_batch, packed_rows, padded_micro_batch
from skills_cli.training.components.data import SFTSample


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
    # per response token, when the advantage varies along the response (PPO's GAE); else `advantage` everywhere
    token_advantages: list[float] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def engine_sampling_params(generation_config, stop_token_ids, seed: int, greedy: bool = False):
    """The rollout engine's SamplingParams for training rollouts (or greedy validation decoding)."""
    from skills_cli.inference.engine import SamplingParams

    if greedy:
        return SamplingParams(max_new_tokens=generation_config.max_new_tokens, temperature=1.0, top_p=1.0, top_k=1,
                              stop_token_ids=tuple(stop_token_ids), seed=seed)  # fmt: skip
    ignore_eos = generation_config.ignore_eos  # then the stop ids (the EOS ids) must not stop it either
    return SamplingParams(max_new_tokens=generation_config.max_new_tokens, temperature=generation_config.temperature,
                          top_p=generation_config.top_p, top_k=generation_config.top_k or 0,
                          stop_token_ids=() if ignore_eos else tuple(stop_token_ids), seed=seed,
                          ignore_eos=ignore_eos)  # fmt: skip


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


def _first_response_label(rollout: Rollout, offset: int) -> int:
    """Label position of the first response token of a rollout that starts at `offset` of its row."""
    return offset + len(rollout.prompt_ids) - 1


def per_token_tensor(rollouts: list[Rollout], placements: list[tuple[int, int]], shape, values_of) -> object:
    """(rows, length) float32 tensor with each rollout's per-response-token values at their label positions;
    rollout i starts at (row, offset) = placements[i]."""
    import torch

    out = torch.zeros(tuple(shape), dtype=torch.float32)
    for rollout, (row, offset) in zip(rollouts, placements, strict=True):
        values = values_of(rollout)
        if values is None:
            continue
        start = _first_response_label(rollout, offset)
        out[row, start : start + len(values)] = torch.tensor(values, dtype=torch.float32)
    return out


def _attach_rollout_tensors(
    batch: MicroBatch, rollouts: list[Rollout], placements: list[tuple[int, int]]
) -> MicroBatch:
    """The per-token tensors the GRPO loss reads, as attributes of `batch`, in its (rows, length) layout.

    The policy may hand the loss flattened labels (varlen attention flattens every micro-batch into one row):
    the loss reshapes these to `labels.shape`, which keeps the token order."""
    shape = batch.input_ids.shape
    batch.rollouts, batch.placements = list(rollouts), list(placements)
    batch.advantages = per_token_tensor(rollouts, placements, shape,
                                  lambda r: r.token_advantages or [r.advantage] * len(r.response_ids))  # fmt: skip
    batch.generation_logprobs = per_token_tensor(rollouts, placements, shape, lambda r: r.generation_logprobs)
    batch.prev_logprobs = per_token_tensor(rollouts, placements, shape, lambda r: r.prev_logprobs)
    batch.reference_logprobs = per_token_tensor(rollouts, placements, shape, lambda r: r.reference_logprobs)
    batch.loss_mask = per_token_tensor(rollouts, placements, shape, lambda r: [r.loss_multiplier] * len(r.response_ids))
    batch.seq_weight = per_token_tensor(rollouts, placements, shape,
                                  lambda r: [1.0 / max(len(r.response_ids), 1)] * len(r.response_ids))  # fmt: skip
    return batch


def rollout_micro_batch(rollouts: list[Rollout], pad_id: int) -> MicroBatch:
    """A padded micro-batch of rollouts, one per row, carrying the per-token tensors the GRPO loss reads."""
    batch = padded_micro_batch([rollout_sample(r) for r in rollouts], pad_id)
    return _attach_rollout_tensors(batch, rollouts, [(row, 0) for row in range(len(rollouts))])


def packed_rollout_micro_batch(rows: list[list[Rollout]], pad_id: int, length: int) -> MicroBatch:
    """Rows of several rollouts each (restarting positions, attention kept inside each rollout), padded to
    `length` tokens, carrying the per-token tensors the GRPO loss reads."""
    batch = packed_micro_batch([[rollout_sample(r) for r in row] for row in rows], pad_id, length)
    rollouts, placements = [], []
    for index, row in enumerate(rows):
        offset = 0
        for rollout in row:
            rollouts.append(rollout)
            placements.append((index, offset))
            offset += rollout.num_tokens
    return _attach_rollout_tensors(batch, rollouts, placements)


def micro_batches(
    rollouts: list[Rollout], size: int, pad_id: int, pack_capacity: int | None = None
) -> list[MicroBatch]:
    """`size` rollouts per padded micro-batch or, with `pack_capacity`, `size` rows of up to `pack_capacity`
    tokens, each holding as many rollouts as first-fit-decreasing puts in it (`policy.sequence_packing`: for
    short responses, far fewer and fuller forward passes). Each batch's `rollouts` lists the rollouts it holds."""
    if pack_capacity is None:
        return [rollout_micro_batch(rollouts[i : i + size], pad_id) for i in range(0, len(rollouts), size)]
    rows = packed_rows(rollouts, [r.num_tokens for r in rollouts], pack_capacity)
    return [packed_rollout_micro_batch(rows[i : i + size], pad_id, pack_capacity) for i in range(0, len(rows), size)]


def response_values(batch: MicroBatch, per_token) -> list[list[float]]:
    """Per-rollout lists (in `batch.rollouts` order) of a per-token tensor's values at the response label
    positions; `per_token` is in the batch's (rows, length) layout or flattened."""
    values = per_token.detach().float().cpu().reshape(batch.input_ids.shape)
    out = []
    for rollout, (row, offset) in zip(batch.rollouts, batch.placements, strict=True):
        start = _first_response_label(rollout, offset)
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
