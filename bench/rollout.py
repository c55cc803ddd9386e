"""Rollout throughput on one GPU: our TorchEngine against HF `model.generate`, same model, prompts and sampling.

    python bench/rollout.py [--batches 64,256] [--prompt_len 128] [--new_tokens 256] [--out FILE] [--no_hf]
        [--profile_batches 64,1024]

Model: a Qwen2.5-0.5B-shaped Qwen2 (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate 4864, vocab
151,936, tied embeddings) with random weights in bf16; prompts are random token ids of one fixed length
(so HF needs no padding). Random weights make EOS arbitrary, so both sides ignore EOS and generate exactly
`new_tokens` per prompt: equal work. Sampling: temperature 1, no top-k/top-p (HF's default top_k=50 is
switched off). For each batch size B, B prompts go to one HF `generate` call (batch B) and to one engine
call with max_batch_size B. Timed: wall clock around the whole call (prefill included), after a warm-up
call of the same shape (for the engine that warm-up also captures its CUDA graphs, timed separately).
Generated tokens/s = B * new_tokens / seconds. Target: engine >= 5x HF generate.

Also reported: how close the engine's bf16 logprobs are to an HF bf16 forward over the same tokens
(mean |diff| and NeMo-RL's token_mult_prob_error = mean exp(|diff|)), refit (load_weights of the full state
dict) time, and sleep/wake times with the memory they free. Prints JSON; --out also writes it.

Also: the Triton decode kernels against their torch references on fresh random inputs (decode_kernels_vs_reference),
the measured copy bandwidth and bf16 matmul rate (ceilings), and with --profile_batches, mid-generation decode steps
(position 384) per batch: wall ms a scheduler step, GPU ms a graph replay, the floor of a step (weights + live KV
cache at the copy rate plus 2 FLOPs per weight and row at the matmul rate, the two added) and the top kernels of
four eager steps (torch.profiler, summed over layers).

Measured 2026-12-04 on one H200 (nvidia-h200, torch 2.11, Triton 3.6; copy 4.2 TB/s, matmul 777 TFLOP/s),
128-token prompts + 512 new, --no_hf, generated tokens/s of the whole call (prefill included) and ms a step:
    before (the torch decode step): 64: 12,968 (4.94 ms), 256: 38,569 (6.64 ms), 1024: 62,865 (16.29 ms)
    after (Triton attention / sampling / RMSNorm / RoPE+cache write): 64: 26,440 (2.42 ms), 256: 90,392 (2.83 ms),
    1024: 170,255 (6.02 ms); at 1024 the step floor is 2.70 ms: 45% of it over the whole call, 53% in the
    steady state (5.11 ms a step, 5.00 ms GPU; prefill of the 1024 prompts 0.36 s of the 3.1 s call).
    Top kernels at 1024 (14.3 ms of kernels a step before, 4.8 after), before: the attention's batched matmuls
    over the whole length bucket (1.61 + 1.03 ms), float32 copies and casts (1.16 + 0.48 ms), the MLP GEMM
    (1.15 ms), the sampling cumsum (0.88 ms) and exp (0.59 ms); after: the attention kernel 1.41 ms (the live
    KV cache at ~3.4 TB/s), the MLP GEMM 1.16 ms, the LM head 0.38 ms, the sampling kernel 0.37 ms.
    bf16 logprobs vs an HF forward unchanged: mean |diff| 0.0096, token_mult_prob_error 1.0097 (before 1.0098);
    fp32 graph path: greedy equal to HF generate 5/5, logprobs within 8.7e-5.

Measured 2026-11-21 on one H100 80GB (torch 2.11, transformers 5.17), 128-token prompts + 256 new tokens:
64 prompts 14,241 vs 662 tokens/s (21.5x), 256 prompts 37,638 vs 2,910 tokens/s (12.9x); bf16 logprobs vs
an HF forward: mean |diff| 0.0095, token_mult_prob_error 1.0097; fp32 graph path: greedy equal to HF
generate on 5/5 ragged prompts, logprobs within 7e-5.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

DEVICE = "cuda"  # --device cpu (with small --layers) is a smoke test of this script, not a measurement


def build_model(seed: int, layers: int):
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        hidden_size=896, num_hidden_layers=layers, num_attention_heads=14, num_key_value_heads=2,
        intermediate_size=4864, vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True,
        rope_theta=1000000.0, rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model.eval()


def synchronize() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(function):
    synchronize()
    start = time.perf_counter()
    result = function()
    synchronize()
    return result, time.perf_counter() - start


def hf_generate(model, prompts, new_tokens: int, seed: int):
    import torch

    ids = torch.tensor(prompts, device=DEVICE)
    torch.manual_seed(seed)
    with torch.inference_mode():
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                              do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # fmt: skip


def logprob_agreement(model, prompts, results, rows: int = 16) -> dict:
    """Engine logprobs against log_softmax of one HF bf16 forward over prompt + generated tokens."""
    import torch

    diffs = []
    with torch.inference_mode():
        for prompt, result in list(zip(prompts, results, strict=True))[:rows]:
            ids = torch.tensor([prompt + result.token_ids], device=DEVICE)
            logits = model(ids).logits[0, len(prompt) - 1 : -1].float()
            reference = torch.log_softmax(logits, dim=-1)[torch.arange(len(result.token_ids)), ids[0, len(prompt) :]]
            diffs.append((reference - torch.tensor(result.logprobs, device=DEVICE)).abs())
    diff = torch.cat(diffs)
    return {"sequences": len(diffs), "tokens": diff.numel(), "mean_abs_diff": round(diff.mean().item(), 5),
            "max_abs_diff": round(diff.max().item(), 4),
            "token_mult_prob_error": round(torch.exp(diff).mean().item(), 5)}  # fmt: skip


def bench_batch(
    model, batch: int, prompt_len: int, new_tokens: int, seed: int, graphs: bool = True, hf: bool = True
) -> dict:
    import random

    from skills_cli.inference.engine import SamplingParams, TorchEngine

    rng = random.Random(seed)
    prompts = [[rng.randrange(100, 150000) for _ in range(prompt_len)] for _ in range(batch)]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, ignore_eos=True, seed=seed)
    engine = TorchEngine(model, max_batch_size=batch, max_seq_len=2048, use_cuda_graphs=graphs)
    _, capture_s = timed(partial(engine.generate, prompts, params))  # warm-up: captures the graphs
    runs = []
    for repeat in range(3):
        results, seconds = timed(partial(engine.generate, prompts, replace(params, seed=repeat)))
        assert all(len(r.token_ids) == new_tokens for r in results)
        runs.append(seconds)
    ours_s = sorted(runs)[1]
    generated = batch * new_tokens
    ours = {"seconds_median_of_3": round(ours_s, 3), "runs_s": [round(r, 3) for r in runs],
            "tokens_per_s": round(generated / ours_s, 1), "ms_per_step": round(ours_s / new_tokens * 1e3, 3),
            "first_call_with_graph_capture_s": round(capture_s, 3),
            "cuda_graphs": graphs, "graphs_captured": len(engine.graphs), "max_batch_size": batch,
            "max_seq_len": 2048}  # fmt: skip
    engine.sleep(offload_weights=False)  # frees its KV cache and graphs before HF runs
    report = {"prompts": batch, "prompt_len": prompt_len, "new_tokens_per_prompt": new_tokens, "ours": ours}
    if hf:
        report["hf_generate"] = guarded(bench_hf, model, prompts, new_tokens, seed)
    if "seconds" in report.get("hf_generate", {}):
        report["speedup"] = round(report["hf_generate"]["seconds"] / ours_s, 2)
    report["logprobs_vs_hf_forward_bf16"] = guarded(logprob_agreement, model, prompts, results)
    return report


def bench_hf(model, prompts, new_tokens: int, seed: int) -> dict:
    hf_generate(model, prompts, 4, seed)  # warm-up
    out, seconds = timed(partial(hf_generate, model, prompts, new_tokens, seed))
    assert out.shape == (len(prompts), len(prompts[0]) + new_tokens), out.shape
    return {"seconds": round(seconds, 3), "tokens_per_s": round(len(prompts) * new_tokens / seconds, 1),
            "batch": len(prompts), "cache": "default (dynamic)"}  # fmt: skip


def bench_refit_and_sleep(model) -> dict:
    import torch

    from skills_cli.inference.engine import SamplingParams, TorchEngine

    engine = TorchEngine(model, max_batch_size=64, max_seq_len=4096)
    engine.generate([[5] * 16] * 64, SamplingParams(max_new_tokens=8, ignore_eos=True))
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    _, refit_s = timed(partial(engine.load_weights, state))
    allocated = torch.cuda.memory_allocated if DEVICE == "cuda" else (lambda: 0)
    before = allocated()
    _, sleep_s = timed(engine.sleep)
    asleep = allocated()
    _, wake_s = timed(engine.wake)
    engine.generate([[5] * 16] * 64, SamplingParams(max_new_tokens=8, ignore_eos=True))
    return {"refit_full_state_dict_s": round(refit_s, 4), "tensors": len(state),
            "sleep_s": round(sleep_s, 3), "wake_s": round(wake_s, 3),
            "gib_allocated_awake": round(before / 2**30, 2), "gib_allocated_asleep": round(asleep / 2**30, 2),
            "kv_cache_gib": round(engine.kv_cache_bytes() / 2**30, 2)}  # fmt: skip


def check_cuda_graph_correctness() -> dict:
    """The graph-captured CUDA path against HF in float32 on a small scrambled Qwen2: greedy tokens, logprobs,
    seeded sampling independent of capacity (the CPU tests check the eager path the same way)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skills_cli.inference.engine import SamplingParams, TorchEngine

    config = Qwen2Config(hidden_size=128, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=256, vocab_size=512, max_position_embeddings=512, eos_token_id=2,
                         pad_token_id=3, tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(DEVICE).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn_like(parameter)
            parameter.copy_(
                noise * 0.3 if parameter.ndim == 2 else noise * 0.1 if name.endswith("bias") else 1 + 0.1 * noise
            )
    prompts = [[5, 6, 7, 8, 9], [10, 11], list(range(12, 40)), [20, 20, 20], [30, 31, 32, 33]]
    engine = TorchEngine(model, max_batch_size=3, max_seq_len=256)
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=40, temperature=0))
    matches, max_diff = 0, 0.0
    with torch.inference_mode():
        for prompt, result in zip(prompts, greedy, strict=True):
            ids = torch.tensor([prompt], device=DEVICE)
            hf = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False)
            matches += hf[0, len(prompt) :].tolist() == result.token_ids
    sampled = engine.generate(prompts, SamplingParams(max_new_tokens=40, temperature=0.8, seed=3, ignore_eos=True))
    with torch.inference_mode():
        for prompt, result in zip(prompts, sampled, strict=True):
            logits = model(torch.tensor([prompt + result.token_ids], device=DEVICE)).logits[0, len(prompt) - 1 : -1]
            reference = torch.log_softmax(logits.float() / 0.8, dim=-1)[
                torch.arange(40), torch.tensor(result.token_ids)
            ]
            diff = (reference.cpu() - torch.tensor(result.logprobs)).abs().nan_to_num(nan=float("inf"))
            max_diff = max(max_diff, diff.max().item())
    wide = TorchEngine(model, max_batch_size=8, max_seq_len=256)
    again = wide.generate(prompts, SamplingParams(max_new_tokens=40, temperature=0.8, seed=3, ignore_eos=True))
    return {"greedy_equal_to_hf_generate": f"{matches}/{len(prompts)}", "fp32_logprob_max_abs_diff": max_diff,
            "seeded_sampling_same_with_3_and_8_slots": [r.token_ids for r in again] == [r.token_ids for r in sampled],
            "graphs_captured": len(engine.graphs)}  # fmt: skip


def ceilings() -> dict:
    """The two ceilings measured here: device-to-device copy bandwidth and a large bf16 matmul's rate."""
    import torch

    source = torch.randn(2**30, device=DEVICE, dtype=torch.bfloat16)  # 2 GiB
    target = torch.empty_like(source)
    a, b = (torch.randn(8192, 8192, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    copy_s = event_median(lambda: target.copy_(source), 10)
    matmul_s = event_median(lambda: a @ b, 10)
    return {"copy_tb_per_s": round(2 * source.numel() * 2 / copy_s / 1e12, 2),
            "bf16_matmul_tflop_per_s": round(2 * 8192**3 / matmul_s / 1e12, 1)}  # fmt: skip


def event_median(function, repeats: int) -> float:
    """Median seconds of `function` on the device (CUDA events, after one warm-up)."""
    import statistics

    import torch

    function()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def step_bound(model, rows: int, mean_length: float, limits: dict) -> dict:
    """The decode step's floor: weights (tied head read once) and the live KV cache at `limits`' copy rate,
    plus 2 FLOPs per weight and row (matmuls; the embedding is a lookup) at its matmul rate."""
    config = model.config
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_bytes_per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * 2 * (
        config.hidden_size // config.num_attention_heads)  # fmt: skip
    kv_bytes = rows * mean_length * kv_bytes_per_token
    flops = 2 * rows * sum(p.numel() for p in model.parameters())  # the tied matrix counted once: as the head
    memory_ms = (weight_bytes + kv_bytes) / (limits["copy_tb_per_s"] * 1e12) * 1e3
    compute_ms = flops / (limits["bf16_matmul_tflop_per_s"] * 1e12) * 1e3
    return {"weights_gb": round(weight_bytes / 1e9, 2), "kv_gb": round(kv_bytes / 1e9, 2),
            "tflop": round(flops / 1e12, 3), "memory_ms": round(memory_ms, 3), "compute_ms": round(compute_ms, 3),
            "bound_ms_sum": round(memory_ms + compute_ms, 3), "bound_ms_max": round(max(memory_ms, compute_ms), 3)}  # fmt: skip


def profile_decode(model, batch: int, prompt_len: int, new_tokens: int, limits: dict) -> dict:
    """Mid-generation decode steps at `batch` rows: wall ms a scheduler step (host work included), GPU ms a
    graph replay, and the kernels of a few eager steps by device time (torch.profiler)."""
    import random

    import torch

    from skills_cli.inference.engine import SamplingParams, TorchEngine

    rng = random.Random(0)
    engine = TorchEngine(model, max_batch_size=batch, max_seq_len=2048)
    params = SamplingParams(max_new_tokens=new_tokens, temperature=1.0, ignore_eos=True, seed=0)
    for index in range(batch):
        engine.scheduler.submit(scheduler_request(index, [rng.randrange(100, 150000) for _ in range(prompt_len)],
                                                  params))  # fmt: skip
    scheduler = engine.scheduler
    with torch.inference_mode():
        while scheduler.count[0] < new_tokens // 2 - 16:  # to mid-generation: the run's mean length
            scheduler.step()
        _, wall_s = timed(lambda: [scheduler.step() for _ in range(16)])
        replay_s = event_median(list(engine.graphs.values())[-1].replay, 16)
        group = [[rng.randrange(100, 150000) for _ in range(prompt_len)] for _ in range(min(batch, 128))]
        prefill_s = event_median(lambda: engine.backend.prefill(list(range(len(group))), group), 3)
        engine.backend.use_cuda_graphs = False
        scheduler.step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profiler:
            for _ in range(4):
                scheduler.step()
        synchronize()
    bound = step_bound(model, batch, prompt_len + new_tokens / 2, limits)
    kernels = sorted(profiler.key_averages(), key=lambda e: e.device_time_total, reverse=True)
    total = sum(e.self_device_time_total for e in kernels)
    top = [{"kernel": e.key[:90], "ms_per_step": round(e.self_device_time_total / 4e3, 3),
            "share": round(e.self_device_time_total / total, 3)}
           for e in sorted(kernels, key=lambda e: e.self_device_time_total, reverse=True)[:25]]  # fmt: skip
    return {"rows": batch, "position": prompt_len + new_tokens // 2, "wall_ms_per_step": round(wall_s / 16 * 1e3, 3),
            "graph_replay_ms": round(replay_s * 1e3, 3), "prefill_s_all_rows": round(prefill_s * batch / len(group), 4), "eager_kernel_ms_per_step": round(total / 4e3, 3),
            "bound": bound, "share_of_bound_sum": round(bound["bound_ms_sum"] / (wall_s / 16 * 1e3), 3),
            "top_kernels": top}  # fmt: skip


def scheduler_request(index: int, prompt: list[int], params):
    from skills_cli.inference.engine.params import row_key
    from skills_cli.inference.engine.scheduler import Request

    return Request(prompt, params, row_key(0, index), lambda result: None)


def check_kernels() -> dict:
    """The Triton decode kernels against the torch reference paths on random inputs (fresh each call)."""
    import torch

    from skills_cli.inference.engine import cuda_kernels, sampling

    generator = torch.Generator(device=DEVICE).manual_seed(7)
    report = {}
    for rows, length in ((8, 2048), (1024, 1024)):
        keys, values = (torch.randn(rows, 2, length, 64, device=DEVICE, dtype=torch.bfloat16, generator=generator)
                        for _ in range(2))  # fmt: skip
        query = torch.randn(rows, 14, 64, device=DEVICE, dtype=torch.bfloat16, generator=generator)
        lengths = torch.randint(1, length + 1, (rows,), device=DEVICE, generator=generator)
        ours = cuda_kernels.decode_attention(query, keys, values, lengths, 0.125, length).double()
        grouped = query.double().view(rows, 2, 7, 64)
        scores = grouped @ keys.double().transpose(-1, -2) * 0.125
        future = torch.arange(length, device=DEVICE)[None, :] >= lengths[:, None]
        weights = torch.softmax(scores.masked_fill(future[:, None, None], float("-inf")), dim=-1)
        reference = (weights @ values.double()).reshape(rows, 14 * 64)
        report[f"attention_rel_err_rows{rows}_len{length}"] = ((ours - reference).norm() / reference.norm()).item()
    logits = (3 * torch.randn(512, 151936, device=DEVICE, generator=generator)).to(torch.bfloat16)
    u = torch.rand(512, device=DEVICE, generator=generator)
    temperature = torch.tensor([[0.7]] * 256 + [[1.0]] * 256, device=DEVICE)
    modes = torch.tensor([1] * 256 + [0] * 256, device=DEVICE)
    tokens, logprobs = cuda_kernels.sample_plain(logits, u, temperature, modes)
    ref_tokens, _ = sampling.sample(logits, u, sampling.SAMPLE, temperature, None, None)
    greedy, _ = sampling.sample(logits, u, sampling.GREEDY, temperature, None, None)
    reference = torch.where(modes == 1, ref_tokens, greedy)
    chosen = (logits.float() / temperature).log_softmax(-1).gather(1, tokens[:, None]).squeeze(1)
    report.update(check_fused_layer_kernels(generator))
    report["sampled_tokens_equal_to_torch"] = f"{int((tokens == reference).sum())}/512"
    report["sample_logprob_max_abs_diff"] = (chosen - logprobs).abs().max().item()
    return report


def summary(report: dict) -> str:
    """A few lines to read first: tokens/s and ms a step per batch, each profile's share of the bound."""
    lines = [f"kernels: {report['decode_kernels_vs_reference']}", f"head: {report['lm_head_matmul_ms']}"]
    for run in report["runs"]:
        ours = run.get("ours", {})
        lines.append(f"batch {run.get('prompts')}: {ours.get('tokens_per_s')} tokens/s, {ours.get('ms_per_step')} ms/step"
                     f", logprobs {run.get('logprobs_vs_hf_forward_bf16')}")  # fmt: skip
    for profile in report["profiles"]:
        lines.append(
            f"profile {profile.get('rows')}: wall {profile.get('wall_ms_per_step')} ms, replay "
            f"{profile.get('graph_replay_ms')} ms, bound {profile.get('bound', {}).get('bound_ms_sum')} ms, "
            f"prefill {profile.get('prefill_s_all_rows')} s"
        )
        lines += [
            f"  {k['ms_per_step']:8.3f} ms {k['share']:6.1%} {k['kernel']}" for k in profile.get("top_kernels", [])[:15]
        ]
    return "\n".join(lines)


def check_fused_layer_kernels(generator) -> dict:
    """RMSNorm against the HF module, RoPE + cache write against the torch path (forward._rope), in bf16."""
    import torch
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    from skills_cli.inference.engine import cuda_kernels
    from skills_cli.inference.engine.forward import _rope

    def rel(a, b):
        return ((a.double() - b.double()).norm() / b.double().norm()).item()

    norm = Qwen2RMSNorm(896, eps=1e-6).to(DEVICE, torch.bfloat16)
    norm.weight.data.normal_(1, 0.1, generator=generator)
    hidden = torch.randn(1024, 896, device=DEVICE, dtype=torch.bfloat16, generator=generator) * 4
    report = {"rms_norm_rel_err_vs_module": rel(cuda_kernels.rms_norm(norm, hidden), norm(hidden))}
    rows, length = 300, 1024
    query, key, value = (torch.randn(rows, h, 64, device=DEVICE, dtype=torch.bfloat16, generator=generator)
                         for h in (14, 2, 2))  # fmt: skip
    angles = torch.rand(length, 32, device=DEVICE, generator=generator) * 6
    cos, sin = (torch.cat([f(angles)] * 2, dim=-1).to(torch.bfloat16) for f in (torch.cos, torch.sin))
    positions = torch.randint(0, length, (rows,), device=DEVICE, generator=generator)
    keys, values = (torch.zeros(rows, 2, length, 64, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    rotated = cuda_kernels.rope_and_store(query, key, value, cos, sin, positions, keys, values)
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    index = torch.arange(rows, device=DEVICE)
    report["rope_query_rel_err"] = rel(rotated, _rope(query, c, s))
    report["rope_cached_key_rel_err"] = rel(keys[index, :, positions], _rope(key, c, s))
    report["cached_value_equal"] = bool(torch.equal(values[index, :, positions], value))
    return report


def head_matmul_variants(rows: int = 1024) -> dict:
    """The LM head's [rows, 896] x [896, 151936] product through a few equivalent calls (ms, median)."""
    import torch
    import torch.nn.functional as F

    hidden = torch.randn(rows, 896, device=DEVICE, dtype=torch.bfloat16)
    weight = torch.randn(151936, 896, device=DEVICE, dtype=torch.bfloat16)
    variants = {"linear": lambda: F.linear(hidden, weight), "weight_at_hidden_t": lambda: weight @ hidden.T,
                "weight_at_hidden_t_contiguous": lambda: (weight @ hidden.T).T.contiguous()}  # fmt: skip
    report = {name: round(event_median(function, 10) * 1e3, 3) for name, function in variants.items()}
    torch.backends.cuda.preferred_blas_library("cublaslt")
    report["linear_cublaslt"] = round(event_median(variants["linear"], 10) * 1e3, 3)
    torch.backends.cuda.preferred_blas_library("default")
    return report


def guarded(function, *args) -> dict:
    """function(*args), or {"error": ...} with the traceback's last lines, so one broken section still leaves the others."""
    import traceback

    try:
        return function(*args)
    except Exception as error:  # a benchmark reports what broke instead of losing the whole device run
        return {"error": repr(error), "traceback": traceback.format_exc().splitlines()[-8:]}


def main() -> None:
    import torch
    import transformers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64,256")
    parser.add_argument("--prompt_len", type=int, default=128)
    parser.add_argument("--new_tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--no_hf", action="store_true", help="skip HF generate (minutes at batch 1024)")
    parser.add_argument("--profile_batches", default="", help="e.g. 64,1024: profile mid-generation decode steps")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    correctness = guarded(check_cuda_graph_correctness)
    kernels = guarded(check_kernels)
    limits = guarded(ceilings) if DEVICE == "cuda" else {}
    head = guarded(head_matmul_variants) if DEVICE == "cuda" else {}
    model = build_model(args.seed, args.layers)
    report = {
        "benchmark": "rollout", "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE, "layers": args.layers, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "model": "Qwen2.5-0.5B shape, random init, bf16", "sampling": "temperature 1, top_k off, top_p 1",
        "eos": "ignored on both sides: every prompt generates exactly new_tokens (fair equal work)",
        "cuda_graph_correctness_fp32": correctness, "decode_kernels_vs_reference": kernels, "ceilings": limits,
        "lm_head_matmul_ms": head,
        "target_speedup": 5.0,
    }  # fmt: skip
    report["profiles"] = [guarded(profile_decode, model, int(b), args.prompt_len, args.new_tokens, limits)
                          for b in filter(None, args.profile_batches.split(","))]  # fmt: skip
    report["runs"] = [guarded(bench_batch, model, int(b), args.prompt_len, args.new_tokens, args.seed, True,
                              not args.no_hf) for b in args.batches.split(",")]  # fmt: skip
    if any("error" in run for run in report["runs"]):  # still measure something if graph capture broke
        report["runs_eager"] = [guarded(bench_batch, model, int(b), args.prompt_len, args.new_tokens, args.seed, False,
                                        not args.no_hf) for b in args.batches.split(",")]  # fmt: skip
    report["refit_and_sleep"] = guarded(bench_refit_and_sleep, model)
    report["meets_target"] = all(run.get("speedup", 0) >= 5.0 for run in report["runs"])
    text = json.dumps(report, indent=2)
    print(text)
    print(summary(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
