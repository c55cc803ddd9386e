"""PPO's critic: a policy with a scalar head (`build_policy(..., head="scalar")`, the policy's backend), its own
weights, optimizer and schedule, giving a value per response token of a rollout, trained on the clipped value
loss (`core.clipped_value_loss`) over the same mini-batches as the actor.

A token's value sits at the same label position as its logprob (the state before the token was sampled), so
the rollout micro-batches of GRPO (`grpo/rollout.py`) carry the critic's per-token tensors too. Its checkpoints
live in `<checkpoint_dir>/critic/step_N` (written before the policy's `step_N`, which marks the step complete)
and its export is an HF sequence-classification model.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms.grpo import rollout as rollouts_lib
from skills_cli.training.algorithms.grpo.rollout import Rollout
from skills_cli.training.algorithms.ppo.config import PPOConfig
from skills_cli.training.algorithms.ppo.core import clipped_value_loss
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.batching import in_labels_layout
from skills_cli.training.policy import build_policy

CRITIC_DIR = "critic"


def critic_policy_config(config: PPOConfig):
    """The critic's section as a policy config: its model (the policy's by default) with the policy's
    mini-batch, sequence length and packing."""
    policy = config.policy
    return dataclasses.replace(config.critic, model_name=config.critic_model,
                               train_global_batch_size=policy.train_global_batch_size,
                               max_total_sequence_length=policy.max_total_sequence_length,
                               sequence_packing=policy.sequence_packing)  # fmt: skip


class Critic:
    """The value model of one PPO run on this rank."""

    def __init__(self, config: PPOConfig, dist, total_optimizer_steps: int, pad_id: int):
        self.config, self.dist, self.pad_id = config, dist, pad_id
        self.settings = critic_policy_config(config)
        self.policy = build_policy(self.settings, dist, total_optimizer_steps, backend=config.backend,
                                   seed=config.ppo.seed, head="scalar")  # fmt: skip

    def _micro_batches(self, rollouts: list[Rollout]) -> list:
        return rollouts_lib.micro_batches(rollouts, self.settings.train_micro_batch_size, self.pad_id,
                                          self.settings.pack_capacity)  # fmt: skip

    def values(self, rollouts: list[Rollout]) -> list[list[float]]:
        """The critic's value of each response token of each rollout (a gradient-free pass)."""

        def capture(logits, labels, batch):
            scores = logits[..., 0].reshape(labels.shape)
            return scores.sum() * 0.0, {"values": scores.detach().float().cpu()}

        batches = self._micro_batches(rollouts)
        self.policy.eval()
        results = self.policy.forward_backward(batches, capture, train=False)
        self.policy.train()
        by_rollout = {}
        for batch, result in zip(batches, results, strict=True):
            for rollout, values in zip(batch.rollouts, rollouts_lib.response_values(batch, result["values"]),
                                       strict=True):  # fmt: skip
                by_rollout[id(rollout)] = values
        return [by_rollout[id(rollout)] for rollout in rollouts]

    def train_on(self, rollouts: list[Rollout], old_values: list[list[float]], returns: list[list[float]],
                 per_rank: int) -> dict:  # fmt: skip
        """One pass of optimizer steps over the rollouts, `per_rank` of them per step; the value-loss sums."""
        import torch

        targets = {id(r): (v, g) for r, v, g in zip(rollouts, old_values, returns, strict=True)}
        losses, grad_norms, sums = [], [], torch.zeros(3, dtype=torch.float64, device=self.dist.device)
        for start in range(0, len(rollouts), per_rank):
            batches = [
                self._with_targets(batch, targets) for batch in self._micro_batches(rollouts[start : start + per_rank])
            ]
            count = float(sum(float(batch.loss_mask.sum()) for batch in batches))
            count = float(_all_reduce_sum(torch.tensor([count], dtype=torch.float64, device=self.dist.device),
                                          self.policy.dp_group)[0])  # fmt: skip
            results = self.policy.forward_backward(batches, self._loss_fn(count), train=True)
            grad_norms.append(self.policy.optimizer_step(self.settings.max_grad_norm, skip=count == 0))
            self.policy.scheduler_step()
            sums += torch.stack([torch.stack([torch.as_tensor(r[k], dtype=torch.float64, device=self.dist.device)
                                              for k in ("vf_clipfrac", "vpred", "num_tokens")]) for r in results]).sum(0)  # fmt: skip
            losses.append(sum(float(r["loss"]) for r in results))
        sums = _all_reduce_sum(sums, self.policy.dp_group).tolist()
        loss = float(_all_reduce_sum(torch.tensor(losses, dtype=torch.float64, device=self.dist.device),
                                     self.policy.dp_group).mean())  # fmt: skip
        tokens = max(sums[2], 1.0)
        return {"critic/vf_loss": loss, "critic/vf_clipfrac": sums[0] / tokens, "critic/vpred_mean": sums[1] / tokens,
                "critic/grad_norm": statistics.fmean(grad_norms), "critic/lr": self.policy.get_lr()}  # fmt: skip

    def _with_targets(self, batch, targets: dict):
        """The batch with the rollouts' old values and returns as (rows, length) tensors at the response labels."""
        shape = batch.input_ids.shape
        batch.old_values = rollouts_lib.per_token_tensor(batch.rollouts, batch.placements, shape,
                                                   lambda r: targets[id(r)][0])  # fmt: skip
        batch.returns = rollouts_lib.per_token_tensor(
            batch.rollouts, batch.placements, shape, lambda r: targets[id(r)][1]
        )
        return batch

    def _loss_fn(self, global_count: float):
        cliprange = self.config.critic.cliprange_value

        def loss_fn(logits, labels, batch):
            vpreds = logits[..., 0].float().reshape(labels.shape)
            old_values, returns, mask = in_labels_layout(labels, logits.device, batch.old_values, batch.returns,
                                                         batch.loss_mask)  # fmt: skip
            loss, metrics = clipped_value_loss(vpreds, old_values, returns, mask, cliprange, global_count)
            return loss, {**metrics, "loss": loss.detach()}

        return loss_fn

    # ---- checkpoints and export -------------------------------------------------------------------------------

    def save(self, checkpoint_dir: Path, step: int, keep_last_k: int | None) -> None:
        """`<checkpoint_dir>/critic/step_<step>`; one more than keep_last_k is kept, so the critic of the
        previous complete step survives a job killed between the critic's save and the policy's."""
        keep = keep_last_k + 1 if keep_last_k else keep_last_k
        self.policy.save_checkpoint(checkpoint_dir / CRITIC_DIR, step, {"algorithm": "ppo-critic", "step": step}, keep)

    def load(self, checkpoint_dir: Path, step: int) -> None:
        """The critic of the policy's resumed step (collective)."""
        directory = checkpoint_dir / CRITIC_DIR
        if self.dist.is_main:
            ckpt.remove_partial_saves(directory)
        path = directory / f"step_{step}"
        if not (path / ckpt.STATE_FILE).is_file():
            raise UserError(f"checkpoint {checkpoint_dir}/step_{step} has no critic checkpoint ({path}); a PPO step "
                            "resumes only with both halves: remove that step or use another output_dir")  # fmt: skip
        self.policy.load_checkpoint(path)

    def export(self, path: Path, tokenizer_dir: str) -> Path:
        return self.policy.export_hf(path, tokenizer_dir)


def _all_reduce_sum(tensor, group):
    import torch

    torch.distributed.all_reduce(tensor, group=group)
    return tensor
