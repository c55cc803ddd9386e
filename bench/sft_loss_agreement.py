"""Per-step SFT losses of one GPU, data parallelism over 2 GPUs and tensor parallelism over 2 GPUs, on the same
model, data and seed: the three loss curves and how far apart they are, as JSON.

    python bench/sft_loss_agreement.py [--out bench/results/sft_loss_agreement.json] [--steps 12]
        [--precisions bfloat16,float32] [--nproc 2]

Each layout runs `torchrun -m skills_cli.training.algorithms.sft` (the dtensor backend) on a small random Qwen2 model
(hidden 256, 4 layers, 8 heads, 2 KV heads, so TP=2 splits both head counts) with packing, and its
metrics.jsonl gives the per-step training loss. The global batch is the same in every layout: DP=2 gives each
rank half of it, TP=2 splits every layer; the loss is normalized by the global token count, so the curves
should agree up to floating-point rounding (bf16 matmuls on GPUs; float32 for a tight check). Tolerances:
float32: max |loss difference| <= 1e-4; bfloat16: <= 2e-2 (about 0.2-0.3% of the loss, bf16's rounding
compounded over the steps' updates). torch.compile is off here (SKILLS_CLI_SFT_COMPILE=0): it changes no
arithmetic that matters to this check and would dominate the run time.

Not yet run on GPUs: the two-GPU kind (nvidia-h200-x2) has been withheld in every session so far; on it, run
`python3 bench/sft_loss_agreement.py --out $OUT/agreement.json` (it starts torchrun itself). On the 2-core
CPU machine (gloo, float32, 12 steps; "one_gpu" is then one process) it gave: DP=2 vs 1 process max |loss
difference| 9.4e-6 (mean 3.5e-6), TP=2 vs 1 process 4.8e-7, valid-token counts identical in every step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SMALL = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 8,
         "num_key_value_heads": 2, "vocab_size": 32000}  # fmt: skip
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


def run_layout(name: str, nproc: int, tp: int, precision: str, model: Path, data: Path, workdir: Path,
               steps: int) -> dict:  # fmt: skip
    output = workdir / f"{name}-{precision}"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "skills_cli.training.algorithms.sft", f"++policy.model_name={model}", f"++data.train_data={data}",
               f"++output_dir={output}", "++policy.train_global_batch_size=16", "++policy.train_micro_batch_size=2",
               "++policy.max_total_sequence_length=1024", "++policy.sequence_packing.enabled=true",
               f"++policy.precision={precision}", f"++sft.max_num_steps={steps}", "++checkpointing.enabled=false",
               "++policy.optimizer.kwargs.lr=3e-4", "++sft.seed=7",
               f"++policy.dtensor_cfg.tensor_parallel_size={tp}"]  # fmt: skip
    inherited = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "SKILLS_CLI_SFT_COMPILE": "0", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": ":".join(p for p in (str(ROOT), inherited) if p)}  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    wall = round(time.perf_counter() - start, 1)
    if result.returncode != 0:
        return {"error": result.stderr[-3000:], "wall_s": wall}
    rows = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    return {"processes": nproc, "tensor_parallel": tp, "wall_s": wall, "losses": [r["loss"] for r in rows],
            "grad_norms": [r["grad_norm"] for r in rows], "num_valid_tokens": [r["num_valid_tokens"] for r in rows]}  # fmt: skip


def compare(reference: dict, other: dict) -> dict:
    diffs = [abs(a - b) for a, b in zip(reference["losses"], other["losses"], strict=True)]
    relative = [d / abs(a) for d, a in zip(diffs, reference["losses"], strict=True)]
    return {"max_abs_loss_diff": max(diffs), "max_rel_loss_diff": max(relative),
            "mean_abs_loss_diff": sum(diffs) / len(diffs),
            "same_token_counts": reference["num_valid_tokens"] == other["num_valid_tokens"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "sft_loss_agreement.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sft_loss_agreement"))
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--precisions", default="bfloat16,float32")
    parser.add_argument("--nproc", type=int, default=2)
    args = parser.parse_args()
    import torch
    from sft_throughput import build_model, synthetic_rows

    from skills_cli.inference.model_loading import load_tokenizer

    args.workdir.mkdir(parents=True, exist_ok=True)
    model = build_model(args.workdir / "model", SMALL, seed=0)
    data = args.workdir / "train.jsonl"
    rows = synthetic_rows(16 * args.steps, load_tokenizer(model), seed=1, shortest=60, longest=900)
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    report = {"benchmark": "sft_loss_agreement", "model_shape": SMALL, "steps": args.steps,
              "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.machine(),
              "gpus": torch.cuda.device_count(), "torch": torch.__version__, "tolerance": TOLERANCE,
              "layouts": {}, "comparisons": {}}  # fmt: skip
    for precision in args.precisions.split(","):
        layouts = {"one_gpu": run_layout("one_gpu", 1, 1, precision, model, data, args.workdir, args.steps),
                   "dp2": run_layout("dp2", args.nproc, 1, precision, model, data, args.workdir, args.steps),
                   "tp2": run_layout("tp2", args.nproc, args.nproc, precision, model, data, args.workdir, args.steps)}  # fmt: skip
        report["layouts"][precision] = layouts
        for name in ("dp2", "tp2"):
            if "losses" in layouts["one_gpu"] and "losses" in layouts[name]:
                result = compare(layouts["one_gpu"], layouts[name])
                result["within_tolerance"] = result["max_abs_loss_diff"] <= TOLERANCE[precision]
                report["comparisons"][f"{precision}:{name}_vs_one_gpu"] = result
        print(json.dumps({precision: {k: v.get("error", "")[-1500:] or v["losses"] for k, v in layouts.items()}}),
              flush=True)  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["comparisons"], indent=2))


if __name__ == "__main__":
    main()
