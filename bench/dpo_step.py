"""DPO on one GPU: our DPO trainer's step time and tokens/s/GPU, and TRL's DPOTrainer on the same pairs, as JSON.

    python bench/dpo_step.py [--out bench/results/dpo_step.json] [--logs_dir DIR] [--tiny] [--skip_trl]
        [--variants precomputed,on_the_fly] [--steps 10] [--trl_steps 6] [--batch 64] [--checks 40]
        [--long] [--device_kind nvidia-h200] [--timeouts 150,150,120] [--profile] [--dispatch]

What it does, all offline, each phase a separate process (the real entry points, as users run them):
  1. builds the Qwen2.5-0.5B-shaped Qwen2 of bench/grpo_step.py (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP
     4864, vocabulary 151,936, tied embeddings; `--tiny`: hidden 64, 2 layers) with random weights and its
     arithmetic BPE tokenizer. No SFT warm-up: step time and throughput do not depend on the weights;
  2. preference pairs from the `arith` train split, `--batch` x max(--steps, --trl_steps) of them (one epoch, so
     both trainers precompute reference log-probabilities over the same pairs): prompt = the `generic/math`
     messages, chosen = `--checks` numbered restatements of the equation then the row's solution (grpo_step's
     `long_solution`, about 11 tokens a check), rejected = the same with a wrong result (answer + 1) everywhere;
  3. our DPO (`python -m skills_cli.training.algorithms.dpo`), one run per `--variants` entry (the first is the
     headline): sequence packing on (both sides of a pair in one micro-batch, `--pack_rows` rows of
     max_total_sequence_length tokens), reference log-probabilities `precomputed` (one pass before step 1) or
     `on_the_fly` (a frozen copy of the starting model forwards each micro-batch inside the step);
  4. TRL's DPOTrainer on the same model, tokenizer (its chat template), pairs, beta, loss ("sigmoid"), learning
     rate (constant), AdamW settings, global batch (per-device `--trl_micro_batch` pairs x gradient accumulation),
     max_length, bf16 mixed precision, precompute_ref_log_probs=True (done in its constructor, before step 1, as
     ours), no gradient checkpointing, padded batches (TRL 1.16 disables padding_free).
  5. `--profile`: steps 4-5 of our first variant under torch.profiler in a process of its own: the top ops by
     device and CPU time to <logs>/profile-dpo.txt, device seconds by kernel category (bench/sft_throughput.py's)
     into the JSON; what to read to find where a DPO step spends the time an SFT step of the same tokens does not.
     On a GPU also `profile.timeline` (bench/gpu_timeline.py): each step's wall, GPU-busy and GPU-idle
     milliseconds, and the idle time charged to the host work the GPU waited for (the step's parts are labelled
     `bench:micro_batches`, `bench:model_inputs`, `bench:forward`, `bench:loss`, `bench:backward`,
     `bench:optimizer_step`, ...).

  6. `--dispatch` (a GPU only, its own process, no profiler): after three steps, a step's forward/backward queued
     behind a 4 s GPU sleep, so the host's time to queue each micro-batch's forward and backward is measured
     alone and the GPU then runs the whole queue back to back (its kernel time, `gpu_kernels_s`); host time near
     kernel time means a step whose pace the host sets. Also for two other gradient paths of a single rank, and
     the synchronizing calls of one step (CUDA's sync debug mode).

Step time: ours, `step_time_s` of metrics.jsonl (one optimizer step, synchronized); TRL's, wall clock between
consecutive TrainerCallback.on_step_end calls after a CUDA synchronize. Medians over steps 2..N (step 1 holds the
warm-ups). tokens/s/GPU counts the tokens the model reads a step, prompt + chosen and prompt + rejected of every
pair, no padding (ours: `train/num_tokens`; TRL's: the growth of its `num_tokens` log, the attention-mask sum),
over the step time. Ratio: TRL's median step time over ours (target >= 2).

Measured 2026-12-04 on one H200 (nvidia-h200; torch 2.11, transformers 5.17, accelerate 1.15; TRL 1.16.0,
datasets 5.2.0, dill 0.4.0 and multiprocess 0.70.18 carried as wheels), defaults: 640 pairs, 64 pairs a step,
max length 1024, beta 0.1, lr 1e-6; ours 16 packed rows of 1024 tokens a micro-batch, TRL 8 pairs (16 padded
sequences) a micro-batch x 8 accumulation steps.
    python3 bench/dpo_step.py --out $OUT/dpo_equal.json --device_kind nvidia-h200 --timeouts 130,160,90
    python3 bench/dpo_step.py --lengths variable --out $OUT/dpo_var.json --device_kind nvidia-h200 --timeouts 130,160,90
  equal lengths (40 checks, ~724 tokens a side, ~92.5k tokens a step; both trainers drew the same pairs):
    ours, precomputed reference, median of steps 2-10: 0.796 s, 116,223 tokens/s/GPU, peak 27.0 GiB
    TRL DPOTrainer, precompute_ref_log_probs, median of steps 2-6: 1.414 s, 65,833 tokens/s/GPU, peak 28.9 GiB
    ratio TRL step time / ours 1.78, tokens/s ours / TRL 1.77 (target >= 2: not met).
  variable lengths (each side 4-76 checks): ours 0.835 s, 86,007 tokens/s/GPU, peak 31.6 GiB; TRL 1.612 s,
    52,259 tokens/s/GPU, peak 35.4 GiB; step-time ratio 1.93, tokens/s ratio 1.65. Not the same work: the
    longest sides passed max_length 1024; ours drops such pairs (it ran 5 of the 10 steps asked before its one
    epoch ended, ~72k tokens a step), TRL truncates them (~86k tokens a step). `fit_max_length` now raises
    max_length to the longest sequence; not re-measured since (no device time left).
  Before this session's changes (the same equal-length command): ours 1.384 s, 66,783 tokens/s/GPU, peak 65.0 GiB,
  ratio 0.98. What changed: per-token log-probabilities fused as the SFT loss is (components/logprobs.py: no fp32
  copy of the logits; peak 65 -> 27 GiB), and DPO micro-batches drop their padding on the varlen path (one
  724-token sequence filled a 1024-token row: 29% of the forward/backward was padding).
Since then a DPO step no longer waits for the GPU up to four times a micro-batch (pageable host-to-device copies
and a boolean mask of a device tensor in the loss's bookkeeping). Measured 2026-12-05 at 5ddd6bf on one H100
(nvidia-h100-x1: no H200 could be started; same software and wheels), the same defaults:
    DEVICE_KIND=nvidia-h100-x1 bash bench/device_issue18.sh 3   (device tool, kind nvidia-h100-x1, carry .whl)
  variable lengths (max_length raised to 1472 by fit_max_length, both ran the same ~90k tokens a step):
    ours, median of steps 2-10: 0.863 s, 106,412 tokens/s/GPU, peak 42.3 GiB
    TRL DPOTrainer, median of steps 2-6: 2.906 s, 31,685 tokens/s/GPU, peak 46.1 GiB
    ratio TRL step time / ours 3.37, tokens/s ours / TRL 3.36 (target >= 2: met)
  equal lengths (~92.5k tokens a step, the same tokens each step on both sides):
    ours: 0.808 s, 115,181 tokens/s/GPU, peak 27.0 GiB; TRL: 1.546 s, 59,982 tokens/s/GPU, peak 28.9 GiB
    ratio 1.91, tokens/s ratio 1.92 (target >= 2: not met). Not comparable with the H200 figures above (another
    card: TRL ran 9% slower here, ours 2%). The profile of that call ran past its 50 s and reported nothing;
    `bash bench/device_issue18.sh 4` profiles our steps alone with 150 s, and compares at twice the micro-batch.
The same H100 kind, 2026-12-05, the working tree at 323154a (the JSON's `commit` says b2031db: the device's copy
of .git was the session's first), `DEVICE_KIND=nvidia-h100-x1 bash bench/device_issue18.sh 4`:
  our steps alone (the machine's first run), median 1.029 s (steps 0.975-1.211). Their profile (steps 4-5, two
    steps): device time by category matmul 0.776 s, compiled (triton) 0.285, attention 0.176, other 0.143, eager
    elementwise/reduce 0.089, optimizer 0.074, copy/fill 0.021: ~0.78 s of kernels a step, against ~0.8 s a step
    unprofiled. Within it: foreach AdamW ~20 ms, fp32 gradient accumulation over 8 micro-batches ~20 ms, the
    fused log-probabilities ~40 ms (2.4 + 2.6 ms a micro-batch over the vocabulary).
  twice the micro-batch (ours 32 rows, TRL 16 pairs x 4): ours 0.792 s, 115,683 tokens/s/GPU, peak 43.6 GiB; TRL
    1.469 s, 63,196 tokens/s/GPU, peak 48.7 GiB: ratio 1.85 (TRL gains 5% from it, ours 2%).
Then (6b3fd08: AdamW fused on GPUs; logits only at labelled positions, which here saves little: 94.5% of this
bench's tokens are completion tokens), `bash bench/device_issue18.sh 5` on the same kind:
  equal lengths (the machine's first run): ours steps 2-10 1.152, 0.941, 0.811, 0.814, 0.855, 0.975, 1.182, 1.198,
    1.454 s (median 0.975 s, 95,098 tokens/s/GPU, peak 26.6 GiB); TRL 1.571 s (steps 1.554-1.575), 58,892
    tokens/s/GPU, 28.9 GiB: ratio 1.61.
  variable lengths: ours 0.868 s (a 6.2 s step 2, then 0.714-0.897), 107,255 tokens/s/GPU, 41.4 GiB; TRL 3.031 s,
    30,383 tokens/s/GPU, 46.1 GiB: 3.49.
  Our step times spread over 80% within one run where TRL's spread over 1%; c77c796 keeps Python's garbage
  collector out of the steps (a full pass walks every object torch.compile left). At c77c796, the same kind, equal
  lengths alone, the machine's first run again (the device tool, carrying .whl, installed as device_issue18.sh does):
    python3 bench/dpo_step.py --out $OUT/dpo_equal.json --logs_dir $OUT/dpo_equal_logs \
        --device_kind nvidia-h100-x1 --timeouts 100,150,0
  ours steps 2-10 0.915, 1.000, 0.824, 0.856, 0.826, 0.850, 0.814, 0.870, 1.167 s (median 0.856 s, 107,899
  tokens/s/GPU, peak 26.6 GiB); TRL 1.568 s (1.565-1.609), 58,888 tokens/s/GPU, 28.9 GiB: ratio 1.83 (target
  >= 2: not met). Less spread than the run before, not gone: one run each, so not shown to be the collector's.
  Our fastest steps (0.81-0.83 s) match ~0.78 s of kernels a step: what is left is GPU work (matmuls 50%).
Not re-measured since (2026-12-05, second session: no device could be started): a DPO step now builds the next
step's micro-batches while the GPU updates the weights (~30 ms of host work a step of these pairs on a 2-core
host, before: with the GPU idle at the step's start), and the gradient clip no longer waits for the GPU.
`DEVICE_KIND=... bash bench/device_issue18.sh 6` measures that against TRL, with the profile's timeline, then the
whole model as one FSDP unit (an experiment: fewer host hooks, more memory).
Measured 2026-12-05 at b0f19dc on one H200 (nvidia-h200: no H100 could be started; same software and wheels),
`DEVICE_KIND=nvidia-h200 bash bench/device_issue18.sh 6` (device tool, kind nvidia-h200, carry .whl), equal lengths:
  ours, median of steps 2-10: 0.742 s (0.718-0.823), 124,714 tokens/s/GPU, peak 26.6 GiB; TRL 1.379 s
    (1.361-1.410), 66,932 tokens/s/GPU, peak 28.9 GiB: ratio 1.86 (target >= 2: not met; TRL ran 1.414 s on
    this kind on 2026-12-04, ours 0.796 s then).
  the whole model as one FSDP unit (SKILLS_CLI_FSDP_ONE_UNIT=1, ours alone, next run on the same machine): 0.735 s
    (0.719-0.803): within the spread of the per-layer units.
  the profile (two steps, profiler on): GPU busy 627 and 617 ms of steps of 1045 and 1168 ms; the idle time lies
    in ~3,600 gaps a step: a quarter of it in gaps under 100 us, ~30 gaps a step over 1 ms, the largest 23.6 ms.
    Host work the GPU waited for: the model's Python between operators inside a micro-batch's forward, the
    compiled layers' wrapper code and dynamo's cache lookups, launch latency. Unprofiled, ~0.62 s of kernels in
    a 0.742 s step: the host sets the pace. (That run's timeline counted each step twice, from the profiler's
    GPU-side copy of the step's annotation: the figures here are per step; fixed in 0bda425.)
Measured 2026-12-06 on one H100 (nvidia-h100-x1: the tool gave H100s for kind nvidia-h200; same software and
wheels), each line one device call (a fresh machine start), equal lengths. Step-time medians, steps 2-10 (ours)
and 2-6 (TRL); the JSONs' `commit` names the session's first commit (the device's copy of .git), not the tree run.
  at 074e297 (the update queued before the metrics are read; FSDP flags set twice a step), defaults, 16 CPU threads:
    DEVICE_KIND=nvidia-h100-x1 bash bench/device_issue18.sh 7   (device tool, kind nvidia-h200, carry .whl)
    ours 0.799 s (0.734-1.128), 116,502 tokens/s/GPU, 26.6 GiB; TRL 1.544 s (1.487-1.558), 60,262, 28.9 GiB: 1.93
    twice the micro-batch (ours 32 rows, TRL 16 pairs x 4: 16 pairs a micro-batch each): ours 0.706 s
    (0.700-0.738), 131,390 tokens/s/GPU, 42.9 GiB; TRL 1.410 s (1.403-1.438), 65,792, 48.7 GiB: 2.00 (1.998)
    ours with inductor's C++ wrapper (TORCHINDUCTOR_CPP_WRAPPER=1): its compilation ran past the 95 s allowed.
  ours alone, the model as one FSDP unit, 1 / 4 / 24 decoder layers a compiled call (an experiment, not kept):
    0.749 s / 0.751 s / compilation past 140 s: fewer compiled calls a micro-batch changed nothing.
  ours alone under the profiler (steps 4-5, 16 threads): GPU busy 661 and 656 ms of 1,668 and 1,458 ms (profiled);
    its 12 largest gaps, 25-48 ms, were charged to CPU `aten::index` inside model_inputs and (one) to a
    `repeat_interleave` building the next step's micro-batches: small ops (~1 ms a micro-batch on a 2-core host)
    stalled by a 16-thread pool. Since then a GPU trainer keeps 4 CPU threads (parallel.gpu_host_threads).
  ours alone with OMP_NUM_THREADS=1 and =4 (the same start): 0.718 s (0.713-0.760) and 0.718 s (0.714-0.750).
  with f8b41b4's code (4 threads), a slower start: defaults, ours 1.007 s (0.832-1.129; TRL's run overran its 95 s); then
    both trainers with OMP_NUM_THREADS=4: ours 0.865 s (0.761-0.951), 106,650 tokens/s/GPU; TRL 1.609 s
    (1.550-1.633), 57,593: 1.86; twice the micro-batch: ours 0.714 s (0.704-0.787), 129,323 tokens/s/GPU, 42.9
    GiB; TRL 1.455 s (1.430-1.462), 63,776, 48.7 GiB: 2.04.
    python3 bench/dpo_step.py --out $OUT/dpo_equal.json --device_kind nvidia-h100-x1 --timeouts 85,95,0
    OMP_NUM_THREADS=4 python3 bench/dpo_step.py --out $OUT/dpo_equal_omp4.json --device_kind nvidia-h100-x1 \
        --timeouts 85,95,0
    python3 bench/dpo_step.py --pack_rows 32 --trl_micro_batch 16 --out $OUT/dpo_mb32.json \
        --device_kind nvidia-h100-x1 --timeouts 85,95,0
  So: at 16 pairs a micro-batch 1.998 and 2.04 (the target missed by 0.1%, then met); at 8 pairs 1.93 and 1.86
  (not met), where our steps spread over up to 54% within a run, TRL's over 5%.
Measured 2026-12-06 (a later session) on one H100 each call (nvidia-h100-x1), the training step of d985687 (4 CPU
threads; later commits changed validation and this bench), equal lengths, defaults (8 pairs a micro-batch), with the device tool (carry .whl, installed as above):
    python3 bench/dpo_step.py --dispatch --out $OUT/dpo_equal.json --device_kind nvidia-h100-x1 --timeouts 85,95,110
  ours 0.712 s (0.704-0.734), 129,742 tokens/s/GPU, 26.6 GiB; TRL 1.470 s (1.468-1.482), 62,793, 28.9 GiB: 2.07.
  The same machine, SKILLS_CLI_FSDP_ONE_UNIT=1: 0.711 s (0.704-0.718).
  Another start, the same command (TRL's run left out): ours 0.749 s (0.716-0.770). A third start (no --dispatch):
  ours 0.782 s (0.728-0.821), 118,969 tokens/s/GPU; TRL 1.497 s (1.484-1.520), 61,748: 1.91 (not met). There,
  sampled each second with `nvidia-smi dmon -s pc`, the GPU drew 613-677 W during our steps and its clock fell
  from 1980 to 1785-1965 MHz (the H100's 700 W cap); 503-614 W and 1845-1980 MHz during TRL's. A fourth start, the
  same command: ours 0.759 s (0.728-0.892), 121,877 tokens/s/GPU; TRL 1.515 s (1.510-1.531), 60,825: 1.997
  (tokens/s 2.004); 638-675 W at 1785-1905 MHz during ours, 497-602 W at 1950-1980 MHz during TRL's.
  --dispatch, the first two starts (milliseconds a micro-batch, host to queue it / GPU kernels to run it): forward
  26-42 and backward 52-58 on the host, 87-95 on the GPU (0.695-0.761 s a step of kernels): the host queues a
  micro-batch in about the time the GPU runs it, so either one can set a step's pace. Reducing each micro-batch's
  gradients (FSDP's reduce-scatter, world of one) instead of accumulating them unsharded cost GPU time (0.73-0.86
  s of kernels a step) and saved no host time; so did keeping the weights gathered while reducing (0.72-0.79 s).
  The first micro-batch's forward of each step waits for the GPU once (the step's start, where its queue is empty
  anyway); CUDA's sync debug mode names no call inside it.
  Tried and dropped (an experiment, not kept): q/k/v and gate/up as one matmul each in the compiled layers (an
  inductor pre-grad pass concatenating the weights): ours 0.767 s (0.729-0.956) against 0.748 s (0.723-0.810)
  without it on the same machine, TRL 1.528 s there (1.99).
  So at 8 pairs a micro-batch the ratio stays about 2 (1.91-2.07 today): our kernels run near the card's power cap
  and the host's queueing time is as long as the GPU's work, where TRL's step is the GPU's alone.
Measured 2026-12-06 (a third session) on one H100 each call (device tool, kind nvidia-h200: H100s came), equal
lengths, defaults (8 pairs a micro-batch), carry .whl installed as above. The decoder stack compiled as one graph
with the model one FSDP unit (`policy.dtensor_cfg.compile_scope=stack`, now DPO's default and this bench's
`--compile_scope`): one compiled call and one compiled backward a micro-batch instead of 24 of each.
  first start, as an experiment (environment switches since replaced by the key): ours 0.717 s (0.710-0.724),
    TRL 1.494 s (1.492-1.505), 61,856 tokens/s/GPU: 2.08 (tokens/s 2.09); per layer on the same machine, ours
    alone: 0.727 s (0.714-0.778). Step 1 (compilation) 57 s against 5.7 s per layer.
  second start, at 7cc8c25 (the key, the bench's default):
    python3 bench/dpo_step.py --out $OUT/dpo_equal.json --logs_dir $OUT/l1 --device_kind nvidia-h100-x1 \
        --timeouts 170,85,0
    python3 bench/dpo_step.py --compile_scope layers --skip_trl --out $OUT/dpo_layers.json \
        --device_kind nvidia-h100-x1 --timeouts 70,0,0
    ours 0.733 s (0.726-0.761), 125,959 tokens/s/GPU, peak 26.6 GiB; TRL 1.551 s (1.524-1.558), 59,796, 28.9
    GiB: 2.12 (tokens/s 2.11). Per layer on the same machine: 0.878 s (0.857-0.988), 105,154 tokens/s/GPU: that
    machine's host, not its GPU, set the per-layer pace (1.77 against its TRL). Step 1 73 s against 8.1 s.
  bench/attention_kernels.py --equal --rows 16 --length 724 there (first start): FA2 0.15 ms forward, 0.35 ms
    backward; cuDNN's ragged kernels, now called with no bias, run but take 42 / 46 ms a call (a plan built each
    call) and their gradients are wrong (max |diff| 1.4e6): FA2 stays.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_step import (  # noqa: E402  (bench scripts import each other from this folder)
    PROMPT_CONFIG,
    QWEN25_05B,
    ROOT,
    TARGET_RATIO,
    TINY,
    arith_rows,
    build_model,
    finish,
    long_solution,
    median,
    read_jsonl,
    rnd,
    run_process,
    save,
    snapshot_commit,
    write_jsonl,
)

BETA = 0.1


# ---- pairs --------------------------------------------------------------------------------------------------------


def wrong_row(row: dict) -> dict:
    """The row with its result replaced by answer + 1 in the equation and the boxed answer."""
    answer = row["expected_answer"]
    wrong = str(int(answer) + 1)
    equation, _ = row["solution"].split(" = ", 1)
    return {**row, "solution": f"{equation} = {wrong}. The answer is \\boxed{{{wrong}}}."}


def side_checks(count: int, checks: int, lengths: str, seed: int) -> list[int]:
    """Checks per completion side: all `checks` ("equal"), or ("variable") drawn uniformly from
    [checks/10, 1.9 x checks] with a fixed seed, each side on its own, as chosen and rejected answers of real
    preference data differ in length (the mean stays `checks`)."""
    if lengths == "equal":
        return [checks] * count
    if lengths != "variable":
        raise SystemExit(f"unknown --lengths {lengths!r} (equal, variable)")
    import random

    low = max(checks // 10, 0)
    draw = random.Random(seed)
    return [draw.randint(low, 2 * checks - low) for _ in range(count)]


def preference_rows(rows: list[dict], checks: int, lengths: str = "equal", seed: int = 0) -> list[dict]:
    from skills_cli.prompts.prompt_config import load_prompt_config

    prompt = load_prompt_config(PROMPT_CONFIG)
    counts = side_checks(2 * len(rows), checks, lengths, seed)
    return [{"prompt": prompt.messages(row), "chosen": long_solution(row, counts[2 * i]),
             "rejected": long_solution(wrong_row(row), counts[2 * i + 1])}
            for i, row in enumerate(rows)]  # fmt: skip


def fit_max_length(report: dict, args, model: Path, pairs: list[dict]) -> None:
    """Raise --max_length (a multiple of 64) to the longest prompt + completion, so neither trainer shortens a
    pair: TRL truncates an overlong side, ours drops the pair, and with variable lengths the two would then
    train on different tokens. The longest sequence and the length used go into the report's settings."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    longest = max(len(tokenizer.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": row[side]}],
                                                    tokenize=True, return_dict=False))
                  for row in pairs for side in ("chosen", "rejected"))  # fmt: skip
    args.max_length = max(args.max_length, -(-longest // 64) * 64)
    report["settings"].update(longest_sequence_tokens=longest, max_length=args.max_length)


def corpus_rows(pairs: list[dict]) -> list[dict]:
    """The pairs as `messages` rows, the tokenizer's training text (build_model's corpus argument)."""
    return [{"messages": row["prompt"] + [{"role": "assistant", "content": row[side]}]}
            for row in pairs for side in ("chosen", "rejected")]  # fmt: skip


# ---- ours ---------------------------------------------------------------------------------------------------------


def run_ours(report: dict, args, variant: str, model: Path, pairs_path: str, work: Path, logs: Path,
             timeout: float) -> None:  # fmt: skip
    """One run of our DPO trainer; the first variant's results go to report["dpo"], others to
    report["dpo_<variant>"]."""
    if variant not in ("precomputed", "on_the_fly"):
        raise SystemExit(f"unknown variant {variant!r} (precomputed, on_the_fly)")
    name = "dpo" if "dpo" not in report else f"dpo_{variant}"
    overrides = our_overrides(args, variant, model, pairs_path, work / name, args.steps)
    python = sys.executable
    report[name] = {"reference_logprobs": variant, "sequence_packing": True,
                    "command": f"{python} -m skills_cli.training.algorithms.dpo " + " ".join(overrides)}  # fmt: skip
    report[name].update(run_process([python, "-m", "skills_cli.training.algorithms.dpo", *overrides],
                                    logs / f"{name}.log", timeout, work))  # fmt: skip
    report[name].update(summarize_ours(read_jsonl(work / name / "logs" / "metrics.jsonl")))


def our_overrides(args, variant: str, model: Path, pairs_path: str, output: Path, steps: int) -> list[str]:
    return [
        f"++policy.model_name={model}", f"++data.train_data={pairs_path}", f"++output_dir={output}",
        f"++dpo.max_num_steps={steps}", f"++dpo.seed={args.seed}", f"++dpo.reference_policy_kl_penalty={BETA}",
        f"++dpo.reference_logprobs={variant}", f"++policy.train_global_batch_size={args.batch}",
        "++policy.sequence_packing.enabled=true", f"++policy.train_micro_batch_size={args.pack_rows}",
        f"++policy.max_total_sequence_length={args.max_length}", "++policy.precision=bfloat16",
        f"++policy.optimizer.kwargs.lr={args.lr}", "++policy.scheduler.name=constant",
        "++checkpointing.enabled=false", f"++policy.dtensor_cfg.compile_scope={args.compile_scope}",
    ]  # fmt: skip


# ---- profile (its own process) ------------------------------------------------------------------------------------

PROFILE_WARMUP, PROFILE_STEPS = 3, 2


def run_profile(report: dict, args, model: Path, pairs_path: str, work: Path, logs: Path, timeout: float) -> None:
    """`--profile`: our first variant's steps PROFILE_WARMUP + 1.. under torch.profiler in a worker process; the
    top kernels and CPU ops to <logs>/profile-dpo.txt, device time by kernel category into report["profile"]."""
    variant = args.variants.split(",")[0]
    spec = {"overrides": our_overrides(args, variant, model, pairs_path, work / "profile", PROFILE_WARMUP +
                                       PROFILE_STEPS), "text": str(logs / "profile-dpo.txt"),
            "result": str(work / "profile.json")}  # fmt: skip
    run_worker(report, "profile", spec, work, logs, timeout)


def profile_worker(spec_path: str) -> None:
    import torch
    from gpu_timeline import timeline_summary
    from sft_throughput import is_kernel, kernel_categories
    from torch.profiler import ProfilerActivity, profile

    from skills_cli.common.overrides import load_config_from_argv
    from skills_cli.training.algorithms.dpo.config import DPOConfig
    from skills_cli.training.algorithms.dpo.trainer import DPOTrainer
    from skills_cli.training.components.parallel import distributed_session

    spec = json.loads(Path(spec_path).read_text())
    config = load_config_from_argv(DPOConfig, spec["overrides"], where="dpo")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with distributed_session() as dist:
        trainer = DPOTrainer(config, dist)
        for _ in range(PROFILE_WARMUP):  # past compilation and the first shapes
            trainer.train_step()
        name_host_work(trainer)
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            rows = [trainer.train_step() for _ in range(PROFILE_STEPS)]
        wall = time.perf_counter() - start
    timeline = {}
    if torch.cuda.is_available():
        trace = Path(spec["result"]).with_suffix(".trace.json")
        prof.export_chrome_trace(str(trace))
        try:
            timeline = timeline_summary(trace, "bench:train_step")
        except Exception as error:  # the instrument failing must not lose the profile's other figures
            timeline = {"error": repr(error)}
        trace.unlink()
    events = prof.key_averages()
    device_s = sum(e.self_device_time_total for e in events if is_kernel(e)) / 1e6
    by_device = events.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=90)
    by_cpu = events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=90)
    Path(spec["text"]).write_text(f"ops by self device time\n{by_device}\n\nops by self CPU time\n{by_cpu}\n")
    Path(spec["result"]).write_text(json.dumps({
        "profiled_steps": PROFILE_STEPS, "profiled_wall_s": wall, "device_busy_s": device_s,
        "device_busy_fraction": device_s / wall, "step_times_s": [row["step_time_s"] for row in rows],
        "device_s_by_category": kernel_categories(events), "profile_file": spec["text"],
        "timeline": timeline}))  # fmt: skip


DISPATCH_STEPS = 2


def run_dispatch(report: dict, args, model: Path, pairs_path: str, work: Path, logs: Path, timeout: float) -> None:
    """`--dispatch`: how long the host takes to queue a step's work, against how long the GPU takes to run it
    (`dispatch_worker`, its own process); what decides whether our step is bound by the host or the GPU."""
    import torch

    if not torch.cuda.is_available():
        report["dispatch"] = {"skipped": "measures a GPU's queue: no GPU here"}
        return
    variant = args.variants.split(",")[0]
    spec = {"overrides": our_overrides(args, variant, model, pairs_path, work / "dispatch", PROFILE_WARMUP +
                                       3 * DISPATCH_STEPS + 1), "result": str(work / "dispatch.json")}  # fmt: skip
    run_worker(report, "dispatch", spec, work, logs, timeout)


def run_worker(report: dict, name: str, spec: dict, work: Path, logs: Path, timeout: float) -> None:
    """This script's `--<name>_worker` on `spec` in a process of its own: its exit and wall time, and the figures of
    its result file (spec["result"]), go to report[name]; its output to <logs>/<name>.log."""
    spec_path = work / f"{name}_spec.json"
    spec_path.write_text(json.dumps(spec))
    process = run_process([sys.executable, str(Path(__file__).resolve()), f"--{name}_worker", str(spec_path)],
                          logs / f"{name}.log", timeout, work)  # fmt: skip
    result = Path(spec["result"])
    report[name] = {**process, **(json.loads(result.read_text()) if result.is_file() else {})}


def dispatch_worker(spec_path: str) -> None:
    """A measuring instrument, no profiler: after PROFILE_WARMUP steps, DISPATCH_STEPS times (1) a step's
    forward/backward queued behind a GPU sleep longer than the queueing, so the host's time to queue it (and
    each micro-batch's forward and backward) is measured alone and the GPU then runs the whole queue without a
    gap (its kernel time); (2) a normal step, for its wall time. Host time above kernel time: host-bound."""
    import torch

    from skills_cli.common.overrides import load_config_from_argv
    from skills_cli.training.algorithms.dpo.config import DPOConfig
    from skills_cli.training.algorithms.dpo.trainer import DPOTrainer
    from skills_cli.training.components.batching import MicroBatch
    from skills_cli.training.components.parallel import distributed_session

    spec = json.loads(Path(spec_path).read_text())
    config = load_config_from_argv(DPOConfig, spec["overrides"], where="dpo")
    marks: list[tuple[str, float]] = []
    blocked = {"sleep_cycles": 0, "event": None}

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapped(*a, **k):
            if label == "micro_batch" and blocked["sleep_cycles"]:  # the step's first kernel: the GPU sleeps first
                torch.cuda._sleep(blocked["sleep_cycles"])
                blocked["event"] = torch.cuda.Event(enable_timing=True)
                blocked["event"].record()
                blocked["sleep_cycles"] = 0
            marks.append((label, time.perf_counter()))
            result = original(*a, **k)
            marks.append((label + "_end", time.perf_counter()))
            return result

        setattr(owner, name, wrapped)

    with distributed_session() as dist:
        trainer = DPOTrainer(config, dist)
        for _ in range(PROFILE_WARMUP):
            trainer.train_step()
        cycles_per_s = sleep_cycles_per_second(torch)
        timed(MicroBatch, "model_inputs", "micro_batch")
        timed(trainer.policy, "_logits", "forward")
        timed(torch.Tensor, "backward", "backward")
        syncs = synchronizing_calls(trainer, torch)
        results = {"default": [queue_one_step(trainer, torch, blocked, marks, cycles_per_s)
                                for _ in range(DISPATCH_STEPS)]}  # fmt: skip
        if trainer.policy.backend == "dtensor" and trainer.dp_size == 1:
            # what the single-rank shortcut (`dtensor._accumulate_unsharded`) changes on the host
            from skills_cli.training.policy import dtensor

            dtensor._accumulate_unsharded = lambda model, last: None
            results["sync_each_micro_batch"] = [queue_one_step(trainer, torch, blocked, marks, cycles_per_s)
                                                for _ in range(DISPATCH_STEPS)]  # fmt: skip
            # reduce each micro-batch's gradients, but keep the weights gathered until the step's last backward
            dtensor._accumulate_unsharded = lambda model, last: model.set_reshard_after_backward(last, recurse=True)
            results["reduce_each_keep_gathered"] = [queue_one_step(trainer, torch, blocked, marks, cycles_per_s)
                                                    for _ in range(DISPATCH_STEPS)]  # fmt: skip
    Path(spec["result"]).write_text(json.dumps({"threads": torch.get_num_threads(), "synchronizing_calls": syncs,
                                                **results}, indent=1))  # fmt: skip


def synchronizing_calls(trainer, torch) -> list[dict]:
    """One normal step under CUDA's sync debug mode: each call site that made the host wait for the GPU (as
    torch reports them), with the innermost frames of ours, transformers' and torch's code, and how often."""
    import traceback
    import warnings

    sites: dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-1]
                  if any(part in f.filename for part in ("skills_cli", "transformers", "torch"))]  # fmt: skip
        key = f"{str(message)[:80]} <- " + " <- ".join(reversed(frames[-6:]))
        sites[key] = sites.get(key, 0) + 1

    with warnings.catch_warnings():  # restores showwarning on the way out
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return [{"site": site, "count": count} for site, count in sorted(sites.items(), key=lambda kv: -kv[1])]


def queue_one_step(trainer, torch, blocked: dict, marks: list, cycles_per_s: float, sleep_s: float = 4.0) -> dict:
    """One blocked step (see dispatch_worker), its update included, then a normal step."""
    marks.clear()
    blocked["sleep_cycles"] = int(sleep_s * cycles_per_s)
    pairs = trainer._next_pairs(trainer.position)
    built = time.perf_counter()
    batches = trainer.micro_batches(pairs)
    build_s = time.perf_counter() - built
    trainer.policy.zero_grad()
    launched = trainer.launch_global_batch(pairs, "train", train=True, batches=batches)
    queued = time.perf_counter()
    trainer.policy.optimizer_step_async(trainer.config.policy.max_grad_norm)
    updated = time.perf_counter()
    end = torch.cuda.Event(enable_timing=True)
    end.record()
    torch.cuda.synchronize()
    launched.means()
    figures = queue_figures(marks, queued, sleep_s)
    figures.update(update_host_ms=round((updated - queued) * 1e3, 2), build_micro_batches_s=rnd(build_s),
                   gpu_kernels_s=rnd(blocked["event"].elapsed_time(end) / 1e3),
                   normal_step_s=rnd(trainer.train_step()["step_time_s"]))  # fmt: skip
    return figures


def queue_figures(marks: list[tuple[str, float]], queued: float, sleep_s: float) -> dict:
    """The host's queueing times from the (label, time) marks of one blocked step."""
    starts = [t for label, t in marks if label == "micro_batch"]
    backward = [
        (t, u) for (a, t), (b, u) in zip(marks, marks[1:], strict=False) if (a, b) == ("backward", "backward_end")
    ]
    host_s = queued - starts[0]
    first: dict[str, float] = {}  # the first micro-batch's marks
    for label, t in marks:
        first.setdefault(label, t)
    return {"sleep_s": sleep_s, "host_queue_s": rnd(host_s), "queue_outran_sleep": host_s > sleep_s,
            "first_micro_batch_ms": {"inputs": round((first["micro_batch_end"] - starts[0]) * 1e3, 2),
                                     "to_forward": round((first["forward"] - starts[0]) * 1e3, 2),
                                     "forward": round((first["forward_end"] - first["forward"]) * 1e3, 2),
                                     "to_backward": round((first["backward"] - starts[0]) * 1e3, 2)},
            "forward_host_ms": [round((b0 - m) * 1e3, 2) for m, (b0, _) in zip(starts, backward, strict=True)],
            "backward_host_ms": [round((b1 - b0) * 1e3, 2) for b0, b1 in backward]}  # fmt: skip


def sleep_cycles_per_second(torch) -> float:
    """GPU clock cycles of torch.cuda._sleep per second, measured."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(200_000_000)
    end.record()
    torch.cuda.synchronize()
    return 200_000_000 / (start.elapsed_time(end) / 1e3)


def name_host_work(trainer) -> None:
    """Label the parts of a DPO step in the profile (gpu_timeline charges GPU idle time to them)."""
    import torch
    from gpu_timeline import annotate

    from skills_cli.training.components.batching import MicroBatch
    from skills_cli.training.policy import dtensor

    for owner, name, label in ((trainer, "train_step", "bench:train_step"),
                               (trainer, "micro_batches", "bench:micro_batches"),
                               (trainer, "prepare", "bench:prepare"), (trainer, "pair_terms", "bench:loss"),
                               (trainer.policy, "forward_backward", "bench:forward_backward"),
                               (trainer.policy, "_logits", "bench:forward"),
                               (trainer.policy, "optimizer_step", "bench:optimizer_step"),
                               (dtensor, "clip_grad_norm_", "bench:clip_grad_norm"),
                               (MicroBatch, "model_inputs", "bench:model_inputs"),
                               (torch.Tensor, "backward", "bench:backward")):  # fmt: skip
        annotate(owner, name, label)


def summarize_ours(rows: list[dict]) -> dict:
    train = [r for r in rows if "train/loss" in r]
    if not train:
        return {}
    steady = train[1:] or train
    return {
        "steps": len(train),
        "step_seconds": [rnd(r["step_time_s"]) for r in train],
        "median_step_s_steps_2_to_n": rnd(median([r["step_time_s"] for r in steady])),
        "step_1_s": rnd(train[0]["step_time_s"]),
        "tokens_per_step": [int(r["train/num_tokens"]) for r in train],
        "tokens_per_sec_per_gpu_median": rnd(median([r["tokens_per_sec_per_gpu"] for r in steady]), 1),
        "peak_memory_gib": rnd(max(r.get("peak_memory_gib") or 0 for r in train), 2),
        "loss_per_step": [rnd(r["train/loss"]) for r in train],
        "accuracy_per_step": [rnd(r["train/accuracy"], 3) for r in train],
    }


# ---- TRL ------------------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    """Runs in its own process: TRL's DPOTrainer for spec["steps"] optimizer steps; writes spec["out"] after
    every step, so a run cut short still leaves what it measured."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    report: dict = {"status": "starting"}

    def save_report() -> None:
        out.write_text(json.dumps(report, indent=1) + "\n")

    try:
        import torch
        import transformers
        import trl
        from datasets import Dataset
        from datasets.table import InMemoryTable
        from transformers import AutoTokenizer, TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except Exception as error:  # report exactly why TRL cannot run here
        report.update(status="import_failed", error=f"{type(error).__name__}: {error}")
        save_report()
        return
    import accelerate
    import datasets

    report["versions"] = {"trl": trl.__version__, "transformers": transformers.__version__,
                          "datasets": datasets.__version__, "accelerate": accelerate.__version__}  # fmt: skip
    cuda = spec["device"] == "cuda"
    rows = [json.loads(line) for line in Path(spec["train_data"]).read_text().splitlines()]
    # conversational rows; a fixed fingerprint (datasets' dill hashing of the Arrow table failed with pyarrow 26)
    table = InMemoryTable.from_pylist([{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])  # fmt: skip
    dataset = Dataset(table, fingerprint=f"arith-dpo-{len(rows)}-{spec['max_length']}")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    config = DPOConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], seed=spec["seed"],
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["batch"] // spec["micro_batch"],
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.1, adam_beta1=0.9,
        adam_beta2=0.98, max_grad_norm=1.0, beta=spec["beta"], loss_type=["sigmoid"], max_length=spec["max_length"],
        precompute_ref_log_probs=True, padding_free=False, bf16=cuda, gradient_checkpointing=False, use_cpu=not cuda,
        logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0, disable_dropout=True,
    )  # fmt: skip
    report["config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "beta", "loss_type", "learning_rate",
        "max_length", "precompute_ref_log_probs", "padding_free", "bf16", "gradient_checkpointing")}  # fmt: skip
    step_ends: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            sync()
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            step_ends.append(time.perf_counter())
            report["step_seconds"] = [round(b - a, 4) for a, b in zip(step_ends, step_ends[1:], strict=False)]
            report["status"] = f"running ({state.global_step} steps)"
            save_report()

        def on_log(self, args, state, control, logs=None, **kwargs):
            row = {"step": state.global_step, **{k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}}
            report.setdefault("logs", []).append(row)

    start = time.perf_counter()
    trainer = DPOTrainer(model=spec["model"], args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(spec["model"]), callbacks=[Clock()])  # fmt: skip
    report["setup_s"] = round(time.perf_counter() - start, 2)  # tokenization and the reference precompute
    report["status"] = "training"
    save_report()
    try:
        trainer.train()
        report["status"] = "finished"
    except Exception as error:
        import traceback

        report.update(status="train_failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc().splitlines()[-10:])  # fmt: skip
    report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    save_report()


def summarize_trl(report: dict) -> dict:
    steps = report.get("step_seconds", [])
    logs = [row for row in report.get("logs", []) if "num_tokens" in row]
    out = {k: report[k] for k in ("status", "error", "traceback", "versions", "config", "setup_s", "peak_memory_gib")
           if k in report}  # fmt: skip
    if not steps:
        return out
    tokens = [row["num_tokens"] for row in logs]
    per_step = [b - a for a, b in zip([0, *tokens], tokens, strict=False)]
    rates = [n / s for n, s in zip(per_step[1:], steps[1:], strict=False)]
    out.update({
        "steps": len(steps),
        "step_seconds": steps,
        "median_step_s_steps_2_to_n": rnd(median(steps[1:] or steps)),
        "step_1_s": rnd(steps[0]),
        "tokens_per_step": per_step,
        "tokens_per_sec_per_gpu_median": rnd(median(rates), 1),
        "loss_per_step": [rnd(row.get("loss")) for row in logs],
        "accuracy_per_step": [rnd(row.get("rewards/accuracies"), 3) for row in logs],
    })  # fmt: skip
    return out


def run_trl(report: dict, args, model: Path, pairs_path: str, device: str, work: Path, logs: Path,
            timeout: float) -> None:  # fmt: skip
    spec = {"model": str(model), "train_data": pairs_path, "batch": args.batch, "micro_batch": args.trl_micro_batch,
            "max_length": args.max_length, "lr": args.lr, "beta": BETA, "steps": args.trl_steps, "seed": args.seed,
            "device": device, "output_dir": str(work / "trl"), "out": str(work / "trl_report.json")}  # fmt: skip
    (work / "trl_spec.json").write_text(json.dumps(spec))
    process = run_process([sys.executable, str(Path(__file__).resolve()), "--trl_worker", str(work / "trl_spec.json")],
                          logs / "trl.log", timeout, work)  # fmt: skip
    trl_report = json.loads(Path(spec["out"]).read_text()) if Path(spec["out"]).is_file() else {}
    report["trl"] = {**process, "settings": {k: v for k, v in spec.items() if k not in ("out", "output_dir")},
                     **summarize_trl(trl_report)}  # fmt: skip


def compare(report: dict) -> None:
    ours, theirs = report.get("dpo", {}), report.get("trl", {})
    ours_s, theirs_s = ours.get("median_step_s_steps_2_to_n"), theirs.get("median_step_s_steps_2_to_n")
    if ours_s and theirs_s:
        report["step_time_ratio_trl_over_ours"] = round(theirs_s / ours_s, 2)
        report["meets_target"] = theirs_s / ours_s >= TARGET_RATIO
    ours_rate, theirs_rate = ours.get("tokens_per_sec_per_gpu_median"), theirs.get("tokens_per_sec_per_gpu_median")
    if ours_rate and theirs_rate:
        report["tokens_per_sec_ratio_ours_over_trl"] = round(ours_rate / theirs_rate, 2)


# ---- main ---------------------------------------------------------------------------------------------------


def add_pair_options(parser: argparse.ArgumentParser) -> None:
    """The pair and batch options of the preference benches (this one and bench/rm_step.py)."""
    parser.add_argument("--batch", type=int, default=64, help="pairs per optimizer step (both trainers)")
    parser.add_argument("--pack_rows", type=int, default=16, help="our packed rows per micro-batch")
    parser.add_argument(
        "--compile_scope",
        default="stack",
        choices=("stack", "layers"),
        help="our policy.dtensor_cfg.compile_scope (stack: one rank's decoder stack as one graph)",
    )
    parser.add_argument("--trl_micro_batch", type=int, default=8, help="TRL's pairs per micro-batch")
    parser.add_argument("--checks", type=int, default=40, help="equation restatements per completion (mean)")
    parser.add_argument("--lengths", default="equal", choices=("equal", "variable"),
                        help="equal: every side has --checks; variable: each side's count drawn uniformly "
                             "around --checks (real preference data)")  # fmt: skip
    parser.add_argument("--max_length", type=int, default=1024)


def shrink_for_tiny(args: argparse.Namespace) -> None:
    """--tiny: a few steps of a few short pairs (a CPU smoke test of the script)."""
    if args.tiny:
        args.steps, args.trl_steps, args.batch, args.pack_rows, args.trl_micro_batch = 3, 3, 4, 2, 2
        args.checks, args.max_length = 2, 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dpo_step.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/dpo_step"))
    parser.add_argument("--logs_dir", type=Path, help="copy the phases' logs here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: tiny model and sizes")
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument("--variants", default="precomputed",
                        help="our runs, comma list of dpo.reference_logprobs values: precomputed, on_the_fly")  # fmt: skip
    parser.add_argument("--steps", type=int, default=10, help="our optimizer steps")
    parser.add_argument("--trl_steps", type=int, default=6)
    add_pair_options(parser)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device_kind", default=None, help="the device tool's kind, recorded in the JSON")
    parser.add_argument("--timeouts", default="150,150,120", help="seconds for our first run, TRL and other runs")
    parser.add_argument("--long", action="store_true",
                        help="long pairs: 130 checks (~1.5k tokens a side), max_length 2048, 32 pairs a step, "
                             "8 packed rows / TRL micro-batches of 4 pairs")  # fmt: skip
    parser.add_argument(
        "--profile",
        action="store_true",
        help=f"also profile {PROFILE_STEPS} steps of our first variant (torch.profiler, own process)",
    )
    parser.add_argument(
        "--dispatch",
        action="store_true",
        help="also measure the host's time to queue a step against the GPU's time to run it",
    )
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    parser.add_argument("--dispatch_worker", help=argparse.SUPPRESS)
    parser.add_argument("--profile_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.long:
        args.checks, args.max_length, args.batch, args.pack_rows, args.trl_micro_batch = 130, 2048, 32, 8, 4
    shrink_for_tiny(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    if args.profile_worker:
        profile_worker(args.profile_worker)
        return
    if args.dispatch_worker:
        dispatch_worker(args.dispatch_worker)
        return
    import shutil

    import torch
    import transformers

    # the children run `python -m` from the work directory: the code under test comes from PYTHONPATH
    os.environ["PYTHONPATH"] = ":".join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = args.logs_dir or work
    logs.mkdir(parents=True, exist_ok=True)
    first_timeout, trl_timeout, other_timeout = (float(t) for t in args.timeouts.split(","))
    num_pairs = args.batch * max(args.steps, args.trl_steps)
    pairs = preference_rows(arith_rows("train")[:num_pairs], args.checks, args.lengths, args.seed)
    pairs_path = write_jsonl(work / "pairs.jsonl", pairs)
    report: dict = {
        "benchmark": "dpo_step", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "device_kind": args.device_kind, "commit": snapshot_commit(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(), "tiny": args.tiny,
        "target_ratio_trl_over_ours": TARGET_RATIO,
        "settings": {"pairs": len(pairs), "global_batch_pairs": args.batch, "checks": args.checks,
                     "lengths": args.lengths,
                     "max_length": args.max_length, "beta": BETA, "loss": "sigmoid", "lr": args.lr,
                     "ours_packed_rows_per_micro_batch": args.pack_rows, "ours_compile_scope": args.compile_scope,
                     "trl_pairs_per_micro_batch": args.trl_micro_batch, "precision": "bf16 mixed",
                     "gradient_checkpointing": False},
    }  # fmt: skip
    started = time.perf_counter()
    report["model"] = build_model(work / "base", TINY if args.tiny else QWEN25_05B, corpus_rows(pairs), device,
                                  args.seed)  # fmt: skip
    report["model"]["build_s"] = round(time.perf_counter() - started, 1)
    fit_max_length(report, args, work / "base", pairs)
    save(report, args)
    variants = args.variants.split(",")
    run_ours(report, args, variants[0], work / "base", pairs_path, work, logs, first_timeout)
    save(report, args)
    if not args.skip_trl:
        run_trl(report, args, work / "base", pairs_path, device, work, logs, trl_timeout)
        compare(report)
        save(report, args)
    for variant in variants[1:]:
        run_ours(report, args, variant, work / "base", pairs_path, work, logs, other_timeout)
        save(report, args)
    if args.dispatch:
        run_dispatch(report, args, work / "base", pairs_path, work, logs, other_timeout)
        save(report, args)
    if args.profile:
        run_profile(report, args, work / "base", pairs_path, work, logs, other_timeout)
        save(report, args)
    finish(report, args)


if __name__ == "__main__":
    main()
