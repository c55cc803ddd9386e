"""Triton kernels for the CUDA decode step: attention that reads each row's cache up to its own length, and
sampling that streams over the model-dtype logits instead of materialising float32 softmax tensors.

    if kernels_available(device): from skills_cli.inference.engine import cuda_kernels
    mixed = cuda_kernels.decode_attention(query, keys, values, lengths, scale, length)
    tokens, logprobs = cuda_kernels.sample_plain(logits, u, temperature, row_modes)

Why. A decode step at batch 1024 must read the weights (~1 GB) and the live part of the KV cache (~5 GB at
half the sequence length); the plain torch step also read every row's cache up to the length bucket (up to
2x the live part), wrote float32 scores, masks and softmax weights per layer, and ran a float32 softmax, a
cumsum and a comparison over [rows, vocab] (~0.6 GB each) to sample. These kernels remove those passes.

Numerics are the torch versions' (forward.CompactDecoder._attend_masked, sampling.sample), which stay the CPU
path and the reference bench/rollout.py checks these against: attention scores and softmax in float32, the
softmax weights rounded to the cache dtype before the product with the values; sampling by inverse CDF of
softmax(logits / T) in float32 with the row's one uniform, greedy = first argmax, logprob = the chosen
token's log_softmax(logits / T). Summation order differs, so a uniform that falls within rounding of a CDF
step can pick the neighbouring token; each row still depends on its own logits and uniform only.

Triton is imported at module import: import this module only where `kernels_available` says so.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

HEAD_BLOCK = 16  # query heads of one KV group padded to the smallest tl.dot tile
POSITION_BLOCK = 64
VOCAB_BLOCK = 2048
TARGET_PROGRAMS = 512  # split long rows until a step launches about this many attention programs (132 SMs)


@triton.jit
def _attention_split_kernel(q_ptr, k_ptr, v_ptr, lengths_ptr, acc_ptr, stats_ptr, scale, chunk, slot_stride,
                            head_stride, splits, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                            BLOCK_H: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):  # fmt: skip
    """One (row, KV head, split): online softmax over positions [split*chunk, min(+chunk, length))."""
    row, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    heads, dims = tl.arange(0, BLOCK_H), tl.arange(0, HEAD_DIM)
    num_heads = tl.num_programs(1) * GROUP
    q_offsets = (row * num_heads + kv_head * GROUP + heads)[:, None] * HEAD_DIM + dims[None, :]
    query = tl.load(q_ptr + q_offsets, mask=(heads < GROUP)[:, None], other=0.0)
    start = split * chunk
    end = tl.minimum(start + chunk, tl.load(lengths_ptr + row))
    cache = row.to(tl.int64) * slot_stride + kv_head * head_stride  # int64: large caches pass 2**31 elements
    best = tl.full([BLOCK_H], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_H], tl.float32)
    acc = tl.zeros([BLOCK_H, HEAD_DIM], tl.float32)
    for first in range(start, end, BLOCK_N):
        positions = first + tl.arange(0, BLOCK_N)
        live = positions < end
        offsets = cache + positions[:, None] * HEAD_DIM + dims[None, :]
        keys = tl.load(k_ptr + offsets, mask=live[:, None], other=0.0)
        scores = tl.dot(query, tl.trans(keys), input_precision=PRECISION) * scale
        scores = tl.where(live[None, :], scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, 1))
        weights = tl.exp(scores - new_best[:, None])
        rescale = tl.exp(best - new_best)
        values = tl.load(v_ptr + offsets, mask=live[:, None], other=0.0)
        acc = acc * rescale[:, None] + tl.dot(weights.to(values.dtype), values, input_precision=PRECISION)
        total = total * rescale + tl.sum(weights, 1)
        best = new_best
    part = (row * tl.num_programs(1) + kv_head) * splits + split  # [rows, kv_heads, splits, BLOCK_H, ...]
    tl.store(acc_ptr + part * BLOCK_H * HEAD_DIM + heads[:, None] * HEAD_DIM + dims[None, :], acc)
    tl.store(stats_ptr + (part * BLOCK_H + heads) * 2, best)
    tl.store(stats_ptr + (part * BLOCK_H + heads) * 2 + 1, total)


def attention_splits(rows: int, kv_heads: int, length: int) -> int:
    """How many pieces each row's positions are cut into: enough programs to fill the GPU at small batches."""
    wanted = -(-TARGET_PROGRAMS // (rows * kv_heads))
    return max(1, min(wanted, length // (4 * POSITION_BLOCK)))


def decode_attention(query, keys, values, lengths, scale: float, length: int) -> torch.Tensor:
    """Attention of one new token per row over its cache positions 0..lengths[row]-1.

    query [rows, heads, head_dim]; keys/values one layer's cache [slots, kv_heads, max_len, head_dim] (the
    first `rows` slots are read); lengths [rows] int64 (>= 1); `length` the step's bucket (a bound on
    lengths, it fixes the split size so that a captured graph's shapes stay static). Returns [rows, heads *
    head_dim] in the cache dtype.
    """
    rows, heads, head_dim = query.shape
    kv_heads = keys.shape[1]
    group = heads // kv_heads
    splits = attention_splits(rows, kv_heads, length)
    chunk = -(-length // (splits * POSITION_BLOCK)) * POSITION_BLOCK
    acc = torch.empty(rows, kv_heads, splits, HEAD_BLOCK, head_dim, dtype=torch.float32, device=query.device)
    stats = torch.empty(rows, kv_heads, splits, HEAD_BLOCK, 2, dtype=torch.float32, device=query.device)
    _attention_split_kernel[(rows, kv_heads, splits)](
        query.contiguous(), keys, values, lengths, acc, stats, scale, chunk, keys.stride(0), keys.stride(1), splits,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_H=HEAD_BLOCK, BLOCK_N=POSITION_BLOCK,
        PRECISION="ieee" if query.dtype == torch.float32 else None,  # fp32 models keep fp32 products
    )  # fmt: skip
    return _combine_splits(acc, stats, group).to(keys.dtype).reshape(rows, heads * head_dim)


def _combine_splits(acc: torch.Tensor, stats: torch.Tensor, group: int) -> torch.Tensor:
    """Merge the splits' partial softmax sums: weight each by exp(its max - the overall max)."""
    best, total = stats[..., 0], stats[..., 1]  # [rows, kv_heads, splits, BLOCK_H]
    if acc.shape[2] == 1:
        mixed = acc[:, :, 0] / total[:, :, 0, :, None]
    else:
        weight = torch.exp(best - best.amax(dim=2, keepdim=True))  # an empty split has best -inf: weight 0
        mixed = (acc * weight[..., None]).sum(dim=2) / (total * weight).sum(dim=2)[..., None]
    return mixed[:, :, :group]  # [rows, kv_heads, group, head_dim]: query head order


@triton.jit
def _rope_store_kernel(q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, positions_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
                       q_stride, k_stride, v_stride, slot_stride, head_stride, HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
                       HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    """One row: rotate its query and key heads at its position, write the key and value into its cache row."""
    row = tl.program_id(0)
    position = tl.load(positions_ptr + row)
    heads, dims = tl.arange(0, BLOCK_H), tl.arange(0, HEAD_DIM)
    partner = (dims + HEAD_DIM // 2) % HEAD_DIM  # rotate_half: (-x2, x1)
    sign = tl.where(dims < HEAD_DIM // 2, -1.0, 1.0)
    cos = tl.load(cos_ptr + position * HEAD_DIM + dims).to(tl.float32)[None, :]
    sin = tl.load(sin_ptr + position * HEAD_DIM + dims).to(tl.float32)[None, :]
    q_mask, kv_mask = (heads < HEADS)[:, None], (heads < KV_HEADS)[:, None]
    q_in = q_ptr + row * q_stride + heads[:, None] * HEAD_DIM
    query = tl.load(q_in + dims[None, :], mask=q_mask).to(tl.float32)
    turned = tl.load(q_in + partner[None, :], mask=q_mask).to(tl.float32)
    q_out = q_out_ptr + row * HEADS * HEAD_DIM + heads[:, None] * HEAD_DIM + dims[None, :]
    tl.store(q_out, (query * cos + sign * turned * sin).to(q_out_ptr.dtype.element_ty), mask=q_mask)
    k_in = k_ptr + row * k_stride + heads[:, None] * HEAD_DIM
    key = tl.load(k_in + dims[None, :], mask=kv_mask).to(tl.float32)
    turned = tl.load(k_in + partner[None, :], mask=kv_mask).to(tl.float32)
    cache = row.to(tl.int64) * slot_stride + heads[:, None] * head_stride + position * HEAD_DIM + dims[None, :]
    tl.store(k_cache_ptr + cache, (key * cos + sign * turned * sin).to(k_cache_ptr.dtype.element_ty), mask=kv_mask)
    value = tl.load(v_ptr + row * v_stride + heads[:, None] * HEAD_DIM + dims[None, :],
                    mask=kv_mask)  # fmt: skip
    tl.store(v_cache_ptr + cache, value, mask=kv_mask)


def rope_and_store(query, key, value, cos, sin, positions, keys, values) -> torch.Tensor:
    """RoPE on query and key [rows, heads, head_dim] at each row's position (cos/sin tables [max_len,
    head_dim]), key and value written into cache row i (`keys`/`values` one layer's [slots, kv_heads,
    max_len, head_dim]) at positions[i]; returns the rotated query. One launch for what was ~12."""
    rows, heads, head_dim = query.shape
    rotated = torch.empty(rows, heads, head_dim, dtype=query.dtype, device=query.device)
    _rope_store_kernel[(rows,)](
        query, key, value, cos, sin, positions, rotated, keys, values, query.stride(0), key.stride(0),
        value.stride(0), keys.stride(0), keys.stride(1),
        HEADS=heads, KV_HEADS=key.shape[1], HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(heads),
    )  # fmt: skip
    return rotated


@triton.jit
def _rms_norm_kernel(x_ptr, weight_ptr, out_ptr, eps, WIDTH: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    columns = tl.arange(0, BLOCK)
    live = columns < WIDTH
    x = tl.load(x_ptr + row * WIDTH + columns, mask=live, other=0.0).to(tl.float32)
    normed = x * tl.rsqrt(tl.sum(x * x, 0) / WIDTH + eps)
    weight = tl.load(weight_ptr + columns, mask=live).to(tl.float32)
    # as the HF module: normalised in float32, rounded to the input dtype, then times the weight
    scaled = weight * normed.to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * WIDTH + columns, scaled.to(out_ptr.dtype.element_ty), mask=live)


def rms_norm(module, hidden: torch.Tensor) -> torch.Tensor:
    """An HF RMSNorm module's forward (weight, variance_epsilon) on hidden [rows, width] in one launch."""
    rows, width = hidden.shape
    out = torch.empty_like(hidden)
    _rms_norm_kernel[(rows,)](hidden.contiguous(), module.weight, out, module.variance_epsilon, WIDTH=width,
                              BLOCK=triton.next_power_of_2(width))  # fmt: skip
    return out


@triton.jit
def _sample_kernel(logits_ptr, row_stride, vocab, u_ptr, temperature_ptr, temperature_stride, modes_ptr,
                   tokens_ptr, logprobs_ptr, BLOCK: tl.constexpr):  # fmt: skip
    """One row: max, argmax and softmax normaliser of logits / T in one pass; the inverse-CDF draw in a second."""
    row = tl.program_id(0)
    base = logits_ptr + row.to(tl.int64) * row_stride
    temperature = tl.load(temperature_ptr + row * temperature_stride)
    lanes = tl.arange(0, BLOCK)
    # per lane: running max of logits / T, from a finite floor so that a lane no column reaches (vocab < BLOCK)
    # keeps exp(best - new best) = 1 instead of exp(-inf + inf) = NaN
    lane_best = tl.full([BLOCK], -1e30, tl.float32)
    lane_total = tl.zeros([BLOCK], tl.float32)  # per lane: sum of exp(logits / T - lane_best)
    lane_index = tl.zeros([BLOCK], tl.int32)  # per lane: first column holding lane_best
    for start in range(0, vocab, BLOCK):
        columns = start + lanes
        scaled = tl.load(base + columns, mask=columns < vocab, other=float("-inf")).to(tl.float32) / temperature
        better = scaled > lane_best
        new_best = tl.maximum(lane_best, scaled)
        lane_total = lane_total * tl.exp(lane_best - new_best) + tl.exp(scaled - new_best)
        lane_index = tl.where(better, columns, lane_index)
        lane_best = new_best
    best = tl.max(lane_best, 0)
    total = tl.sum(lane_total * tl.exp(lane_best - best), 0)
    token = tl.min(tl.where(lane_best == best, lane_index, vocab), 0)  # first column of the maximum
    if tl.load(modes_ptr + row) != 0:  # not greedy: the first column whose running mass reaches u * total
        target = tl.load(u_ptr + row) * total
        below = 0
        running = 0.0
        for start in range(0, vocab, BLOCK):
            columns = start + lanes
            scaled = tl.load(base + columns, mask=columns < vocab, other=float("-inf")).to(tl.float32) / temperature
            probs = tl.exp(scaled - best)
            below += tl.sum((tl.cumsum(probs, 0) + running < target).to(tl.int32), 0)
            running += tl.sum(probs, 0)
        token = tl.minimum(below, vocab - 1)
    chosen = tl.load(base + token).to(tl.float32) / temperature
    tl.store(tokens_ptr + row, token.to(tl.int64))
    tl.store(logprobs_ptr + row, chosen - best - tl.log(total))


def sample_plain(logits, u, temperature, row_modes) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy (row mode 0) or full-softmax (any other) next tokens and logprobs of logits [rows, vocab]
    (any float dtype, rows contiguous); temperature [1] or [rows, 1] (1 for greedy rows), u and row_modes
    [rows]. No top-k / top-p / min-p: those rows take sampling.sample's FILTERED path."""
    rows, vocab = logits.shape
    tokens = torch.empty(rows, dtype=torch.long, device=logits.device)
    logprobs = torch.empty(rows, dtype=torch.float32, device=logits.device)
    temperature_stride = 0 if temperature.numel() == 1 else temperature.stride(0)
    _sample_kernel[(rows,)](
        logits, logits.stride(0), vocab, u, temperature, temperature_stride, row_modes.contiguous(), tokens,
        logprobs, BLOCK=VOCAB_BLOCK, num_warps=8,
    )  # fmt: skip
    return tokens, logprobs
