"""GRPO data: math problems -> prompt token ids through a prompt config and the chat template; the math reward.

A row needs the problem fields its prompt config uses (`{problem}` for `generic/math`) and the expected answer
(`data.answer_key`, default `expected_answer`, the field our benchmarks and `prepare_data` write). The prompt
is the chat template rendered with the generation prompt, tokenized once without special tokens (the template
writes any BOS itself), exactly what the rollout engine continues.

The reward of a response is 1.0 when the last `\\boxed{}` answer equals the expected answer under our math
grader, else 0.0; a grader error or timeout is 0 (the grader never raises). A response cut at max_new_tokens
is 0 unless `env.math.truncated_reward=grade` (NeMo-RL's accuracy also counts truncated answers as wrong).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import iter_numbered_jsonl
from skills_cli.training.algorithms.grpo.config import EnvConfig, GRPODataConfig, MathEnvConfig

log = logging.getLogger("skills_cli.grpo")


@dataclass(frozen=True)
class Problem:
    prompt_ids: tuple[int, ...]
    expected_answer: str
    text: str  # the rendered prompt (for logs and validation tables)
    messages: tuple[dict, ...] = ()  # the prompt's chat messages (a reward model renders them with its template)


def load_problems(path: str, tokenizer, config: GRPODataConfig, max_prompt_tokens: int) -> list[Problem]:
    """The problems of a JSONL file; a row without an answer or a needed field is an error naming the row.

    Prompts longer than `max_prompt_tokens` (the sequence length minus the generation budget) are skipped and
    counted: they could not be answered in full anyway."""
    from skills_cli.prompts.conversation import render
    from skills_cli.prompts.prompt_config import load_prompt_config

    if not path:
        raise UserError("data.train_data is required (a JSONL with problems and expected answers)")
    if not Path(path).is_file():
        raise UserError(f"no data file at {path}")
    prompt = load_prompt_config(config.prompt_config)
    problems, too_long = [], 0
    for number, row in iter_numbered_jsonl(path, kind="data"):
        where = f"{path} line {number}"
        answer = row.get(config.answer_key)
        if answer is None or (isinstance(answer, str) and not answer.strip()):
            raise UserError(f"{where}: no expected answer in field {config.answer_key!r} (GRPO rewards need one; "
                            f"row fields: {', '.join(sorted(row))}; set data.answer_key to the right field)")  # fmt: skip
        values = dict(row)
        if config.problem_key != "problem" and config.problem_key in row:
            values["problem"] = row[config.problem_key]
        messages = prompt.messages(values, number)
        text = render(tokenizer, messages, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) > max_prompt_tokens:
            too_long += 1
            continue
        problems.append(Problem(tuple(ids), str(answer), text, tuple(messages)))
    if too_long:
        log.warning("%s: skipped %d prompts longer than %d tokens", path, too_long, max_prompt_tokens)
    if not problems:
        raise UserError(f"{path}: no usable problems" + (f" ({too_long} prompts too long)" if too_long else ""))
    return problems


def stop_token_ids(tokenizer, model_dir: str) -> tuple[int, ...]:
    """End-of-sequence ids: the tokenizer's eos and the model's generation config eos (int or list)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if (Path(model_dir) / "generation_config.json").is_file():
        from transformers import GenerationConfig

        eos = GenerationConfig.from_pretrained(model_dir).eos_token_id
        ids.update([eos] if isinstance(eos, int) else list(eos or []))
    if not ids:
        raise UserError(f"{model_dir}: the tokenizer and generation config define no end-of-sequence token")
    return tuple(sorted(ids))


def load_reward_function(spec: str):
    """The user's reward function from "package.module:function"; a module that fails to import is an error
    that says why (the trainer checks this before loading the model)."""
    import importlib

    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise UserError(f"env.reward_function={spec!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # any import-time failure of user code
        raise UserError(
            f"env.reward_function: cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"env.reward_function: {module_name!r} has no function {function_name!r}")
    return function


def math_reward(response: str, expected_answer: str, truncated: bool, config: MathEnvConfig) -> float:
    from skills_cli.evaluation.graders.math import grade

    if truncated and config.truncated_reward == "zero":
        return 0.0
    result = grade(response, expected_answer, timeout=config.grader_timeout)
    if config.answer_format == "boxed" and result.extraction != "boxed":
        return 0.0
    return 1.0 if result.correct else 0.0


# ---- a reward model's scores, mixed with the math reward ---------------------------------------------------------


@dataclass(frozen=True)
class StepScores:
    """What scoring a batch of rollouts found: the math grade of each (the accuracy diagnostic; the reward
    function's value with env.reward_function) and the reward model's raw score of each (None without one)."""

    graded: list[float]
    reward_model: list[float] | None = None


def check_reward_model(config: EnvConfig) -> None:
    """A reward-model folder that is missing or not a sequence-classification model fails before any load."""
    from skills_cli.inference.reward_model import reward_model_problem

    path = config.reward_model.model_name
    problem = reward_model_problem(path) if path is not None else None
    if problem:
        raise UserError(f"env.reward_model.model_name: {problem}")


def sigmoid(score: float) -> float:
    return 1.0 / (1.0 + math.exp(-score)) if score >= 0 else math.exp(score) / (1.0 + math.exp(score))


def standardized(scores: list[float], total: float, squares: float, count: float) -> list[float]:
    """Scores standardized with the sum, sum of squares and count over every rank's rollouts (std 0: centred)."""
    mean = total / count
    std = math.sqrt(max(squares / count - mean * mean, 0.0))
    return [(s - mean) / std if std > 1e-6 else s - mean for s in scores]


def mixed_rewards(scores: StepScores, config: EnvConfig, normalized_scores: list[float] | None) -> list[float]:
    """reward = env.math.weight * math + env.reward_model.weight * (normalized) score; the math term alone
    without a reward model (unchanged rewards at the default weight 1)."""
    math_terms = [config.math.weight * grade for grade in scores.graded]
    if normalized_scores is None:
        return math_terms
    weight = config.reward_model.weight
    return [term + weight * score for term, score in zip(math_terms, normalized_scores, strict=True)]
