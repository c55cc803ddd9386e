"""The SFT trainer, on either policy backend (dtensor: FSDP2 + DTensor TP; megatron: megatron-core TP/PP).

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.sft [--config sft.yaml] \\
        ++policy.model_name=/models/base ++data.train_data=train.jsonl ++output_dir=/runs/sft \\
        ++policy.train_global_batch_size=32 ++policy.sequence_packing.enabled=true

Without torchrun it runs as one process (a world of one). Keys are NeMo-RL's sft.yaml names
(`config.py` here). The run (resume, deadline, saves, export, outputs) is the shared skeleton's
(`skills_cli/training/trainer.py`); a step draws the global batch from the epoch's shuffled order, this DP
rank's share -> micro-batches (padded or packed) -> forward/backward with the loss normalized by the global
valid-token count -> clip -> AdamW -> scheduler; validation (token-mean NLL on data.val_data) every
`sft.val_period` steps. Model, optimizer, scheduler, checkpoints and export belong to the policy
(`training/policy`, backend dtensor or megatron); this loop sees only the `Policy` interface.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms.sft.config import SFTConfig
from skills_cli.training.components.batching import PrefetchedBatches, make_micro_batches, shard_for_rank
from skills_cli.training.components.data import SFTDataset, load_sft_dataset, next_global_batch
from skills_cli.training.components.loss import normalized_loss
from skills_cli.training.components.metrics import model_flops_utilization, peak_memory_gib, reset_peak_memory
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id
from skills_cli.training.config import check_parallel_layout
from skills_cli.training.policy import Policy, build_policy, policy_backend
from skills_cli.training.trainer import Trainer, check_common_config, fmt, main_for, run_trainer

log = logging.getLogger("skills_cli.sft")


@dataclass
class BatchStats:
    loss: float  # the global-batch token-mean NLL (sum of the normalized micro-batch losses over DP)
    num_valid_tokens: int  # global
    num_tokens: int  # global non-padding tokens
    num_overlong: int  # global
    num_micro_batches: int  # this rank's
    sum_squared_lengths: float = 0.0  # global sum of each sequence's squared length (attention FLOPs)


@dataclass(frozen=True)
class LaunchedBatch:
    """A global batch whose forward/backward is queued on the device: its loss sum (over micro-batches and DP)
    and counts (valid tokens, tokens, overlong samples, sum of squared lengths) are device tensors until
    `stats` reads them, after the step's update is queued too."""

    loss_sum: Any
    counts: Any
    num_micro_batches: int  # this rank's
    num_valid_tokens: float  # global, read before anything was queued

    def stats(self) -> BatchStats:
        """The figures as numbers (this waits for the device)."""
        valid, tokens, overlong, squares = self.counts.tolist()
        return BatchStats(float(self.loss_sum), int(valid), int(tokens), int(overlong), self.num_micro_batches,
                          squares)  # fmt: skip


def check_config(config: SFTConfig, world_size: int) -> int:
    """Checks that need no model or data; returns the data-parallel size."""
    import torch

    policy_backend(config.policy, config.backend, cuda=torch.cuda.is_available())
    if not config.data.train_data:
        raise UserError("data.train_data is required (a JSONL file)")
    check_common_config(config)
    return check_parallel_layout(config, world_size)


class SFTTrainer(Trainer):
    """One SFT run on this rank: data, the policy (model, optimizer, scheduler), and the step."""

    algorithm = "sft"

    def build(self) -> None:
        config = self.config
        policy = config.policy
        self.dp_size = check_config(config, self.dist.world_size)
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.pad_id = pad_id(self.tokenizer)
        self.train_data = load_sft_dataset(config.data.train_data, self.tokenizer, config.data,
                                           policy.max_total_sequence_length)  # fmt: skip
        self.val_data = self._load_val_data()
        self.total_steps = self._total_steps()
        self.prefetched = PrefetchedBatches()  # the next step's micro-batches (_prefetch_next)
        self.policy: Policy = build_policy(policy, self.dist, self.total_steps, backend=config.backend,
                                           seed=config.sft.seed)  # fmt: skip

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

    # ---- one global batch -----------------------------------------------------------------------------------

    def run_global_batch(self, samples: list, train: bool) -> BatchStats:
        """Forward (and backward when `train`) over this rank's samples of a global batch; collective over DP."""
        return self.launch_global_batch(samples, train).stats()

    def micro_batches(self, samples: list) -> list:
        policy = self.config.policy
        return make_micro_batches(samples, policy.train_micro_batch_size, self.pad_id, policy.pack_capacity) \
            if samples else []  # fmt: skip

    def launch_global_batch(self, samples: list, train: bool, batches: list | None = None) -> LaunchedBatch:
        """`run_global_batch` without waiting for the device (its figures are read by `LaunchedBatch.stats`);
        `batches`: the samples' micro-batches when already built."""
        import torch

        device, group = self.dist.device, self.policy.dp_group
        micro_batches = self.micro_batches(samples) if batches is None else batches
        counts = torch.tensor([sum(mb.num_valid_tokens for mb in micro_batches),
                               sum(mb.num_tokens for mb in micro_batches),
                               sum(s.overlong for s in samples), sum(len(s) ** 2 for s in samples)],
                              dtype=torch.float64, device=device)  # fmt: skip
        torch.distributed.all_reduce(counts, group=group)
        global_valid = float(counts[0])  # read before any kernel of the batch is queued: waits for none

        def sft_loss(logits, labels, _micro_batch):
            loss = normalized_loss(logits, labels, global_valid)
            return loss, {"loss": loss}

        metrics = self.policy.forward_backward(micro_batches, sft_loss, train=train)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for result in metrics:
            loss_sum += torch.as_tensor(result["loss"], device=device)
        torch.distributed.all_reduce(loss_sum, group=group)
        return LaunchedBatch(loss_sum, counts, len(micro_batches), global_valid)

    def forward_backward(self, indices: list[int]) -> BatchStats:
        """Gradients of the global batch `indices` (sample positions in the training data) in `.grad`."""
        return self.launch_forward_backward(indices).stats()

    def launch_forward_backward(self, indices: list[int]) -> LaunchedBatch:
        """`forward_backward` without waiting for the device (see `launch_global_batch`)."""
        local = shard_for_rank(indices, self.dp_rank, self.dp_size)
        self.policy.zero_grad()
        return self.launch_global_batch([self.train_data.samples[i] for i in local], train=True,
                                        batches=self.prefetched.take(local))  # fmt: skip

    def _prefetch_next(self) -> None:
        """Build the next step's micro-batches while the device still runs this step's weight update
        (`PrefetchedBatches`); a step that draws other samples builds its own."""
        if self.step < self.total_steps:
            indices = self._draw_global_batch(replace(self.position))  # a copy: this step stays put
            local = shard_for_rank(indices, self.dp_rank, self.dp_size)
            self.prefetched.keep(local, self.micro_batches([self.train_data.samples[i] for i in local]))

    def _draw_global_batch(self, position) -> list[int]:
        """The sample indices of the global batch at `position` (advanced past it)."""
        return next_global_batch(position, len(self.train_data.samples), self.config.policy.train_global_batch_size,
                                 self.config.sft.seed)  # fmt: skip

    def train_step(self) -> dict:
        import torch

        reset_peak_memory(self.dist.device)
        start = time.perf_counter()
        indices = self._draw_global_batch(self.position)
        epoch = self.position.epoch  # the batch's epoch: drawing it moved to the next epoch if needed
        launched = self.launch_forward_backward(indices)
        lr = self.policy.get_lr()
        # nothing to learn from: no update (AdamW would still decay the weights). The update is queued right
        # behind the last backward: reading the loss first would idle the device between the two
        grad_norm = self.policy.optimizer_step_async(self.config.policy.max_grad_norm,
                                                     skip=launched.num_valid_tokens == 0)  # fmt: skip
        self.policy.scheduler_step()
        self.step += 1
        self._prefetch_next()
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        stats, grad_norm = launched.stats(), float(grad_norm)
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
            "mfu": model_flops_utilization(
                self.policy.num_params,
                tokens_per_gpu,
                self.peak_flops,
                self.attention_flops_coefficient * stats.sum_squared_lengths / seconds / world,
            ),
            "mfu_6n": model_flops_utilization(self.policy.num_params, tokens_per_gpu, self.peak_flops),
            "peak_memory_gib": peak_memory_gib(self.dist.device),
        }

    @property
    def validation_period(self) -> int:
        return self.config.sft.val_period

    def validate(self) -> dict:
        return {"val_loss": self.validation_loss()}

    def validation_loss(self) -> float | None:
        """Token-mean NLL over the first `sft.val_batches` batches of `sft.val_global_batch_size` samples (the
        training global batch by default) of the validation data."""
        sft = self.config.sft
        size = sft.val_batches * (sft.val_global_batch_size or self.config.policy.train_global_batch_size)
        samples = shard_for_rank(self.val_data.samples[:size], self.dp_rank, self.dp_size)
        self.policy.eval()
        stats = self.run_global_batch(samples, train=False)
        self.policy.train()
        return stats.loss if stats.num_valid_tokens else None

    # ---- the run's summary and log --------------------------------------------------------------------------------

    def on_start(self, summary: dict) -> None:
        if self.config.sft.val_at_start:
            summary["val_loss_at_start"] = self.validation_loss()

    def summary_fields(self) -> dict:
        return {"num_train_samples": len(self.train_data.samples),
                "num_overlong_train_samples": self.train_data.num_overlong, "backend": self.policy.backend}  # fmt: skip

    def summarize(self, rows: list[dict]) -> dict:
        return _summarize(rows)

    def checkpoint_extras(self) -> dict:
        return {"tokenizer": self.tokenizer_dir}

    def progress_line(self, row: dict) -> str:
        validation = f" val_loss {fmt(row['val_loss'], 'n/a')}" if "val_loss" in row else ""
        return (
            f"step {row['step']}/{self.total_steps} loss {fmt(row['loss'], 'n/a')} grad_norm {row['grad_norm']:.4f} "
            f"lr {row['lr']:.3g} tokens/s/gpu {row['tokens_per_sec_per_gpu']:.0f}{validation}"
        )


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


def run(config: SFTConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    return run_trainer(SFTTrainer, config)


main = main_for(SFTTrainer, SFTConfig)
