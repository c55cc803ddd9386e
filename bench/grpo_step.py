"""GRPO on one GPU: SFT warm-up, then our GRPO trainer's step time, and TRL's GRPOTrainer on the same work, as JSON.

    python bench/grpo_step.py [--out bench/results/grpo_step.json] [--logs_dir DIR] [--tiny] [--skip_trl]
        [--sft_steps 500] [--grpo_steps 20] [--trl_steps 6] [--prompts 32] [--generations 8]
        [--max_new_tokens 128] [--kl 0.01] [--device_kind nvidia-h100-x1] [--long]

What it does, all offline, each phase a separate process (the real entry points, as users run them):
  1. builds a Qwen2.5-0.5B-shaped Qwen2 (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864, vocabulary
     151,936, tied embeddings; `--tiny`: hidden 64, 2 layers, the tokenizer's vocabulary) with random weights,
     and a byte-level BPE tokenizer (`inference.tiny_model.train_tokenizer`, Qwen2 pre-tokenization) trained on
     the arithmetic corpus plus the prompts and solutions below; every id the tokenizer lacks decodes to '';
  2. SFT warm-up (`python -m skills_cli.training.algorithms.sft`, bf16 mixed precision on the GPU): the `arith` train split
     (2,000 problems) as `messages` rows: the `generic/math` prompt, then the row's solution
     ("a op b = c. The answer is \\boxed{c}."); global batch 32, cosine LR;
  3. GRPO (`python -m skills_cli.training.algorithms.grpo`) on the same train split: `--prompts` x `--generations` rollouts
     a step, global batch = rollouts (one optimizer step a GRPO step, on-policy), micro-batch `--micro_batch`,
     temperature 1, `--max_new_tokens`, k3 KL penalty `--kl` against the SFT model, the math grader as reward;
     greedy pass@1 on the `arith` test split before and after. Reported from its metrics.jsonl: the step-time
     breakdown (timing/train/*), tokens/s/GPU (performance/*), reward per step and token_mult_prob_error (the
     bf16 rollout engine's logprobs against the trainer's);
  4. TRL's GRPOTrainer (its transformers `generate` path, use_vllm=False) on the same SFT model, tokenizer, prompt
     template, generations per prompt, max completion length, batch (per-device batch = our micro-batch,
     gradient accumulation = rollouts / micro-batch, so one optimizer step and one `generate` call of all
     rollouts a step), learning rate, KL coefficient (beta), clip 0.2, token-level loss over the global batch
     (loss_type "dapo"), group-normalized rewards, bf16 mixed precision, no gradient checkpointing; reward = the
     same math grader (a completion without an end-of-sequence token scores 0, as ours). Step time = wall clock
     between consecutive optimizer steps (TrainerCallback.on_step_end after a CUDA synchronize).

Measured 2026-12-03 on one H200 (nvidia-h200; torch 2.11, transformers 5.17, TRL 1.16.0 and datasets 5.2.0 carried
as wheels), defaults (SFT 500 steps; 32 x 8 rollouts, max_new_tokens 128, KL 0.01, lr 1e-5), our run with
sequence packing (32 rows of 256 tokens a micro-batch; TRL keeps 32 rollouts a micro-batch):
    python3 bench/grpo_step.py --out $OUT/grpo4.json --logs_dir $OUT/glogs --device_kind nvidia-h200 \
        --variants packed --timeouts 200,150,150
  ours, median of steps 2-20: total 0.584 s = refit 0.033 + generation 0.156 + reward 0.019 + reference logprobs
  0.112 + training 0.273; 26,544 tokens/s/GPU; token_mult_prob_error median 1.0008; reward mean 0.164 (first
  third) -> 0.243 (last third). One recompilation in 20 steps (an inductor fusion guard on the token count).
  TRL GRPOTrainer, median of steps 2-6: 1.899 s (generate 0.722 s), 8,193 tokens/s/GPU.
  Ratio TRL step time / ours: 3.25 (target >= 2: met). An earlier call the same day with --variants packed,padded:
  packed 0.681 s (3.30x TRL's 2.245 s), padded micro-batches of 32 rollouts 1.380 s (1.63x): packing is most of
  the gain. Also new since the H100 run below: the engine keeps its small KV cache and decode graphs between steps
  (generation 0.16 s a step here, 0.82 s there, where each step re-allocated and re-captured them), the loss
  diagnostics are read back once a step instead of after every forward, refit streams weights on the device.

Long responses (--long): the SFT answers restate the equation 100 times ("Check i: a op b = c. ") before the
boxed answer, so the SFT model samples long rollouts (~1.4k tokens) for both trainers; 8 x 8 rollouts, max_new_tokens
1536, 8 packed rows (ours) / micro-batches of 8 (TRL), SFT 150 steps, 6 GRPO steps, 2 TRL steps. Measured
2026-12-04 on one H200 (TRL 1.13.0, datasets 5.0.1 carried as wheels):
    python3 bench/grpo_step.py --long --out $OUT/grpo_long.json --logs_dir $OUT/glogs --device_kind nvidia-h200 \
        --timeouts 170,170,220
  ours, median of steps 2-6: total 5.97 s = refit 0.04 + generation 4.04 (68%) + reward 0.02 + reference
  logprobs 0.56 (9%) + training 1.30 (22%); responses 1,414-1,456 tokens on average (16-27% ended by EOS, the
  rest cut at 1536), ~95k tokens a step, 15,751 tokens/s/GPU (generation 22,850); token_mult_prob_error median
  1.0008. Rewards are 0 (the long answers rarely finish): a speed run, not a learning one.
  TRL GRPOTrainer, step 2: 45.2 s (generate 41.6 s), completions 1,485 tokens on average, 2,158 tokens/s/GPU.
  Ratio TRL step time / ours: 7.58.

Step times are medians over steps 2..N (step 1 holds the warm-ups: CUDA-graph capture, allocator growth). The
ratio ours/TRL is TRL's median step time over ours (target >= 2). tokens/s/GPU counts prompt + response tokens of
the step's rollouts over the whole step (NeMo-RL's `performance/tokens_per_sec_per_gpu`); TRL's is the growth of
its `num_tokens` log (prompt + completion tokens) over the step time.

Measured 2026-11-22 on one H100 80GB (nvidia-h100-x1; torch 2.11, transformers 5.17, TRL 1.16.0, datasets 5.2.0
carried as wheels), defaults above (494M parameters; SFT 500 steps, loss 12.2 -> 0.106, 105 s; 32 x 8 rollouts,
max_new_tokens 128, KL 0.01, lr 1e-5; commit 2d8bcd3 plus the GRPO wake fix d55d0d1). Responses are short: 21
tokens on average, all ended by EOS, prompts 40 tokens, about 15.5k tokens a step.
  ours, median of steps 2-20: total 4.79 s = refit 1.96 (41%) + generation 0.82 (17%, engine sleep included)
  + reward 0.02 + logprobs (prev + reference) 0.58 (12%) + training 1.24 (26%); 3,246 tokens/s/GPU;
  token_mult_prob_error median 1.00053 (max 1.00085); reward 0.141 (step 1) -> 0.129 (step 20), mean of the
  first 6 steps 0.130 and of the last 6 0.165; greedy test pass@1 0.145 before, 0.140 after.
  TRL GRPOTrainer (HF generate), median of steps 2-6: 1.85 s (generate 0.71 s), 8,426 tokens/s/GPU.
  Ratio: TRL step time / ours = 0.39 (target >= 2: not met). Step 1's refit (a wake only: the start-of-run
  validation had refitted) took 0.15 s, so the full-state-dict refit itself costs about 1.8 s a step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QWEN25_05B = {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
              "num_key_value_heads": 2, "vocab_size": 151936}  # fmt: skip
TINY = {
    "hidden_size": 64,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": None,
}  # fmt: skip  (None: the tokenizer's vocabulary)
PROMPT_CONFIG = "generic/math"
TIMERS = ("refit", "generation", "reward_calculation", "policy_and_reference_logprobs", "policy_training", "total")
TARGET_RATIO = 2.0


# ---- model and data ---------------------------------------------------------------------------------------------


def arith_rows(split: str) -> list[dict]:
    from skills_cli.evaluation.benchmarks.arith import generate

    return generate(split)


def sft_rows(rows: list[dict], checks: int = 0) -> list[dict]:
    from skills_cli.prompts.prompt_config import load_prompt_config

    prompt = load_prompt_config(PROMPT_CONFIG)
    return [{"messages": prompt.messages(row) + [{"role": "assistant", "content": long_solution(row, checks)}]}
            for row in rows]  # fmt: skip


def long_solution(row: dict, checks: int) -> str:
    """The row's solution after `checks` numbered restatements of its equation (about 10 tokens each): with
    --long the SFT model learns long answers, so both trainers sample long rollouts from the same policy."""
    equation = row["solution"].split(". The answer")[0]
    return "".join(f"Check {index}: {equation}. " for index in range(checks)) + row["solution"]


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def build_model(directory: Path, shape: dict, corpus_rows: list[dict], device: str, seed: int = 0) -> dict:
    """A random-weight Qwen2 of `shape` and a BPE tokenizer trained on arithmetic text, saved like a hub model."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from skills_cli.inference.tiny_model import (
        ENDOFTEXT,
        IM_END,
        PAD,
        SPECIAL_TOKENS,
        arithmetic_corpus,
        generation_config_for,
        train_tokenizer,
        wrap_tokenizer,
    )

    corpus = arithmetic_corpus() + [m["content"] for row in corpus_rows for m in row["messages"]]
    trained = train_tokenizer(corpus, vocab_size=1024, arch="qwen2")
    ids = {token: trained.token_to_id(token) for token in SPECIAL_TOKENS}
    shape = {**shape, "vocab_size": shape["vocab_size"] or trained.get_vocab_size()}
    config = Qwen2Config(**shape, max_position_embeddings=4096, rope_theta=1e6, rms_norm_eps=1e-6,
                         tie_word_embeddings=True, bos_token_id=ids[ENDOFTEXT], eos_token_id=ids[IM_END],
                         pad_token_id=ids[PAD])  # fmt: skip
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = generation_config_for(config)
    model.save_pretrained(str(directory))
    wrap_tokenizer(trained, max_length=4096).save_pretrained(str(directory))
    params = sum(p.numel() for p in model.parameters())
    del model
    return {"architecture": "Qwen2ForCausalLM (random init)", **shape, "tied_embeddings": True,
            "parameters": params, "tokenizer_vocabulary": trained.get_vocab_size()}  # fmt: skip


# ---- running the trainers ----------------------------------------------------------------------------------------


def run_process(args: list[str], log_path: Path, timeout: float, cwd: Path) -> dict:
    """Run a child (stdout+stderr to `log_path`); its exit code, wall time and last log lines. `cwd` is the work
    directory, never the checkout: `python -m` puts the working directory first on sys.path, and the code under
    test is the one on PYTHONPATH."""
    start = time.perf_counter()
    with log_path.open("w") as log:
        try:
            code = subprocess.run(
                args, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, env=os.environ, cwd=cwd
            ).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    tail = log_path.read_text().splitlines()[-15:]
    return {"exit_code": code, "wall_s": round(time.perf_counter() - start, 2), "log_tail": tail if code != 0 else []}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rnd(value, digits: int = 4):
    return None if value is None else round(value, digits)


def summarize_sft(rows: list[dict]) -> dict:
    losses = [r["loss"] for r in rows if r.get("loss") is not None]
    if not rows:
        return {}
    return {"steps": len(rows), "first_loss": rnd(losses[0]), "last_loss": rnd(losses[-1]),
            "loss_every_50_steps": [rnd(v) for v in losses[::50]],
            "median_step_s": rnd(median([r["step_time_s"] for r in rows[1:]]), 4),
            "train_seconds": round(sum(r["step_time_s"] for r in rows), 1)}  # fmt: skip


def summarize_grpo(rows: list[dict]) -> dict:
    train = [r for r in rows if "train/reward" in r]
    validation = {r["step"]: r["validation/accuracy"] for r in rows if r.get("validation/accuracy") is not None}
    if not train:
        return {"validation_accuracy": validation}
    steady = train[1:] or train
    timing = {name: {"median_steps_2_to_n": rnd(median([r.get(f"timing/train/{name}") for r in steady])),
                     "step_1": rnd(train[0].get(f"timing/train/{name}"))} for name in TIMERS}  # fmt: skip
    total = timing["total"]["median_steps_2_to_n"]
    for name in TIMERS[:-1]:
        share = timing[name]["median_steps_2_to_n"]
        timing[name]["share_of_total"] = rnd(share / total, 3) if share is not None and total else None
    performance = {name: rnd(median([r.get(name) for r in steady]), 1) for name in (
        "performance/tokens_per_sec_per_gpu", "performance/generation_tokens_per_sec_per_gpu",
        "performance/policy_training_tokens_per_sec_per_gpu")}  # fmt: skip
    performance["performance/train_mfu"] = rnd(median([r.get("performance/train_mfu") for r in steady]), 4)
    performance["performance/peak_memory_gib"] = rnd(max(r.get("performance/peak_memory_gib") or 0 for r in train), 2)
    rewards = [r["train/reward"] for r in train]
    errors = [r.get("train/token_mult_prob_error") for r in train]
    third = max(len(rewards) // 3, 1)
    return {
        "steps": len(train),
        "timing_s": timing,
        "performance": performance,
        "reward_per_step": [rnd(v, 3) for v in rewards],
        "reward_mean_first_third": rnd(statistics.fmean(rewards[:third]), 3),
        "reward_mean_last_third": rnd(statistics.fmean(rewards[-third:]), 3),
        "token_mult_prob_error_per_step": [rnd(v, 5) for v in errors],
        "token_mult_prob_error_median": rnd(median(errors), 5),
        "gen_kl_error_median": rnd(median([r.get("train/gen_kl_error") for r in train]), 6),
        "kl_median": rnd(median([r.get("train/kl") for r in train]), 6),
        "generation_length_mean_per_step": [rnd(r.get("train/generation_lengths"), 1) for r in train],
        "fraction_properly_ended_per_step": [rnd(r.get("train/fraction_of_samples_properly_ended"), 3) for r in train],
        "mean_prompt_length": rnd(train[0].get("train/mean_prompt_length"), 1),
        "total_num_tokens_median": rnd(median([r.get("train/total_num_tokens") for r in steady]), 0),
        "step_seconds": [rnd(r.get("timing/train/total"), 3) for r in train],
        "validation_accuracy_greedy_test": validation,
    }


# ---- TRL ------------------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    """Runs in its own process: TRL's GRPOTrainer for spec["steps"] optimizer steps; writes spec["out"] after
    every step, so a run cut short still leaves what it measured."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    report: dict = {"status": "starting"}

    def save() -> None:
        out.write_text(json.dumps(report, indent=1) + "\n")

    try:
        import torch
        import transformers
        import trl
        from datasets import Dataset
        from datasets.table import InMemoryTable
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
    except Exception as error:  # report exactly why TRL cannot run here
        report.update(status="import_failed", error=f"{type(error).__name__}: {error}")
        save()
        return
    import accelerate
    import datasets

    from skills_cli.inference.model_loading import load_tokenizer
    from skills_cli.prompts.prompt_config import load_prompt_config
    from skills_cli.training.algorithms.grpo.config import MathEnvConfig
    from skills_cli.training.algorithms.grpo.data import math_reward, stop_token_ids

    report["versions"] = {"trl": trl.__version__, "transformers": transformers.__version__,
                          "datasets": datasets.__version__, "accelerate": accelerate.__version__}  # fmt: skip
    cuda = spec["device"] == "cuda"
    tokenizer = load_tokenizer(spec["model"])
    stops = set(stop_token_ids(tokenizer, spec["model"]))
    prompt = load_prompt_config(PROMPT_CONFIG)
    rows = [json.loads(line) for line in Path(spec["train_data"]).read_text().splitlines()]
    # a fixed fingerprint: datasets' own (dill hashing of the Arrow table) failed here with pyarrow 26 on CPython 3.11
    table = InMemoryTable.from_pylist([{"prompt": prompt.messages(row), "expected_answer": row["expected_answer"]}
                                       for row in rows])  # fmt: skip
    dataset = Dataset(table, fingerprint="arith-train-generic-math")
    env = MathEnvConfig()

    def math_grader_reward(prompts, completions, completion_ids, expected_answer, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [math_reward(text, answer, not any(t in stops for t in ids), env)
                for text, ids, answer in zip(texts, completion_ids, expected_answer, strict=True)]  # fmt: skip

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rollouts = spec["prompts"] * spec["generations"]
    config = GRPOConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], seed=spec["seed"],
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=rollouts // spec["micro_batch"],
        num_generations=spec["generations"], max_completion_length=spec["max_new_tokens"], temperature=1.0,
        top_p=1.0, top_k=0, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.98, max_grad_norm=1.0,
        beta=spec["kl"], epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
        use_vllm=False, bf16=cuda, gradient_checkpointing=False, use_cpu=not cuda,
        logging_steps=1, save_strategy="no", report_to="none", remove_unused_columns=False,
        dataloader_num_workers=0, disable_dropout=True, log_completions=False,
    )  # fmt: skip
    report["config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "generation_batch_size",
        "steps_per_generation", "num_generations", "max_completion_length", "beta", "loss_type", "learning_rate",
        "bf16", "gradient_checkpointing", "use_vllm", "use_transformers_continuous_batching")}  # fmt: skip
    step_ends, sections = [], {"generate": [], "generate_and_score": []}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            sync()
            step_ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            sync()
            step_ends.append(time.perf_counter())
            report["step_seconds"] = [round(b - a, 4) for a, b in zip(step_ends, step_ends[1:], strict=False)]
            report["status"] = f"running ({state.global_step} steps)"
            save()

        def on_log(self, args, state, control, logs=None, **kwargs):
            row = {"step": state.global_step, **{k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}}
            report.setdefault("logs", []).append(row)

    def timed(function, name):
        def wrapper(*args, **kwargs):
            sync()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                sync()
                sections[name].append(round(time.perf_counter() - start, 4))

        return wrapper

    start = time.perf_counter()
    trainer = GRPOTrainer(model=spec["model"], reward_funcs=math_grader_reward, args=config, train_dataset=dataset,
                          processing_class=tokenizer, callbacks=[Clock()])  # fmt: skip
    report["setup_s"] = round(time.perf_counter() - start, 2)
    # time TRL's own sections: the HF generate call, and generation + reward + reference logprobs together
    for method, name in (("_generate_single_turn", "generate"), ("_generate_and_score_completions",
                                                                  "generate_and_score")):  # fmt: skip
        if hasattr(trainer, method):
            setattr(trainer, method, timed(getattr(trainer, method), name))
    report["status"] = "training"
    save()
    try:
        trainer.train()
        report["status"] = "finished"
    except Exception as error:
        import traceback

        report.update(status="train_failed", error=f"{type(error).__name__}: {error}",
                      traceback=traceback.format_exc().splitlines()[-10:])  # fmt: skip
    report["section_seconds"] = sections
    report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None
    save()


def summarize_trl(report: dict) -> dict:
    steps = report.get("step_seconds", [])
    logs = [row for row in report.get("logs", []) if "reward" in row]
    out = {k: report[k] for k in ("status", "error", "traceback", "versions", "config", "setup_s", "peak_memory_gib")
           if k in report}  # fmt: skip
    if not steps:
        return out
    steady = steps[1:] or steps
    tokens = [row.get("num_tokens") for row in logs]
    per_step = [b - a for a, b in zip([0, *tokens], tokens, strict=False)] if all(t is not None for t in tokens) else []
    rates = [n / s for n, s in zip(per_step[1:], steps[1:], strict=False)] if per_step else []
    sections = report.get("section_seconds", {})
    out.update({
        "steps": len(steps),
        "step_seconds": steps,
        "median_step_s_steps_2_to_n": rnd(median(steady)),
        "step_1_s": rnd(steps[0]),
        "generate_s_median_steps_2_to_n": rnd(median(sections.get("generate", [])[1:])),
        "generate_and_score_s_median_steps_2_to_n": rnd(median(sections.get("generate_and_score", [])[1:])),
        "tokens_per_sec_per_gpu_median": rnd(median(rates), 1),
        "tokens_per_step": per_step,
        "reward_per_step": [rnd(row.get("reward"), 3) for row in logs],
        "completion_mean_length_per_step": [rnd(row.get("completions/mean_length"), 1) for row in logs],
        "kl_per_step": [rnd(row.get("kl"), 6) for row in logs],
    })  # fmt: skip
    return out


# ---- main ---------------------------------------------------------------------------------------------------


def snapshot_commit() -> str | None:
    marker = ROOT / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grpo_step.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/grpo_step"))
    parser.add_argument("--logs_dir", type=Path, help="copy the phases' logs and GRPO's metrics.jsonl here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: tiny model and sizes")
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument("--sft_steps", type=int, default=500)
    parser.add_argument("--sft_lr", type=float, default=2e-4)
    parser.add_argument("--grpo_steps", type=int, default=20)
    parser.add_argument("--trl_steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--micro_batch", type=int, default=32, help="rollouts per micro-batch (TRL's, and ours padded)")
    parser.add_argument("--variants", default="packed",
                        help="our runs, comma list: packed (policy.sequence_packing, --pack_rows rows of "
                             "max_new_tokens + 128 tokens per micro-batch), padded (--micro_batch rollouts)")  # fmt: skip
    parser.add_argument("--pack_rows", type=int, default=32)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-5, help="GRPO learning rate (ours and TRL's)")
    parser.add_argument("--kl", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device_kind", default=None, help="the device tool's kind, recorded in the JSON")
    parser.add_argument("--timeouts", default="200,200,150", help="seconds for the SFT, GRPO and TRL processes")
    parser.add_argument("--long", action="store_true",
                        help="long responses: SFT answers of ~1k tokens (100 checks), max_new_tokens 1536, 8 x 8 "
                             "rollouts, 8 packed rows / micro-batches of 8, SFT 150 steps, 6 GRPO and 2 TRL steps")  # fmt: skip
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.checks, args.sft_length, args.val_samples = 0, 256, None
    if args.long:
        args.checks, args.sft_length, args.val_samples, args.max_new_tokens = 100, 2048, 64, 1536
        args.prompts, args.generations, args.micro_batch, args.pack_rows = 8, 8, 8, 8
        args.sft_steps, args.grpo_steps, args.trl_steps = 150, 6, 2
    if args.tiny:
        args.sft_steps, args.grpo_steps, args.trl_steps = min(args.sft_steps, 8), min(args.grpo_steps, 2), \
            min(args.trl_steps, 2)  # fmt: skip
        args.prompts, args.generations, args.micro_batch, args.max_new_tokens = 4, 4, 8, 24
        args.pack_rows = 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    import shutil

    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    logs = args.logs_dir or work
    logs.mkdir(parents=True, exist_ok=True)
    sft_timeout, grpo_timeout, trl_timeout = (float(t) for t in args.timeouts.split(","))
    train, test = arith_rows("train"), arith_rows("test")
    sft_data = sft_rows(train, args.checks)
    train_path, test_path = write_jsonl(work / "train.jsonl", train), write_jsonl(work / "test.jsonl", test)
    sft_path = write_jsonl(work / "sft.jsonl", sft_data)
    report: dict = {
        "benchmark": "grpo_step", "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "device_kind": args.device_kind, "commit": snapshot_commit(), "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(), "tiny": args.tiny, "long_responses": args.long,
        "target_ratio_ours_over_trl": TARGET_RATIO,
    }  # fmt: skip
    started = time.perf_counter()
    report["model"] = build_model(work / "base", TINY if args.tiny else QWEN25_05B, sft_data, device, args.seed)
    report["model"]["build_s"] = round(time.perf_counter() - started, 1)
    save(report, args)
    python = sys.executable

    # ---- SFT warm-up
    sft_overrides = [
        f"++policy.model_name={work / 'base'}", f"++data.train_data={sft_path}", f"++output_dir={work / 'sft'}",
        "++sft.max_num_epochs=1000", f"++sft.max_num_steps={args.sft_steps}", f"++sft.seed={args.seed}",
        "++policy.train_global_batch_size=32", f"++policy.train_micro_batch_size={min(32, 8192 // args.sft_length)}",
        f"++policy.max_total_sequence_length={args.sft_length}", "++policy.precision=bfloat16",
        f"++policy.optimizer.kwargs.lr={args.sft_lr}", "++policy.optimizer.kwargs.weight_decay=0.0",
        "++policy.scheduler.name=cosine", f"++policy.scheduler.warmup_steps={max(args.sft_steps // 20, 1)}",
        "++policy.scheduler.min_lr_ratio=0.1", "++checkpointing.enabled=false",
    ]  # fmt: skip
    report["sft"] = {"command": f"{python} -m skills_cli.training.algorithms.sft " + " ".join(sft_overrides),
                     "data": f"arith train split: {len(sft_data)} messages rows ({PROMPT_CONFIG} prompt + solution)"}  # fmt: skip
    report["sft"].update(run_process([python, "-m", "skills_cli.training.algorithms.sft", *sft_overrides], logs / "sft.log",
                                     sft_timeout, work))  # fmt: skip
    report["sft"].update(summarize_sft(read_jsonl(work / "sft" / "metrics.jsonl")))
    save(report, args)
    sft_model = work / "sft" / "final_hf"
    if not (sft_model / "config.json").is_file():
        return finish(report, args)

    # ---- our GRPO (the first variant is the headline compared with TRL)
    for variant in args.variants.split(","):
        run_ours(report, args, variant, sft_model, train_path, test_path, len(test), work, logs, grpo_timeout)
        save(report, args)

    # ---- TRL
    if not args.skip_trl:
        spec = {"model": str(sft_model), "train_data": train_path, "prompts": args.prompts,
                "generations": args.generations, "micro_batch": args.micro_batch, "max_new_tokens": args.max_new_tokens,
                "lr": args.lr, "kl": args.kl, "steps": args.trl_steps, "seed": args.seed, "device": device,
                "output_dir": str(work / "trl"), "out": str(work / "trl_report.json")}  # fmt: skip
        (work / "trl_spec.json").write_text(json.dumps(spec))
        process = run_process([python, str(Path(__file__).resolve()), "--trl_worker", str(work / "trl_spec.json")],
                              logs / "trl.log", trl_timeout, work)  # fmt: skip
        trl_report = json.loads(Path(spec["out"]).read_text()) if Path(spec["out"]).is_file() else {}
        report["trl"] = {**process, "settings": {k: v for k, v in spec.items() if k not in ("out", "output_dir")},
                         **summarize_trl(trl_report)}  # fmt: skip
        ours = report["grpo"].get("timing_s", {}).get("total", {}).get("median_steps_2_to_n")
        theirs = report["trl"].get("median_step_s_steps_2_to_n")
        if ours and theirs:
            report["step_time_ratio_trl_over_ours"] = round(theirs / ours, 2)
            report["meets_target"] = theirs / ours >= TARGET_RATIO
        ours_rate = report["grpo"].get("performance", {}).get("performance/tokens_per_sec_per_gpu")
        theirs_rate = report["trl"].get("tokens_per_sec_per_gpu_median")
        if ours_rate and theirs_rate:  # per-step work differs when the two policies' response lengths differ
            report["tokens_per_sec_ratio_ours_over_trl"] = round(ours_rate / theirs_rate, 2)
    finish(report, args)


def run_ours(report: dict, args, variant: str, sft_model: Path, train_path, test_path, num_test: int, work: Path,
             logs: Path, timeout: float) -> None:  # fmt: skip
    """One run of our GRPO trainer; the first variant's results go to report["grpo"], others to
    report["grpo_<variant>"]."""
    import shutil

    if variant not in ("packed", "padded"):
        raise SystemExit(f"unknown variant {variant!r} (packed, padded)")
    rollouts = args.prompts * args.generations
    name = "grpo" if "grpo" not in report else f"grpo_{variant}"
    batching = ["++policy.sequence_packing.enabled=true", f"++policy.train_micro_batch_size={args.pack_rows}"] \
        if variant == "packed" else ["++policy.sequence_packing.enabled=false",
                                     f"++policy.train_micro_batch_size={args.micro_batch}"]  # fmt: skip
    overrides = [
        f"++policy.model_name={sft_model}", f"++data.train_data={train_path}", f"++data.val_data={test_path}",
        f"++output_dir={work / name}", f"++data.prompt_config={PROMPT_CONFIG}",
        f"++grpo.num_prompts_per_step={args.prompts}", f"++grpo.num_generations_per_prompt={args.generations}",
        f"++grpo.max_num_steps={args.grpo_steps}", f"++grpo.seed={args.seed}", "++grpo.val_at_start=true",
        f"++grpo.val_period={args.grpo_steps}", f"++grpo.max_val_samples={args.val_samples or num_test}",
        f"++policy.train_global_batch_size={rollouts}", *batching,
        f"++policy.generation.max_new_tokens={args.max_new_tokens}", "++policy.generation.temperature=1.0",
        f"++policy.max_total_sequence_length={args.max_new_tokens + 128}", "++policy.precision=bfloat16",
        f"++policy.optimizer.kwargs.lr={args.lr}", f"++loss_fn.reference_policy_kl_penalty={args.kl}",
        "++checkpointing.enabled=false",
    ]  # fmt: skip
    python = sys.executable
    report[name] = {"variant": variant, "command": f"{python} -m skills_cli.training.algorithms.grpo " + " ".join(overrides),
                    "settings": {"prompts_per_step": args.prompts, "generations_per_prompt": args.generations,
                                 "rollouts_per_step": rollouts, "train_global_batch_size": rollouts,
                                 "micro_batch": args.pack_rows if variant == "packed" else args.micro_batch,
                                 "micro_batch_unit": "packed rows" if variant == "packed" else "rollouts",
                                 "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "lr": args.lr,
                                 "kl_penalty_k3": args.kl, "optimizer_steps_per_grpo_step": 1}}  # fmt: skip
    report[name].update(run_process([python, "-m", "skills_cli.training.algorithms.grpo", *overrides], logs / f"{name}.log",
                                    timeout, work))  # fmt: skip
    rows = read_jsonl(work / name / "logs" / "metrics.jsonl")
    if rows and args.logs_dir:
        shutil.copy(work / name / "logs" / "metrics.jsonl", logs / f"{name}_metrics.jsonl")
    report[name].update(summarize_grpo(rows))


def save(report: dict, args: argparse.Namespace) -> str:
    """Written after every phase, so a run cut short keeps what it measured."""
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return text


def finish(report: dict, args: argparse.Namespace) -> None:
    print(save(report, args))


if __name__ == "__main__":
    main()
