"""Training metrics: `metrics.jsonl` (one line per step, always), at the end `summary.json` and `metrics.json` (the
per-step series; both through `skills_cli/common/artifacts.py`), and optional trackers (wandb, swanlab,
tensorboard). Only rank 0 writes.

Throughput definitions (NeMo-RL's): `tokens_per_sec_per_gpu` counts *valid* (loss-bearing) tokens of the
global batch per second per GPU. MFU counts the model FLOPs of the work actually done over the GPU's dense bf16
peak: every non-padding token costs 6 x parameters (forward + backward of the weight matmuls; tied embeddings
counted once, as the LM head), and each sequence of s tokens adds its causal attention, 6 x layers x attention
width x s^2 (QK^T and PV at half the s x s square, forward + backward) — the PaLM / Megatron accounting, with
the real sequence lengths of packed rows (no work is counted for padding or across packed sequences).
`mfu_6n` leaves attention out (the 6N rule). On CPU, or a GPU missing from the peak table, MFU is null.
`peak_memory_gib` is the CUDA allocator's peak during the step on GPU, the process's peak resident memory on CPU.

Tracker modes: `logger.wandb.mode` (online, offline, disabled, shared) and `logger.swanlab.mode` (cloud, local,
offline, disabled); left null, each tool reads its environment variable (WANDB_MODE, SWANLAB_MODE), so offline
clusters work unchanged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skills_cli.common.artifacts import TRAINING_ROWS_FILE, TRAINING_SERIES, TRAINING_SUMMARY, write_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import DurableAppender, read_jsonl, write_jsonl_atomic
from skills_cli.training.config import LoggerConfig

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, matched on the device name; the
# more specific names come first ("H100 PCIe" before "H100").
PEAK_BF16_FLOPS = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("H20", 148e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def peak_flops(device) -> float | None:
    """The dense bf16 peak of `device`, or None (CPU, unknown GPU)."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def model_flops_utilization(num_params: int, tokens_per_sec_per_gpu: float, peak: float | None,
                            attention_flops_per_sec_per_gpu: float = 0.0) -> float | None:  # fmt: skip
    """(6 x parameters x tokens/s + attention FLOP/s) per GPU over the peak; None without a peak."""
    if peak is None:
        return None
    return (6.0 * num_params * tokens_per_sec_per_gpu + attention_flops_per_sec_per_gpu) / peak


def attention_flops_per_squared_token(model_config) -> float:
    """Causal attention FLOPs (forward + backward) of one sequence divided by its squared length:
    6 x layers x heads x head_dim (an HF config's fields; head_dim defaults to hidden / heads)."""
    heads = model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // heads
    return 6.0 * model_config.num_hidden_layers * heads * head_dim


def peak_memory_gib(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def check_trackers(config: LoggerConfig) -> None:
    """Fail before training when an enabled tracker is not installed."""
    import importlib.util

    wanted = {"wandb": config.wandb_enabled, "swanlab": config.swanlab_enabled,
              "tensorboard": config.tensorboard_enabled}  # fmt: skip
    for name, enabled in wanted.items():
        if enabled and importlib.util.find_spec(name) is None:
            raise UserError(f"logger.{name}_enabled=true but {name} is not installed (pip install {name})")


def _scalars(row: dict) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "step"}  # fmt: skip


def series_from_rows(rows: Iterable[dict]) -> dict[str, dict[int, float]]:
    """{metric: {step: value}} from per-step rows (`metrics.jsonl`): the numbers of each row, by its `step`."""
    series: dict[str, dict[int, float]] = {}
    for row in rows:
        step = row.get("step")
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(name, {})[int(step)] = value
    return series


class MetricsLogger:
    """Writes one row per step to metrics.jsonl and the enabled trackers; `finish` writes summary.json and metrics.json."""

    def __init__(self, log_dir: Path, config: LoggerConfig, run_config: dict, resume_step: int = 0,
                 job_type: str = "sft"):  # fmt: skip
        check_trackers(config)
        self.job_type = job_type
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.log_dir / TRAINING_ROWS_FILE
        self._forget_steps_after(resume_step)
        self._appender = DurableAppender(self.path)
        self._trackers: list[tuple[str, Any]] = []
        if config.wandb_enabled:
            self._trackers.append(("wandb", self._start_wandb(config, run_config)))
        if config.swanlab_enabled:
            self._trackers.append(("swanlab", self._start_swanlab(config, run_config)))
        if config.tensorboard_enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._trackers.append(("tensorboard", SummaryWriter(log_dir=str(self.log_dir / "tensorboard"))))

    def _forget_steps_after(self, step: int) -> None:
        """A resumed run redoes the steps after its checkpoint: drop their old lines so each step appears once."""
        if self.path.exists():
            write_jsonl_atomic(self.path, [row for row in read_jsonl(self.path) if row.get("step", 0) <= step])

    def _start_wandb(self, config: LoggerConfig, run_config: dict):
        import wandb

        mode = {"mode": config.wandb.mode} if config.wandb.mode else {}
        return wandb.init(project=config.wandb.project, name=config.wandb.name, dir=str(self.log_dir),
                          config=run_config, job_type=self.job_type, **mode)  # fmt: skip

    def _start_swanlab(self, config: LoggerConfig, run_config: dict):
        import swanlab

        mode = {"mode": config.swanlab.mode} if config.swanlab.mode else {}
        return swanlab.init(project=config.swanlab.project, name=config.swanlab.name, config=run_config, **mode)

    def log(self, row: dict) -> None:
        self._appender.append(row)
        scalars, step = _scalars(row), row["step"]
        for kind, tracker in self._trackers:
            if kind == "tensorboard":
                for key, value in scalars.items():
                    tracker.add_scalar(key, value, step)
            else:
                tracker.log(scalars, step=step)

    def log_table(self, name: str, rows: list[dict], step: int) -> None:
        """Rows of text (e.g. validation generations): appended to `<name>.jsonl` in the log directory and
        logged as a table to wandb / swanlab (tensorboard gets them as text)."""
        if not rows:
            return
        file_name = name.replace("/", "_") + ".jsonl"
        with DurableAppender(self.log_dir / file_name) as appender:
            for row in rows:
                appender.append({"step": step, **row})
        columns = list(rows[0])
        for kind, tracker in self._trackers:
            if kind == "wandb":
                import wandb

                tracker.log({name: wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])},
                            step=step)  # fmt: skip
            elif kind == "swanlab":
                import swanlab

                tracker.log({name: [swanlab.Text(json.dumps(r, ensure_ascii=False)) for r in rows]}, step=step)
            else:
                tracker.add_text(name, "\n\n".join(json.dumps(r, ensure_ascii=False) for r in rows), step)

    def finish(self, summary: dict) -> None:
        """summary.json (kind training_summary) and metrics.json (kind training_series: every step of the run,
        a resumed run's earlier ones too, read back from metrics.jsonl); then the trackers are closed."""
        self._appender.close()
        write_json_artifact(self.log_dir / TRAINING_SUMMARY.file_name, TRAINING_SUMMARY, summary)
        series = series_from_rows(read_jsonl(self.path))
        write_json_artifact(self.log_dir / TRAINING_SERIES.file_name, TRAINING_SERIES,
                            {name: {str(step): v for step, v in values.items()} for name, values in series.items()},
                            indent=1)  # fmt: skip
        for kind, tracker in self._trackers:
            if kind == "tensorboard":
                tracker.close()
            elif kind == "wandb":
                tracker.finish()
            else:
                import swanlab

                swanlab.finish()
        self._trackers = []
