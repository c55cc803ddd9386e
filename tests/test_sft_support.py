"""Shared helpers for the SFT tests (no tests here): tiny models built once per test process, datasets, configs."""

from __future__ import annotations

import atexit
import functools
import json
import random
import shutil
import tempfile
from pathlib import Path

from skills_cli.common.overrides import load_config
from skills_cli.training.algorithms.sft.config import SFTConfig

_CACHE = Path(tempfile.mkdtemp(prefix="skills-sft-tests-"))
atexit.register(shutil.rmtree, _CACHE, True)


@functools.cache
def tiny_model(arch: str = "llama", seed: int = 0) -> str:
    """A tiny random chat model (built once per process; building trains a tokenizer, ~1 s)."""
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(_CACHE / f"{arch}-{seed}", arch=arch, seed=seed))


def conversation_rows(count: int, seed: int = 0) -> list[dict]:
    """Arithmetic dialogues: single- and multi-turn `messages` rows mixed with `input`/`output` rows."""
    rng = random.Random(seed)
    rows = []
    for index in range(count):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if index % 3 == 0:
            rows.append({"input": f"What is {a}+{b}?", "output": f"{a} + {b} = {a + b}. \\boxed{{{a + b}}}"})
        elif index % 3 == 1:
            rows.append({"messages": [{"role": "user", "content": f"What is {a}+{b}?"},
                                      {"role": "assistant", "content": f"\\boxed{{{a + b}}}"}]})  # fmt: skip
        else:
            rows.append({"messages": [
                {"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": f"What is {a}*{b}?"},
                {"role": "assistant", "content": f"{a * b}"},
                {"role": "user", "content": "Are you sure?"},
                {"role": "assistant", "content": f"Yes: {a} * {b} = {a * b}."},
            ]})  # fmt: skip
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def sft_config(model: str, train: str, output_dir: Path, *overrides: str) -> SFTConfig:
    """A small CPU config (global batch 8, micro-batch 2, lr 1e-3); `overrides` win."""
    base = [f"++policy.model_name={model}", f"++data.train_data={train}", f"++output_dir={output_dir}",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2",
            "++policy.max_total_sequence_length=256", "++policy.optimizer.kwargs.lr=1e-3",
            "++policy.optimizer.kwargs.weight_decay=0.0", "++sft.max_num_steps=4"]  # fmt: skip
    return load_config(SFTConfig, [*base, *overrides], where="sft")


def read_metrics(output_dir: Path) -> list[dict]:
    """The per-step rows of a run (`<output_dir>/logs/metrics.jsonl`)."""
    return [json.loads(line) for line in (Path(output_dir) / "logs" / "metrics.jsonl").read_text().splitlines()]


def assert_prefetched_steps_match_inline(trainer_class, config_for, epochs: list[int], monkeypatch) -> None:
    """`len(epochs)` steps of `trainer_class(config_for(prefetch))` with each step's micro-batches built during
    the previous update (`_prefetch_next`) and built inline: every step after the first trains on the prefetched
    ones, the steps fall in `epochs`, and the metrics are the same."""
    from skills_cli.training.components.parallel import distributed_session

    runs = {}
    for prefetch in (True, False):
        with distributed_session() as dist:
            runs[prefetch] = _steps_and_prefetch_use(trainer_class(config_for(prefetch), dist), len(epochs),
                                                     prefetch, monkeypatch)  # fmt: skip
    (prefetched, handed), (inline, handed_inline) = runs[True], runs[False]
    assert [row["epoch"] for row in prefetched] == epochs
    assert handed == [False] + [True] * (len(epochs) - 1) and handed_inline == [False] * len(epochs)
    assert prefetched == inline


def _steps_and_prefetch_use(trainer, steps: int, prefetch: bool, monkeypatch) -> tuple[list[dict], list[bool]]:
    """`steps` of `trainer.train_step()` (its `_prefetch_next` a no-op unless `prefetch`): the rows without their
    timings, and for each step whether `launch_global_batch` was handed micro-batches built beforehand."""
    timing = {"step_time_s", "tokens_per_sec_per_gpu", "mfu", "mfu_6n", "peak_memory_gib"}
    if not prefetch:
        monkeypatch.setattr(trainer, "_prefetch_next", lambda: None)
    handed, launch = [], trainer.launch_global_batch

    def recording_launch(*args, batches=None, **kwargs):
        handed.append(batches is not None)
        return launch(*args, batches=batches, **kwargs)

    monkeypatch.setattr(trainer, "launch_global_batch", recording_launch)
    rows = [trainer.train_step() for _ in range(steps)]
    return [{k: v for k, v in row.items() if k not in timing} for row in rows], handed
