"""Row and time surgery on a transformers `DynamicCache` of a left-padded batch: the hf server's engine keeps
one cache for its running rows, merging joining prompts in and dropping finished rows and dead padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def left_pad_time(tensor: torch.Tensor, amount: int) -> torch.Tensor:
    """Pad the time axis (-2 for KV [batch, heads, time, dim], -1 for masks [batch, time]) on the left."""
    if amount == 0:
        return tensor
    pad = (amount, 0) if tensor.dim() == 2 else (0, 0, amount, 0)
    return F.pad(tensor, pad)


def _stack_padded(first: torch.Tensor, second: torch.Tensor, length: int) -> torch.Tensor:
    return torch.cat([left_pad_time(first, length - first.shape[-2]), left_pad_time(second, length - second.shape[-2])])


def merge_caches(running, joining) -> None:
    """Append `joining`'s rows to `running` (both DynamicCache), left-padding the shorter one in time."""
    for into, extra in zip(running.layers, joining.layers, strict=True):
        length = max(into.keys.shape[-2], extra.keys.shape[-2])
        into.keys = _stack_padded(into.keys, extra.keys, length)
        into.values = _stack_padded(into.values, extra.values, length)


def trim_cache_left(cache, columns: int) -> None:
    """Drop the first `columns` time steps (padding no remaining row attends to)."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., columns:, :]
        layer.values = layer.values[..., columns:, :]


def select_cache_rows(cache, rows: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.keys = layer.keys[rows]
        layer.values = layer.values[rows]
