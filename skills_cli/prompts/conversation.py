"""A conversation rendered with a tokenizer's own chat template, in the pieces a trainer tokenizes one at a time.

Training masks (which tokens carry loss) come from rendering the conversation message by message: each message's
new text is a piece, and an assistant turn is split after its generation prompt (the header the model is given,
which carries no loss) when the template renders one. The SFT and preference trainers tokenize these pieces
(`training/components/data.tokenize_conversation`), and the reward-model scorer (`inference/reward_model.py`)
tokenizes a prompt and a response exactly as its trainer did, so both take the pieces from here. Templates whose
render of a longer conversation changes the text of a shorter one (not prefix-consistent) cannot be split so: an
error naming where.
"""

from __future__ import annotations

from skills_cli.common.errors import UserError


def render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_header(tokenizer, messages: list[dict], index: int, done: str, full: str) -> str | None:
    """The render up to and including the generation prompt of assistant turn `index`, when it sits between
    `done` and `full` (None for templates without a separable generation prompt: then the whole turn trains)."""
    try:
        header = render(tokenizer, messages[:index], add_generation_prompt=True)
    except Exception:  # some templates cannot render an empty or system-only prefix
        return None
    return header if header.startswith(done) and full.startswith(header) and len(header) < len(full) else None


def extended_render(tokenizer, messages: list[dict], done: str, where: str) -> str:
    """The render of `messages`, which must extend `done` (the render of all but the last message)."""
    full = render(tokenizer, messages)
    if not full.startswith(done):
        raise UserError(
            f"{where}: the chat template is not prefix-consistent (rendering message {len(messages) - 1} changes the "
            "text of earlier messages), so per-message loss masks cannot be derived"
        )
    return full


def conversation_segments(tokenizer, messages: list[dict], where: str) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is exactly the rendered conversation; `trained` marks an
    assistant turn's reply and end of turn."""
    segments: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        full = extended_render(tokenizer, messages[: index + 1], done, where)
        if message["role"] == "assistant":
            header = assistant_header(tokenizer, messages, index, done, full)
            if header is not None:
                segments.append((header[len(done) :], False))
                done = header
            segments.append((full[len(done) :], True))
        else:
            segments.append((full[len(done) :], False))
        done = full
    return segments
