"""Reward model on one GPU: our RM trainer's step time and tokens/s/GPU, and TRL's RewardTrainer on the same pairs.

    python bench/rm_step.py [--out bench/results/rm_step.json] [--logs_dir DIR] [--tiny] [--skip_trl]
        [--steps 8] [--trl_steps 5] [--batch 64] [--checks 40] [--lengths equal|variable]
        [--device_kind nvidia-h200] [--timeouts 150,120]

What it does, all offline, each phase a separate process (the real entry points, as users run them):
  1. builds the Qwen2.5-0.5B-shaped Qwen2 of bench/grpo_step.py (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP
     4864, vocabulary 151,936, tied embeddings; `--tiny`: hidden 64, 2 layers) with random weights and its
     arithmetic BPE tokenizer, saved as a causal LM: both trainers load it with a new scalar head (HF
     `AutoModelForSequenceClassification`, one label), as users start a reward model from an SFT model;
  2. the preference pairs of bench/dpo_step.py (`preference_rows`: the `generic/math` prompt; chosen = `--checks`
     equation restatements then the solution, rejected = the same with a wrong result), `--batch` x
     max(--steps, --trl_steps) of them. `--lengths variable` draws each side's number of checks uniformly from
     [checks/10, 1.9 x checks] with a fixed seed (dpo_step's `side_checks`), so sequences vary in length as
     real preference data does: TRL pads each micro-batch to its longest sequence, we pack;
  3. our reward-model trainer (`python -m skills_cli.training.algorithms.rm`): Bradley-Terry loss, score at each
     sequence's last non-pad token, sequence packing (both sides of a pair in one micro-batch, `--pack_rows`
     rows of max_total_sequence_length tokens), bf16 mixed precision;
  4. TRL's RewardTrainer on the same model, tokenizer (its chat template), pairs, loss (-logsigmoid(r_c - r_r), no
     centering), learning rate (constant), AdamW settings, global batch (per-device `--trl_micro_batch` pairs x
     gradient accumulation), max_length, bf16 mixed precision, no gradient checkpointing, padded batches.

Step time: ours, `step_time_s` of metrics.jsonl (one optimizer step, synchronized); TRL's, wall clock between
consecutive TrainerCallback.on_step_end calls after a CUDA synchronize. Medians over steps 2..N (step 1 holds the
warm-ups). tokens/s/GPU counts the tokens the model reads a step, chosen and rejected sequences of every pair
with their prompts, no padding (ours: `train/num_tokens`; TRL's: the growth of its `num_tokens` log, the
attention-mask sum), over the step time. Ratio: TRL's median step time over ours (target >= 2).

Device command (one H200; TRL 1.16.0, datasets, dill, multiprocess carried as wheels in .whl):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 python3 bench/rm_step.py \
        --out $OUT/rm_step.json --logs_dir $OUT/rm_logs --device_kind nvidia-h200 --lengths variable

Measured 2026-12-05 on one H200 (nvidia-h200; torch 2.11, transformers 5.17, accelerate 1.15; TRL 1.16.0,
datasets 5.2.0, dill 0.4.1, multiprocess 0.70.19 carried as wheels; commit 9181d88 + the preflight line of
bench/device_issue18.sh), `bash bench/device_issue18.sh 1`, i.e. the command above: 64 pairs a step, variable
lengths (each side 4-76 checks, max_length fitted to 1472, longest sequence 1423 tokens), lr 1e-5; ours 16 packed
rows of 1472 tokens a micro-batch, TRL 8 pairs a micro-batch x 8 accumulation steps; both read the same pairs
(85-95k tokens a step):
  ours, median of steps 2-8: 0.558 s, 170,058 tokens/s/GPU, peak 29.2 GiB (step 1: 10.4 s, compilation)
  TRL RewardTrainer, median of steps 2-5: 2.015 s, 44,851 tokens/s/GPU, peak 44.1 GiB
  ratio TRL step time / ours 3.61, tokens/s ours / TRL 3.79 (target >= 2: met).
Our step 1 reads loss ln 2 and accuracy 0: the score head starts at zero, so every pair ties (a tie is not
counted as ranked right); TRL's random head starts at 0.686. Accuracy over 8 steps of random pairs is not a
quality figure (the CPU tests own that).
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

from dpo_step import (  # noqa: E402  (bench scripts import each other)
    add_pair_options,
    corpus_rows,
    fit_max_length,
    preference_rows,
    shrink_for_tiny,
    summarize_ours,
)
from grpo_step import (  # noqa: E402
    QWEN25_05B,
    ROOT,
    TARGET_RATIO,
    TINY,
    arith_rows,
    build_model,
    finish,
    median,
    read_jsonl,
    rnd,
    run_process,
    save,
    snapshot_commit,
    write_jsonl,
)

# ---- the TRL worker plumbing (also used by bench/distill_step.py and bench/ppo_step.py) ---------------------------


class WorkerReport:
    """What a TRL worker process measured, rewritten to spec["out"] after every step, so a run cut short still
    leaves what it measured."""

    def __init__(self, spec_path: str) -> None:
        self.spec = json.loads(Path(spec_path).read_text())
        self.data: dict = {"status": "starting"}
        self.cuda = self.spec["device"] == "cuda"

    def save(self) -> None:
        Path(self.spec["out"]).write_text(json.dumps(self.data, indent=1) + "\n")

    def failed(self, status: str, error: Exception) -> None:
        import traceback

        self.data.update(status=status, error=f"{type(error).__name__}: {error}",
                         traceback=traceback.format_exc().splitlines()[-10:])  # fmt: skip
        self.save()

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def record_versions(self) -> None:
        import accelerate
        import datasets
        import transformers
        import trl

        self.data["versions"] = {"trl": trl.__version__, "transformers": transformers.__version__,
                                 "datasets": datasets.__version__, "accelerate": accelerate.__version__}  # fmt: skip

    def clock(self):
        """A TrainerCallback timing each optimizer step (after a device synchronize) and keeping every log row."""
        from transformers import TrainerCallback

        report, step_ends = self, []

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                report.sync()
                step_ends.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kwargs):
                report.sync()
                step_ends.append(time.perf_counter())
                steps = [round(b - a, 4) for a, b in zip(step_ends, step_ends[1:], strict=False)]
                report.data["step_seconds"] = steps
                report.data["status"] = f"running ({state.global_step} steps)"
                print(f"TRL step {state.global_step}: {steps[-1]:.3f} s", flush=True)
                report.save()

            def on_log(self, args, state, control, logs=None, **kwargs):
                numbers = {k: v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
                report.data.setdefault("logs", []).append({"step": state.global_step, **numbers})

        return Clock()

    def time_calls(self, owner, method: str, name: str) -> None:
        """Wrap owner.method (an object's or a module's) to add its synchronized wall time of each call to
        data["section_seconds"][name] (TRL's own sections of a step, such as its `generate` call)."""
        function, sections = getattr(owner, method), self.data.setdefault("section_seconds", {})
        sections[name] = []

        def timed(*args, **kwargs):
            self.sync()
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.sync()
                sections[name].append(round(time.perf_counter() - start, 4))

        setattr(owner, method, timed)

    def train(self, trainer, setup_start: float) -> None:
        """trainer.train() with the setup time, the outcome and the peak memory recorded."""
        self.data["setup_s"] = round(time.perf_counter() - setup_start, 2)
        self.data["status"] = "training"
        self.save()
        try:
            trainer.train()
            self.data["status"] = "finished"
        except Exception as error:
            self.failed("train_failed", error)
        if self.cuda:
            import torch

            self.data["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.save()


def run_trl_worker(script: str, spec: dict, work: Path, log_path: Path, timeout: float) -> tuple[dict, dict]:
    """Runs `script --trl_worker spec` in its own process; the process outcome and the worker's report."""
    spec_path = work / "trl_spec.json"
    spec_path.write_text(json.dumps(spec))
    process = run_process([sys.executable, script, "--trl_worker", str(spec_path)], log_path, timeout, work)
    worker = json.loads(Path(spec["out"]).read_text()) if Path(spec["out"]).is_file() else {}
    settings = {k: v for k, v in spec.items() if k not in ("out", "output_dir")}
    return {**process, "settings": settings}, worker


def trl_step_summary(worker: dict, per_step: list | None = None) -> dict:
    """Step times (median over steps 2..N) and tokens/s/GPU from the tokens of each step (`per_step`, or the
    growth of TRL's cumulative `num_tokens` log)."""
    out = {k: worker[k] for k in ("status", "error", "traceback", "versions", "config", "setup_s", "peak_memory_gib")
           if k in worker}  # fmt: skip
    steps = worker.get("step_seconds", [])
    if not steps:
        return out
    if per_step is None:
        totals = [row["num_tokens"] for row in worker.get("logs", []) if "num_tokens" in row]
        per_step = [b - a for a, b in zip([0, *totals], totals, strict=False)]
    rates = [n / s for n, s in zip(per_step[1:], steps[1:], strict=False)]
    return out | {"steps": len(steps), "step_seconds": steps, "median_step_s_steps_2_to_n": rnd(median(steps[1:] or steps)),
                  "step_1_s": rnd(steps[0]), "tokens_per_step": per_step,
                  "tokens_per_sec_per_gpu_median": rnd(median(rates), 1)}  # fmt: skip


def phase_done(name: str, result: dict) -> None:
    """A progress line once a phase's process ended (its output went to its log)."""
    print(f"{name}: exit {result.get('exit_code')}, {result.get('wall_s')} s, {result.get('steps', 0)} steps, median "
          f"step {result.get('median_step_s_steps_2_to_n')} s, {result.get('tokens_per_sec_per_gpu_median')} "
          "tokens/s/GPU", flush=True)  # fmt: skip


def compare(report: dict, ours_s: float | None, ours_rate: float | None) -> None:
    """TRL's median step time over ours (the target's ratio) and our tokens/s/GPU over TRL's."""
    theirs = report.get("trl", {})
    theirs_s, theirs_rate = theirs.get("median_step_s_steps_2_to_n"), theirs.get("tokens_per_sec_per_gpu_median")
    if ours_s and theirs_s:
        report["step_time_ratio_trl_over_ours"] = round(theirs_s / ours_s, 2)
        report["meets_target"] = theirs_s / ours_s >= TARGET_RATIO
    if ours_rate and theirs_rate:
        report["tokens_per_sec_ratio_ours_over_trl"] = round(ours_rate / theirs_rate, 2)


def prepare_run(args) -> tuple[str, Path, Path]:
    """The device, a fresh work directory and the logs directory; the children see the checkout on PYTHONPATH
    (they run `python -m` from the work directory, so the code under test is the one on PYTHONPATH)."""
    import shutil

    import torch

    os.environ["PYTHONPATH"] = ":".join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    logs = args.logs_dir or args.workdir
    logs.mkdir(parents=True, exist_ok=True)
    return ("cuda" if torch.cuda.is_available() else "cpu"), args.workdir, logs


def report_header(name: str, device: str, args) -> dict:
    import torch
    import transformers

    return {"benchmark": name, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "device_kind": args.device_kind, "commit": snapshot_commit(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(), "tiny": args.tiny,
            "target_ratio_trl_over_ours": TARGET_RATIO}  # fmt: skip


# ---- ours ---------------------------------------------------------------------------------------------------------


def run_ours(report: dict, args, model: Path, pairs_path: str, work: Path, logs: Path, timeout: float) -> None:
    overrides = [
        f"++policy.model_name={model}", f"++data.train_data={pairs_path}", f"++output_dir={work / 'rm'}",
        f"++rm.max_num_steps={args.steps}", f"++rm.seed={args.seed}", f"++policy.train_global_batch_size={args.batch}",
        "++policy.sequence_packing.enabled=true", f"++policy.train_micro_batch_size={args.pack_rows}",
        f"++policy.max_total_sequence_length={args.max_length}", "++policy.precision=bfloat16",
        f"++policy.optimizer.kwargs.lr={args.lr}", "++policy.scheduler.name=constant", "++checkpointing.enabled=false",
    ]  # fmt: skip
    command = [sys.executable, "-m", "skills_cli.training.algorithms.rm", *overrides]
    report["rm"] = {"sequence_packing": True, "command": " ".join(command)}
    print(f"ours: rm, {args.steps} steps", flush=True)
    report["rm"].update(run_process(command, logs / "rm.log", timeout, work))
    report["rm"].update(summarize_ours(read_jsonl(work / "rm" / "logs" / "metrics.jsonl")))
    phase_done("ours", report["rm"])


# ---- TRL ------------------------------------------------------------------------------------------------------


def trl_worker(spec_path: str) -> None:
    """Runs in its own process: TRL's RewardTrainer for spec["steps"] optimizer steps."""
    report = WorkerReport(spec_path)
    spec = report.spec
    try:
        from datasets import Dataset
        from datasets.table import InMemoryTable
        from transformers import AutoTokenizer
        from trl import RewardConfig, RewardTrainer

        report.record_versions()
    except Exception as error:  # report exactly why TRL cannot run here
        return report.failed("import_failed", error)
    rows = read_jsonl(Path(spec["train_data"]))
    # conversational rows; a fixed fingerprint (datasets' dill hashing of the Arrow table failed with pyarrow 26)
    table = InMemoryTable.from_pylist([{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                        "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])  # fmt: skip
    dataset = Dataset(table, fingerprint=f"arith-rm-{len(rows)}-{spec['max_length']}-{spec['lengths']}")
    config = RewardConfig(
        output_dir=spec["output_dir"], max_steps=spec["steps"], seed=spec["seed"],
        per_device_train_batch_size=spec["micro_batch"], gradient_accumulation_steps=spec["batch"] // spec["micro_batch"],
        learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.1, adam_beta1=0.9,
        adam_beta2=0.98, max_grad_norm=1.0, max_length=spec["max_length"], center_rewards_coefficient=None,
        bf16=report.cuda, gradient_checkpointing=False, use_cpu=not report.cuda, logging_steps=1, save_strategy="no",
        report_to="none", dataloader_num_workers=0, disable_dropout=True,
    )  # fmt: skip
    report.data["config"] = {k: getattr(config, k) for k in (
        "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate", "max_length", "bf16",
        "gradient_checkpointing", "center_rewards_coefficient")}  # fmt: skip
    start = time.perf_counter()
    try:
        trainer = RewardTrainer(model=spec["model"], args=config, train_dataset=dataset,
                                processing_class=AutoTokenizer.from_pretrained(spec["model"]),
                                callbacks=[report.clock()])  # fmt: skip
    except Exception as error:
        return report.failed("setup_failed", error)
    report.train(trainer, start)


def run_trl(report: dict, args, model: Path, pairs_path: str, device: str, work: Path, logs: Path,
            timeout: float) -> None:  # fmt: skip
    spec = {"model": str(model), "train_data": pairs_path, "batch": args.batch, "micro_batch": args.trl_micro_batch,
            "max_length": args.max_length, "lr": args.lr, "steps": args.trl_steps, "seed": args.seed,
            "lengths": args.lengths, "device": device, "output_dir": str(work / "trl"),
            "out": str(work / "trl_report.json")}  # fmt: skip
    print(f"TRL: RewardTrainer, {args.trl_steps} steps", flush=True)
    process, worker = run_trl_worker(str(Path(__file__).resolve()), spec, work, logs / "trl.log", timeout)
    logs_rows = [row for row in worker.get("logs", []) if "num_tokens" in row]
    report["trl"] = {**process, **trl_step_summary(worker),
                     "loss_per_step": [rnd(row.get("loss")) for row in logs_rows],
                     "accuracy_per_step": [rnd(row.get("accuracy"), 3) for row in logs_rows]}  # fmt: skip
    phase_done("TRL", report["trl"])


# ---- main ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rm_step.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/rm_step"))
    parser.add_argument("--logs_dir", type=Path, help="copy the phases' logs here")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test of this script: tiny model and sizes")
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument("--steps", type=int, default=8, help="our optimizer steps")
    parser.add_argument("--trl_steps", type=int, default=5)
    add_pair_options(parser)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device_kind", default=None, help="the device tool's kind, recorded in the JSON")
    parser.add_argument("--timeouts", default="150,120", help="seconds for our run and TRL's")
    parser.add_argument("--trl_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shrink_for_tiny(args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.trl_worker:
        trl_worker(args.trl_worker)
        return
    device, work, logs = prepare_run(args)
    ours_timeout, trl_timeout = (float(t) for t in args.timeouts.split(","))
    pairs = preference_rows(arith_rows("train")[: args.batch * max(args.steps, args.trl_steps)], args.checks,
                            args.lengths, args.seed)  # fmt: skip
    pairs_path = write_jsonl(work / "pairs.jsonl", pairs)
    report = report_header("rm_step", device, args)
    report["settings"] = {"pairs": len(pairs), "global_batch_pairs": args.batch, "checks": args.checks,
                          "lengths": args.lengths, "max_length": args.max_length, "loss": "bradley-terry", "lr": args.lr,
                          "ours_packed_rows_per_micro_batch": args.pack_rows,
                          "trl_pairs_per_micro_batch": args.trl_micro_batch, "precision": "bf16 mixed",
                          "gradient_checkpointing": False}  # fmt: skip
    started = time.perf_counter()
    print("building the model", flush=True)
    report["model"] = build_model(work / "base", TINY if args.tiny else QWEN25_05B, corpus_rows(pairs), device,
                                  args.seed)  # fmt: skip
    report["model"]["build_s"] = round(time.perf_counter() - started, 1)
    fit_max_length(report, args, work / "base", pairs)
    save(report, args)
    run_ours(report, args, work / "base", pairs_path, work, logs, ours_timeout)
    save(report, args)
    if not args.skip_trl:
        run_trl(report, args, work / "base", pairs_path, device, work, logs, trl_timeout)
        compare(
            report, report["rm"].get("median_step_s_steps_2_to_n"), report["rm"].get("tokens_per_sec_per_gpu_median")
        )
    finish(report, args)


if __name__ == "__main__":
    main()
