"""On-policy distillation on one GPU: our distillation trainer's step time and TRL's DistillationTrainer's, as JSON.

    python bench/distill_step.py [--out bench/results/distill_step.json] [--logs_dir DIR] [--tiny] [--skip_trl]
        [--steps 8] [--trl_steps 4] [--prompts 64] [--max_new_tokens 256] [--device_kind nvidia-h200]
        [--timeouts 150,150]

What it does, all offline, each phase a separate process (the real entry points, as users run them):
  1. builds the student, the Qwen2.5-0.5B-shaped Qwen2 of bench/grpo_step.py (hidden 896, 24 layers, vocabulary
     151,936, tied embeddings) with random weights and its arithmetic BPE tokenizer, and the teacher, a
     Qwen2.5-1.5B-shaped Qwen2 (hidden 1536, 28 layers, 12 heads, 2 KV heads, MLP 8960, the same vocabulary and
     tokenizer) with random weights, saved in bf16 (`--tiny`: hidden 64 / 2 layers and 128 / 3 layers). Random
     weights sample near-uniformly over 151,936 ids, so an end-of-sequence token is all but never drawn and
     every response runs to --max_new_tokens on both sides (ours is also told so with
     `policy.generation.ignore_eos`; TRL has no such key; the JSON
     gives both sides' mean response lengths): the same generated tokens per prompt for both;
  2. the `arith` train split as problems with the `generic/math` prompt, `--prompts` of them a step, one sample
     each (NeMo-RL's and TRL's default for distillation), temperature 1, top-p 1, no top-k;
  3. our distillation (`python -m skills_cli.training.algorithms.distill`): the student samples with GRPO's
     rollout engine (torch), the teacher (a plain HF model in bf16) scores the student's tokens inside each
     micro-batch, per-token reverse KL over the whole vocabulary (`loss_fn.kl_type=reverse`, no top-k), one
     optimizer step a step (train_global_batch_size = prompts), sequence packing (`--pack_rows` rows of
     max_new_tokens + 128 tokens a micro-batch), bf16 mixed precision. Its `timing/train/*` breakdown is reported;
  4. TRL's DistillationTrainer (trl.DistillationTrainer, TRL 1.16's on-policy distillation trainer; GKD lives in
     trl.experimental) on the same student, teacher (`teacher_model_init_kwargs` dtype bf16), tokenizer (its
     chat template), prompts, max_completion_length, sampling settings, learning rate (constant), AdamW settings,
     global batch (per-device `--trl_micro_batch` prompts x gradient accumulation: one `generate` call of all
     the step's prompts, then one optimizer step), beta 1 (its generalized JSD at beta 1 is the reverse KL),
     transformers `generate` (use_vllm False), bf16 mixed precision, no gradient checkpointing. Its `generate`
     calls are timed on their own (`generate_s`).

Step time: ours, `timing/train/total` of metrics.jsonl; TRL's, wall clock between consecutive
TrainerCallback.on_step_end calls after a CUDA synchronize. Medians over steps 2..N (step 1 holds the warm-ups).
tokens/s/GPU counts prompt + response tokens of the step's samples over the step time (ours:
`performance/tokens_per_sec_per_gpu`; TRL's: the growth of its `num_tokens` log). Ratio: TRL's median step time
over ours (target >= 2).

Device command (one H200; TRL 1.16.0, datasets, dill, multiprocess carried as wheels in .whl):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/distill_step.py \
        --out $OUT/distill_step.json --logs_dir $OUT/distill_logs --device_kind nvidia-h200

Measured 2026-12-05 at 5ddd6bf on one H100 80GB HBM3 (nvidia-h100-x1; no H200 could be started; torch 2.11,
transformers 5.17, TRL 1.16.0 and datasets 5.2.0 carried as wheels), defaults (64 prompts a step, one sample
each, 256 new tokens with ignore_eos, reverse KL over the whole vocabulary, 0.5B student, 1.5B-shaped bf16
teacher, lr 1e-6):
    run(command="DEVICE_KIND=nvidia-h100-x1 bash bench/device_issue18.sh 2", kind="nvidia-h100-x1", carry=[".whl"])
  ours, median of steps 2-8: 1.337 s a step (rollout included), 14,154 tokens/s/GPU (~18.9k tokens a step)
  TRL DistillationTrainer, median of steps 2-4: 9.697 s a step (7.98 s of it in transformers generate),
    1,951 tokens/s/GPU, peak 24.1 GiB
  ratio TRL step time / ours 7.25, tokens/s ours / TRL 7.25 (target >= 2: met). Most of the gap is generation
  (our engine against transformers' generate), as in bench/grpo_step.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from grpo_step import (  # noqa: E402  (bench scripts import each other from this folder)
    PROMPT_CONFIG,
    QWEN25_05B,
    ROOT,
    TINY,
    arith_rows,
    build_model,
    finish,
    median,
    read_jsonl,
    rnd,
    run_process,
    save,
    sft_rows,
    summarize_grpo,
    write_jsonl,
)
from rm_step import (  # noqa: E402
    WorkerReport,
    compare,
    phase_done,
    prepare_run,
    report_header,
    run_trl_worker,
    trl_step_summary,
)

QWEN25_15B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
              "num_key_value_heads": 2}  # fmt: skip
TINY_TEACHER = {"hidden_size": 128, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 4,
                "num_key_value_heads": 2}  # fmt: skip


# ---- models ---------------------------------------------------------------------------------------------------


def qwen2_config_like(model: Path, shape: dict, **extra):
    """A Qwen2 config of `shape` with `model`'s vocabulary and special token ids (bench/grpo_step.py's settings)."""
    from transformers import AutoConfig, Qwen2Config

    ids = AutoConfig.from_pretrained(str(model))
    return Qwen2Config(**shape, vocab_size=ids.vocab_size, max_position_embeddings=4096, rope_theta=1e6,
                       rms_norm_eps=1e-6, bos_token_id=ids.bos_token_id, eos_token_id=ids.eos_token_id,
                       pad_token_id=ids.pad_token_id, **extra)  # fmt: skip


def save_random_model(auto_class, config, directory: Path, tokenizer_from: Path, device: str, seed: int,
                      dtype=None) -> int:  # fmt: skip
    """A random-weight `auto_class` model of `config` (initialized in fp32, saved in `dtype` if given) next to
    `tokenizer_from`'s tokenizer, as a hub model folder; its parameter count."""
    import torch
    from transformers import AutoTokenizer

    from skills_cli.inference.tiny_model import generation_config_for

    torch.manual_seed(seed)
    with torch.device(device):
        model = auto_class.from_config(config, dtype=torch.float32)
    if dtype is not None:
        model.to(dtype)
    if model.can_generate():
        model.generation_config = generation_config_for(config)
    model.save_pretrained(str(directory))
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(str(directory))
    return sum(p.numel() for p in model.parameters())


def build_teacher(student: Path, directory: Path, shape: dict, device: str, seed: int) -> dict:
    """A random-weight Qwen2 of `shape` with the student's vocabulary, special tokens and tokenizer, saved in bf16."""
    import torch
    from transformers import AutoModelForCausalLM

    config = qwen2_config_like(student, shape, tie_word_embeddings=True)
    params = save_random_model(AutoModelForCausalLM, config, directory, student, device, seed + 1, torch.bfloat16)
    return {"architecture": "Qwen2ForCausalLM (random init, saved in bf16)", **shape,
            "vocab_size": config.vocab_size, "parameters": params}  # fmt: skip


def build_models(report: dict, args, work: Path, device: str) -> None:
    started = time.perf_counter()
    print("building the student and the teacher", flush=True)
    corpus = sft_rows(arith_rows("train"))
    report["student"] = build_model(work / "student", TINY if args.tiny else QWEN25_05B, corpus, device, args.seed)
    report["teacher"] = build_teacher(work / "student", work / "teacher", TINY_TEACHER if args.tiny else QWEN25_15B,
                                      device, args.seed)  # fmt: skip
    report["models_build_s"] = round(time.perf_counter() - started, 1)


# ---- ours ---------------------------------------------------------------------------------------------------------


def run_ours(report: dict, args, work: Path, train_path: str, logs: Path, timeout: float) -> None:
    overrides = [
        f"++policy.model_name={work / 'student'}", f"++teacher.model_name={work / 'teacher'}",
        f"++data.train_data={train_path}", f"++data.prompt_config={PROMPT_CONFIG}", f"++output_dir={work / 'distill'}",
        f"++distillation.num_prompts_per_step={args.prompts}", "++distillation.num_generations_per_prompt=1",
        f"++distillation.max_num_steps={args.steps}", f"++distillation.seed={args.seed}",
        "++loss_fn.kl_type=reverse", f"++policy.train_global_batch_size={args.prompts}",
        "++policy.sequence_packing.enabled=true", f"++policy.train_micro_batch_size={args.pack_rows}",
        f"++policy.generation.max_new_tokens={args.max_new_tokens}", "++policy.generation.temperature=1.0",
        "++policy.generation.ignore_eos=true",  # every response max_new_tokens long; TRL has no such key
        f"++policy.max_total_sequence_length={args.max_new_tokens + 128}", "++policy.precision=bfloat16",
        f"++policy.optimizer.kwargs.lr={args.lr}", "++policy.scheduler.name=constant", "++checkpointing.enabled=false",
    ]  # fmt: skip
    command = [sys.executable, "-m", "skills_cli.training.algorithms.distill", *overrides]
    report["distill"] = {"command": " ".join(command)}
    print(f"ours: distill, {args.steps} steps", flush=True)
    report["distill"].update(run_process(command, logs / "distill.log", timeout, work))
    rows = read_jsonl(work / "distill" / "logs" / "metrics.jsonl")
    report["distill"].update(summarize_ours(rows))
    phase_done("ours", report["distill"])


def summarize_ours(rows: list[dict]) -> dict:
    """GRPO's summary of an on-policy run (timers, performance, lengths) plus the distillation loss and KL."""
    summary = summarize_grpo(rows)
    train = [r for r in rows if "train/reward" in r]
    if not train:
        return summary
    for unused in ("reward_per_step", "reward_mean_first_third", "reward_mean_last_third", "kl_median",
                   "token_mult_prob_error_per_step", "gen_kl_error_median", "validation_accuracy_greedy_test"):  # fmt: skip
        summary.pop(unused, None)
    total = summary["timing_s"]["total"]["median_steps_2_to_n"]
    return summary | {"median_step_s_steps_2_to_n": total,
                      "tokens_per_sec_per_gpu_median": summary["performance"]["performance/tokens_per_sec_per_gpu"],
                      "reverse_kl_per_step": [rnd(r.get("train/kl")) for r in train],
                      "loss_per_step": [rnd(r.get("train/loss")) for r in train]}  # fmt: skip


# ---- TRL ------------------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    """Runs in its own process: TRL's DistillationTrainer for spec["steps"] optimizer steps."""
    report = WorkerReport(spec_path)
    spec = report.spec
    try:
        from datasets import Dataset
        from datasets.table import InMemoryTable
        from transformers import AutoTokenizer
        from trl import DistillationConfig, DistillationTrainer

        report.record_versions()
    except Exception as error:  # report exactly why TRL cannot run here
        return report.failed("import_failed", error)
    from skills_cli.prompts.prompt_config import load_prompt_config

    prompt = load_prompt_config(PROMPT_CONFIG)
    rows = read_jsonl(Path(spec["train_data"]))
    # a fixed fingerprint: datasets' own (dill hashing of the Arrow table) failed here with pyarrow 26
    dataset = Dataset(InMemoryTable.from_pylist([{"prompt": prompt.messages(row)} for row in rows]),
                      fingerprint="arith-train-generic-math-prompts")  # fmt: skip
    config = DistillationConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], seed=spec["seed"],
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["prompts"] // spec["micro_batch"],
        max_completion_length=spec["max_new_tokens"], temperature=1.0, top_p=1.0, top_k=0, beta=1.0,
        teacher_model_init_kwargs={"dtype": "bfloat16"}, learning_rate=spec["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.98, max_grad_norm=1.0, use_vllm=False,
        bf16=report.cuda, gradient_checkpointing=False, use_cpu=not report.cuda, logging_steps=1, save_strategy="no",
        report_to="none", dataloader_num_workers=0, disable_dropout=True, log_completions=False,
    )  # fmt: skip
    report.data["config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length", "beta", "temperature",
        "learning_rate", "bf16", "gradient_checkpointing", "use_vllm", "teacher_model_init_kwargs")}  # fmt: skip
    start = time.perf_counter()
    try:
        trainer = DistillationTrainer(model=spec["model"], teacher_model=spec["teacher"], args=config,
                                      train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(spec["model"]),
                                      callbacks=[report.clock()])  # fmt: skip
    except Exception as error:
        return report.failed("setup_failed", error)
    report.time_calls(trainer, "_generate_single_turn", "generate")
    report.train(trainer, start)


def run_trl(report: dict, args, work: Path, train_path: str, device: str, logs: Path, timeout: float) -> None:
    spec = {"model": str(work / "student"), "teacher": str(work / "teacher"), "train_data": train_path,
            "prompts": args.prompts, "micro_batch": args.trl_micro_batch, "max_new_tokens": args.max_new_tokens,
            "lr": args.lr, "steps": args.trl_steps, "seed": args.seed, "device": device,
            "output_dir": str(work / "trl"), "out": str(work / "trl_report.json")}  # fmt: skip
    print(f"TRL: DistillationTrainer, {args.trl_steps} steps", flush=True)
    process, worker = run_trl_worker(str(Path(__file__).resolve()), spec, work, logs / "trl.log", timeout)
    rows = [row for row in worker.get("logs", []) if "num_tokens" in row]
    generate = worker.get("section_seconds", {}).get("generate", [])
    report["trl"] = {**process, **trl_step_summary(worker),
                     "generate_s_median_steps_2_to_n": rnd(median(generate[1:])),
                     "completion_mean_length_per_step": [rnd(r.get("completions/mean_length"), 1) for r in rows],
                     "loss_per_step": [rnd(r.get("loss")) for r in rows]}  # fmt: skip
    phase_done("TRL", report["trl"])


# ---- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_step.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/distill_step"))
    parser.add_argument("--logs_dir", type=Path, help="copy the phases' logs here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: tiny models and sizes")
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="our steps (one optimizer step each)")
    parser.add_argument("--trl_steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=64, help="prompts (one sample each) per step, both trainers")
    parser.add_argument("--pack_rows", type=int, default=16, help="our packed rows per micro-batch")
    parser.add_argument("--trl_micro_batch", type=int, default=16, help="TRL's samples per micro-batch")
    parser.add_argument("--max_new_tokens", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device_kind", default=None, help="the device tool's kind, recorded in the JSON")
    parser.add_argument("--timeouts", default="150,150", help="seconds for our run and TRL's")
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.trl_steps, args.prompts, args.pack_rows, args.trl_micro_batch = 3, 3, 4, 2, 2
        args.max_new_tokens = 16
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    device, work, logs = prepare_run(args)
    ours_timeout, trl_timeout = (float(t) for t in args.timeouts.split(","))
    train_path = write_jsonl(work / "train.jsonl", arith_rows("train"))
    report = report_header("distill_step", device, args)
    report["settings"] = {"prompts_per_step": args.prompts, "samples_per_prompt": 1, "max_new_tokens": args.max_new_tokens,
                          "temperature": 1.0, "divergence": "reverse KL, whole vocabulary", "lr": args.lr,
                          "optimizer_steps_per_step": 1, "ours_packed_rows_per_micro_batch": args.pack_rows,
                          "trl_samples_per_micro_batch": args.trl_micro_batch, "precision": "bf16 mixed",
                          "teacher_dtype": "bf16", "gradient_checkpointing": False, "rollout_engine_ours": "torch",
                          "generation_trl": "transformers generate"}  # fmt: skip
    build_models(report, args, work, device)
    save(report, args)
    run_ours(report, args, work, train_path, logs, ours_timeout)
    save(report, args)
    if not args.skip_trl:
        run_trl(report, args, work, train_path, device, logs, trl_timeout)
        compare(report, report["distill"].get("median_step_s_steps_2_to_n"),
                report["distill"].get("tokens_per_sec_per_gpu_median"))  # fmt: skip
    finish(report, args)


if __name__ == "__main__":
    main()
