"""The on-policy distillation trainer (NeMo-RL's): the student samples, the teacher scores the student's tokens.

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.distill [--config distill.yaml] \\
        ++policy.model_name=/models/student ++teacher.model_name=/models/teacher \\
        ++data.train_data=train.jsonl ++output_dir=/runs/distill ++distillation.num_prompts_per_step=128

The on-policy skeleton is GRPO's (`GRPOTrainer`): the same rollout engine, refit, generation, micro-batches with
per-token tensors, validation, checkpoints, resume, deadline and export. What changes is the signal: no reward
and no advantages; the loss at every response token is the KL between the student's and the teacher's
next-token distributions (`loss.py`, `loss_fn.kl_type`), normalized by the global valid-token count. One step
(the timers are the logged `timing/train/*` keys):
  refit       the student's weights into the rollout engine (only when they changed since the last refit)
  generation  num_prompts_per_step x num_generations_per_prompt samples, data-parallel over ranks
  reward_calculation   the math grade of each sample where the problem has an expected answer: a diagnostic
              (`train/reward`), not part of the loss
  policy_training   rollouts / train_global_batch_size optimizer steps; in each micro-batch the teacher's logits
              come from a forward pass of the frozen teacher on the same tokens (no gradients), right before
              the student's loss reads them, so only one micro-batch's teacher logits exist at a time

The teacher is a frozen HF model in the student's compute dtype (components/frozen.py, as GRPO's reference
model): whole on each rank, or with `teacher.sharded` FSDP-sharded over the data-parallel ranks. Its vocabulary
must be the student's (refused before submission and here).
"""

from __future__ import annotations

import logging
import statistics
import time

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms.distill.config import DistillConfig, check_distill_layout
from skills_cli.training.algorithms.distill.loss import distillation_loss, per_token_kl, teacher_topk
from skills_cli.training.algorithms.grpo.data import stop_token_ids
from skills_cli.training.algorithms.grpo.rollout import Rollout
from skills_cli.training.algorithms.grpo.trainer import GRPOTrainer, Timer
from skills_cli.training.components.batching import to_device
from skills_cli.training.components.model import check_model_path
from skills_cli.training.components.parallel import all_reduce
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id
from skills_cli.training.model_files import check_same_vocabulary
from skills_cli.training.policy import build_policy
from skills_cli.training.trainer import check_common_config, fmt, main_for, run_trainer

log = logging.getLogger("skills_cli.distill")
SUMMED = ("loss", "kl", "num_tokens")  # the loss function's per-micro-batch sums


def check_config(config: DistillConfig, world_size: int) -> int:
    """Checks that need no model (the teacher's vocabulary is read from its config.json); returns the DP size."""
    check_common_config(config)
    check_model_path(config.teacher.model_name, "teacher.model_name")
    check_same_vocabulary(config.policy.model_name, config.teacher.model_name, "teacher.model_name")
    loop = config.distillation
    if (loop.val_period or loop.val_at_start) and not config.data.val_data:
        raise UserError("distillation.val_period / distillation.val_at_start need data.val_data")
    generation = config.policy.generation
    if generation.backend == "vllm" and world_size > 1 and generation.vllm_cfg.tensor_parallel_size > 1:
        raise UserError("policy.generation.vllm_cfg.tensor_parallel_size > 1 is not supported by the colocated "
                        "rollout engine yet (each rank runs its own engine)")  # fmt: skip
    return check_distill_layout(config, world_size)


class DistillTrainer(GRPOTrainer):
    """One distillation run on this rank: problems, the student (the policy), the teacher, the rollout engine."""

    algorithm = "distill"
    loop_name = "distillation"

    def build(self) -> None:
        config, policy, loop = self.config, self.config.policy, self.config.distillation
        self.dp_size = check_config(config, self.dist.world_size)
        self.reward_function = None  # the diagnostic reward is the math grade
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.pad_id = pad_id(self.tokenizer)
        self.stop_ids = stop_token_ids(self.tokenizer, policy.model_name)
        self._load_problems()
        self.total_steps = min(loop.max_num_steps,
                               len(self.problems) // loop.num_prompts_per_step * loop.max_num_epochs)  # fmt: skip
        self.optimizer_steps_per_step = config.rollouts_per_step // policy.train_global_batch_size
        self.policy = build_policy(policy, self.dist, self.total_steps * self.optimizer_steps_per_step,
                                   backend=config.backend, seed=loop.seed)  # fmt: skip
        self.reference = self.reward_model = None
        self.teacher = self._load_teacher()
        self.engine = self._build_engine()
        self.engine_is_stale = True

    def _load_teacher(self):
        """The frozen teacher in the student's compute dtype (components/frozen.py): whole on this rank, or with
        `teacher.sharded` FSDP-sharded over the data-parallel ranks (its forwards are then collectives, so every
        rank runs as many micro-batches: `train_on` evens them out)."""
        from skills_cli.training.components.frozen import FrozenModel

        return FrozenModel.load(self.config.teacher.model_name, self.policy, self.dist.device,
                                self.config.teacher.sharded)  # fmt: skip

    # ---- one step -----------------------------------------------------------------------------------------------

    def train_step(self) -> dict:
        loop = self.config.distillation
        timer = Timer(self.dist.device)
        start = time.perf_counter()
        rollouts = self.sample_rollouts(loop, timer)
        with timer.section("reward_calculation"):
            self._grade(rollouts)
        with timer.section("policy_training"):
            train_metrics = self.train_on(rollouts)
        self.engine_is_stale = True
        self.step += 1
        timer.seconds["total"] = time.perf_counter() - start
        row = self._step_metrics(rollouts, train_metrics, timer.seconds)
        return {name: value for name, value in row.items() if not name.startswith("train/advantages/")}

    def _grade(self, rollouts: list[Rollout]) -> None:
        """The math grade of each sample as its reward (logged, never trained on); overlong filtering."""
        grades = self.graded(rollouts, self.response_texts(rollouts))
        for rollout, grade in zip(rollouts, grades, strict=True):
            rollout.reward = grade
            if self.config.distillation.overlong_filtering and rollout.truncated:
                rollout.loss_multiplier = 0.0

    def train_on(self, rollouts: list[Rollout]) -> dict:
        """Optimizer steps over this rank's rollouts, one global batch at a time; the step's loss and KL."""
        import torch

        group, device = self.policy.dp_group, self.dist.device
        per_rank = self.config.policy.train_global_batch_size // self.dp_size
        grad_norms, lrs, per_step = [], [], []
        for start in range(0, len(rollouts), per_rank):
            batches = self._micro_batches(rollouts[start : start + per_rank], self.config.policy.train_micro_batch_size)
            batches = self.teacher.even_out(batches, self.pad_id)  # the teacher runs inside the loss
            tokens = all_reduce(sum(float(b.loss_mask.sum()) for b in batches), group, device)
            lrs.append(self.policy.get_lr())
            results = self.policy.forward_backward(batches, self._loss_fn(tokens), train=True)
            grad_norms.append(self.policy.optimizer_step(self.config.policy.max_grad_norm, skip=tokens == 0))
            self.policy.scheduler_step()
            per_step.append(torch.stack([torch.stack([torch.as_tensor(r[name], dtype=torch.float64) for r in results])
                                         .sum().to(device) for name in SUMMED]))  # fmt: skip
        sums = torch.stack(per_step)  # (optimizer steps, SUMMED), still on the device: one read-back below
        torch.distributed.all_reduce(sums, group=group)
        losses, kl, tokens = sums[:, 0].tolist(), float(sums[:, 1].sum()), float(sums[:, 2].sum())
        return {"train/loss": statistics.fmean(losses), "train/kl": kl / max(tokens, 1.0),
                "train/grad_norm": statistics.fmean(grad_norms), "train/lr": lrs[0],
                "train/global_valid_toks": tokens}  # fmt: skip

    def _loss_fn(self, global_count: float):
        settings, k = self.config.loss_fn, self.config.distillation.topk_logits_k

        def loss_fn(logits, labels, batch):
            import torch

            # the response tokens only: prompt and padding positions need no KL (and no vocabulary-wide softmax).
            # Their places are found on the host: a boolean mask of a device tensor would wait for the GPU.
            mask = batch.loss_mask.reshape(-1)
            keep = mask > 0
            places, weights = to_device(logits.device, torch.nonzero(keep, as_tuple=True)[0], mask[keep])

            def at_places(per_token):  # (places, vocabulary) rows of a (labels..., vocabulary) tensor
                return per_token.reshape(mask.numel(), -1).index_select(0, places)

            teacher, indices = at_places(self.teacher_logits(batch)), None
            if k is not None:
                teacher, indices = teacher_topk(teacher, k)
            kl = per_token_kl(at_places(logits), teacher, indices, settings.kl_type, settings.mixed_kl_weight,
                              settings.zero_outside_topk)  # fmt: skip
            loss, metrics = distillation_loss(kl, weights, global_count)
            return loss, {**metrics, "loss": loss.detach()}

        return loss_fn

    def teacher_logits(self, batch):
        """The teacher's logits on a micro-batch's tokens, in the layout the student's loss gets (no gradients)."""
        return self.teacher.logits(self.teacher.inputs(batch)[0])

    # ---- the run's summary and log --------------------------------------------------------------------------------

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "teacher": self.config.teacher.model_name,
                "teacher_shards": self.teacher.shards}  # fmt: skip

    def checkpoint_extras(self) -> dict:
        return {**super().checkpoint_extras(), "teacher": self.config.teacher.model_name}

    def progress_line(self, row: dict) -> str:
        return (
            f"step {row['step']}/{self.total_steps} kl {fmt(row.get('train/kl'))} loss {fmt(row.get('train/loss'))} "
            f"reward {fmt(row.get('train/reward'))} gen_len {fmt(row.get('train/generation_lengths'))} "
            f"val {fmt(row.get('validation/accuracy'))}"
        )


def run(config: DistillConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    return run_trainer(DistillTrainer, config)


main = main_for(DistillTrainer, DistillConfig)
