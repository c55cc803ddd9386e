"""The run skeleton every trainer shares; an algorithm adds its data, its step and its validation.

Shape of a run, torchtitan style: the algorithm builds everything (`build`: checks, tokenizer, data, so a bad
row fails before the model loads, then the policy); the run resumes from the newest checkpoint if there is
one (written by the same algorithm), then calls the algorithm's `train_step` until `total_steps`, validating
every `validation_period` steps, saving every `checkpointing.save_period` steps, at the last step, and before
the job's deadline ($SKILLS_CLI_DEADLINE, unix seconds, minus `checkpointing.save_before_deadline_seconds`),
after which it exits cleanly so a rerun resumes. At the end the policy is exported as an HF directory
(`final_hf_path`, default `<output_dir>/final_hf`).

Outputs under `output_dir`: checkpoints/ (or checkpointing.checkpoint_dir), logs/ (or logger.log_dir) with
metrics.jsonl (one row per step), metrics.json (the per-step series) and summary.json, and final_hf/.
`main_for` turns a trainer class into an in-job program (`python -m ...`, alone or under torchrun) whose user
errors are one `error: ...` line and exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.artifacts import TRAINING_SUMMARY, read_json_artifact
from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.overrides import load_config_from_argv
from skills_cli.common.process import die_with_launcher
from skills_cli.common.typed_config import to_dict
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.data import DataPosition
from skills_cli.training.components.metrics import (
    MetricsLogger,
    attention_flops_per_squared_token,
    check_trackers,
    peak_flops,
)
from skills_cli.training.components.model import check_model_path
from skills_cli.training.components.parallel import Distributed, all_reduce, distributed_session
from skills_cli.training.components.run_lock import trainer_lock
from skills_cli.training.components.tokenizer import model_config
from skills_cli.training.config import TrainerConfig

log = logging.getLogger("skills_cli.training")
DEADLINE_ENV = "SKILLS_CLI_DEADLINE"


@dataclass(frozen=True)
class RunPaths:
    output_dir: Path
    checkpoint_dir: Path
    log_dir: Path
    final_hf_path: Path


def resolve_paths(config: TrainerConfig) -> RunPaths:
    if not config.output_dir:
        raise UserError("output_dir is required (checkpoints, metrics and the final model go under it)")
    output = Path(config.output_dir)
    return RunPaths(
        output_dir=output,
        checkpoint_dir=Path(config.checkpointing.checkpoint_dir or output / "checkpoints"),
        log_dir=Path(config.logger.log_dir or output / "logs"),
        final_hf_path=Path(config.final_hf_path or output / "final_hf"),
    )


def read_deadline() -> float | None:
    value = os.environ.get(DEADLINE_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise UserError(f"${DEADLINE_ENV} must be unix seconds, got {value!r}") from None


def check_common_config(config: TrainerConfig) -> None:
    """What every trainer needs before anything loads: a model folder and usable trackers."""
    check_model_path(config.policy.model_name)
    check_trackers(config.logger)


class Trainer:
    """One training run on this rank. Subclasses set `algorithm` and implement `build` (which sets
    `dp_size`, `total_steps` and `policy`), `train_step` and, when they validate, `validate`."""

    algorithm = ""  # the registry name, stored in checkpoints (a run resumes only its own algorithm's) and
    # given to the trackers as the job type

    def __init__(self, config: TrainerConfig, dist: Distributed):
        self.config, self.dist = config, dist
        self.paths = resolve_paths(config)
        self.deadline = read_deadline()
        self.tokenizer_dir = config.policy.tokenizer or config.policy.model_name
        self.step, self.position, self.last_saved_step = 0, DataPosition(), -1
        self.dp_size, self.total_steps, self.policy = 1, 0, None
        self.build()
        self.dp_rank = self.policy.dp_rank
        self.resume()
        self.peak_flops = peak_flops(dist.device)
        self.attention_flops_coefficient = attention_flops_per_squared_token(model_config(config.policy.model_name))
        self.logger = None
        if dist.is_main:
            self.logger = MetricsLogger(self.paths.log_dir, config.logger, to_dict(config), resume_step=self.step,
                                        job_type=self.algorithm)  # fmt: skip

    @property
    def model(self):
        """The policy's (sharded) module."""
        return self.policy.model

    # ---- what an algorithm provides ---------------------------------------------------------------------------

    def build(self) -> None:
        raise NotImplementedError

    def train_step(self) -> dict:
        """One step (advancing `self.step` and `self.position`); returns its metrics row (with `step`)."""
        raise NotImplementedError

    @property
    def validation_period(self) -> int:
        return 0

    def validate(self) -> dict:
        return {}

    def on_start(self, summary: dict) -> None:
        """Before the first step of a run (not of a resumed one): e.g. validation at start."""

    def summary_fields(self) -> dict:
        """The algorithm's entries of the run summary (data sizes, ...)."""
        return {}

    def summarize(self, rows: list[dict]) -> dict:
        """Headline numbers of this process's steps, added to the summary."""
        return {}

    def checkpoint_extras(self) -> dict:
        """The algorithm's entries of a checkpoint's trainer state."""
        return {}

    def progress_line(self, row: dict) -> str:
        return f"step {row['step']}/{self.total_steps}"

    # ---- resume, deadline, save, export ---------------------------------------------------------------------------

    def resume(self) -> None:
        if not self.config.checkpointing.enabled:
            return
        directory = self.paths.checkpoint_dir
        if self.dist.is_main:
            ckpt.remove_partial_saves(directory)
        path = ckpt.latest_checkpoint(directory)
        if path is None:
            return
        algorithm = ckpt.read_trainer_state(path).get("algorithm", "sft")  # early SFT checkpoints carry no such key
        if algorithm != self.algorithm:
            name = self.algorithm.upper()
            raise UserError(f"{path} is an {algorithm.upper()} checkpoint, not {name}'s; use another output_dir (or "
                            f"checkpointing.checkpoint_dir) and start {name} from the exported HF model")  # fmt: skip
        state = self.policy.load_checkpoint(path)
        self.step = self.last_saved_step = state["step"]
        self.position = DataPosition(state["epoch"], state["index"])
        log.info("resumed from %s (step %d, epoch %d, sample %d of the epoch)", path, self.step,
                 self.position.epoch, self.position.index)  # fmt: skip

    def deadline_reached(self) -> bool:
        """All ranks agree (rank clocks may differ): stop when any rank is past the save point."""
        if self.deadline is None:
            return False
        late = time.time() >= self.deadline - self.config.checkpointing.save_before_deadline_seconds
        return all_reduce(float(late), None, self.dist.device, op="max") > 0

    def save(self) -> None:
        if not self.config.checkpointing.enabled or self.step == self.last_saved_step:
            return
        state = {"algorithm": self.algorithm, "step": self.step, "epoch": self.position.epoch,
                 "index": self.position.index, **self.checkpoint_extras(), "config": to_dict(self.config)}  # fmt: skip
        self.policy.save_checkpoint(self.paths.checkpoint_dir, self.step, state, self.config.checkpointing.keep_last_k)
        self.last_saved_step = self.step

    def export(self) -> Path:
        """The trained model as an HF directory (collective: every rank takes part in the gather)."""
        path = self.policy.export_hf(self.paths.final_hf_path, self.tokenizer_dir)
        log.info("exported %s", path)
        return path

    # ---- the run ------------------------------------------------------------------------------------------------

    def fit(self) -> dict:
        """Train to the end (or the deadline); returns the summary written to summary.json."""
        finished = finished_run_summary(self.paths.log_dir / TRAINING_SUMMARY.file_name, self.step,
                                        self.total_steps, self.paths.final_hf_path, self.dist.device)  # fmt: skip
        if finished is not None:
            self.finish(finished)  # the same summary and series again; closes the trackers
            return finished
        summary = {"status": "finished", "total_steps": self.total_steps, "resumed_from_step": self.step,
                   **self.summary_fields(), "num_parameters": self.policy.num_params,
                   "world_size": self.dist.world_size, "data_parallel_size": self.dp_size}  # fmt: skip
        if self.step == 0:
            self.on_start(summary)
        if self.deadline is not None:
            log.info("deadline %d (unix seconds, in %.0f s): saving and stopping %d s before it", self.deadline,
                     self.deadline - time.time(), self.config.checkpointing.save_before_deadline_seconds)  # fmt: skip
        rows = self.train_until_done_or_deadline(summary)
        if summary["status"] == "finished":
            summary["final_hf_path"] = str(self.export())
        summary.update(self.summarize(rows), final_step=self.step)
        self.finish(summary)
        return summary

    def train_until_done_or_deadline(self, summary: dict) -> list[dict]:
        with collections_between_steps() as between_steps:
            return self._train_steps(summary, between_steps)

    def _train_steps(self, summary: dict, between_steps) -> list[dict]:
        rows = []
        while self.step < self.total_steps:
            between_steps()
            row = self.train_step()
            if self.validation_period and self.step % self.validation_period == 0:
                row.update(self.validate())
            self.log_row(row)
            rows.append(row)
            stop = self.deadline_reached()
            if self.step % self.config.checkpointing.save_period == 0 or self.step == self.total_steps or stop:
                self.save()
            if stop:
                summary["status"] = "stopped_before_deadline"
                log.warning("stopping at step %d before the deadline; rerun to resume", self.step)
                break
        return rows

    def log_row(self, row: dict) -> None:
        if self.logger:
            self.logger.log(row)
            log.info("%s", self.progress_line(row))

    def finish(self, summary: dict) -> None:
        if self.logger:
            self.logger.finish(summary)


FULL_COLLECTION_PERIOD = 50  # steps between two full garbage collections (of what is not frozen)


@contextmanager
def collections_between_steps():
    """Python's garbage collector only between steps: automatic collection off, a young-generation pass before
    every step, a full one every FULL_COLLECTION_PERIOD steps, and what survives the first step (the model,
    torch.compile's graphs and guards) frozen out of every later pass. An automatic full collection walks every
    object the process holds (85 ms for the imports alone on a 2-core host; many more objects once the layers
    are compiled) and fires wherever allocations trip it, inside a step. On an H100 one DPO run's steps ranged
    0.81-1.45 s before this and 0.81-1.17 s after (one run each: bench/dpo_step.py), where TRL's, without
    compiled layers, stay within 3%. torchtitan runs its collector the same way."""
    import gc

    was_enabled, steps = gc.isenabled(), 0

    def between_steps() -> None:
        nonlocal steps
        if steps == 1:  # after the first step, which compiles
            gc.collect()
            gc.freeze()
        elif steps % FULL_COLLECTION_PERIOD == 0:
            gc.collect()
        else:
            gc.collect(1)
        steps += 1

    gc.disable()
    try:
        yield between_steps
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def finished_run_summary(summary_path: Path, step: int, total_steps: int, final_hf_path: Path,
                         device) -> dict | None:  # fmt: skip
    """The summary of an earlier job of this run that trained to the end and exported, or None.

    A `--dependent_jobs` copy that starts after the run finished resumes at the last step with nothing left to
    train; going on would export again and replace the summary with one of zero steps. The summary is written
    after the export, so its `finished` status vouches for it. All ranks must agree (they read the same file,
    but a node might not see it)."""
    summary = None
    if step > 0 and step >= total_steps and summary_path.is_file():
        kind, previous = read_json_artifact(summary_path)
        if (kind is TRAINING_SUMMARY and previous.get("status") == "finished" and previous.get("final_step") == step
                and previous.get("final_hf_path") == str(final_hf_path) and final_hf_path.is_dir()):  # fmt: skip
            summary = previous
    if all_reduce(float(summary is not None), None, device, op="min") == 0:
        return None
    log.info("the run already finished at step %d and exported %s; nothing to do", step, final_hf_path)
    return summary


def fmt(value: float | None, missing: str = "-") -> str:
    """A metric in a progress line."""
    return missing if value is None else f"{value:.4f}"


def setup_logging() -> None:
    """INFO on rank 0, warnings only elsewhere (N ranks printing every step is noise); no progress bars."""
    from transformers.utils import logging as transformers_logging

    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s [rank{rank}] %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def run_trainer(trainer_class: type[Trainer], config: TrainerConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    with distributed_session() as dist, trainer_lock(config.output_dir, dist):  # one live trainer per output_dir
        return trainer_class(config, dist).fit()


def main_for(trainer_class: type[Trainer], config_class: type):
    """The in-job program of an algorithm: `[--config FILE.yaml] ++key=value ...` (the YAML file is the base,
    overrides win), a user error is one `error: ...` line and exit status 2."""

    @exits_on_user_error
    def main(argv: list[str] | None = None) -> int:
        die_with_launcher()  # torchrun starts workers in sessions of their own: they must die with it
        setup_logging()
        config = load_config_from_argv(config_class, sys.argv[1:] if argv is None else argv,
                                       where=trainer_class.algorithm)  # fmt: skip
        run_trainer(trainer_class, config)
        return 0

    return main
