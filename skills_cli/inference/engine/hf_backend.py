"""The general decode backend: any Hugging Face causal LM through its own forward and a transformers
`DynamicCache`, for models our compact forward does not reproduce (the hf server's default).

The cache holds the busy slots' rows, left-padded in time to a common length, in admission order (`order`).
A prefill runs the joining prompts as one left-padded batch into a fresh cache and appends its rows; a
release drops the rows of finished slots and then the leading time steps that only their padding used; a
decode step feeds every row its slot's next input token, at its own position. The cache grows with the
longest running row, so memory follows the traffic rather than max_batch_size x max_seq_len.

Requires transformers >= 4.56 (a `DynamicCache` made of `layers` with `keys`/`values`).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from skills_cli.inference.engine.kv_rows import left_pad_time, merge_caches, select_cache_rows, trim_cache_left
from skills_cli.inference.engine.sampling import SlotState


class HFBackend:
    """Slots over one left-padded DynamicCache of the busy rows."""

    def __init__(self, model, slots: int, max_seq_len: int, pad_id: int, prefill_tokens: int = 16384):
        self.model, self.pad_id = model, pad_id
        self.device = next(model.parameters()).device
        self.slots, self.max_seq_len, self.prefill_tokens = slots, max_seq_len, prefill_tokens
        parameters = inspect.signature(model.forward).parameters
        self._keeps_last_logits = "logits_to_keep" in parameters
        # transformers renamed the forward's `past_key_values` to `cache` (the old name warns, and goes in 5.40);
        # remote-code models and older releases keep the old one
        self._cache_keyword = "cache" if "cache" in parameters else "past_key_values"
        self.reset()

    def reset(self) -> None:
        self.order: list[int] = []  # the slot of each cache row
        self.cache = None
        self.mask = None  # [rows, time] 1 = real token
        self.positions = None  # [rows] position id of the next input token
        self._rows = None  # (the order as a slot-index tensor, its sampling parameters), made once per change

    def _forward(self, input_ids, mask, positions, cache) -> torch.Tensor:
        extra = {"logits_to_keep": 1} if self._keeps_last_logits else {}
        extra[self._cache_keyword] = cache
        output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, **extra)
        return output.logits[:, -1, :].float()

    def prefill(self, slots: list[int], prompts: list[list[int]]) -> torch.Tensor:
        """Prefill the prompts as one left-padded batch and append their rows; logits [len(slots), vocab]."""
        from transformers import DynamicCache

        length = max(len(prompt) for prompt in prompts)
        ids = [[self.pad_id] * (length - len(prompt)) + prompt for prompt in prompts]
        mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self._forward(torch.tensor(ids, device=self.device), mask, positions, cache)
        self._append(cache, mask, positions[:, -1] + 1, slots)
        return logits

    def _append(self, cache, mask, positions, slots: list[int]) -> None:
        if not self.order:
            self.cache, self.mask, self.positions, self.order = cache, mask, positions, list(slots)
            self._rows = None
            return
        length = max(self.mask.shape[1], mask.shape[1])
        merge_caches(self.cache, cache)
        padded = [left_pad_time(self.mask, length - self.mask.shape[1]), left_pad_time(mask, length - mask.shape[1])]
        self.mask = torch.cat(padded)
        self.positions = torch.cat([self.positions, positions])
        self.order = self.order + list(slots)
        self._rows = None

    def decode(self, busy: np.ndarray, positions: np.ndarray, state: SlotState, modes: tuple[str, ...]):
        """One sampled step of every row; (logits [rows, vocab] in cache order, each busy slot's row)."""
        if self._rows is None:
            rows = torch.tensor(self.order, dtype=torch.long, device=self.device)
            row_of = {slot: row for row, slot in enumerate(self.order)}
            busy_rows = np.array([row_of[slot] for slot in busy.tolist()], dtype=np.int64)
            self._rows = (rows, state.row_parameters(rows), busy_rows)
        rows, parameters, busy_rows = self._rows
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        logits = self._forward(state.input_ids[rows][:, None], self.mask, self.positions[:, None], self.cache)
        self.positions = self.positions + 1
        if modes:  # none: the caller samples (after penalties)
            state.sample(logits, rows, modes, parameters)
        return logits, busy_rows

    def release(self, slots: list[int]) -> None:
        """Drop the rows of `slots`, then the leading time steps that only their padding used."""
        gone = set(slots)
        keep = [row for row, slot in enumerate(self.order) if slot not in gone]
        if len(keep) == len(self.order):
            return
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, device=self.device)
        select_cache_rows(self.cache, index)
        self.mask, self.positions = self.mask[index], self.positions[index]
        self.order = [self.order[row] for row in keep]
        self._rows = None
        first_used = int(self.mask.any(dim=0).int().argmax())
        if first_used:
            trim_cache_left(self.cache, first_used)
            self.mask = self.mask[:, first_used:]
