"""The SFT trainer, on either policy backend (dtensor: FSDP2 + DTensor TP; megatron: megatron-core TP/PP).

    torchrun --nproc_per_node 8 -m skills_cli.training.sft [--config sft.yaml] \\
        ++policy.model_name=/models/base ++data.train_data=train.jsonl ++output_dir=/runs/sft \\
        ++policy.train_global_batch_size=32 ++policy.sequence_packing.enabled=true

Without torchrun it runs as one process (a world of one). Keys are NeMo-RL's sft.yaml names
(`skills_cli/training/config.py`). Shape of a run, torchtitan style: build everything (data first, so a bad
row fails before the model loads), resume from the newest checkpoint if there is one, then for each step:
draw the global batch from the epoch's shuffled order, this DP rank's share -> micro-batches (padded or
packed) -> forward/backward with the loss normalized by the global valid-token count -> clip -> AdamW ->
scheduler; validate every `sft.val_period` steps, save every `checkpointing.save_period` steps, at the last
step, and before the job's deadline ($SKILLS_CLI_DEADLINE, unix seconds, minus
`checkpointing.save_before_deadline_seconds`), after which it exits cleanly so a rerun resumes. At the end
the model is exported as an HF directory (`final_hf_path`, default `<output_dir>/final_hf`). Model,
optimizer, scheduler, checkpoints and export belong to the policy (`training/policy`, backend dtensor or
megatron); this loop sees only the `Policy` interface.

Outputs under `output_dir`: checkpoints/ (or checkpointing.checkpoint_dir), metrics.jsonl and metrics.json
(or logger.log_dir), final_hf/.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.overrides import load_config_from_argv
from skills_cli.common.process import die_with_launcher
from skills_cli.common.typed_config import to_dict
from skills_cli.training import checkpoint as ckpt
from skills_cli.training.batching import make_micro_batches, shard_for_rank
from skills_cli.training.config import SFTConfig, check_parallel_layout
from skills_cli.training.data import DataPosition, SFTDataset, load_sft_dataset, next_global_batch
from skills_cli.training.loss import normalized_loss
from skills_cli.training.metrics import (
    MetricsLogger,
    attention_flops_per_squared_token,
    check_trackers,
    model_flops_utilization,
    peak_flops,
    peak_memory_gib,
    reset_peak_memory,
)
from skills_cli.training.model import check_model_path
from skills_cli.training.parallel import Distributed, all_reduce, distributed_session
from skills_cli.training.policy import Policy, build_policy, policy_backend
from skills_cli.training.run_lock import trainer_lock

log = logging.getLogger("skills_cli.sft")
DEADLINE_ENV = "SKILLS_CLI_DEADLINE"


@dataclass(frozen=True)
class RunPaths:
    output_dir: Path
    checkpoint_dir: Path
    log_dir: Path
    final_hf_path: Path


def resolve_paths(config: SFTConfig) -> RunPaths:
    if not config.output_dir:
        raise UserError("output_dir is required (checkpoints, metrics and the final model go under it)")
    output = Path(config.output_dir)
    return RunPaths(
        output_dir=output,
        checkpoint_dir=Path(config.checkpointing.checkpoint_dir or output / "checkpoints"),
        log_dir=Path(config.logger.log_dir or output),
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


@dataclass
class BatchStats:
    loss: float  # the global-batch token-mean NLL (sum of the normalized micro-batch losses over DP)
    num_valid_tokens: int  # global
    num_tokens: int  # global non-padding tokens
    num_overlong: int  # global
    num_micro_batches: int  # this rank's
    sum_squared_lengths: float = 0.0  # global sum of each sequence's squared length (attention FLOPs)


def check_config(config: SFTConfig, world_size: int) -> int:
    """Checks that need no model or data; returns the data-parallel size."""
    import torch

    policy_backend(config.policy, config.backend, cuda=torch.cuda.is_available())
    if not config.data.train_data:
        raise UserError("data.train_data is required (a JSONL file)")
    check_model_path(config.policy.model_name)
    check_trackers(config.logger)
    return check_parallel_layout(config, world_size)


class SFTTrainer:
    """One training run on this rank: data, the policy (model, optimizer, scheduler), and the step loop."""

    def __init__(self, config: SFTConfig, dist: Distributed):
        self.config, self.dist = config, dist
        policy = config.policy
        self.paths = resolve_paths(config)
        self.dp_size = check_config(config, dist.world_size)
        self.deadline = read_deadline()
        self.tokenizer_dir = policy.tokenizer or policy.model_name
        self.tokenizer = _load_tokenizer(self.tokenizer_dir)
        self.pad_id = _pad_id(self.tokenizer)
        self.train_data = load_sft_dataset(config.data.train_data, self.tokenizer, config.data,
                                           policy.max_total_sequence_length)  # fmt: skip
        self.val_data = self._load_val_data()
        self.total_steps = self._total_steps()
        self.policy: Policy = build_policy(policy, dist, self.total_steps, backend=config.backend, seed=config.sft.seed)
        self.dp_rank = self.policy.dp_rank
        self.step, self.position = 0, DataPosition()
        self.last_saved_step = -1
        self._resume()
        self.peak_flops = peak_flops(dist.device)
        self.attention_flops_coefficient = attention_flops_per_squared_token(_model_config(policy.model_name))
        self.logger = None
        if dist.is_main:
            self.logger = MetricsLogger(self.paths.log_dir, config.logger, to_dict(config), resume_step=self.step)

    @property
    def model(self):
        """The policy's (sharded) module."""
        return self.policy.model

    # ---- setup --------------------------------------------------------------------------------------------

    def _load_val_data(self) -> SFTDataset | None:
        if not self.config.data.val_data:
            if self.config.sft.val_period or self.config.sft.val_at_start:
                raise UserError("sft.val_period / sft.val_at_start need data.val_data")
            return None
        return load_sft_dataset(self.config.data.val_data, self.tokenizer, self.config.data,
                                self.config.policy.max_total_sequence_length)  # fmt: skip

    def _total_steps(self) -> int:
        batch = self.config.policy.train_global_batch_size
        steps_per_epoch = len(self.train_data.samples) // batch
        if steps_per_epoch == 0:
            raise UserError(f"{self.config.data.train_data} has {len(self.train_data.samples)} samples, fewer than "
                            f"policy.train_global_batch_size={batch}")  # fmt: skip
        total = steps_per_epoch * self.config.sft.max_num_epochs
        if self.config.sft.max_num_steps is not None:
            total = min(total, self.config.sft.max_num_steps)
        return total

    def _resume(self) -> None:
        if not self.config.checkpointing.enabled:
            return
        directory = self.paths.checkpoint_dir
        if self.dist.is_main:
            ckpt.remove_partial_saves(directory)
        path = ckpt.latest_checkpoint(directory)
        if path is None:
            return
        state = self.policy.load_checkpoint(path)
        self.step = self.last_saved_step = state["step"]
        self.position = DataPosition(state["epoch"], state["index"])
        log.info("resumed from %s (step %d, epoch %d, sample %d of the epoch)", path, self.step,
                 self.position.epoch, self.position.index)  # fmt: skip

    # ---- one global batch -----------------------------------------------------------------------------------

    def run_global_batch(self, samples: list, train: bool) -> BatchStats:
        """Forward (and backward when `train`) over this rank's samples of a global batch; collective over DP."""
        import torch

        policy, device, group = self.config.policy, self.dist.device, self.policy.dp_group
        micro_batches = make_micro_batches(samples, policy.train_micro_batch_size, self.pad_id, policy.pack_capacity) \
            if samples else []  # fmt: skip
        counts = torch.tensor([sum(mb.num_valid_tokens for mb in micro_batches),
                               sum(mb.num_tokens for mb in micro_batches),
                               sum(s.overlong for s in samples), sum(len(s) ** 2 for s in samples)],
                              dtype=torch.float64, device=device)  # fmt: skip
        torch.distributed.all_reduce(counts, group=group)
        global_valid = float(counts[0])

        def sft_loss(logits, labels, _micro_batch):
            loss = normalized_loss(logits, labels, global_valid)
            return loss, {"loss": loss}

        metrics = self.policy.forward_backward(micro_batches, sft_loss, train=train)
        total_loss = all_reduce(sum(float(m["loss"]) for m in metrics), group, device)
        return BatchStats(total_loss, int(counts[0]), int(counts[1]), int(counts[2]), len(micro_batches),
                          float(counts[3]))  # fmt: skip

    def forward_backward(self, indices: list[int]) -> BatchStats:
        """Gradients of the global batch `indices` (sample positions in the training data) in `.grad`."""
        local = shard_for_rank(indices, self.dp_rank, self.dp_size)
        self.policy.zero_grad()
        return self.run_global_batch([self.train_data.samples[i] for i in local], train=True)

    def train_step(self) -> dict:
        import torch

        reset_peak_memory(self.dist.device)
        start = time.perf_counter()
        indices = next_global_batch(self.position, len(self.train_data.samples),
                                    self.config.policy.train_global_batch_size, self.config.sft.seed)  # fmt: skip
        epoch = self.position.epoch  # the batch's epoch: drawing it moved to the next epoch if needed
        stats = self.forward_backward(indices)
        lr = self.policy.get_lr()
        # nothing to learn from: no update (AdamW would still decay the weights)
        grad_norm = self.policy.optimizer_step(self.config.policy.max_grad_norm, skip=stats.num_valid_tokens == 0)
        self.policy.scheduler_step()
        self.step += 1
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        seconds = time.perf_counter() - start
        return self._step_metrics(stats, grad_norm, lr, seconds, epoch)

    def _step_metrics(self, stats: BatchStats, grad_norm: float, lr: float, seconds: float, epoch: int) -> dict:
        world = self.dist.world_size
        tokens_per_gpu = stats.num_tokens / seconds / world
        return {
            "step": self.step,
            "epoch": epoch,
            "loss": stats.loss if stats.num_valid_tokens else None,
            "grad_norm": grad_norm,
            "lr": lr,
            "num_valid_tokens": stats.num_valid_tokens,
            "num_tokens": stats.num_tokens,
            "num_overlong_samples": stats.num_overlong,
            "step_time_s": seconds,
            "tokens_per_sec_per_gpu": stats.num_valid_tokens / seconds / world,
            "mfu": model_flops_utilization(self.policy.num_params, tokens_per_gpu, self.peak_flops,
                                           self.attention_flops_coefficient * stats.sum_squared_lengths / seconds / world),
            "mfu_6n": model_flops_utilization(self.policy.num_params, tokens_per_gpu, self.peak_flops),
            "peak_memory_gib": peak_memory_gib(self.dist.device),
        }

    def validate(self) -> float | None:
        """Token-mean NLL over the first `sft.val_batches` batches of `sft.val_global_batch_size` samples (the
        training global batch by default) of the validation data."""
        sft = self.config.sft
        size = sft.val_batches * (sft.val_global_batch_size or self.config.policy.train_global_batch_size)
        samples = self.val_data.samples[:size]
        start = self.dp_rank * len(samples) // self.dp_size
        end = (self.dp_rank + 1) * len(samples) // self.dp_size
        self.policy.eval()
        stats = self.run_global_batch(samples[start:end], train=False)
        self.policy.train()
        return stats.loss if stats.num_valid_tokens else None

    # ---- the run ------------------------------------------------------------------------------------------------

    def deadline_reached(self) -> bool:
        """All ranks agree (rank clocks may differ): stop when any rank is past the save point."""
        if self.deadline is None:
            return False
        late = time.time() >= self.deadline - self.config.checkpointing.save_before_deadline_seconds
        return all_reduce(float(late), None, self.dist.device, op="max") > 0

    def save(self) -> None:
        if not self.config.checkpointing.enabled or self.step == self.last_saved_step:
            return
        state = {"step": self.step, "epoch": self.position.epoch, "index": self.position.index,
                 "tokenizer": self.tokenizer_dir, "config": to_dict(self.config)}  # fmt: skip
        self.policy.save_checkpoint(self.paths.checkpoint_dir, self.step, state, self.config.checkpointing.keep_last_k)
        self.last_saved_step = self.step

    def export(self) -> Path:
        """The trained model as an HF directory (collective: every rank takes part in the gather)."""
        path = self.policy.export_hf(self.paths.final_hf_path, self.tokenizer_dir)
        log.info("exported %s", path)
        return path

    def fit(self) -> dict:
        """Train to the end (or the deadline); returns the summary written to metrics.json."""
        finished = finished_run_summary(self.paths.log_dir / "metrics.json", self.step, self.total_steps,
                                        self.paths.final_hf_path, self.dist.device)  # fmt: skip
        if finished is not None:
            if self.logger:
                self.logger.finish(finished)  # rewrites the same summary, closes the trackers
            return finished
        sft = self.config.sft
        summary = {"status": "finished", "total_steps": self.total_steps, "resumed_from_step": self.step,
                   "num_train_samples": len(self.train_data.samples),
                   "num_overlong_train_samples": self.train_data.num_overlong,
                   "num_parameters": self.policy.num_params, "world_size": self.dist.world_size,
                   "data_parallel_size": self.dp_size, "backend": self.policy.backend}  # fmt: skip
        if sft.val_at_start and self.step == 0:
            summary["val_loss_at_start"] = self.validate()
        rows = []
        while self.step < self.total_steps:
            row = self.train_step()
            if sft.val_period and self.step % sft.val_period == 0:
                row["val_loss"] = self.validate()
            self._log(row)
            rows.append(row)
            stop = self.deadline_reached()
            if self.step % self.config.checkpointing.save_period == 0 or self.step == self.total_steps or stop:
                self.save()
            if stop:
                summary["status"] = "stopped_before_deadline"
                log.warning("stopping at step %d before the deadline; rerun to resume", self.step)
                break
        if summary["status"] == "finished":
            summary["final_hf_path"] = str(self.export())
        summary.update(_summarize(rows), final_step=self.step)
        if self.logger:
            self.logger.finish(summary)
        return summary

    def _log(self, row: dict) -> None:
        if self.logger:
            self.logger.log(row)
            log.info("step %d/%d loss %s grad_norm %.4f lr %.3g tokens/s/gpu %.0f%s", row["step"], self.total_steps,
                     _fmt(row["loss"]), row["grad_norm"], row["lr"], row["tokens_per_sec_per_gpu"],
                     f" val_loss {_fmt(row['val_loss'])}" if "val_loss" in row else "")  # fmt: skip


def finished_run_summary(summary_path: Path, step: int, total_steps: int, final_hf_path: Path,
                         device) -> dict | None:  # fmt: skip
    """The summary of an earlier job of this run that trained to the end and exported, or None.

    A `--dependent_jobs` copy that starts after the run finished resumes at the last step with nothing left to
    train; going on would export again and replace the summary with one of zero steps. The summary is written
    after the export, so its `finished` status vouches for it. All ranks must agree (they read the same file,
    but a node might not see it)."""
    summary = None
    if step > 0 and step >= total_steps and summary_path.is_file():
        previous = json.loads(summary_path.read_text())
        if (previous.get("status") == "finished" and previous.get("final_step") == step
                and previous.get("final_hf_path") == str(final_hf_path) and final_hf_path.is_dir()):  # fmt: skip
            summary = previous
    if all_reduce(float(summary is not None), None, device, op="min") == 0:
        return None
    log.info("the run already finished at step %d and exported %s; nothing to do", step, final_hf_path)
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _summarize(rows: list[dict]) -> dict:
    """Headline numbers of this process's steps (a resumed run summarizes the steps it ran)."""
    if not rows:
        return {}
    losses = [r["val_loss"] for r in rows if r.get("val_loss") is not None]
    timed = rows[1:] or rows  # the first step includes warm-up (allocations, kernel selection)
    return {
        "final_loss": rows[-1]["loss"],
        "final_val_loss": losses[-1] if losses else None,
        "mean_tokens_per_sec_per_gpu": sum(r["tokens_per_sec_per_gpu"] for r in timed) / len(timed),
        "mean_mfu": None if rows[-1]["mfu"] is None else sum(r["mfu"] for r in timed) / len(timed),
        "peak_memory_gib": max(r["peak_memory_gib"] for r in rows),
    }


def _model_config(path: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path)


def _load_tokenizer(path: str):
    """The tokenizer exactly as saved (tokenizer.json read verbatim, see inference.tiny_model.load_tokenizer)."""
    from skills_cli.inference.model_files import tokenizer_problem
    from skills_cli.inference.tiny_model import load_tokenizer

    problem = tokenizer_problem(path)
    if problem:
        raise UserError(f"tokenizer: {problem}; save the tokenizer with the model or point policy.tokenizer at it")
    return load_tokenizer(path)


def _pad_id(tokenizer) -> int:
    """Padding never reaches the loss or (thanks to masks) attention; any id works, the tokenizer's is tidiest."""
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if token_id is not None:
            return int(token_id)
    return 0


def run(config: SFTConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    with distributed_session() as dist, trainer_lock(config.output_dir, dist):  # one live trainer per output_dir
        return SFTTrainer(config, dist).fit()


def parse_arguments(argv: list[str]) -> SFTConfig:
    """`[--config FILE.yaml] ++key=value ...`: the YAML file is the base, overrides win."""
    return load_config_from_argv(SFTConfig, argv, where="sft")


def setup_logging() -> None:
    """INFO on rank 0, warnings only elsewhere (N ranks printing every step is noise); no progress bars."""
    from transformers.utils import logging as transformers_logging

    rank = int(os.environ.get("RANK", 0))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
                        format=f"%(asctime)s [rank{rank}] %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    transformers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    die_with_launcher()  # torchrun starts workers in sessions of their own: they must die with it
    setup_logging()
    try:
        run(parse_arguments(sys.argv[1:] if argv is None else argv))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
