"""Repetition, frequency and presence penalties and logit biases on a batch of logits rows, as vLLM applies
them (see params.py for the semantics), vectorised: token counts come from one scatter over padded ids.

    logits = apply_penalties(logits, prompt_ids, output_ids, params)   # row i belongs to params[i]

Rows whose parameters are neutral (`needs_penalties` false) are not touched, and a batch with none of them
costs one Python pass over its parameters.
"""

from __future__ import annotations

import torch

from skills_cli.inference.engine.params import SamplingParams


def needs_penalties(params: SamplingParams) -> bool:
    """True when `params` asks for any logits adjustment this module makes."""
    return (
        params.presence_penalty != 0.0
        or params.frequency_penalty != 0.0
        or params.repetition_penalty != 1.0
        or bool(params.logit_bias)
    )


def token_counts(ids: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """[len(ids), vocab] int counts of each token id per row (ids padded with `vocab`, a bin dropped after)."""
    width = max((len(row) for row in ids), default=0)
    padded = torch.full((len(ids), width), vocab, dtype=torch.long)
    for row, row_ids in enumerate(ids):  # one copy per row, never a loop over tokens or the vocabulary
        padded[row, : len(row_ids)] = torch.as_tensor(row_ids, dtype=torch.long)
    counts = torch.zeros((len(ids), vocab + 1), dtype=torch.long, device=device)
    counts.scatter_add_(1, padded.to(device), torch.ones_like(padded, device=device))
    return counts[:, :vocab]


def _column(values: list[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).unsqueeze(1)


def _add_logit_bias(rows: torch.Tensor, params: list[SamplingParams]) -> None:
    """Add each row's biases in place (one index_put over every (row, token) pair of the batch)."""
    pairs = [(row, token, bias) for row, p in enumerate(params) for token, bias in p.logit_bias]
    if not pairs:
        return
    row_index, token_index, biases = zip(*pairs, strict=True)
    device = rows.device
    index = (torch.tensor(row_index, device=device), torch.tensor(token_index, device=device))
    rows.index_put_(index, torch.tensor(biases, dtype=rows.dtype, device=device), accumulate=True)


def _penalise(rows: torch.Tensor, prompt_ids, output_ids, params: list[SamplingParams]) -> torch.Tensor:
    vocab = rows.shape[1]
    output_counts = token_counts(output_ids, vocab, rows.device)
    seen_in_output = output_counts > 0
    seen = seen_in_output | (token_counts(prompt_ids, vocab, rows.device) > 0)
    repetition = _column([p.repetition_penalty for p in params], rows)
    penalised = torch.where(rows > 0, rows / repetition, rows * repetition)
    rows = torch.where(seen, penalised, rows)
    rows = rows - _column([p.frequency_penalty for p in params], rows) * output_counts.to(rows.dtype)
    return rows - _column([p.presence_penalty for p in params], rows) * seen_in_output.to(rows.dtype)


def apply_penalties(
    logits: torch.Tensor, prompt_ids: list[list[int]], output_ids: list[list[int]], params: list[SamplingParams]
) -> torch.Tensor:
    """`logits` [rows, vocab] with each row's logit bias, repetition, frequency and presence penalties applied
    (in that order, vLLM's); rows with neutral parameters keep their values. Writes into `logits`."""
    chosen = [row for row, p in enumerate(params) if needs_penalties(p)]
    if not chosen:
        return logits
    index = torch.tensor(chosen, device=logits.device)
    picked = [params[row] for row in chosen]
    rows = logits.index_select(0, index)
    _add_logit_bias(rows, picked)
    rows = _penalise(rows, [prompt_ids[r] for r in chosen], [output_ids[r] for r in chosen], picked)
    logits.index_copy_(0, index, rows)
    return logits
