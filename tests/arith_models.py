"""Shared by the learning tests of every RL / preference algorithm (no tests here): tiny models warmed up on
the `arith` benchmark's multiplication rows, built once per test process and reused.

`warmed_model()` is the GRPO learning test's start (a grouped-query tiny model, head size 32, seed 0, 200 steps
of SFT from 3e-3 on the multiplication rows): it samples about half of its answers right at T=0.7, which
leaves room to learn both ways. `teacher_model()` is a larger tiny model trained the same way for longer (the
distillation test's teacher: the same tokenizer and vocabulary as the warmed model). Both return a dict with
`model` (the HF folder), `prompt` (the short prompt YAML the warm-up trained on), `problems` (32 problems
JSONL, GRPO's fixed set) and `rows` (all multiplication rows, with `problem`, `solution`, `expected_answer`).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from test_sft_support import write_jsonl

from skills_cli.common.overrides import load_config
from skills_cli.evaluation.benchmarks.arith import generate as arith
from skills_cli.training.algorithms.sft.config import SFTConfig
from skills_cli.training.algorithms.sft.trainer import run as run_sft

_CACHE = Path(tempfile.mkdtemp(prefix="skills-arith-models-"))
atexit.register(shutil.rmtree, _CACHE, True)

SEQUENCE = "++policy.max_total_sequence_length=64"
FLOAT32 = "++policy.precision=float32"
NO_CHECKPOINTS = "++checkpointing.enabled=false"


def multiplication_rows() -> list[dict]:
    return [row for row in arith("train") if row["operation"] == "*"]


def chat_rows(rows: list[dict]) -> list[dict]:
    return [{"messages": [{"role": "user", "content": row["problem"]},
                          {"role": "assistant", "content": row["solution"]}]} for row in rows]  # fmt: skip


def sft(model: Path, data: str, output: Path, steps: int = 200, lr: float = 3e-3) -> Path:
    """SFT with a cosine schedule from `lr`; returns the exported model."""
    config = load_config(SFTConfig, [
        f"++policy.model_name={model}", f"++data.train_data={data}", f"++output_dir={output}", SEQUENCE, FLOAT32,
        "++policy.train_global_batch_size=32", "++policy.train_micro_batch_size=32",
        f"++policy.optimizer.kwargs.lr={lr}", "++policy.optimizer.kwargs.weight_decay=0.0",
        "++policy.scheduler.name=cosine", f"++sft.max_num_steps={steps}", "++sft.max_num_epochs=1000",
        NO_CHECKPOINTS,
    ], where="sft")  # fmt: skip
    run_sft(config)
    return output / "final_hf"


def _data(root: Path) -> dict:
    rows = multiplication_rows()
    prompt = root / "prompt.yaml"
    prompt.write_text('user: "{problem}"\n')  # the short prompt the warm-up trains on
    return {"root": root, "prompt": prompt, "rows": rows, "sft_data": write_jsonl(root / "sft.jsonl", chat_rows(rows)),
            "problems": write_jsonl(root / "problems.jsonl", rows[:32])}  # fmt: skip


@functools.cache
def warmed_model() -> dict:
    """The tiny model after 200 SFT steps on the multiplication rows (about half right at T=0.7)."""
    from skills_cli.inference.tiny_model import build_tiny_model

    root = _CACHE / "warmed"
    root.mkdir(parents=True, exist_ok=True)
    data = _data(root)
    base = build_tiny_model(root / "base", seed=0, num_heads=2, num_kv_heads=1)
    return {**data, "base": base, "model": sft(base, data["sft_data"], root / "sft")}


@functools.cache
def teacher_model() -> dict:
    """A larger tiny model (4 layers, hidden 128) with the warmed model's tokenizer, SFT-trained for 400 steps:
    a better arith solver to distill from."""
    from skills_cli.inference.tiny_model import build_tiny_model

    warmed = warmed_model()
    root = _CACHE / "teacher"
    root.mkdir(parents=True, exist_ok=True)
    base = build_tiny_model(root / "base", seed=0, num_heads=4, num_kv_heads=2, hidden_size=128, num_layers=4)
    return {**warmed, "model": sft(base, warmed["sft_data"], root / "sft", steps=400)}
