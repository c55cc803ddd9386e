"""Preference pairs (DPO, reward models): JSONL rows -> tokenized chosen / rejected sequences, and micro-batches
that keep both sequences of a pair together.

A row has a prompt and two completions (key names in `PreferenceDataConfig`, NeMo-RL's `BinaryPreferenceDataset`
ones by default):

    {"prompt": "What is 2*3?", "chosen": "2*3 = 6. \\\\boxed{6}", "rejected": "\\\\boxed{5}"}
    {"prompt": [{"role": "system", ...}, {"role": "user", ...}],
     "chosen": [{"role": "assistant", "content": ...}], "rejected": [{"role": "assistant", "content": ...}]}

`prompt` is a string (one user message) or a list of chat messages; `chosen` / `rejected` a string (the
assistant's reply) or a list of messages (the completion's turns). Each side is rendered as one conversation,
prompt + completion, with the tokenizer's chat template exactly as SFT renders it (`data.tokenize_conversation`):
the prompt and the assistant header (the generation prompt) carry no loss, the assistant's content and its end
token do. A sequence is an `SFTSample` whose `loss_mask` marks those completion tokens.

Dropped, counted and reported (`PreferenceDataset`): pairs whose chosen and rejected render to the same tokens
(nothing to prefer; every pair dropped is an error) and pairs with a side longer than
`policy.max_total_sequence_length`. A missing key or a value of the wrong type is an error naming the row.

Micro-batches (`pair_micro_batches`) are the SFT ones (`batching.py`: padded, or packed with restarting positions
and attention kept inside each sequence) with the two sequences of every pair in the same micro-batch, because
a pair's loss needs both. Sequence `2 j` of a micro-batch is the chosen side of its j-th pair (`batch.pairs[j]`),
`2 j + 1` the rejected one. What the losses read:
  * `per_sequence_sums(batch, per_token)`: (pairs, 2) sums of a per-token tensor over each sequence (a DPO
    log-probability: the token log-probabilities are 0 off the completion);
  * `batch.num_completion_tokens`: (pairs, 2) completion tokens per sequence (length-normalized variants);
  * `last_token_values(batch, per_token)`: (pairs, 2) the value at each sequence's last token that is not the pad
    id, where HF's `AutoModelForSequenceClassification` reads its score (a reward model's score).
Per-token tensors may come in the micro-batch's (rows, length) layout or flattened, and on the policy's varlen
path without the padding (`drop_padding`: a padding token's projections, MLP and logits are work for nothing,
a third of a step when 724-token sequences fill 1024-token rows one each): then they hold the real tokens
(`MicroBatch.real_token_mask`) in order, which are exactly the positions of the pairs' sequences.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.training.components.batching import MicroBatch, packed_micro_batch, padded_micro_batch, to_device
from skills_cli.training.components.data import IGNORE_INDEX, SFTSample, numbered_rows, tokenize_conversation

log = logging.getLogger("skills_cli.training")

CHOSEN, REJECTED = 0, 1  # a pair's sides, in this order in every (pairs, 2) tensor


@dataclass(frozen=True)
class PreferenceDataConfig:
    """Preference JSONL (`data.*` of `ns train dpo` and `ns train rm`)."""

    train_data: str = ""
    val_data: str | None = None
    prompt_key: str = "prompt"
    chosen_key: str = "chosen"
    rejected_key: str = "rejected"


@dataclass(frozen=True)
class PreferencePair:
    """One usable row: both sides tokenized as prompt + completion (loss mask on the completion)."""

    chosen: SFTSample
    rejected: SFTSample
    index: int  # position in `PreferenceDataset.pairs` (keys per-pair state such as reference log-probabilities)
    line: int  # line number in the file
    margin: float = 0.0  # the row's margin column (reward models' `data.margin_key`), else 0

    def __len__(self) -> int:
        return len(self.chosen) + len(self.rejected)

    def side(self, which: int) -> SFTSample:
        return self.rejected if which == REJECTED else self.chosen


@dataclass(frozen=True)
class PreferenceDataset:
    pairs: list[PreferencePair]
    num_rows: int
    num_identical_pairs_dropped: int
    num_overlong_pairs_dropped: int
    path: str

    def summary(self, prefix: str = "") -> dict:
        """The counts for a run summary (`num_train_pairs`, `num_identical_pairs_dropped`, ...)."""
        return {f"num_{prefix}pairs": len(self.pairs), f"num_{prefix}identical_pairs_dropped":
                self.num_identical_pairs_dropped, f"num_{prefix}overlong_pairs_dropped": self.num_overlong_pairs_dropped}  # fmt: skip


# ---- rows -> pairs ----------------------------------------------------------------------------------------------


def _messages(value: Any, key: str, where: str, default_role: str) -> list[dict]:
    """A string as one message of `default_role`, or a checked list of {role, content} messages."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {key!r} must be a string or a non-empty list of {{role, content}} messages")
    for index, message in enumerate(value):
        if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                and isinstance(message.get("content"), str)):  # fmt: skip
            raise UserError(f"{where}: {key}[{index}] needs a string 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _row_field(row: dict, key: str, where: str, keys: tuple[str, ...]) -> Any:
    if key not in row:
        raise UserError(f"{where}: missing field {key!r} (each row needs {', '.join(map(repr, keys))}); the row has "
                        f"{sorted(row)}")  # fmt: skip
    return row[key]


def _side(tokenizer, prompt: list[dict], prompt_ids: list[int], completion: list[dict], where: str) -> SFTSample:
    """prompt + completion rendered as one conversation; only the completion's assistant tokens are trained."""
    ids, mask = tokenize_conversation(tokenizer, prompt + completion, where)
    if ids[: len(prompt_ids)] != prompt_ids:
        raise UserError(f"{where}: the chat template renders the prompt differently once a completion follows, so "
                        "prompt and completion tokens cannot be told apart")  # fmt: skip
    mask = [0] * len(prompt_ids) + mask[len(prompt_ids) :]
    return SFTSample(ids, mask)


def _margin(row: dict, margin_key: str | None, where: str) -> float:
    if margin_key is None:
        return 0.0
    value = _row_field(row, margin_key, where, (margin_key,))
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: {margin_key!r} must be a number, got {value!r}")
    return float(value)


def tokenize_pair(tokenizer, row: dict, config: PreferenceDataConfig, where: str,
                  margin_key: str | None = None) -> tuple[SFTSample, SFTSample, float]:  # fmt: skip
    """(chosen, rejected, margin) of one row; a missing key or a bad value is a UserError naming `where`."""
    keys = (config.prompt_key, config.chosen_key, config.rejected_key)
    prompt = _messages(_row_field(row, config.prompt_key, where, keys), config.prompt_key, where, "user")
    prompt_ids, _ = tokenize_conversation(tokenizer, prompt, where)
    sides = []
    for key in (config.chosen_key, config.rejected_key):
        completion = _messages(_row_field(row, key, where, keys), key, where, "assistant")
        sample = _side(tokenizer, prompt, prompt_ids, completion, where)
        if sample.num_valid_tokens == 0:
            raise UserError(f"{where}: {key!r} has no assistant tokens to score")
        sides.append(sample)
    return sides[0], sides[1], _margin(row, margin_key, where)


def load_preference_dataset(path: str, tokenizer, config: PreferenceDataConfig, max_length: int,
                            margin_key: str | None = None) -> PreferenceDataset:  # fmt: skip
    """Every row of a preference JSONL tokenized up front (a bad row fails before the model loads); identical
    and overlong pairs dropped and counted (one warning line each); no usable pair is a UserError."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError("the tokenizer has no chat template; preference pairs are rendered with it")
    pairs, identical, overlong, rows = [], 0, 0, 0
    for number, row in numbered_rows(path):
        rows += 1
        chosen, rejected, margin = tokenize_pair(tokenizer, row, config, f"{path}:{number}", margin_key)
        if chosen.input_ids == rejected.input_ids:
            identical += 1
        elif max(len(chosen), len(rejected)) > max_length:
            overlong += 1
        else:
            pairs.append(PreferencePair(chosen, rejected, len(pairs), number, margin))
    if identical:
        log.warning("%s: dropped %d of %d pairs whose chosen and rejected are identical", path, identical, rows)
    if overlong:
        log.warning("%s: dropped %d of %d pairs with a side longer than max_total_sequence_length=%d", path,
                    overlong, rows, max_length)  # fmt: skip
    if not pairs:
        raise UserError(f"{path}: no usable preference pairs ({rows} rows: {identical} with identical chosen and "
                        f"rejected, {overlong} longer than max_total_sequence_length={max_length})")  # fmt: skip
    return PreferenceDataset(pairs, rows, identical, overlong, path)


# ---- micro-batches ----------------------------------------------------------------------------------------------


def _place(rows: list[list[tuple[int, int]]], room: list[int], items: list[tuple[int, int, int]], max_rows: int,
           capacity: int) -> bool:  # fmt: skip
    """Put every (pair, side, length) item first-fit into `rows` (opening rows up to `max_rows`); all or none."""
    new_rows, new_room = [list(r) for r in rows], list(room)
    for pair, side, length in items:
        slot = next((i for i, free in enumerate(new_room) if length <= free), None)
        if slot is None:
            if len(new_rows) >= max_rows:
                return False
            new_rows.append([])
            new_room.append(capacity)
            slot = len(new_rows) - 1
        new_rows[slot].append((pair, side))
        new_room[slot] -= length
    rows[:], room[:] = new_rows, new_room
    return True


def pack_pairs(pairs: list[PreferencePair], rows_per_batch: int, capacity: int) -> list[list[list[tuple[int, int]]]]:
    """Micro-batches of rows of (pair position, side): pairs first-fit-decreasing into micro-batches of at most
    `rows_per_batch` rows of `capacity` tokens, a pair's two sequences always in the same micro-batch (a micro-batch
    opens a second row when its first pair fits no single row)."""
    batches: list[tuple[list, list]] = []
    for p in sorted(range(len(pairs)), key=lambda i: (-len(pairs[i]), i)):
        items = [(p, side, len(pairs[p].side(side))) for side in (CHOSEN, REJECTED)]
        if not any(_place(rows, room, items, max(rows_per_batch, len(rows)), capacity) for rows, room in batches):
            rows, room = [], []
            _place(rows, room, items, max(rows_per_batch, 2), capacity)
            batches.append((rows, room))
    return [rows for rows, _ in batches]


def last_non_pad(ids: list[int], pad_id: int) -> int:
    """Where HF scores a sequence: its rightmost token that is not the pad id (0 when all are). Searched from the
    end, where it almost always is, not by a Python loop over every token of every pair."""
    return next((t for t in range(len(ids) - 1, -1, -1) if ids[t] != pad_id), 0)


def _attach_pair_tensors(batch: MicroBatch, pairs: list[PreferencePair], placements: dict, pad_id: int) -> MicroBatch:
    """`batch.pairs`, `sequence_index` (rows, length: 2 j + side, -1 on padding), `last_positions` (pairs, 2: flat
    index of each sequence's last non-pad token) and `num_completion_tokens` (pairs, 2)."""
    import torch

    rows, length = batch.input_ids.shape
    sequence_index = torch.full((rows, length), -1, dtype=torch.long)
    last = torch.zeros((len(pairs), 2), dtype=torch.long)
    counts = torch.zeros((len(pairs), 2), dtype=torch.float32)
    for j, pair in enumerate(pairs):
        for side in (CHOSEN, REJECTED):
            sample, (row, offset) = pair.side(side), placements[j, side]
            sequence_index[row, offset : offset + len(sample)] = 2 * j + side
            last[j, side] = row * length + offset + last_non_pad(sample.input_ids, pad_id)
            counts[j, side] = sample.num_valid_tokens
    batch.pairs, batch.sequence_index, batch.last_positions, batch.num_completion_tokens = (
        pairs,
        sequence_index,
        last,
        counts,
    )
    batch.pair_indices = torch.tensor([p.index for p in pairs], dtype=torch.long)
    batch.margins = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
    batch.drop_padding = True  # the readers below map a stream without padding back onto the sequences
    return batch


def _padded_pair_batch(pairs: list[PreferencePair], pad_id: int) -> MicroBatch:
    samples = [pair.side(side) for pair in pairs for side in (CHOSEN, REJECTED)]
    placements = {(j, side): (2 * j + side, 0) for j in range(len(pairs)) for side in (CHOSEN, REJECTED)}
    return _attach_pair_tensors(padded_micro_batch(samples, pad_id), pairs, placements, pad_id)


def _packed_pair_batch(pairs: list[PreferencePair], rows: list[list[tuple[int, int]]], pad_id: int,
                       capacity: int) -> MicroBatch:  # fmt: skip
    """`rows` of (pair position in `pairs`, side) packed into one micro-batch."""
    local = {p: j for j, p in enumerate(sorted({p for row in rows for p, _ in row}))}
    placements = {}
    for r, row in enumerate(rows):
        offset = 0
        for p, side in row:
            placements[local[p], side] = (r, offset)
            offset += len(pairs[p].side(side))
    batch = packed_micro_batch([[pairs[p].side(side) for p, side in row] for row in rows], pad_id, capacity)
    return _attach_pair_tensors(batch, [pairs[p] for p in sorted(local)], placements, pad_id)


def pair_micro_batches(pairs: list[PreferencePair], micro_batch_size: int, pad_id: int,
                       pack_capacity: int | None = None) -> list[MicroBatch]:  # fmt: skip
    """`micro_batch_size` pairs (2 x that many padded rows) per micro-batch, or with `pack_capacity` (sequence
    packing) `micro_batch_size` rows of that many tokens holding whole pairs (see `pack_pairs`)."""
    if pack_capacity is None:
        return [_padded_pair_batch(pairs[i : i + micro_batch_size], pad_id)
                for i in range(0, len(pairs), micro_batch_size)]  # fmt: skip
    return [_packed_pair_batch(pairs, rows, pad_id, pack_capacity)
            for rows in pack_pairs(pairs, micro_batch_size, pack_capacity)]  # fmt: skip


# ---- what the losses read ---------------------------------------------------------------------------------------


def per_sequence_sums(batch: MicroBatch, per_token):
    """(pairs, 2) float32: `per_token` (the batch's (rows, length) layout, or flattened) summed over each sequence,
    differentiably. Positions off a sequence (padding) are left out."""
    import torch

    # Which positions go where is worked out on the host and copied without waiting: a boolean mask of a device
    # tensor, or a pageable copy, would stall the host until the GPU drained its queue, every micro-batch.
    values = per_token.float().reshape(-1)
    index = batch.sequence_index.reshape(-1)
    if values.numel() != index.numel():  # a stream without padding: the real tokens, in order
        real = batch.real_token_mask().reshape(-1)
        index = index[real]
        if values.numel() != index.numel():  # of those, the labelled ones (`MicroBatch.logits_at_targets`)
            index = index[batch.labels.reshape(-1)[real] != IGNORE_INDEX]
    keep = index >= 0
    if bool(keep.all()):
        (index,) = to_device(per_token.device, index)
    else:
        index, places = to_device(per_token.device, index[keep], torch.nonzero(keep, as_tuple=True)[0])
        values = values.index_select(0, places)
    sums = torch.zeros(2 * len(batch.pairs), dtype=torch.float32, device=per_token.device)
    sums = sums.index_add(0, index, values)
    return sums.reshape(len(batch.pairs), 2)


def last_token_values(batch: MicroBatch, per_token):
    """(pairs, 2) float32: `per_token` ((rows, length), (rows, length, 1) or flattened) at each sequence's last
    non-pad token (a scalar head's score there is what the exported HF model returns for the sequence)."""
    import torch

    values = per_token.float().reshape(-1)
    positions = batch.last_positions.reshape(-1)
    if values.numel() != batch.input_ids.numel():  # a stream without padding: count real tokens only
        real_before = torch.cumsum(batch.real_token_mask().reshape(-1).long(), 0) - 1
        positions = real_before[positions]
    (positions,) = to_device(values.device, positions)  # without waiting for the GPU (see per_sequence_sums)
    return values[positions].reshape(len(batch.pairs), 2)
