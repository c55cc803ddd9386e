"""The trainer loop shared by the algorithms that learn from preference pairs (DPO here, reward models in
`algorithms/rm`): data, steps over global batches of pairs, validation, metrics and the run summary.

A subclass names its loop section (`loop_name`: `dpo` / `rm`), its head, and a per-pair loss
(`pair_terms(logits, labels, batch) -> dict of (pairs,) tensors` with at least `loss`, `rewards_chosen`,
`rewards_rejected`, `margin` and `accuracy`). A step draws `policy.train_global_batch_size` pairs from the
epoch's shuffled order (`data.next_global_batch`, so a resumed run draws what the uninterrupted one would), takes
this data-parallel rank's contiguous share, builds pair micro-batches (`components/preferences.py`: padded, or
packed with both sides of a pair in one micro-batch), and backpropagates each micro-batch's sum of per-pair
losses divided by the global batch's number of pairs: the micro-batch losses add up to the global mean whatever
the micro-batch size, packing or data-parallel layout. Every metric is a mean over the global batch's pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.training.components.batching import PrefetchedBatches, shard_for_rank
from skills_cli.training.components.data import DataPosition, next_global_batch
from skills_cli.training.components.metrics import peak_memory_gib, reset_peak_memory
from skills_cli.training.components.preferences import (
    PreferenceDataset,
    PreferencePair,
    load_preference_dataset,
    pair_micro_batches,
)
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id
from skills_cli.training.config import check_parallel_layout
from skills_cli.training.policy import build_policy, policy_backend
from skills_cli.training.trainer import Trainer, check_common_config, fmt

log = logging.getLogger("skills_cli.training")

PAIR_METRICS = ("loss", "rewards_chosen", "rewards_rejected", "margin", "accuracy")


@dataclasses.dataclass(frozen=True)
class LaunchedPairs:
    """A global batch of pairs whose forward (and backward) is queued on the device: the per-metric sums and
    the (pairs, tokens) counts over data parallelism are device tensors until `means` reads them, after the
    step's update is queued too (as SFT's `LaunchedBatch`)."""

    sums: Any  # one per metric name, in `metric_names` order
    counts: Any  # (pairs, tokens)
    metric_names: tuple[str, ...]

    def means(self) -> dict:
        """The global means of the metrics, `num_pairs` and `num_tokens` as floats (this waits for the device)."""
        global_pairs, tokens = self.counts.tolist()
        means = dict(zip(self.metric_names, (self.sums / max(global_pairs, 1.0)).tolist(), strict=True))
        return {**means, "num_pairs": global_pairs, "num_tokens": tokens}


def check_pair_config(config, loop, loop_name: str, world_size: int) -> int:
    """Checks that need no model or data; returns the data-parallel size."""
    import torch

    policy_backend(config.policy, config.backend, cuda=torch.cuda.is_available())
    if not config.data.train_data:
        raise UserError("data.train_data is required (a preference JSONL file)")
    if (loop.val_period or loop.val_at_start) and not config.data.val_data:
        raise UserError(f"{loop_name}.val_period / {loop_name}.val_at_start need data.val_data")
    check_common_config(config)
    return check_parallel_layout(config, world_size)


class PairTrainer(Trainer):
    """One run on preference pairs on this rank (see the module docstring)."""

    loop_name = ""  # the config section of the loop: "dpo" | "rm"
    head = "lm"
    metric_names: tuple[str, ...] = PAIR_METRICS

    @property
    def loop(self):
        return getattr(self.config, self.loop_name)

    @property
    def margin_key(self) -> str | None:
        """The row field of a per-pair margin (reward models), or None."""
        return None

    def build(self) -> None:
        config = self.config
        self.dp_size = check_pair_config(config, self.loop, self.loop_name, self.dist.world_size)
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.pad_id = pad_id(self.tokenizer)
        self.train_data = self.load_pairs(config.data.train_data)
        self.prefetched = PrefetchedBatches()  # the next step's micro-batches (_prefetch_next)
        self.val_data = self.load_pairs(config.data.val_data) if config.data.val_data else None
        self.validation_batches: tuple[list, list] | None = None  # this rank's validation pairs and micro-batches
        self.total_steps = self._total_steps()
        self.policy = build_policy(config.policy, self.dist, self.total_steps, backend=config.backend,
                                   seed=self.loop.seed, head=self.head)  # fmt: skip
        self.after_policy()

    def load_pairs(self, path: str) -> PreferenceDataset:
        return load_preference_dataset(path, self.tokenizer, self.config.data,
                                       self.config.policy.max_total_sequence_length, self.margin_key)  # fmt: skip

    def _total_steps(self) -> int:
        batch = self.config.policy.train_global_batch_size
        per_epoch = len(self.train_data.pairs) // batch
        if per_epoch == 0:
            raise UserError(f"{self.config.data.train_data} has {len(self.train_data.pairs)} usable pairs, fewer "
                            f"than policy.train_global_batch_size={batch}")  # fmt: skip
        total = per_epoch * self.loop.max_num_epochs
        return total if self.loop.max_num_steps is None else min(total, self.loop.max_num_steps)

    # ---- what a pair algorithm provides -----------------------------------------------------------------------

    def after_policy(self) -> None:
        """Once the policy is built (before a resume loads a checkpoint into it)."""

    def prepare(self, batches: list, split: str) -> None:
        """Attach what the loss needs beyond the model's output to `batches` of `split` ("train" / "validation")."""

    def pair_terms(self, logits, labels, batch) -> dict:
        """Per-pair tensors of a micro-batch: `loss` and the `metric_names`."""
        raise NotImplementedError

    # ---- global batches -----------------------------------------------------------------------------------------

    def micro_batches(self, pairs: list[PreferencePair]) -> list:
        policy = self.config.policy
        return pair_micro_batches(pairs, policy.train_micro_batch_size, self.pad_id, policy.pack_capacity)

    def run_global_batch(
        self, pairs: list[PreferencePair], split: str, train: bool, batches: list | None = None
    ) -> dict:
        """Forward (and backward when `train`) over this rank's pairs of a global batch (`batches`: their micro-
        batches, when already built); the global means of the metrics, `num_pairs` and `num_tokens`. Collective
        over data parallelism."""
        return self.launch_global_batch(pairs, split, train, batches).means()

    def launch_global_batch(self, pairs: list[PreferencePair], split: str, train: bool,
                            batches: list | None = None) -> LaunchedPairs:  # fmt: skip
        """`run_global_batch` without waiting for the device (its figures are read by `LaunchedPairs.means`)."""
        import torch

        device, group = self.dist.device, self.policy.dp_group
        if batches is None:
            batches = self.micro_batches(pairs) if pairs else []
        counts = torch.tensor([len(pairs), sum(len(p) for p in pairs)], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(counts, group=group)
        # read before `prepare` queues anything (an on-the-fly reference's forwards): this waits for no kernel
        global_pairs = float(counts[0])
        self.prepare(batches, split)

        def loss_fn(logits, labels, batch):
            terms = self.pair_terms(logits, labels, batch)
            loss = terms["loss"].sum() / global_pairs
            return loss, {name: terms[name].detach().double().sum() for name in self.metric_names}

        results = self.policy.forward_backward(batches, loss_fn, train=train)
        sums = torch.zeros(len(self.metric_names), dtype=torch.float64, device=device)
        for result in results:
            sums += torch.stack([torch.as_tensor(result[n], device=device) for n in self.metric_names])
        torch.distributed.all_reduce(sums, group=group)
        return LaunchedPairs(sums, counts, self.metric_names)

    def train_step(self) -> dict:
        import torch

        reset_peak_memory(self.dist.device)
        start = time.perf_counter()
        pairs = self._next_pairs(self.position)
        epoch = self.position.epoch
        self.policy.zero_grad()
        batches = self.prefetched.take([pair.index for pair in pairs])
        launched = self.launch_global_batch(pairs, "train", train=True, batches=batches)
        lr = self.policy.get_lr()
        # the update is queued right behind the last backward: reading the metrics first would idle the device
        grad_norm = self.policy.optimizer_step_async(self.config.policy.max_grad_norm)
        self.policy.scheduler_step()
        self.step += 1
        self._prefetch_next()
        if self.dist.device.type == "cuda":
            torch.cuda.synchronize(self.dist.device)
        stats, grad_norm = launched.means(), float(grad_norm)
        seconds = time.perf_counter() - start
        tokens = stats.pop("num_tokens")
        return {"step": self.step, "epoch": epoch, **{f"train/{k}": v for k, v in stats.items()},
                "train/grad_norm": grad_norm, "train/lr": lr, "train/num_tokens": tokens, "step_time_s": seconds,
                "tokens_per_sec_per_gpu": tokens / seconds / self.dist.world_size,
                "peak_memory_gib": peak_memory_gib(self.dist.device)}  # fmt: skip

    def _next_pairs(self, position: DataPosition) -> list[PreferencePair]:
        """This rank's share of the global batch at `position` (advanced past it)."""
        indices = next_global_batch(position, len(self.train_data.pairs), self.config.policy.train_global_batch_size,
                                    self.loop.seed)  # fmt: skip
        return [self.train_data.pairs[i] for i in shard_for_rank(indices, self.dp_rank, self.dp_size)]

    def _prefetch_next(self) -> None:
        """Build the next step's micro-batches (packing and host tensors: ~30 ms a step of 64 long pairs on a
        2-core host) while the device still runs this step's weight update (`PrefetchedBatches`)."""
        if self.step < self.total_steps:
            pairs = self._next_pairs(dataclasses.replace(self.position))  # a copy: this step stays put
            self.prefetched.keep([pair.index for pair in pairs], self.micro_batches(pairs))

    # ---- validation -------------------------------------------------------------------------------------------

    @property
    def validation_period(self) -> int:
        return self.loop.val_period

    def validation_pairs(self) -> list[PreferencePair]:
        """The first `val_batches` x `val_global_batch_size` validation pairs (all of them if fewer)."""
        size = self.loop.val_batches * (self.loop.val_global_batch_size or self.config.policy.train_global_batch_size)
        return self.val_data.pairs[:size]

    def validate(self) -> dict:
        if self.validation_batches is None:  # the same pairs every time: their micro-batches are built once
            share = shard_for_rank(self.validation_pairs(), self.dp_rank, self.dp_size)
            self.validation_batches = (share, self.micro_batches(share) if share else [])
        pairs, batches = self.validation_batches
        self.policy.eval()
        stats = self.run_global_batch(pairs, "validation", train=False, batches=batches)
        self.policy.train()
        stats.pop("num_tokens")
        return {f"validation/{k}": v for k, v in stats.items()}

    def on_start(self, summary: dict) -> None:
        if self.loop.val_at_start and self.val_data is not None:
            self.log_row({"step": 0, **self.validate()})

    # ---- the run's summary and log --------------------------------------------------------------------------------

    def summary_fields(self) -> dict:
        fields = {**self.train_data.summary("train_"), "backend": self.policy.backend}
        return fields | (self.val_data.summary("val_") if self.val_data is not None else {})

    def summarize(self, rows: list[dict]) -> dict:
        if not rows:
            return {}
        last = {k: v for row in rows for k, v in row.items() if k.startswith("validation/")}
        return {"final_loss": rows[-1]["train/loss"], "final_accuracy": rows[-1]["train/accuracy"],
                "final_margin": rows[-1]["train/margin"], **{f"final_{k}": v for k, v in last.items()},
                "peak_memory_gib": max(r["peak_memory_gib"] for r in rows)}  # fmt: skip

    def checkpoint_extras(self) -> dict:
        return {"tokenizer": self.tokenizer_dir}

    def progress_line(self, row: dict) -> str:
        validation = f" val_accuracy {fmt(row['validation/accuracy'])}" if "validation/accuracy" in row else ""
        return (f"step {row['step']}/{self.total_steps} loss {fmt(row.get('train/loss'))} accuracy "
                f"{fmt(row.get('train/accuracy'))} margin {fmt(row.get('train/margin'))} grad_norm "
                f"{fmt(row.get('train/grad_norm'))}{validation}")  # fmt: skip
