"""The PPO trainer (verl's `main_ppo` shape): GRPO's rollouts and reward, a critic, GAE, clipped policy and value
losses, KL in the reward (fixed or adaptive coefficient) or in the loss, several epochs per rollout batch.

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.ppo ++policy.model_name=/models/sft \\
        ++data.train_data=train.jsonl ++output_dir=/runs/ppo ++ppo.num_prompts_per_step=256 \\
        ++policy.train_global_batch_size=64 ++critic.optimizer.kwargs.lr=1e-5

GRPO's trainer is the on-policy skeleton (engine, refit, generation, the math reward, old and reference
logprobs, the actor's optimizer steps with its clipped loss); PPO replaces the group advantage. One step:
  refit, generation, reward_calculation   as GRPO's (num_generations_per_prompt defaults to 1, verl's rollout.n)
  policy_and_reference_logprobs   old logprobs (always recomputed with the KL in the reward) and the reference's
  values      the critic's value of each response token (`critic.py`)
  advantages  token rewards = score at the last token - kl_coef x KL per token, GAE(gamma, lam), whitening;
              the adaptive KL coefficient is updated from the step's KL (`core.py`)
  critic_training, policy_training   ppo.ppo_epochs passes each over the rollout batch in mini-batches of
              policy.train_global_batch_size rollouts (one optimizer step each), critic first, as verl
Metrics use verl's names (`actor/pg_loss`, `critic/vf_loss`, `critic/score/mean`, ...) next to GRPO's `train/*`.
A checkpoint holds both halves (the critic's `critic/step_N` is written first; the policy's `step_N` marks the
step complete) and the KL coefficient; the critic is exported next to final_hf as `critic_hf`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from skills_cli.training.algorithms.grpo.loss import kl_estimate
from skills_cli.training.algorithms.grpo.rollout import Rollout
from skills_cli.training.algorithms.grpo.trainer import GRPOTrainer, Timer
from skills_cli.training.algorithms.ppo import metrics as ppo_metrics
from skills_cli.training.algorithms.ppo.config import PPOConfig, check_ppo_layout
from skills_cli.training.algorithms.ppo.core import KLController, gae, token_rewards, whiten
from skills_cli.training.algorithms.ppo.critic import Critic
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.parallel import all_reduce
from skills_cli.training.trainer import fmt, main_for, run_trainer


class PPOTrainer(GRPOTrainer):
    """One PPO run on this rank: GRPO's policy, engine and reward, plus the critic and the KL controller."""

    algorithm = "ppo"
    loop_name = "ppo"

    # GRPO's build sets the optimizer steps of one pass over a rollout batch; PPO makes ppo.ppo_epochs passes,
    # so its scheduler length and on-policy test see them all (see the report: a GRPO hook would replace this)
    @property
    def optimizer_steps_per_step(self) -> int:
        return self._optimizer_steps_per_pass * self.config.ppo.ppo_epochs

    @optimizer_steps_per_step.setter
    def optimizer_steps_per_step(self, per_pass: int) -> None:
        self._optimizer_steps_per_pass = per_pass

    def build(self) -> None:
        config = self.config
        check_ppo_layout(config, self.dist.world_size)
        super().build()
        kl_in_reward = config.algorithm.kl_in_reward
        if kl_in_reward:
            self.on_policy = False  # the KL in the reward is measured with the recomputed old logprobs
            if self.reference is None:
                self.reference = self._load_reference()
        self.kl_controller = KLController.from_config(config.algorithm.kl_ctrl) if kl_in_reward else None
        self.critic = Critic(config, self.dist, self.total_steps * self.optimizer_steps_per_step, self.pad_id)
        self.actor_extras: list = []

    # ---- resume, save, export -----------------------------------------------------------------------------------

    def resume(self) -> None:
        super().resume()
        if self.step == 0:
            return
        self.critic.load(self.paths.checkpoint_dir, self.step)
        state = ckpt.read_trainer_state(self.paths.checkpoint_dir / f"step_{self.step}")
        if self.kl_controller is not None and state.get("kl_coef") is not None:
            self.kl_controller.value = float(state["kl_coef"])

    def checkpoint_extras(self) -> dict:
        kl_coef = self.kl_controller.value if self.kl_controller is not None else None
        return {**super().checkpoint_extras(), "critic_model_name": self.config.critic_model, "kl_coef": kl_coef}

    def save(self) -> None:
        """The critic first, then the policy (whose step_N, written last, marks the step complete)."""
        if self.config.checkpointing.enabled and self.step != self.last_saved_step:
            self.critic.save(self.paths.checkpoint_dir, self.step, self.config.checkpointing.keep_last_k)
        super().save()

    @property
    def critic_hf_path(self) -> Path:
        return Path(self.config.critic_hf_path or self.paths.output_dir / "critic_hf")

    def export(self) -> Path:
        path = super().export()
        self.critic.export(self.critic_hf_path, self.tokenizer_dir)
        return path

    def summary_fields(self) -> dict:
        return {**super().summary_fields(), "critic_hf_path": str(self.critic_hf_path)}

    # ---- one step -------------------------------------------------------------------------------------------------

    def train_step(self) -> dict:
        ppo, timer, start = self.config.ppo, Timer(self.dist.device), time.perf_counter()
        rollouts = self.sample_rollouts(ppo, timer)
        with timer.section("reward_calculation"):
            scores = self.score(rollouts)
        with timer.section("policy_and_reference_logprobs"):
            self.compute_logprobs(rollouts)
        with timer.section("values"):
            values = self.critic.values(rollouts)
        with timer.section("advantages"):
            targets = self.advantages_and_returns(rollouts, values)
        with timer.section("critic_training"):
            critic_metrics = self.train_critic(rollouts, values, targets.returns)
        with timer.section("policy_training"):
            actor_metrics = self.train_actor(rollouts)
        self.engine_is_stale = True
        self.step += 1
        timer.seconds["total"] = time.perf_counter() - start
        row = self._step_metrics(rollouts, actor_metrics["train"], timer.seconds, scores)
        return row | actor_metrics["actor"] | critic_metrics | targets.metrics

    def advantages_and_returns(self, rollouts: list[Rollout], values: list[list[float]]) -> ppo_metrics.Targets:
        """Token rewards (score and KL penalty), GAE, whitening; sets each rollout's token advantages and updates
        the KL controller. Returns the critic's targets and the step's verl data metrics."""
        gamma, lam = self.config.algorithm.gamma, self.config.algorithm.lam
        kls = [self._reward_kl(r) for r in rollouts]
        beta = self.kl_controller.value if self.kl_controller is not None else 0.0
        for rollout in rollouts:
            if self.config.ppo.overlong_filtering and rollout.truncated:
                rollout.loss_multiplier = 0.0
        rewards = [token_rewards(r.reward, kl, beta, len(r.response_ids)) for r, kl in zip(rollouts, kls, strict=True)]
        estimates = [gae(rw, v, gamma, lam) for rw, v in zip(rewards, values, strict=True)]
        returns = [estimate[1] for estimate in estimates]
        advantages = self._whitened(rollouts, [estimate[0] for estimate in estimates])
        for rollout, token_advantages in zip(rollouts, advantages, strict=True):
            rollout.token_advantages = token_advantages
            rollout.advantage = statistics.fmean(token_advantages) if token_advantages else 0.0
        metrics = ppo_metrics.data_metrics(rollouts, rewards, returns, values, self.policy.dp_group,
                                           self.dist.device)  # fmt: skip
        metrics |= self._update_kl_controller(rollouts, kls, beta)
        return ppo_metrics.Targets(returns, metrics)

    def _reward_kl(self, rollout: Rollout) -> list[float] | None:
        """KL(actor || reference) per response token, from the old and the reference logprobs (None: no KL)."""
        if self.kl_controller is None:
            return None
        import torch

        loss_fn = self.config.loss_fn
        kl = kl_estimate(torch.tensor(rollout.prev_logprobs), torch.tensor(rollout.reference_logprobs),
                         self.config.algorithm.kl_penalty, loss_fn.kl_input_clamp_value, loss_fn.kl_output_clamp_value)  # fmt: skip
        return kl.tolist()

    def _whitened(self, rollouts: list[Rollout], advantages: list[list[float]]) -> list[list[float]]:
        """Advantages whitened over every valid token of the step on all data-parallel ranks (ppo.normalize_advantages)."""
        if not self.config.ppo.normalize_advantages:
            return advantages
        valid = [a for r, adv in zip(rollouts, advantages, strict=True) if r.loss_multiplier > 0 for a in adv]
        group, device = self.policy.dp_group, self.dist.device
        sums = [all_reduce(value, group, device) for value in (sum(valid), sum(a * a for a in valid), len(valid))]
        flat = whiten([a for adv in advantages for a in adv], *sums)
        out, start = [], 0
        for adv in advantages:
            out.append(flat[start : start + len(adv)])
            start += len(adv)
        return out

    def _update_kl_controller(self, rollouts: list[Rollout], kls: list, beta: float) -> dict:
        """verl's apply_kl_penalty: the step's KL (mean over sequences of each one's mean token KL, all ranks)
        updates the adaptive coefficient; logged with the coefficient used this step."""
        if self.kl_controller is None:
            return {}
        per_sequence = [statistics.fmean(kl) for kl in kls if kl]
        group, device = self.policy.dp_group, self.dist.device
        total, count = all_reduce(sum(per_sequence), group, device), all_reduce(len(per_sequence), group, device)
        current = total / max(count, 1.0)
        self.kl_controller.update(current, int(count))
        return {"actor/reward_kl_penalty": current, "actor/reward_kl_penalty_coeff": beta}

    # ---- training ---------------------------------------------------------------------------------------------------

    def train_critic(self, rollouts: list[Rollout], values: list[list[float]], returns: list[list[float]]) -> dict:
        per_rank = self.config.policy.train_global_batch_size // self.dp_size
        passes = [self.critic.train_on(rollouts, values, returns, per_rank) for _ in range(self.config.ppo.ppo_epochs)]
        return ppo_metrics.mean_over_passes(passes)

    def train_actor(self, rollouts: list[Rollout]) -> dict:
        """ppo.ppo_epochs passes of GRPO's optimizer steps over the rollouts; GRPO's train/* metrics (means over
        the passes) and verl's actor/* ones."""
        self.actor_extras = []
        passes = [self.train_on(rollouts) for _ in range(self.config.ppo.ppo_epochs)]
        train = ppo_metrics.mean_over_passes(passes)
        actor = ppo_metrics.actor_metrics(self.actor_extras, self.optimizer_steps_per_step, train, self.loss_terms,
                                          self.policy.dp_group, self.dist.device)  # fmt: skip
        return {"train": train, "actor": actor}

    def _loss_fn(self, global_count: float):
        """GRPO's clipped policy loss; on the side, verl's actor diagnostics of each micro-batch (the exact
        entropy of the sampling distribution, the old-to-current KL and the policy-gradient part of the loss)."""
        grpo_loss = super()._loss_fn(global_count)
        temperature, on_policy = self.config.policy.generation.temperature, self.on_policy

        def loss_fn(logits, labels, batch):
            loss, metrics = grpo_loss(logits, labels, batch)
            self.actor_extras.append(ppo_metrics.actor_diagnostics(logits, labels, batch, temperature, on_policy,
                                                                   loss, metrics, self.loss_terms, global_count))  # fmt: skip
            return loss, metrics

        return loss_fn

    def progress_line(self, row: dict) -> str:
        return (
            f"step {row['step']}/{self.total_steps} reward {fmt(row.get('train/reward'))} "
            f"pg_loss {fmt(row.get('actor/pg_loss'))} vf_loss {fmt(row.get('critic/vf_loss'))} "
            f"kl_coef {fmt(row.get('actor/reward_kl_penalty_coeff'))} "
            f"resp_len {fmt(row.get('response_length/mean'))} val {fmt(row.get('validation/accuracy'))}"
        )


def run(config: PPOConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    return run_trainer(PPOTrainer, config)


main = main_for(PPOTrainer, PPOConfig)
