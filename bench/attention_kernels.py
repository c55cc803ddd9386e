"""Times the varlen (packed, causal) attention kernels PyTorch ships, forward and backward, on one GPU.

The SFT trainer's packed micro-batches are one flattened stream of sequences (`cu_seqlens` offsets); the
attention over them is the slowest part of a 0.5B step after the matmuls (~22% of the GPU time on an H200 with
FA2). This bench compares the kernels that take that layout without extra packages: FA2 (`aten::
_flash_attention_forward/backward`, what the trainer uses by default) and cuDNN's ragged attention (`aten::
_cudnn_attention_forward/backward` with cumulative sequence lengths), on a micro-batch shaped like the
trainer's (rows x max length tokens, Qwen2.5-0.5B heads), and checks each against FA2's output and gradients.

Usage: python bench/attention_kernels.py --out attention.json [--rows 16 --length 4096 --heads 14 --kv_heads 2]
Writes JSON: per kernel, forward and backward milliseconds (median), TFLOP/s (causal FLOPs), max |diff| vs FA2.

Measured on nvidia-h200 (torch 2.11.0+cu130, cuDNN 9.19), 2026-12-03, defaults (16 x 4096 tokens, 14 heads,
2 KV heads, head size 64): FA2 forward 1.01 ms (149 TFLOP/s), backward 2.33 ms (162 TFLOP/s); 8 rows: 0.55 /
1.20 ms. cuDNN's ragged forward runs, grouped-query heads included (output within 0.004 of FA2's in bf16), but
its backward cannot be called from Python in this build (`attn_bias` is a required tensor there, and neither an
empty 1-D nor an empty 4-D one is accepted), which is also why PyTorch's own `varlen_attn` keeps cuDNN off; so
the trainer stays on FA2, whose kernels at head size 64 are ~23% of a 0.5B SFT step's GPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def packed_lengths(rows: int, length: int, seed: int) -> list[int]:
    """Sequence lengths that fill `rows` rows of `length` tokens (a packed SFT micro-batch's shape)."""
    import random

    generator = random.Random(seed)
    lengths = []
    for _ in range(rows):
        left = length
        while left > 0:
            piece = min(left, generator.randint(length // 16, length // 2))
            lengths.append(piece)
            left -= piece
    return lengths


def equal_lengths(rows: int, length: int, seed: int) -> list[int]:
    """`rows` sequences of about `length` tokens each (+-2%: a DPO micro-batch of equal-length pairs)."""
    import random

    generator = random.Random(seed)
    return [length + generator.randint(-length // 50, length // 50) for _ in range(rows)]


def make_inputs(lengths, heads, kv_heads, head_dim, device):
    import torch

    tokens = sum(lengths)
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (
        torch.randn(tokens, h, head_dim, device=device, dtype=torch.bfloat16, generator=generator)
        for h in (heads, kv_heads, kv_heads)
    )
    offsets = torch.tensor([0, *lengths], device=device, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    grad_out = torch.randn(tokens, heads, head_dim, device=device, dtype=torch.bfloat16, generator=generator)
    return q, k, v, offsets, grad_out


def flash_kernel(q, k, v, offsets, max_length, scale):
    import torch

    def forward():
        out, lse, seed, offset, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, offsets, offsets, max_length, max_length, 0.0, True, False, scale=scale
        )
        return out, (lse, seed, offset)

    def backward(grad_out, out, saved):
        lse, seed, offset = saved
        return torch.ops.aten._flash_attention_backward(
            grad_out, q, k, v, out, lse, offsets, offsets, max_length, max_length, 0.0, True, seed, offset,
            scale=scale,
        )  # fmt: skip

    return forward, backward


def cudnn_kernel(q, k, v, offsets, max_length, scale):
    import torch

    def forward():
        result = torch.ops.aten._cudnn_attention_forward(
            q, k, v, None, offsets, offsets, max_length, max_length, True, 0.0, True, False, scale=scale
        )
        out, lse, seed, offset = result[0], result[1], result[6], result[7]
        return out, (lse, seed, offset)

    def backward(grad_out, out, saved):
        lse, seed, offset = saved
        return torch.ops.aten._cudnn_attention_backward(
            grad_out, q, k, v, out, lse, seed, offset, None, offsets, offsets, max_length, max_length, 0.0, True,
            scale=scale,
        )  # fmt: skip

    return forward, backward


def expanded(kernel):
    """The kernel on key/value heads repeated to the query's head count (for kernels without GQA)."""

    def build(q, k, v, offsets, max_length, scale):
        groups = q.shape[1] // k.shape[1]
        return kernel(q, k.repeat_interleave(groups, 1).contiguous(), v.repeat_interleave(groups, 1).contiguous(),
                      offsets, max_length, scale)  # fmt: skip

    return build


KERNELS = {"flash": flash_kernel, "cudnn": cudnn_kernel, "cudnn_expanded_kv": expanded(cudnn_kernel)}


def median_ms(function, repeats: int) -> float:
    import torch

    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def new_shape_ms(build, inputs, max_length, scale) -> float:
    """Forward + backward on a token count not seen before (one sequence a token shorter): what a kernel that
    builds a plan per shape costs the host each time a micro-batch's shape is new."""
    import torch

    q, k, v, offsets, grad_out = inputs
    shorter = offsets.clone()
    shorter[-1] -= 1
    tokens = int(shorter[-1])
    forward, backward = build(q[:tokens], k[:tokens], v[:tokens], shorter, max_length, scale)
    torch.cuda.synchronize()
    start = time.perf_counter()
    out, saved = forward()
    backward(grad_out[:tokens].contiguous(), out, saved)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def max_diff(a, b) -> float:
    return float((a.float() - b.float()).abs().max())


def measure(name, build, inputs, max_length, repeats, reference):
    q, k, v, offsets, grad_out = inputs
    scale = q.shape[-1] ** -0.5
    forward, backward = build(q, k, v, offsets, max_length, scale)
    out, saved = forward()
    grads = backward(grad_out, out, saved)
    row = {"kernel": name}
    if reference is not None:
        ref_out, ref_grads = reference
        groups = q.shape[1] // k.shape[1]
        grads = list(grads)
        for i in (1, 2):  # gradients of expanded key/value heads add up over each group
            if grads[i].shape[1] != ref_grads[i].shape[1]:
                grads[i] = grads[i].unflatten(1, (-1, groups)).sum(2)
        row["max_diff_out"] = max_diff(out, ref_out)
        row["max_diff_grads"] = [max_diff(a, b) for a, b in zip(grads, ref_grads, strict=True)]
    row["new_shape_ms"] = new_shape_ms(build, inputs, max_length, scale)
    row["forward_ms"] = median_ms(forward, repeats)
    row["backward_ms"] = median_ms(lambda: backward(grad_out, out, saved), repeats)
    return row, (out, grads)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--heads", type=int, default=14)
    parser.add_argument("--kv_heads", type=int, default=2)
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--kernels", default=",".join(KERNELS))
    parser.add_argument("--equal", action="store_true", help="rows sequences of about --length tokens each")
    args = parser.parse_args(argv)
    import torch

    lengths = (equal_lengths if args.equal else packed_lengths)(args.rows, args.length, seed=0)
    inputs = make_inputs(lengths, args.heads, args.kv_heads, args.head_dim, "cuda")
    forward_flops = 2 * sum(s * s for s in lengths) * args.heads * args.head_dim  # causal: half of 4 s^2 h d
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "sequences": len(lengths), "tokens": sum(lengths),
              "args": vars(args), "kernels": []}  # fmt: skip
    reference = None
    for name in args.kernels.split(","):
        try:
            row, outputs = measure(name, KERNELS[name], inputs, max(lengths), args.repeats, reference)
        except Exception as error:  # a kernel this build or GPU lacks: recorded, the others still run
            result["kernels"].append({"kernel": name, "error": f"{type(error).__name__}: {error}"[:800]})
            continue
        if reference is None:
            reference = outputs
        row["forward_tflops"] = forward_flops / row["forward_ms"] / 1e9
        row["backward_tflops"] = 2.5 * forward_flops / row["backward_ms"] / 1e9
        result["kernels"].append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
