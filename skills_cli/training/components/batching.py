"""Micro-batches for one rank's share of a global batch: padded rows, or sequence packing.

Padded mode: `train_micro_batch_size` samples per micro-batch, right-padded to the longest, with a 2D padding
mask. Packing: samples are placed first-fit-decreasing into bins of `max_total_sequence_length` tokens and
`train_micro_batch_size` bins, each padded to the full bin length, form a micro-batch. A packed row must behave exactly like its sequences run
one by one, which takes two things:
  * position ids that restart at 0 for each sequence (RoPE sees the same positions as unpacked), and
  * attention kept inside each sequence. With varlen flash attention (`model.VARLEN_ATTENTION`, the GPU
    default) the rows are flattened into one and `cu_seq_lens_q/k` give each sequence's start, padded
    micro-batches included (each row's padding is a sequence of its own): no mask exists at all. With eager/SDPA
    attention (CPU) the row gets an explicit 4D block-diagonal causal mask, additive (0 / dtype-min) in the
    compute dtype, which transformers passes to the attention kernel as is. With transformers'
    flash-attention the rows are flattened and only the restarting position ids are passed (transformers then
    derives `cu_seqlens`).
Padding at the end of a packed row is its own segment, so no row of the mask is empty (an all-masked softmax
row would be NaN in SDPA) and no real token can see it.

Labels are shifted per sample before packing (`SFTSample.labels`), so a row never trains one sequence's last
token to predict the next sequence's first.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Any

from skills_cli.training.components.data import IGNORE_INDEX, SFTSample


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins whose total length is at most `capacity`: longest first, each into the first
    bin with room (ties keep input order, so packing is deterministic)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"a sequence of {length} tokens does not fit a bin of {capacity}")
        for slot, free in enumerate(room):
            if length <= free:
                bins[slot].append(index)
                room[slot] -= length
                break
        else:
            bins.append([index])
            room.append(capacity - length)
    return bins


def shard_for_rank(items: list, dp_rank: int, dp_size: int) -> list:
    """This rank's contiguous share of `items`: exactly 1/dp_size of a global batch (whose size
    check_parallel_layout checks divisible), sizes differing by at most one otherwise (validation sets)."""
    return items[dp_rank * len(items) // dp_size : (dp_rank + 1) * len(items) // dp_size]


@dataclass
class MicroBatch:
    """Tensors of one forward/backward pass. `segment_ids` is set for packed rows, `attention_mask` for padded."""

    input_ids: Any  # (rows, length) int64
    labels: Any  # (rows, length) int64, IGNORE_INDEX where no loss
    position_ids: Any  # (rows, length) int64
    attention_mask: Any | None = None  # (rows, length) 1 = real token
    segment_ids: Any | None = None  # (rows, length) which sequence of the row a token belongs to
    num_tokens: int = 0  # real (non-pad) tokens, for throughput and MFU
    row_tokens: Any | None = None  # (rows,) int64 real tokens at the start of each packed row (the rest is padding)
    # varlen attention only: leave padding out of the flattened stream (`_varlen_inputs`); for losses that see
    # only logits and labels (SFT), not for per-token tensors laid out by (row, position) (GRPO's)
    drop_padding: bool = False
    # the loss reads logits only where a label is (DPO's sequence log-probabilities): on the varlen path a model
    # that may (`model_inputs(select_logits=True)`) computes those positions alone (HF's `logits_to_keep`), the
    # labels cut to match; the lm_head and the vocabulary-wide log-softmax skip every prompt token
    logits_at_targets: bool = False

    @property
    def num_valid_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def real_token_mask(self):
        """(rows, length) bool: True for real tokens, False for padding."""
        import torch

        if self.attention_mask is not None:
            return self.attention_mask.bool()
        rows, length = self.input_ids.shape
        if self.row_tokens is None:
            return torch.ones((rows, length), dtype=torch.bool)
        return torch.arange(length)[None, :] < self.row_tokens[:, None]

    def model_inputs(self, attn_implementation: str, dtype, device, select_logits: bool = False) -> tuple[dict, Any]:
        """Keyword arguments for the HF model, and the labels, on `device`. `select_logits`: the caller's model
        takes `logits_to_keep` (an HF model without sequence parallelism), for `logits_at_targets`."""
        from skills_cli.training.components.model import VARLEN_ATTENTION

        if attn_implementation == VARLEN_ATTENTION:
            return self._varlen_inputs(device, select_logits and self.logits_at_targets)
        if self.segment_ids is None:
            inputs = _to({"input_ids": self.input_ids, "attention_mask": self.attention_mask,
                          "position_ids": self.position_ids, "labels": self.labels}, device)  # fmt: skip
            return inputs, inputs.pop("labels")
        if attn_implementation.startswith("flash_attention"):
            # one flat row: the varlen kernel finds sequence starts where position ids restart
            inputs = _to({"input_ids": self.input_ids.reshape(1, -1), "position_ids": self.position_ids.reshape(1, -1),
                          "labels": self.labels.reshape(1, -1)}, device)  # fmt: skip
            return inputs, inputs.pop("labels")
        inputs = _to({"input_ids": self.input_ids, "position_ids": self.position_ids,
                      "segment_ids": self.segment_ids, "labels": self.labels}, device)  # fmt: skip
        mask = block_causal_mask(inputs.pop("segment_ids"), dtype)
        labels = inputs.pop("labels")
        return {**inputs, "attention_mask": mask}, labels

    def _varlen_inputs(self, device, at_targets: bool = False) -> tuple[dict, Any]:
        """One flattened row and the sequence offsets (`cu_seq_lens_q/k`, int32) for varlen flash attention.

        `max_length_q/k` is the row length, an upper bound of every sequence's length that only sizes the
        kernel's grid; it is the same for every packed micro-batch, so it costs no host sync and no recompile.

        With `drop_padding` the stream holds the real tokens only: every projection, MLP and logit of a padding
        token is work for nothing (~2% of a packed 4096-token row on typical SFT data, up to half of a padded
        micro-batch). The token count then differs between micro-batches; the compiled layers treat it as a
        dynamic dimension (`parallel._token_dims_dynamic`)."""
        import torch

        rows, length = self.input_ids.shape
        segments = self.segment_ids if self.segment_ids is not None else (1 - self.attention_mask)
        # a sequence starts at each row start and wherever the segment id changes inside a row
        starts = torch.ones((rows, length), dtype=torch.bool)
        starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
        ids, positions, labels = (t.reshape(-1) for t in (self.input_ids, self.position_ids, self.labels))
        starts = starts.reshape(-1)
        if self.drop_padding:
            # each row starts with a real token, so every real sequence keeps its start and padding has none
            keep = self.real_token_mask().reshape(-1)
            ids, positions, labels, starts = ids[keep], positions[keep], labels[keep], starts[keep]
        offsets = torch.nonzero(starts, as_tuple=True)[0]
        cu_seqlens = torch.cat([offsets, torch.tensor([ids.shape[0]])]).to(torch.int32)
        inputs = {"input_ids": ids[None], "position_ids": positions[None],
                  "cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens}  # fmt: skip
        labels = labels[None]
        if at_targets:  # logits at the labelled positions only, in stream order (`per_sequence_sums` maps them)
            targets = torch.nonzero(labels[0] != IGNORE_INDEX, as_tuple=True)[0]
            inputs["logits_to_keep"], labels = targets, labels[:, targets]
        moved = _to({**inputs, "labels": labels}, device)
        labels = moved.pop("labels")
        return {**moved, "max_length_q": length, "max_length_k": length}, labels


def _to(tensors: dict, device) -> dict:
    return dict(zip(tensors, to_device(device, *tensors.values()), strict=True))


def in_labels_layout(labels, device, *tensors) -> tuple:
    """A micro-batch's per-token host tensors (reference log-probs, advantages, the loss mask, ...) in the layout
    the loss sees the labels in ((rows, length), or flattened), on `device`, copied without waiting (to_device)."""
    return to_device(device, *(tensor.reshape(labels.shape) for tensor in tensors))


def to_device(device, *tensors) -> tuple:
    """Host-to-device copies that do not wait for the GPU: from pinned memory, asynchronously (a pageable copy
    would first drain the GPU's queue, idling it while the next micro-batch is prepared). Tensors already on
    the GPU are moved (if at all) by `.to`, which returns a tensor already on `device` as it is."""
    if getattr(device, "type", device) != "cuda":
        return tuple(tensor.to(device) for tensor in tensors)
    return tuple((tensor if tensor.is_cuda else tensor.pin_memory()).to(device, non_blocking=True)
                 for tensor in tensors)  # fmt: skip


def block_causal_mask(segment_ids, dtype):
    """(rows, 1, L, L) additive mask: 0 where query i may attend key j (same segment, j <= i), dtype-min elsewhere."""
    import torch

    length = segment_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    allowed = (same_segment & causal)[:, None, :, :]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def flat_ids_and_labels(samples: list[SFTSample]):
    """The samples' token ids concatenated, and their labels (`SFTSample.labels`, shifted per sample), as int64
    tensors: two list-to-tensor conversions and a few vectorised operations for the lot (building them sample
    by sample in Python took ~70 ms for a 157k-token global batch, time the GPU sat idle at each step start)."""
    import numpy as np
    import torch

    count = sum(len(s) for s in samples)
    # numpy reads an iterator of ints ~3x faster than torch.tensor reads a list
    ids = torch.from_numpy(np.fromiter(chain.from_iterable(s.input_ids for s in samples), np.int64, count))
    targets = torch.from_numpy(np.fromiter(chain.from_iterable(s.loss_mask for s in samples), np.int64, count)) != 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:-1] = torch.where(targets[1:], ids[1:], IGNORE_INDEX)
    labels[torch.tensor([len(s) for s in samples]).cumsum(0) - 1] = IGNORE_INDEX  # a sample's last token
    return ids, labels


def padded_micro_batch(samples: list[SFTSample], pad_id: int) -> MicroBatch:
    import torch

    length = max(len(s) for s in samples)
    lengths = torch.tensor([len(s) for s in samples])
    attention = (torch.arange(length)[None, :] < lengths[:, None]).long()
    real = attention.bool()
    flat_ids, flat_labels = flat_ids_and_labels(samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long).masked_scatter_(real, flat_ids)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long).masked_scatter_(real, flat_labels)
    positions = torch.arange(length).expand(len(samples), length).contiguous()
    return MicroBatch(ids, labels, positions, attention_mask=attention, num_tokens=int(lengths.sum()))


def packed_micro_batch(rows: list[list[SFTSample]], pad_id: int, length: int) -> MicroBatch:
    """Each row is the concatenation of its samples, right-padded to `length` tokens. Built for the whole
    micro-batch at once (one stream of its samples scattered into the rows' real places): row by row it took
    ~3.9 ms a micro-batch of 16 rows of 1024 tokens on a 2-core host (now ~1.7), GPU idle time at every step's
    start."""
    import torch

    samples = [sample for row in rows for sample in row]
    lengths = torch.tensor([len(sample) for sample in samples], dtype=torch.long)
    per_row = torch.tensor([len(row) for row in rows], dtype=torch.long)
    row_of = torch.repeat_interleave(torch.arange(len(rows)), per_row)  # each sample's row
    row_tokens = torch.zeros(len(rows), dtype=torch.long).index_add_(0, row_of, lengths)
    columns = torch.arange(length)[None, :]
    real = columns < row_tokens[:, None]
    flat_ids, flat_labels = flat_ids_and_labels(samples)
    sample_starts = lengths.cumsum(0) - lengths
    # a sample's segment is its place in its row; a row's padding is a segment of its own
    place_in_row = torch.arange(len(samples)) - (per_row.cumsum(0) - per_row)[row_of]
    flat_positions = torch.arange(len(flat_ids)) - torch.repeat_interleave(sample_starts, lengths)

    def scatter(fill: int, flat):
        return torch.full((len(rows), length), fill, dtype=torch.long).masked_scatter_(real, flat)

    positions = torch.where(real, scatter(0, flat_positions), columns - row_tokens[:, None])
    return MicroBatch(scatter(pad_id, flat_ids), scatter(IGNORE_INDEX, flat_labels), positions,
                      segment_ids=scatter(int(per_row.max()), torch.repeat_interleave(place_in_row, lengths)),
                      num_tokens=int(row_tokens.sum()), row_tokens=row_tokens)  # fmt: skip


def packed_rows(items: list, lengths: list[int], capacity: int) -> list[list]:
    """`items` grouped into rows of at most `capacity` tokens (first-fit-decreasing), each row in input order."""
    return [[items[i] for i in sorted(bin_)] for bin_ in first_fit_decreasing(lengths, capacity)]


def make_micro_batches(samples: list[SFTSample], micro_batch_size: int, pad_id: int,
                       pack_capacity: int | None = None) -> list[MicroBatch]:  # fmt: skip
    """Micro-batches of `micro_batch_size` samples (padded) or of `micro_batch_size` packed rows of at most
    `pack_capacity` tokens each (packing). Their losses see logits and labels only, so varlen attention may leave
    the padding out (`MicroBatch.drop_padding`)."""
    if pack_capacity is None:
        batches = [padded_micro_batch(samples[i : i + micro_batch_size], pad_id)
                   for i in range(0, len(samples), micro_batch_size)]  # fmt: skip
    else:
        rows = packed_rows(samples, [len(s) for s in samples], pack_capacity)
        # Every packed micro-batch has the same (rows x capacity) layout: the masked (SDPA/eager) paths and
        # cuDNN attention reuse one shape; varlen attention drops the padding anyway
        batches = [packed_micro_batch(rows[i : i + micro_batch_size], pad_id, pack_capacity)
                   for i in range(0, len(rows), micro_batch_size)]  # fmt: skip
    for batch in batches:
        batch.drop_padding = True
    return batches


class PrefetchedBatches:
    """The next step's micro-batches, built while the device still runs this step's weight update (the host is
    free then) instead of at the next step's start with the device idle. Kept under the sample indices they were
    built from: a step that draws other samples builds its own."""

    def __init__(self) -> None:
        self._kept: tuple[list[int], list] | None = None

    def keep(self, indices: list[int], batches: list) -> None:
        self._kept = (list(indices), batches)

    def take(self, indices: list[int]) -> list | None:
        """The batches kept for exactly `indices` (None otherwise); either way nothing stays kept."""
        kept, self._kept = self._kept, None
        return kept[1] if kept is not None and kept[0] == list(indices) else None


def dummy_micro_batch(pad_id: int) -> MicroBatch:
    """One pad token with no loss: lets a rank with fewer micro-batches join the others' collectives."""
    batch = padded_micro_batch([SFTSample([pad_id], [0])], pad_id)
    batch.num_tokens = 0
    return batch
