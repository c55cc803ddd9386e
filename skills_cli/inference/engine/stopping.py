"""When a generation ends, for every engine: stop token ids (the model's EOS ids and the request's own) and
stop strings found in the decoded text. Pure Python: the tokenizer is passed in, nothing imports torch.

A sequence ends at the first of: a stop token (kept as the last generated id, finish reason "stop"), a stop
string completed by the newest token (the text is cut before it, "stop"), or its token limit ("length");
the scheduler applies that rule to a whole batch at once (Scheduler._finish_done).
"""

from __future__ import annotations

from skills_cli.inference.engine.params import FINISH_STOP, SamplingParams

# A stop string of L characters spans at most 4L bytes, so at most 4L byte-level tokens; the slack covers a
# token that starts mid-character. Decoding only this tail keeps the check O(1) per step.
TOKENS_PER_STOP_CHARACTER = 4
TAIL_SLACK_TOKENS = 4


def eos_token_ids(model, tokenizer=None) -> frozenset[int]:
    """Every id that ends a generation: generation_config's (often a list), the config's and the tokenizer's."""
    ids: set[int] = set()
    values = [getattr(getattr(model, "generation_config", None), "eos_token_id", None), model.config.eos_token_id]
    if tokenizer is not None:
        values.append(tokenizer.eos_token_id)
    for value in values:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value if isinstance(v, int))
    return frozenset(ids)


def stop_ids(params: SamplingParams, eos_token_ids) -> frozenset[int]:
    """The token ids that end a sequence: the model's EOS ids (unless ignore_eos) and the extra stop ids."""
    ids = set(params.stop_token_ids)
    if not params.ignore_eos:
        ids.update(eos_token_ids)
    return frozenset(ids)


def text_before_stop(tokenizer, token_ids: list[int], stops: tuple[str, ...]) -> str | None:
    """The text before the stop string the newest token completed, or None when it completed none.

    Only the tail is decoded each step; the full text only on a hit. No earlier step found a stop, so the
    first occurrence in the full text is the one just completed.
    """
    window = TOKENS_PER_STOP_CHARACTER * max(map(len, stops)) + TAIL_SLACK_TOKENS
    tail = tokenizer.decode(token_ids[-window:], skip_special_tokens=True)
    if not any(stop in tail for stop in stops):
        return None
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    hits = [found for stop in stops if (found := text.find(stop)) >= 0]
    # a tail that starts mid-character can decode differently from the full text
    return text[: min(hits)] if hits else None


def final_text(tokenizer, token_ids: list[int], finish_reason: str, stops: frozenset[int]) -> str:
    """The answer text of a sequence that ended without a stop string: a final stop token is not part of it."""
    ended_by_token = finish_reason == FINISH_STOP and token_ids and token_ids[-1] in stops
    return tokenizer.decode(token_ids[:-1] if ended_by_token else token_ids, skip_special_tokens=True)
