"""The GRPO trainer (math): rollouts, math reward, group advantages, clipped policy loss with a KL penalty.

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.grpo [--config grpo.yaml] \\
        ++policy.model_name=/models/sft ++data.train_data=train.jsonl ++output_dir=/runs/grpo \\
        ++grpo.num_prompts_per_step=32 ++grpo.num_generations_per_prompt=16

Without torchrun it runs as one process. Keys are NeMo-RL's grpo_math names (`config.py` here); the run (resume,
deadline, saves, export, outputs under `output_dir`) is the shared skeleton's (`skills_cli/training/trainer.py`).
One step, as NeMo-RL's `grpo_train` (the timers are the logged `timing/train/*` keys):
  refit       the policy's weights into the rollout engine (only when they changed since the last refit)
  generation  num_prompts_per_step x num_generations_per_prompt samples, data-parallel over ranks
  reward_calculation   our math grader on the last \\boxed{} (timeout or error: 0), and/or a trained reward model
              (env.reward_model, in process on each rank), weighted by env.math.weight / env.reward_model.weight
  policy_and_reference_logprobs   old logprobs recomputed by the trainer (with the sampling temperature), and the
              reference model's when the KL penalty is on (a frozen copy of the starting weights)
  policy_training   the rollout batch split into rollouts / train_global_batch_size optimizer steps, each a
              global batch whose loss is normalized by its global valid-token count (`loss.py`)
Validation (greedy pass@1 on data.val_data) runs every `grpo.val_period` steps.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from contextlib import contextmanager

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms.grpo import rollout as rollouts_lib
from skills_cli.training.algorithms.grpo.config import GRPOConfig, check_grpo_layout
from skills_cli.training.algorithms.grpo.data import (
    Problem,
    StepScores,
    check_reward_model,
    load_problems,
    load_reward_function,
    math_reward,
    mixed_rewards,
    sigmoid,
    standardized,
    stop_token_ids,
)
from skills_cli.training.algorithms.grpo.loss import (
    MAX_METRICS,
    MIN_METRICS,
    SUM_METRICS,
    LossTerms,
    clipped_pg_loss,
    group_advantages,
)
from skills_cli.training.algorithms.grpo.rollout import Rollout
from skills_cli.training.components.batching import in_labels_layout
from skills_cli.training.components.data import next_global_batch
from skills_cli.training.components.logprobs import token_logprobs
from skills_cli.training.components.metrics import model_flops_utilization, peak_memory_gib
from skills_cli.training.components.parallel import all_reduce
from skills_cli.training.components.tokenizer import load_tokenizer, pad_id
from skills_cli.training.policy import build_policy
from skills_cli.training.trainer import Trainer, check_common_config, fmt, main_for, run_trainer

log = logging.getLogger("skills_cli.grpo")


def check_config(config: GRPOConfig, world_size: int) -> int:
    """Checks that need no model; returns the data-parallel size."""
    check_common_config(config)
    if config.loop.val_period or config.loop.val_at_start:
        if not config.data.val_data:
            raise UserError("grpo.val_period / grpo.val_at_start need data.val_data")
    if (
        config.policy.generation.backend == "vllm"
        and world_size > 1
        and config.policy.generation.vllm_cfg.tensor_parallel_size > 1
    ):
        raise UserError("policy.generation.vllm_cfg.tensor_parallel_size > 1 is not supported by the colocated "
                        "rollout engine yet (each rank runs its own engine)")  # fmt: skip
    return check_grpo_layout(config, world_size)


class Timer:
    """Named wall-clock sections of one step (`timing/train/<name>`), synchronizing the GPU at each end."""

    def __init__(self, device):
        self.device, self.seconds = device, {}

    @contextmanager
    def section(self, name: str):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


class GRPOTrainer(Trainer):
    """One GRPO run on this rank: problems, the policy, the rollout engine (and the reference model), the step."""

    algorithm = "grpo"
    loop_name = "grpo"  # the config section of the loop, in messages (PPO's and distillation's map onto `grpo`)

    def __init__(self, config: GRPOConfig, dist):
        import torch

        super().__init__(config, dist)
        torch.manual_seed(config.loop.seed)

    def build(self) -> None:
        config, policy = self.config, self.config.policy
        self.dp_size = check_config(config, self.dist.world_size)
        check_reward_model(config.env)
        self.reward_function = load_reward_function(config.env.reward_function) if config.env.reward_function else None
        self.tokenizer = load_tokenizer(self.tokenizer_dir)
        self.pad_id = pad_id(self.tokenizer)
        self.stop_ids = stop_token_ids(self.tokenizer, policy.model_name)
        self._load_problems()
        self.total_steps = min(config.loop.max_num_steps,
                               len(self.problems) // config.loop.num_prompts_per_step * config.loop.max_num_epochs)  # fmt: skip
        self.optimizer_steps_per_step = config.rollouts_per_step // policy.train_global_batch_size
        force = config.loss_fn.force_on_policy_ratio
        self.on_policy = self.optimizer_steps_per_step == 1 if force is None else force
        self.policy = build_policy(policy, self.dist, self.total_steps * self.optimizer_steps_per_step,
                                   backend=config.backend, seed=config.loop.seed)  # fmt: skip
        self.loss_terms = LossTerms.from_config(config.loss_fn)
        self.reference = self._load_reference() if config.loss_fn.reference_policy_kl_penalty > 0 else None
        self.reward_model = self._load_reward_model()
        self.engine = self._build_engine()
        self.engine_is_stale = True

    def _load_problems(self) -> None:
        config, policy = self.config, self.config.policy
        prompt_budget = policy.max_total_sequence_length - policy.generation.max_new_tokens
        self.problems = load_problems(config.data.train_data, self.tokenizer, config.data, prompt_budget)
        self.val_problems = load_problems(config.data.val_data, self.tokenizer, config.data, prompt_budget)[
            : config.loop.max_val_samples] if config.data.val_data else []  # fmt: skip
        # a rollout's prompt messages (a reward model renders them with its own chat template)
        self.prompt_messages = {p.prompt_ids: list(p.messages) for p in [*self.problems, *self.val_problems]}
        if len(self.problems) < config.loop.num_prompts_per_step:
            raise UserError(f"{config.data.train_data} has {len(self.problems)} usable problems, fewer than "
                            f"{self.loop_name}.num_prompts_per_step={config.loop.num_prompts_per_step}")  # fmt: skip

    # ---- setup --------------------------------------------------------------------------------------------

    def _load_reference(self):
        """The frozen starting policy for the KL penalty (components/frozen.py): whole on each rank, or with
        `reference.sharded` FSDP-sharded over the data-parallel ranks."""
        from skills_cli.training.components.frozen import FrozenModel

        return FrozenModel.load(self.config.policy.model_name, self.policy, self.dist.device,
                                self.config.reference.sharded)  # fmt: skip

    def _load_reward_model(self):
        """env.reward_model's model, whole on each rank (as the reference), in the compute dtype on a GPU."""
        settings = self.config.env.reward_model
        if settings.model_name is None:
            return None
        from skills_cli.inference.reward_model import RewardModel

        on_gpu = self.dist.device.type == "cuda"
        dtype = str(self.policy.compute_dtype).removeprefix("torch.") if on_gpu else "float32"
        return RewardModel.from_pretrained(settings.model_name, device=str(self.dist.device), dtype=dtype,
                                           batch_size=settings.batch_size)  # fmt: skip

    def _build_engine(self):
        generation, on_gpu = self.config.policy.generation, self.dist.device.type == "cuda"
        # the engine samples in the policy's compute dtype on a GPU, in fp32 on a CPU (as the policy computes
        # there), so generation and training logprobs agree
        dtype = self.policy.compute_dtype if on_gpu else None
        if generation.backend == "vllm":
            from skills_cli.inference.engine.vllm_engine import VllmEngine

            # a rank never decodes more than its share of a step's rollouts at once: no KV cache beyond that
            rollouts_per_rank = self.config.rollouts_per_step // self.dp_size
            return VllmEngine.from_pretrained(self.config.policy.model_name,
                                              max_batch_size=min(generation.max_batch_size, rollouts_per_rank),
                                              max_seq_len=self.config.policy.max_total_sequence_length,
                                              dtype=str(dtype).removeprefix("torch.") if dtype else "float32",
                                              gpu_memory_utilization=generation.vllm_cfg.gpu_memory_utilization,
                                              enforce_eager=generation.vllm_cfg.enforce_eager,
                                              seed=self.config.loop.seed, tokenizer=str(self.tokenizer_dir))  # fmt: skip
        import torch

        from skills_cli.inference.engine import TorchEngine

        return TorchEngine.from_pretrained(self.config.policy.model_name, device=self.dist.device,
                                           dtype=dtype or torch.float32, max_batch_size=generation.max_batch_size,
                                           max_seq_len=self.config.policy.max_total_sequence_length)  # fmt: skip

    # ---- generation -----------------------------------------------------------------------------------------

    def refit(self) -> None:
        """Copy the policy's current weights into the rollout engine (collective). vLLM takes them as one stream
        (its reload re-processes a layer once all of its weights arrived: one call is one whole refit); the
        torch engine copies them in buckets."""
        weights = self.policy.rollout_weights()
        if self.config.policy.generation.backend == "vllm":
            self.engine.load_weights(weights)
        else:
            for bucket in rollouts_lib.buckets(weights):
                self.engine.load_weights(bucket)
        self.engine_is_stale = False

    def generate(self, problems: list[Problem], samples_per_problem: int, seed: int, greedy: bool) -> list[Rollout]:
        """Samples for this rank's problems (already this rank's share), in problem order, grouped."""
        params = rollouts_lib.engine_sampling_params(self.config.policy.generation, self.stop_ids, seed, greedy)
        prompts = [list(p.prompt_ids) for p in problems for _ in range(samples_per_problem)]
        outputs = self.engine.generate(prompts, params) if prompts else []
        rollouts = []
        for index, output in enumerate(outputs):
            problem = problems[index // samples_per_problem]
            rollouts.append(Rollout(problem.prompt_ids, list(output.token_ids), list(output.logprobs),
                                    output.finish_reason == "length", problem.expected_answer))  # fmt: skip
        return rollouts

    def score(self, rollouts: list[Rollout]) -> StepScores:
        """Each rollout's reward: env.math.weight x its math grade (or env.reward_function's value) plus
        env.reward_model.weight x the reward model's (normalized) score; returns the grades and raw scores."""
        texts = self.response_texts(rollouts)
        scores = StepScores(self.graded(rollouts, texts), self.reward_model_scores(rollouts, texts))
        rewards = mixed_rewards(scores, self.config.env, self._normalized(scores.reward_model))
        for rollout, reward in zip(rollouts, rewards, strict=True):
            rollout.reward = reward
        return scores

    def response_texts(self, rollouts: list[Rollout]) -> list[str]:
        return [self.tokenizer.decode(rollout.response_ids, skip_special_tokens=True) for rollout in rollouts]

    def graded(self, rollouts: list[Rollout], texts: list[str]) -> list[float]:
        """The math grader's reward of each response (env.reward_function's when one is set)."""
        if self.reward_function is not None:
            return [float(self.reward_function(text, rollout.expected_answer, rollout.truncated))
                    for rollout, text in zip(rollouts, texts, strict=True)]  # fmt: skip
        env = self.config.env.math
        return [math_reward(text, rollout.expected_answer, rollout.truncated, env)
                for rollout, text in zip(rollouts, texts, strict=True)]  # fmt: skip

    def reward_model_scores(self, rollouts: list[Rollout], texts: list[str]) -> list[float] | None:
        """The reward model's raw score of each response to its prompt (an unfinished one without end of turn)."""
        if self.reward_model is None:
            return None
        from skills_cli.inference.reward_model import Pair

        return self.reward_model.score([Pair(self.prompt_messages[rollout.prompt_ids], text, not rollout.truncated)
                                        for rollout, text in zip(rollouts, texts, strict=True)])  # fmt: skip

    def _normalized(self, scores: list[float] | None) -> list[float] | None:
        """env.reward_model.normalization of the raw scores (batch: over every data-parallel rank's rollouts)."""
        how = self.config.env.reward_model.normalization
        if scores is None or how == "none":
            return scores
        if how == "sigmoid":
            return [sigmoid(score) for score in scores]
        group, device = self.policy.dp_group, self.dist.device
        sums = [all_reduce(value, group, device) for value in (sum(scores), sum(s * s for s in scores), len(scores))]
        return standardized(scores, *sums)

    # ---- logprobs and training --------------------------------------------------------------------------------

    def _micro_batches(self, rollouts: list[Rollout], size: int) -> list:
        """Padded micro-batches of `size` rollouts, or `size` packed rows (policy.sequence_packing)."""
        return rollouts_lib.micro_batches(rollouts, size, self.pad_id, self.config.policy.pack_capacity)

    def compute_logprobs(self, rollouts: list[Rollout]) -> None:
        """prev (trainer) and reference logprobs of each response token, with the sampling temperature."""
        temperature = self.config.policy.generation.temperature
        batches = self._micro_batches(rollouts, self.config.policy.logprob_batch_size
                                      or self.config.policy.train_micro_batch_size)  # fmt: skip

        def capture(logits, labels, micro_batch):
            logprobs = token_logprobs(logits, labels, temperature)
            return logprobs.sum() * 0.0, {"logprobs": logprobs.detach().float().cpu()}

        if not self.on_policy:  # with one optimizer step per rollout batch prev == current: the loss uses that
            self.policy.eval()
            results = self.policy.forward_backward(batches, capture, train=False)
            self.policy.train()
            for batch, result in zip(batches, results, strict=True):
                for rollout, values in zip(
                    batch.rollouts, rollouts_lib.response_values(batch, result["logprobs"]), strict=True
                ):
                    rollout.prev_logprobs = values
        if self.reference is None:
            return

        def keep(batch, logits, labels) -> None:
            logprobs = token_logprobs(logits, labels, temperature)
            for rollout, values in zip(batch.rollouts, rollouts_lib.response_values(batch, logprobs), strict=True):
                rollout.reference_logprobs = values

        self.reference.forward_each(batches, keep)

    def train_on(self, rollouts: list[Rollout]) -> dict:
        """Optimizer steps over this rank's rollouts, one global batch at a time; averaged diagnostics."""
        import torch

        per_rank = self.config.policy.train_global_batch_size // self.dp_size
        summed = ("loss", *SUM_METRICS, "num_tokens")
        grad_norms, lrs, per_step = [], [], []
        for start in range(0, len(rollouts), per_rank):
            chunk = rollouts[start : start + per_rank]
            batches = self._micro_batches(chunk, self.config.policy.train_micro_batch_size)
            tokens = sum(float(b.loss_mask.sum()) for b in batches)
            seqs = sum(r.loss_multiplier > 0 for r in chunk)
            counts = torch.tensor([tokens, float(seqs)], dtype=torch.float64, device=self.dist.device)
            torch.distributed.all_reduce(counts, group=self.policy.dp_group)
            global_count = float(counts[0] if self.loss_terms.token_level_loss else counts[1])
            lrs.append(self.policy.get_lr())
            results = self.policy.forward_backward(batches, self._loss_fn(global_count), train=True)
            grad_norms.append(self.policy.optimizer_step(self.config.policy.max_grad_norm, skip=bool(counts[0] == 0)))
            self.policy.scheduler_step()
            per_step.append(torch.cat([_reduce_metrics(results, summed, torch.sum),
                                       _reduce_metrics(results, MIN_METRICS, torch.amin),
                                       _reduce_metrics(results, MAX_METRICS, torch.amax)]))  # fmt: skip
        # the metrics stayed on the device: one read-back for the whole rollout batch
        rows = [dict(zip((*summed, *MIN_METRICS, *MAX_METRICS), row, strict=True))
                for row in torch.stack(per_step).cpu().tolist()]  # fmt: skip
        totals = {name: sum(row[name] for row in rows) for name in summed if name != "loss"}
        extremes = {name: min(row[name] for row in rows) for name in MIN_METRICS} | {
            name: max(row[name] for row in rows) for name in MAX_METRICS}  # fmt: skip
        # an optimizer step's loss is the sum of its micro-batches' shares over all data-parallel ranks
        losses = [all_reduce(row["loss"], self.policy.dp_group, self.dist.device) for row in rows]
        return self._reduce_diagnostics(totals, extremes) | {
            "train/loss": statistics.fmean(losses), "train/grad_norm": statistics.fmean(grad_norms),
            "train/lr": lrs[0]}  # fmt: skip

    def _loss_fn(self, global_count: float):
        terms, temperature = self.loss_terms, self.config.policy.generation.temperature

        def loss_fn(logits, labels, batch):
            def per_token(tensor):
                (moved,) = in_labels_layout(labels, logits.device, tensor)
                return moved

            curr = token_logprobs(logits, labels, temperature)
            ref = per_token(batch.reference_logprobs) if self.reference is not None else None
            # on-policy: the weights have not moved since the rollouts, so the old logprobs are the current ones
            # (the ratio is exactly 1 and its gradient that of the current logprobs)
            prev = curr.detach() if self.on_policy else per_token(batch.prev_logprobs)
            loss, metrics = clipped_pg_loss(curr, prev, per_token(batch.generation_logprobs), ref,
                                            per_token(batch.advantages), per_token(batch.loss_mask),
                                            per_token(batch.seq_weight), terms, global_count)  # fmt: skip
            return loss, {**metrics, "loss": loss.detach()}

        return loss_fn

    def _reduce_diagnostics(self, totals: dict, extremes: dict) -> dict:
        import torch

        device = self.dist.device
        names = list(totals)
        summed = torch.tensor([totals[n] for n in names], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(summed, group=self.policy.dp_group)
        lows = torch.tensor([extremes[n] for n in MIN_METRICS], dtype=torch.float64, device=device)
        highs = torch.tensor([extremes[n] for n in MAX_METRICS], dtype=torch.float64, device=device)
        torch.distributed.all_reduce(lows, op=torch.distributed.ReduceOp.MIN, group=self.policy.dp_group)
        torch.distributed.all_reduce(highs, op=torch.distributed.ReduceOp.MAX, group=self.policy.dp_group)
        values = dict(zip(names, summed.tolist(), strict=True))
        tokens = max(values.pop("num_tokens"), 1.0)
        out = {f"train/{name}": value / tokens for name, value in values.items()}
        out["train/kl_penalty"] = self.loss_terms.kl_penalty * out["train/kl"]
        out.update({f"train/{n}": v for n, v in zip(MIN_METRICS, lows.tolist(), strict=True)})
        out.update({f"train/{n}": v for n, v in zip(MAX_METRICS, highs.tolist(), strict=True)})
        out["train/global_valid_toks"] = tokens
        return {k: (v if math.isfinite(v) else None) for k, v in out.items()}

    # ---- one step -----------------------------------------------------------------------------------------------

    def my_problems(self, indices: list[int], problems: list[Problem]) -> list[Problem]:
        from skills_cli.training.components.batching import shard_for_rank

        return [problems[i] for i in shard_for_rank(indices, self.dp_rank, self.dp_size)]

    def sample_rollouts(self, loop, timer: Timer) -> list[Rollout]:
        """This step's rollouts on this rank (the next global batch of problems, `loop.num_generations_per_prompt`
        samples each, with `loop.seed`), the engine refitted first and put to sleep after; `loop` is the
        algorithm's loop section (grpo, ppo, distillation). Timed as `refit` and `generation`."""
        indices = next_global_batch(self.position, len(self.problems), loop.num_prompts_per_step, loop.seed)
        with timer.section("refit"):
            self.wake_engine()  # also when fresh: a validation just refitted it, then put it to sleep
            if self.engine_is_stale:
                self.refit()
        with timer.section("generation"):
            seed = rollouts_lib.sample_seed(loop.seed, self.step, self.dp_rank)
            rollouts = self.generate(self.my_problems(indices, self.problems), loop.num_generations_per_prompt,
                                     seed, greedy=False)  # fmt: skip
            rollouts = rollouts_lib.share_across_model_parallel_peers(rollouts, self.dp_rank, self.dist.rank)
            self.sleep_engine()
        return rollouts

    def train_step(self) -> dict:
        grpo = self.config.loop
        timer = Timer(self.dist.device)
        start = time.perf_counter()
        rollouts = self.sample_rollouts(grpo, timer)
        with timer.section("reward_calculation"):
            scores = self.score(rollouts)
            self._set_advantages(rollouts)
        with timer.section("policy_and_reference_logprobs"):
            self.compute_logprobs(rollouts)
        with timer.section("policy_training"):
            train_metrics = self.train_on(rollouts)
        self.engine_is_stale = True
        self.step += 1
        timer.seconds["total"] = time.perf_counter() - start
        return self._step_metrics(rollouts, train_metrics, timer.seconds, scores)

    def _set_advantages(self, rollouts: list[Rollout]) -> None:
        import torch

        grpo = self.config.loop
        rewards = torch.tensor([r.reward for r in rollouts], dtype=torch.float32)
        advantages = group_advantages(rewards, grpo.num_generations_per_prompt, grpo.use_leave_one_out_baseline,
                                      grpo.normalize_rewards)  # fmt: skip
        for rollout, advantage in zip(rollouts, advantages.tolist(), strict=True):
            rollout.advantage = advantage
            if grpo.overlong_filtering and rollout.truncated:
                rollout.loss_multiplier = 0.0

    def _step_metrics(self, rollouts: list[Rollout], train_metrics: dict, seconds: dict,
                      scores: StepScores | None = None) -> dict:  # fmt: skip
        """Per-step row: global means over all ranks' rollouts (sums reduced over data parallelism). The accuracy
        is the math grade of `scores` (the reward itself when not given)."""
        import torch

        group = self.policy.dp_group
        device = self.dist.device
        graded = scores.graded if scores is not None else [r.reward for r in rollouts]
        correct_lengths = [len(r.response_ids) for r, grade in zip(rollouts, graded, strict=True) if grade > 0]
        reward_model = scores.reward_model if scores is not None else None
        sums = torch.tensor([
            len(rollouts), sum(r.reward for r in rollouts), sum(len(r.response_ids) for r in rollouts),
            sum(not r.truncated for r in rollouts), sum(len(r.prompt_ids) for r in rollouts),
            sum(r.num_tokens for r in rollouts), sum(r.advantage for r in rollouts), sum(correct_lengths),
            len(correct_lengths), sum(r.loss_multiplier > 0 for r in rollouts), sum(graded), sum(reward_model or []),
        ], dtype=torch.float64, device=device)  # fmt: skip
        torch.distributed.all_reduce(sums, group=group)
        (count, reward, gen_len, ended, prompt_len, tokens, adv_sum, correct_len, num_correct,
         valid_seqs, accuracy, reward_model_sum) = sums.tolist()  # fmt: skip
        adv = torch.tensor([min((r.advantage for r in rollouts), default=math.inf),
                            -max((r.advantage for r in rollouts), default=-math.inf)], dtype=torch.float64, device=device)  # fmt: skip
        torch.distributed.all_reduce(adv, op=torch.distributed.ReduceOp.MIN, group=group)
        world, total_s = self.dist.world_size, seconds["total"]
        row = {
            "step": self.step,
            "train/reward": reward / count,
            "train/accuracy": accuracy / count,
            **({"train/reward_model_score": reward_model_sum / count} if reward_model is not None else {}),
            "train/advantages/mean": adv_sum / count,
            "train/advantages/min": float(adv[0]),
            "train/advantages/max": -float(adv[1]),
            "train/generation_lengths": gen_len / count,
            "train/correct_solution_generation_lengths": correct_len / num_correct if num_correct else None,
            "train/fraction_of_samples_properly_ended": ended / count,
            "train/mean_prompt_length": prompt_len / count,
            "train/total_num_tokens": tokens,
            "train/global_valid_seqs": valid_seqs,
            **train_metrics,
            **{f"timing/train/{name}": value for name, value in seconds.items()},
            "performance/tokens_per_sec_per_gpu": tokens / total_s / world,
            "performance/generation_tokens_per_sec_per_gpu": gen_len / max(seconds["generation"], 1e-9) / world,
            "performance/policy_training_tokens_per_sec_per_gpu":
                tokens / max(seconds["policy_training"], 1e-9) / world,
            "performance/peak_memory_gib": peak_memory_gib(device),
        }  # fmt: skip
        training_rate = row["performance/policy_training_tokens_per_sec_per_gpu"]
        squares = all_reduce(float(sum(r.num_tokens**2 for r in rollouts)), group, device)
        attention_rate = self.attention_flops_coefficient * squares / max(seconds["policy_training"], 1e-9) / world
        row["performance/train_mfu"] = model_flops_utilization(self.policy.num_params, training_rate, self.peak_flops,
                                                               attention_rate)  # fmt: skip
        return row

    # ---- validation ---------------------------------------------------------------------------------------------

    @property
    def validation_period(self) -> int:
        return self.config.loop.val_period

    def on_start(self, summary: dict) -> None:
        if self.config.loop.val_at_start and self.val_problems:
            self.log_row({"step": 0, **self.validate()})

    def validate(self) -> dict:
        """Greedy (or val_temperature) pass@1 over the validation problems, sharded over DP ranks."""
        generation = self.config.policy.generation
        indices = list(range(len(self.val_problems)))
        share = len(indices) // self.dp_size
        mine = [self.val_problems[i] for i in indices[self.dp_rank * share : (self.dp_rank + 1) * share]]
        if self.dp_rank == self.dp_size - 1:
            mine += [self.val_problems[i] for i in indices[self.dp_size * share :]]
        self.wake_engine()
        if self.engine_is_stale:
            self.refit()
        seed = rollouts_lib.sample_seed(self.config.loop.seed, self.step, self.dp_rank, validation=True)
        rollouts = self.generate(mine, 1, seed, greedy=generation.val_temperature == 0)
        rollouts = rollouts_lib.share_across_model_parallel_peers(rollouts, self.dp_rank, self.dist.rank)
        self.sleep_engine()
        # validation measures the math grade alone (also with a reward model): it is the logged reward here
        for rollout, grade in zip(rollouts, self.graded(rollouts, self.response_texts(rollouts)), strict=True):
            rollout.reward = grade
        sums = all_reduce(sum(r.reward for r in rollouts), self.policy.dp_group, self.dist.device)
        lengths = all_reduce(sum(len(r.response_ids) for r in rollouts), self.policy.dp_group, self.dist.device)
        total = max(len(self.val_problems), 1)
        self._log_val_generations(rollouts)
        return {"validation/accuracy": sums / total, "validation/generation_lengths": lengths / total}

    def _log_val_generations(self, rollouts: list[Rollout]) -> None:
        count = self.config.logger.val_generations_to_log
        if not count or not self.dist.is_main:
            return
        rows = [{"step": self.step, "prompt": self.tokenizer.decode(list(r.prompt_ids)),
                 "response": self.tokenizer.decode(r.response_ids, skip_special_tokens=True),
                 "expected_answer": r.expected_answer, "reward": r.reward} for r in rollouts[:count]]  # fmt: skip
        self.logger.log_table("validation/generations", rows, self.step)

    def wake_engine(self) -> None:
        if self.dist.device.type == "cuda" and self.config.policy.generation.colocated.enabled:
            self.engine.wake()

    def sleep_engine(self) -> None:
        """Colocated on a GPU: free the engine's KV cache while the policy trains (the torch engine keeps a small
        one, and its CUDA graphs, per colocated.keep_kv_cache_up_to_gib)."""
        generation = self.config.policy.generation
        if self.dist.device.type != "cuda" or not generation.colocated.enabled:
            return
        if generation.backend != "torch":
            self.engine.sleep()
        elif self.engine.kv_cache_bytes() > generation.colocated.keep_kv_cache_up_to_gib * 2**30:
            # its weights are overwritten by the next refit anyway: moving them to the CPU would only cost time
            self.engine.sleep(offload_weights=False)

    # ---- the run's summary and log --------------------------------------------------------------------------------

    def summary_fields(self) -> dict:
        reference = {"reference_shards": self.reference.shards} if self.reference is not None else {}
        return {"num_train_problems": len(self.problems), "num_val_problems": len(self.val_problems),
                "optimizer_steps_per_step": self.optimizer_steps_per_step, **reference}  # fmt: skip

    def finish(self, summary: dict) -> None:
        super().finish(summary)
        if self.config.policy.generation.backend == "vllm":
            self.engine.close()  # the run is over: vLLM's teardown may take the process group with it now

    def checkpoint_extras(self) -> dict:
        return {"model_name": self.config.policy.model_name}

    def progress_line(self, row: dict) -> str:
        return (
            f"step {row['step']}/{self.total_steps} reward {fmt(row.get('train/reward'))} "
            f"loss {fmt(row.get('train/loss'))} mult_prob_error {fmt(row.get('train/token_mult_prob_error'))} "
            f"gen_len {fmt(row.get('train/generation_lengths'))} val {fmt(row.get('validation/accuracy'))}"
        )


def _reduce_metrics(results: list[dict], names, reduce):
    """1D float64 tensor: for each name, `reduce` over the micro-batches' values (0-dim tensors or floats)."""
    import torch

    return torch.stack([reduce(torch.stack([torch.as_tensor(r[name], dtype=torch.float64) for r in results]))
                        for name in names])  # fmt: skip


def run(config: GRPOConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    return run_trainer(GRPOTrainer, config)


main = main_for(GRPOTrainer, GRPOConfig)
