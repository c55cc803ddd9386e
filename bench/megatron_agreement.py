"""Do the megatron and dtensor backends train alike on a GPU? A few SFT steps of a small Qwen2 model on the same
batches per backend and variant (precision, compilation, learning rate, megatron's distributed optimizer on or
off, weight decay 0), all runs at once on one GPU; per-step loss and grad norm as JSON.

    python bench/megatron_agreement.py [--out agreement.json] [--workdir /tmp/agree] [--steps 4] [--before DIR]

--before DIR adds megatron runs of the code at DIR (a copy of the package from before a fix, first on PYTHONPATH).

The grad norm of step 1 is the gradient before any update: if it differs between the backends, the loss
scaling does; if it agrees and step 2's loss does not, the optimizer does. The nodistopt variants failed on an
H200 (2026-12-04: megatron's Float16Optimizer was handed CPU parameters: the local spec's torch RMSNorm weights,
created on the CPU, which only the distributed optimizer's buffers had moved to the GPU). build_gpt_model now
moves the whole model to the GPU; that fix has not run on a GPU yet (no device lent since): this bench's
nodistopt variants are its check.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from sft_throughput import ROOT, prepare  # noqa: E402

SHAPE = {"hidden_size": 256, "intermediate_size": 768, "num_hidden_layers": 4, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 1024}  # fmt: skip
# name: (precision, compile, extra overrides)
VARIANTS = {
    "bf16": ("bfloat16", "1", ()),
    "bf16_nocompile": ("bfloat16", "0", ()),
    "fp32": ("float32", "0", ()),
    "fp32_compile": ("float32", "1", ()),
    "bf16_wd0": ("bfloat16", "0", ("++policy.optimizer.kwargs.weight_decay=0.0",)),
    "bf16_lr1e-5": ("bfloat16", "1", ("++policy.optimizer.kwargs.lr=1e-5",)),
    "fp32_lr1e-5": ("float32", "0", ("++policy.optimizer.kwargs.lr=1e-5",)),
}
MEGATRON_ONLY = {
    "bf16_nodistopt": ("bfloat16", "0", ("++policy.megatron_cfg.use_distributed_optimizer=false",)),
    "bf16_lr1e-5_nodistopt": (
        "bfloat16",
        "0",
        ("++policy.optimizer.kwargs.lr=1e-5", "++policy.megatron_cfg.use_distributed_optimizer=false"),
    ),
}


def command(model: Path, data: Path, output: Path, steps: int, backend: str, precision: str, extra) -> list[str]:
    return [sys.executable, "-m", "skills_cli.training.algorithms.sft", f"++policy.model_name={model}",
            f"++data.train_data={data}", f"++output_dir={output}", "++policy.train_global_batch_size=32",
            "++policy.train_micro_batch_size=4", "++policy.max_total_sequence_length=1024",
            "++policy.sequence_packing.enabled=true", f"++policy.precision={precision}",
            f"++sft.max_num_steps={steps}", "++checkpointing.enabled=false", "++policy.optimizer.kwargs.lr=1e-4",
            "++sft.seed=42", f"++backend={backend}", *extra]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="agreement.json")
    parser.add_argument("--workdir", default="/tmp/agree")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--before", default=None)
    args = parser.parse_args()
    workdir = Path(args.workdir)
    model, data = prepare(workdir, SHAPE, num_rows=400, sequence_length=1024)
    runs = [(backend, name, spec) for backend in ("dtensor", "megatron") for name, spec in VARIANTS.items()]
    runs += [("megatron", name, spec) for name, spec in MEGATRON_ONLY.items()]
    runs = [(backend, name, spec, str(ROOT)) for backend, name, spec in runs]
    if args.before:
        runs += [("megatron-before", name, VARIANTS[name], args.before) for name in ("bf16", "bf16_lr1e-5")]
    procs = {}
    for backend, name, (precision, compiled, extra), code in runs:
        output = workdir / f"{backend}-{name}"
        output.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "SKILLS_CLI_SFT_COMPILE": compiled, "PYTHONUNBUFFERED": "1",
               "PYTHONPATH": ":".join(p for p in (code, os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
        log = (output / "log.txt").open("w")
        argv = command(model, data, output, args.steps, backend.removesuffix("-before"), precision, extra)
        procs[(backend, name)] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=output),
                                  output)  # fmt: skip
    report = {}
    for (backend, name), (proc, output) in procs.items():
        proc.wait()
        metrics = output / "logs" / "metrics.jsonl"
        if proc.returncode or not metrics.is_file():
            report[f"{backend}-{name}"] = {"error": (output / "log.txt").read_text()[-2000:]}
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines()]
        rows = [row for row in rows if "grad_norm" in row]
        report[f"{backend}-{name}"] = {key: [row.get(key) for row in rows] for key in ("loss", "grad_norm", "lr")}
    Path(args.out).write_text(json.dumps(report, indent=1))
    for key, value in report.items():
        print(key, json.dumps(value) if "error" not in value else value["error"][-600:])


if __name__ == "__main__":
    main()
