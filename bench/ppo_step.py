"""PPO with a critic on one GPU: our PPO trainer's step time and TRL's PPOTrainer's on the same work, as JSON.

    python bench/ppo_step.py [--out bench/results/ppo_step.json] [--logs_dir DIR] [--tiny] [--skip_trl]
        [--trl_path DIR] [--steps 8] [--trl_steps 4] [--rollouts 128] [--ppo_epochs 2] [--max_new_tokens 128]
        [--device_kind nvidia-h200] [--timeouts 150,150]

TRL 1.16 has no PPOTrainer: `from trl import PPOTrainer` stopped working in TRL 1.10 (moved to
`trl.experimental.ppo`), and TRL 1.13 removed it (huggingface/trl#7020). TRL 1.12.0 is the last release with
one, `trl.experimental.ppo.PPOTrainer`, and it imports and trains beside transformers 5.17 / torch 2.11. It is
carried as a second wheel (.whl/ppo/trl-1.12.0-py3-none-any.whl), installed into its own folder, and `--trl_path`
puts that folder first on the TRL worker's PYTHONPATH (datasets, dill and multiprocess come from the 1.16 set).
With transformers 5 its own `Accelerator` no longer inherits bf16 from TrainingArguments, so the worker sets
ACCELERATE_MIXED_PRECISION=bf16 (as `accelerate launch --mixed_precision bf16` would).

What it does, all offline, each phase a separate process (the real entry points, as users run them):
  1. builds the policy, the Qwen2.5-0.5B-shaped Qwen2 of bench/grpo_step.py (hidden 896, 24 layers, vocabulary
     151,936, tied embeddings; `--tiny`: hidden 64, 2 layers) with random weights and its arithmetic BPE
     tokenizer, and a reward model: a tiny random sequence classifier (hidden 64, 2 layers, one score, the same
     vocabulary and tokenizer) whose cost is negligible on both sides, so the step is the policy's and the
     critic's work. Random weights sample near-uniformly over 151,936 ids: an end-of-sequence token is all but
     never drawn and every response runs to --max_new_tokens on both sides (ours with `policy.generation.ignore_eos`;
     TRL has no such key; the JSON gives both lengths);
  2. the `arith` train split as problems with the `generic/math` prompt, `--rollouts` prompts a step, one sample
     each (verl's rollout.n = 1; TRL's PPO samples one), temperature 1;
  3. our PPO (`python -m skills_cli.training.algorithms.ppo`): GRPO's torch rollout engine, the critic (value
     head on a copy of the policy's checkpoint, bf16 mixed precision), reward = the reward model's score
     (`env.reward_model`, math weight 0), KL(actor || reference) k1 in the reward with a fixed coefficient,
     GAE (gamma 1, lambda 0.95), whitened advantages, clip 0.2, value clip 0.2, `--ppo_epochs` passes over the
     rollout batch in one mini-batch (one optimizer step each for the actor and for the critic), sequence packing
     (`--pack_rows` rows of max_new_tokens + 128 tokens a micro-batch, policy and critic);
  4. TRL's PPOTrainer on the same policy (value model: the checkpoint as AutoModelForSequenceClassification,
     reference: the checkpoint in bf16, the same reward model in bf16), tokenizer (its chat template, left
     padding), prompts, response_length, temperature, kl_coef (k1), gamma, lam, cliprange, cliprange_value,
     num_ppo_epochs, one mini-batch (per-device `--trl_micro_batch` x gradient accumulation = the rollouts),
     one `generate` call of all the step's prompts (local_rollout_forward_batch_size), learning rate (one AdamW
     for policy and value, constant), stop at EOS, bf16 mixed precision, no gradient checkpointing. Its
     `batch_generation` calls are timed on their own (`generate_s`) and count the step's tokens.

Step time: ours, `timing/train/total` of metrics.jsonl (with its breakdown); TRL's, wall clock between consecutive
TrainerCallback.on_step_end calls after a CUDA synchronize. Medians over steps 2..N (step 1 holds the warm-ups).
tokens/s/GPU counts prompt + response tokens of the step's rollouts over the step time (ours:
`performance/tokens_per_sec_per_gpu`; TRL's: the non-pad tokens of its generated query-responses). Ratio: TRL's
median step time over ours (target >= 2).

Device command (one H200; TRL 1.16.0, datasets, dill, multiprocess carried as wheels in .whl, TRL 1.12.0 in
.whl/ppo):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target \
        /tmp/trl112 .whl/ppo/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/ppo_step.py \
        --trl_path /tmp/trl112 --out $OUT/ppo_step.json --logs_dir $OUT/ppo_logs --device_kind nvidia-h200

Measured 2026-12-05 on one H200 (nvidia-h200; torch 2.11, transformers 5.17, accelerate 1.15; TRL 1.12.0 for
PPOTrainer, datasets 5.2.0 carried as wheels; commit 9181d88 + the preflight line of bench/device_issue18.sh),
`bash bench/device_issue18.sh 1`, i.e. the command above with its defaults: 128 rollouts a step, 128 new tokens
each (all ran to the limit on both sides), 2 PPO epochs, one mini-batch, KL k1 x 0.05 in the reward, lr 1e-6;
about 21.5k tokens a step on both sides:
  ours, median of steps 2-8: total 1.786 s = generation 0.263 + reward 0.043 + policy and reference logprobs
    0.209 + values 0.083 + advantages 0.012 + policy training 0.693 + critic training 0.451 (+ refit 0.017);
    12,025 tokens/s/GPU, peak 40.4 GiB; token_mult_prob_error median 1.0089
  TRL PPOTrainer, median of steps 2-4: 4.160 s (generate 2.003 s), 5,160 tokens/s/GPU, peak 59.9 GiB
  ratio TRL step time / ours 2.33 (target >= 2: met).
The value losses differ in scale (ours ~0.0013, TRL's 0.11 -> 0.044): our critic's value head starts at zero
(components/heads.py), TRL's at random; neither is a quality figure over 8 steps of a random reward.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from distill_step import qwen2_config_like, save_random_model  # noqa: E402  (bench scripts import each other from this folder)
from grpo_step import (  # noqa: E402
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

KL_COEF, GAMMA, LAM, CLIP, VALUE_CLIP = 0.05, 1.0, 0.95, 0.2, 0.2
PPO_TIMERS = ("values", "advantages", "critic_training")
TINY_RM = {k: v for k, v in TINY.items() if k != "vocab_size"}


# ---- models ---------------------------------------------------------------------------------------------------


def build_reward_model(policy: Path, directory: Path, device: str, seed: int) -> dict:
    """A tiny random-weight Qwen2 sequence classifier (one score) with the policy's vocabulary and tokenizer."""
    from transformers import AutoModelForSequenceClassification

    config = qwen2_config_like(policy, TINY_RM, tie_word_embeddings=False, num_labels=1)
    params = save_random_model(AutoModelForSequenceClassification, config, directory, policy, device, seed + 2)
    return {"architecture": "Qwen2ForSequenceClassification (random init, one score)", **TINY_RM,
            "vocab_size": config.vocab_size, "parameters": params}  # fmt: skip


def build_models(report: dict, args, work: Path, device: str) -> None:
    started = time.perf_counter()
    print("building the policy and the reward model", flush=True)
    corpus = sft_rows(arith_rows("train"))
    report["model"] = build_model(work / "base", TINY if args.tiny else QWEN25_05B, corpus, device, args.seed)
    report["reward_model"] = build_reward_model(work / "base", work / "reward_model", device, args.seed)
    report["models_build_s"] = round(time.perf_counter() - started, 1)


# ---- ours ---------------------------------------------------------------------------------------------------------


def run_ours(report: dict, args, work: Path, train_path: str, logs: Path, timeout: float) -> None:
    overrides = [
        f"++policy.model_name={work / 'base'}", f"++data.train_data={train_path}", f"++data.prompt_config={PROMPT_CONFIG}",
        f"++output_dir={work / 'ppo'}", f"++ppo.num_prompts_per_step={args.rollouts}", "++ppo.num_generations_per_prompt=1",
        f"++ppo.ppo_epochs={args.ppo_epochs}", f"++ppo.max_num_steps={args.steps}", f"++ppo.seed={args.seed}",
        f"++policy.train_global_batch_size={args.rollouts}", "++policy.sequence_packing.enabled=true",
        f"++policy.train_micro_batch_size={args.pack_rows}", f"++critic.train_micro_batch_size={args.pack_rows}",
        f"++policy.generation.max_new_tokens={args.max_new_tokens}", "++policy.generation.temperature=1.0",
        "++policy.generation.ignore_eos=true",  # every response max_new_tokens long; TRL has no such key
        f"++policy.max_total_sequence_length={args.max_new_tokens + 128}", "++policy.precision=bfloat16",
        "++critic.precision=bfloat16", f"++policy.optimizer.kwargs.lr={args.lr}", f"++critic.optimizer.kwargs.lr={args.lr}",
        "++critic.optimizer.kwargs.weight_decay=0.1", "++policy.scheduler.name=constant", "++critic.scheduler.name=constant",
        f"++env.reward_model.model_name={work / 'reward_model'}", "++env.math.weight=0", "++algorithm.use_kl_in_reward=true",
        "++algorithm.kl_penalty=k1", "++algorithm.kl_ctrl.type=fixed", f"++algorithm.kl_ctrl.kl_coef={KL_COEF}",
        f"++algorithm.gamma={GAMMA}", f"++algorithm.lam={LAM}", f"++loss_fn.ratio_clip_min={CLIP}",
        f"++loss_fn.ratio_clip_max={CLIP}", f"++critic.cliprange_value={VALUE_CLIP}", "++checkpointing.enabled=false",
    ]  # fmt: skip
    command = [sys.executable, "-m", "skills_cli.training.algorithms.ppo", *overrides]
    report["ppo"] = {"command": " ".join(command)}
    print(f"ours: ppo, {args.steps} steps", flush=True)
    report["ppo"].update(run_process(command, logs / "ppo.log", timeout, work))
    report["ppo"].update(summarize_ours(read_jsonl(work / "ppo" / "logs" / "metrics.jsonl")))
    phase_done("ours", report["ppo"])


def summarize_ours(rows: list[dict]) -> dict:
    """GRPO's summary of an on-policy run plus PPO's own timers and verl's loss metrics."""
    summary = summarize_grpo(rows)
    train = [r for r in rows if "train/reward" in r]
    if not train:
        return summary
    total = summary["timing_s"]["total"]["median_steps_2_to_n"]
    for name in PPO_TIMERS:
        seconds = rnd(median([r.get(f"timing/train/{name}") for r in train[1:] or train]))
        summary["timing_s"][name] = {"median_steps_2_to_n": seconds, "step_1": rnd(train[0].get(f"timing/train/{name}")),
                                     "share_of_total": rnd(seconds / total, 3) if seconds is not None and total else None}  # fmt: skip
    for unused in ("validation_accuracy_greedy_test", "token_mult_prob_error_per_step", "gen_kl_error_median"):
        summary.pop(unused, None)
    return summary | {"median_step_s_steps_2_to_n": total,
                      "tokens_per_sec_per_gpu_median": summary["performance"]["performance/tokens_per_sec_per_gpu"],
                      "pg_loss_per_step": [rnd(r.get("actor/pg_loss")) for r in train],
                      "vf_loss_per_step": [rnd(r.get("critic/vf_loss")) for r in train]}  # fmt: skip


# ---- TRL ------------------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    """Runs in its own process: TRL's (1.12) PPOTrainer for spec["steps"] PPO steps."""
    report = WorkerReport(spec_path)
    if report.cuda:  # TRL's PPOTrainer builds its own Accelerator, which reads the precision from here
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16"
    try:
        from trl.experimental.ppo import ppo_trainer

        report.record_versions()
        trainer = build_trl_trainer(report)
    except Exception as error:  # report exactly why TRL cannot run here
        return report.failed("setup_failed", error)
    report.data["mixed_precision"] = trainer.accelerator.mixed_precision
    count_tokens(report, ppo_trainer, trainer.processing_class.pad_token_id)
    report.train(trainer, report.data.pop("setup_start"))


def build_trl_trainer(report: WorkerReport):
    import torch
    from datasets import Dataset
    from datasets.table import InMemoryTable
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from skills_cli.prompts.prompt_config import load_prompt_config

    spec, bf16 = report.spec, torch.bfloat16 if report.cuda else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    prompt = load_prompt_config(PROMPT_CONFIG)
    ids = [tokenizer.apply_chat_template(prompt.messages(row), add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"] for row in read_jsonl(Path(spec["train_data"]))]  # fmt: skip
    # a fixed fingerprint: datasets' own (dill hashing of the Arrow table) failed here with pyarrow 26
    dataset = Dataset(InMemoryTable.from_pylist([{"input_ids": row} for row in ids]), fingerprint="arith-ppo-ids")
    config = PPOConfig(
        output_dir=spec["output_dir"], seed=spec["seed"], total_episodes=spec["rollouts"] * spec["steps"],
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["rollouts"] // spec["micro_batch"],
        num_mini_batches=1, num_ppo_epochs=spec["ppo_epochs"], local_rollout_forward_batch_size=spec["rollouts"],
        response_length=spec["max_new_tokens"], stop_token="eos", temperature=1.0, kl_coef=KL_COEF, kl_estimator="k1",
        gamma=GAMMA, lam=LAM, cliprange=CLIP, cliprange_value=VALUE_CLIP, whiten_rewards=False,
        num_sample_generations=0, learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.98, max_grad_norm=1.0, bf16=report.cuda,
        gradient_checkpointing=False, use_cpu=not report.cuda, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0,
    )  # fmt: skip
    report.data["config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "num_mini_batches", "num_ppo_epochs",
        "local_rollout_forward_batch_size", "response_length", "stop_token", "kl_coef", "kl_estimator", "gamma",
        "lam", "cliprange", "cliprange_value", "learning_rate", "bf16", "gradient_checkpointing")}  # fmt: skip
    report.data["setup_start"] = time.perf_counter()
    return PPOTrainer(
        args=config, processing_class=tokenizer, model=AutoModelForCausalLM.from_pretrained(spec["model"]),
        ref_model=AutoModelForCausalLM.from_pretrained(spec["model"], dtype=bf16),
        reward_model=AutoModelForSequenceClassification.from_pretrained(spec["reward_model"], dtype=bf16),
        value_model=AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1),
        train_dataset=dataset, eval_dataset=dataset.select(range(4)), callbacks=[report.clock()],
    )  # fmt: skip


def count_tokens(report: WorkerReport, module, pad_id: int) -> None:
    """Time TRL's `batch_generation` (its generate call of the step's prompts) and count each step's prompt +
    response tokens (the non-pad ids of the query-responses it returns)."""
    report.time_calls(module, "batch_generation", "generate")
    timed, counts = module.batch_generation, report.data.setdefault("step_tokens", [])

    def counted(*args, **kwargs):
        query_responses, logits = timed(*args, **kwargs)
        counts.append(int((query_responses != pad_id).sum()))
        lengths = report.data.setdefault("response_length_per_step", [])
        lengths.append(round(float((query_responses[:, args[1].shape[1] :] != pad_id).sum(1).float().mean()), 1))
        return query_responses, logits

    module.batch_generation = counted


def run_trl(report: dict, args, work: Path, train_path: str, device: str, logs: Path, timeout: float) -> None:
    spec = {"model": str(work / "base"), "reward_model": str(work / "reward_model"), "train_data": train_path,
            "rollouts": args.rollouts, "micro_batch": args.trl_micro_batch, "ppo_epochs": args.ppo_epochs,
            "max_new_tokens": args.max_new_tokens, "lr": args.lr, "steps": args.trl_steps, "seed": args.seed,
            "device": device, "output_dir": str(work / "trl"), "out": str(work / "trl_report.json")}  # fmt: skip
    if args.trl_path:  # TRL 1.12 (the last with a PPOTrainer) ahead of the 1.16 set, for the worker alone
        os.environ["PYTHONPATH"] = f"{args.trl_path}:{os.environ['PYTHONPATH']}"
    print(f"TRL: PPOTrainer, {args.trl_steps} steps", flush=True)
    process, worker = run_trl_worker(str(Path(__file__).resolve()), spec, work, logs / "trl.log", timeout)
    generate = worker.get("section_seconds", {}).get("generate", [])
    report["trl"] = {**process, **trl_step_summary(worker, worker.get("step_tokens")),
                     "trl_trainer": "trl.experimental.ppo.PPOTrainer", "mixed_precision": worker.get("mixed_precision"),
                     "generate_s_median_steps_2_to_n": rnd(median(generate[1:])),
                     "response_length_per_step": worker.get("response_length_per_step"),
                     "pg_loss_per_step": [rnd(r.get("loss/policy_avg")) for r in worker.get("logs", [])],
                     "vf_loss_per_step": [rnd(r.get("loss/value_avg")) for r in worker.get("logs", [])]}  # fmt: skip
    phase_done("TRL", report["trl"])


# ---- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ppo_step.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ppo_step"))
    parser.add_argument("--logs_dir", type=Path, help="copy the phases' logs here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: tiny models and sizes")
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument("--trl_path", default="", help="a folder holding TRL 1.12 (put first on the worker's path)")
    parser.add_argument("--steps", type=int, default=8, help="our PPO steps")
    parser.add_argument("--trl_steps", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=128, help="prompts (one sample each) per step, both trainers")
    parser.add_argument("--ppo_epochs", type=int, default=2, help="passes over each rollout batch (one mini-batch)")
    parser.add_argument("--pack_rows", type=int, default=32, help="our packed rows per micro-batch (policy and critic)")
    parser.add_argument("--trl_micro_batch", type=int, default=32, help="TRL's rollouts per micro-batch")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-6, help="actor and critic learning rate (both trainers)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device_kind", default=None, help="the device tool's kind, recorded in the JSON")
    parser.add_argument("--timeouts", default="150,150", help="seconds for our run and TRL's")
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tiny:
        args.steps, args.trl_steps, args.rollouts, args.pack_rows, args.trl_micro_batch = 3, 3, 8, 2, 4
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
    report = report_header("ppo_step", device, args)
    report["settings"] = {"rollouts_per_step": args.rollouts, "samples_per_prompt": 1, "ppo_epochs": args.ppo_epochs,
                          "mini_batches": 1, "max_new_tokens": args.max_new_tokens, "temperature": 1.0,
                          "kl_in_reward": f"k1 x {KL_COEF} (fixed)", "gamma": GAMMA, "lam": LAM, "cliprange": CLIP,
                          "cliprange_value": VALUE_CLIP, "lr": args.lr, "reward": "tiny random reward model",
                          "ours_packed_rows_per_micro_batch": args.pack_rows,
                          "trl_rollouts_per_micro_batch": args.trl_micro_batch, "precision": "bf16 mixed",
                          "gradient_checkpointing": False, "trl_trainer": "trl.experimental.ppo.PPOTrainer (TRL 1.12)"}  # fmt: skip
    build_models(report, args, work, device)
    save(report, args)
    run_ours(report, args, work, train_path, logs, ours_timeout)
    save(report, args)
    if not args.skip_trl:
        run_trl(report, args, work, train_path, device, logs, trl_timeout)
        compare(
            report, report["ppo"].get("median_step_s_steps_2_to_n"), report["ppo"].get("tokens_per_sec_per_gpu_median")
        )
    finish(report, args)


if __name__ == "__main__":
    main()
