"""SFT data: JSONL rows -> token ids with an assistant-only loss mask, and the shuffled order of a run.

Tokenization is per message through the tokenizer's own chat template: the template is rendered on growing
prefixes of the conversation and each message's text is the difference between consecutive renders, so every
token belongs to exactly one message and the boundaries are the template's, whatever it adds (system
defaults, BOS, separators). An assistant turn is split once more at the template's generation prompt
(`add_generation_prompt=True` on the turns before it; `prompts/conversation.py`): the header (`<|im_start|>assistant\\n`) is prompt, what the
model must produce after it (content and end-of-turn tokens) is trained. Each piece is tokenized on its own
with `add_special_tokens=False` (the template already wrote any BOS), so a BPE merge can never straddle a
message boundary.

A conversation longer than `policy.max_total_sequence_length` is kept, cut to that length for shape only, and
fully masked: it trains nothing, is counted and reported, and never trains on a silently truncated answer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import iter_numbered_jsonl
from skills_cli.prompts.conversation import conversation_segments
from skills_cli.training.config import DataConfig

log = logging.getLogger("skills_cli.sft")

IGNORE_INDEX = -100  # label of a position that contributes no loss (torch's cross_entropy default)


@dataclass(frozen=True)
class SFTSample:
    """One tokenized conversation: `loss_mask[t] == 1` when token t is an assistant token the model must predict."""

    input_ids: list[int]
    loss_mask: list[int]
    overlong: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    def labels(self) -> list[int]:
        """Next-token targets aligned with `input_ids` (label[t] is the token predicted at t).

        Shifting per sample, before any concatenation, means a packed row can never ask one sequence's last
        token to predict the next sequence's first one: every sample's last label is IGNORE_INDEX.
        """
        ids, mask = self.input_ids, self.loss_mask
        return [ids[t + 1] if mask[t + 1] else IGNORE_INDEX for t in range(len(ids) - 1)] + [IGNORE_INDEX]

    @property
    def num_valid_tokens(self) -> int:
        return sum(self.loss_mask[1:])  # the first token is never a target: nothing precedes it


@dataclass(frozen=True)
class SFTDataset:
    samples: list[SFTSample]
    num_overlong: int
    num_without_targets: int
    path: str


def numbered_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, JSON object) for each non-blank line; a bad line is an error naming file and line."""
    return iter_numbered_jsonl(path, kind="data")


def row_messages(row: dict, config: DataConfig, where: str) -> list[dict]:
    """The conversation of a row: its `messages` list, or a user/assistant pair from `input`/`output`."""
    if config.messages_key in row:
        messages = row[config.messages_key]
        if not isinstance(messages, list) or not messages:
            raise UserError(f"{where}: {config.messages_key!r} must be a non-empty list of {{role, content}}")
        for index, message in enumerate(messages):
            if not (isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str)):  # fmt: skip
                raise UserError(f"{where}: {config.messages_key}[{index}] needs a string 'role' and 'content'")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    missing = [key for key in (config.input_key, config.output_key) if key not in row]
    if missing:
        raise UserError(
            f"{where}: missing field {missing[0]!r} (each row needs {config.messages_key!r}, or "
            f"{config.input_key!r} and {config.output_key!r}); the row has {sorted(row)}"
        )
    prompt, answer = row[config.input_key], row[config.output_key]
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise UserError(f"{where}: {config.input_key!r} and {config.output_key!r} must be strings")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


def tokenize_conversation(tokenizer, messages: list[dict], where: str = "conversation") -> tuple[list[int], list[int]]:
    """Token ids and the assistant-token mask of a conversation (see the module docstring for the method)."""
    ids: list[int] = []
    mask: list[int] = []
    for text, trained in conversation_segments(tokenizer, messages, where):
        if not text:
            continue
        piece = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        ids.extend(piece)
        mask.extend([int(trained)] * len(piece))
    return ids, mask


def make_sample(ids: list[int], mask: list[int], max_length: int) -> SFTSample:
    """An over-long conversation keeps its place in the data but trains nothing (loss multiplier 0)."""
    if len(ids) > max_length:
        return SFTSample(ids[:max_length], [0] * max_length, overlong=True)
    return SFTSample(ids, mask)


def load_sft_dataset(path: str, tokenizer, config: DataConfig, max_length: int) -> SFTDataset:
    """Tokenize every row of a JSONL file up front, so a bad row fails before the first step."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise UserError("the tokenizer has no chat template; SFT renders conversations with it")
    samples = []
    for number, row in numbered_rows(path):
        where = f"{path}:{number}"
        ids, mask = tokenize_conversation(tokenizer, row_messages(row, config, where), where)
        if not ids:
            raise UserError(f"{where}: the conversation renders to no tokens")
        samples.append(make_sample(ids, mask, max_length))
    if not samples:
        raise UserError(f"{path}: no rows")
    dataset = SFTDataset(
        samples=samples,
        num_overlong=sum(s.overlong for s in samples),
        num_without_targets=sum(s.num_valid_tokens == 0 and not s.overlong for s in samples),
        path=path,
    )
    if dataset.num_overlong:
        log.warning("%s: %d of %d samples are longer than max_total_sequence_length=%d; they are kept but "
                    "fully masked (no loss)", path, dataset.num_overlong, len(samples), max_length)  # fmt: skip
    if dataset.num_without_targets:
        log.warning("%s: %d samples have no assistant tokens to train on", path, dataset.num_without_targets)
    return dataset


@functools.lru_cache(maxsize=2)
def epoch_order(num_samples: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The shuffled sample order of an epoch: a pure function of (seed, epoch), so a resumed run recomputes it."""
    import torch

    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(num_samples, generator=generator).tolist())


@dataclass
class DataPosition:
    """Where the run is in its data: the epoch and how many samples of that epoch's order were consumed."""

    epoch: int = 0
    index: int = 0


def next_global_batch(position: DataPosition, num_samples: int, batch_size: int, seed: int) -> list[int]:
    """The sample indices of the next global batch, advancing `position`.

    An epoch's tail shorter than a global batch is dropped (every step sees exactly `batch_size` samples), and
    the move to the next epoch happens here, when the batch is drawn, so a checkpoint taken at an epoch's
    last batch resumes at the next epoch's first instead of skipping it.
    """
    if position.index + batch_size > num_samples:
        position.epoch, position.index = position.epoch + 1, 0
    order = epoch_order(num_samples, seed, position.epoch)
    batch = list(order[position.index : position.index + batch_size])
    position.index += batch_size
    return batch
