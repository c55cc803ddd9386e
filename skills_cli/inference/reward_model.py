"""A reward model in process: scores of (prompt, response) pairs, and `reward_model_score` for result files.

    python -m skills_cli.inference.reward_model --model /runs/rm/final_hf \\
        [--prompt_config generic/math] [--data_dir DIR] [--batch_size 16] [--device auto] [--dtype auto] \\
        DIR/output-rs0.jsonl DIR/output-rs1.jsonl

The model is an HF `AutoModelForSequenceClassification` folder with one score (what `ns train rm` exports), and
it scores a sequence where HF does: at its last token that is not the pad id. A pair is rendered exactly as the
reward-model trainer renders the sides of its preference pairs (`training/components/preferences.py`, SFT's
tokenization): the prompt's messages and the assistant's generation prompt, then the response as the assistant's
reply with the chat template's end of turn, each piece tokenized on its own. A response that did not end (cut by
the generation budget) is scored without the end of turn: the model sees the answer as unfinished.

The command adds `reward_model_score` to every row of each file (the row's `generation`, its prompt built from the
row by the prompt config the generation used), rewrites the file atomically, and leaves a file whose rows are
all scored alone (`--rescore` redoes it); interrupted, it left every file either as it was or fully scored, so a
rerun scores only what is missing. `ns eval --reward_model PATH` runs it after the grading.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.prompts.conversation import assistant_header, conversation_segments, extended_render, render

log = logging.getLogger("skills_cli.reward_model")

SCORE_KEY = "reward_model_score"
DTYPES = ("auto", "float32", "bfloat16", "float16")
WHERE = "the reward model's prompt"  # names the conversation in a chat-template error


# ---- what a reward-model folder must be (torch-free: trainers check before loading) --------------------------------


def architecture_problem(config: dict, path: str) -> str | None:
    """Why the model of this config.json is not a reward model (None when it is one)."""
    architectures = config.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        kind = architectures[0] if architectures else "a model without an architecture"
        return (f"{path} is {kind}, not a reward model: a sequence-classification model with one score (what "
                "`ns train rm` exports as final_hf)")  # fmt: skip
    labels = len(config.get("id2label") or {"0": "LABEL_0"})
    if labels != 1:
        return f"{path} has {labels} labels; a reward model has one score"
    return None


def reward_model_problem(path: str) -> str | None:
    """Why `path` holds no usable reward model (None when it does), from its config.json alone."""
    folder = Path(path)
    if not folder.is_dir():
        return f"no model folder at {path}"
    try:
        config = json.loads((folder / "config.json").read_text())
    except OSError:
        return f"{path} has no config.json (not an HF model folder)"
    except ValueError:
        return f"{path}/config.json is not valid JSON"
    return architecture_problem(config, path)


# ---- pairs -> token ids ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One response to score: the prompt as chat messages, the response text, and whether it ended."""

    prompt: list[dict]
    response: str
    ended: bool = True


def text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []


class RewardModel:
    """A loaded reward model: `score(pairs)` -> one float per pair (batched, no gradients)."""

    def __init__(self, model, tokenizer, batch_size: int = 16):
        self.model, self.tokenizer, self.batch_size = model.eval().requires_grad_(False), tokenizer, batch_size
        self.pad_id = model.config.pad_token_id
        # the samples of one prompt share its tokens: (ids, rendered text) per prompt
        self._prompts: dict[str, tuple[list[int], str]] = {}

    @classmethod
    def from_pretrained(cls, path: str, device: str = "auto", dtype: str = "auto", batch_size: int = 16):
        """The reward model of `path` on `device` (auto: the GPU when there is one) in `dtype` (auto: bfloat16 on
        a GPU, float32 on a CPU); a folder that is not a reward model is a UserError before anything loads."""
        problem = reward_model_problem(path)
        if problem:
            raise UserError(problem)
        from skills_cli.inference.model_files import tokenizer_problem

        if tokenizer_problem(path):
            raise UserError(f"reward model {path}: {tokenizer_problem(path)}")
        from transformers import AutoModelForSequenceClassification

        from skills_cli.inference.model_loading import load_tokenizer

        where, torch_dtype = choose_device(device, dtype)
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch_dtype)
        return cls(model.to(where), load_tokenizer(path), batch_size)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def token_ids(self, pair: Pair) -> list[int]:
        """The pair as the trainer tokenizes a preference side: the prompt's pieces, then the assistant turn
        (generation prompt, reply and end of turn; an unfinished reply without the end of turn)."""
        key = json.dumps(pair.prompt, sort_keys=True)
        if key not in self._prompts:
            pieces = [text for text, _ in conversation_segments(self.tokenizer, pair.prompt, WHERE)]
            self._prompts[key] = ([i for piece in pieces for i in text_ids(self.tokenizer, piece)], "".join(pieces))
        prefix, done = self._prompts[key]
        turn = [*pair.prompt, {"role": "assistant", "content": pair.response}]
        full = extended_render(self.tokenizer, turn, done, WHERE)
        header = assistant_header(self.tokenizer, turn, len(pair.prompt), done, full)
        if not pair.ended:
            opening = header if header is not None else render(self.tokenizer, pair.prompt, add_generation_prompt=True)
            pieces = [opening[len(done) :], pair.response]
        else:
            pieces = [full[len(done) :]] if header is None else [header[len(done) :], full[len(header) :]]
        return prefix + [i for piece in pieces for i in text_ids(self.tokenizer, piece)]

    def score(self, pairs: list[Pair]) -> list[float]:
        return self.score_ids([self.token_ids(pair) for pair in pairs])

    def score_ids(self, sequences: list[list[int]]) -> list[float]:
        """Scores of token sequences, in batches of similar lengths (right-padded; HF reads each at its last
        non-pad token). A model without a pad id scores one sequence at a time: HF then reads the last token."""
        import torch

        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        size = self.batch_size if self.pad_id is not None else 1
        scores = [0.0] * len(sequences)
        with torch.no_grad():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                input_ids, mask = padded([sequences[i] for i in chunk], self.pad_id)
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                for i, value in zip(chunk, logits[:, 0].float().cpu().tolist(), strict=True):
                    scores[i] = value
        return scores


def padded(sequences: list[list[int]], pad_id: int | None):
    """(input_ids, attention_mask) of the sequences right-padded to the longest."""
    import torch

    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_id if pad_id is not None else 0, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return input_ids, mask


def choose_device(device: str, dtype: str):
    """(torch device, torch dtype) for `device` (auto, cpu, cuda, cuda:N) and `dtype` (auto or a name)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no GPU is visible here")
    if dtype not in DTYPES:
        raise UserError(f"dtype {dtype!r}: one of {', '.join(DTYPES)}")
    if dtype == "auto":
        dtype = "bfloat16" if where.type == "cuda" else "float32"
    return where, getattr(torch, dtype)


# ---- result files -------------------------------------------------------------------------------------------------


def row_prompts(rows: list[dict], prompt_config: str, data_dir: str | None) -> list[list[dict]]:
    """Each row's prompt as the generation built it: the prompt config applied to the row."""
    from skills_cli.prompts.prompt_config import load_prompt_config

    config = load_prompt_config(prompt_config, data_dir=data_dir)
    return [config.messages(row, number) for number, row in enumerate(rows, 1)]


def score_file(path: Path, model: RewardModel, args: argparse.Namespace) -> str:
    """Add `reward_model_score` to the rows of one result file that lack it (all with --rescore); atomic."""
    from skills_cli.common.jsonl import read_jsonl, write_jsonl_atomic

    rows = read_jsonl(path)
    todo = [i for i, row in enumerate(rows) if args.rescore or SCORE_KEY not in row]
    if not todo:
        return f"{path}: already scored"
    prompts = row_prompts([rows[i] for i in todo], args.prompt_config, args.data_dir)
    pairs = [Pair(prompt, str(rows[i].get(args.generation_key) or "")) for i, prompt in zip(todo, prompts, strict=True)]
    for i, score in zip(todo, model.score(pairs), strict=True):
        rows[i] = {**rows[i], SCORE_KEY: score}
    write_jsonl_atomic(path, rows)
    return f"{path}: scored {len(todo)} of {len(rows)} rows"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="generation JSONL files, rewritten with the scores")
    parser.add_argument("--model", required=True, help="the reward model (an HF sequence-classification folder)")
    parser.add_argument("--prompt_config", default="generic/math", help="how a row becomes the prompt")
    parser.add_argument("--data_dir", default=None, help="the prepared data folder (few-shot examples)")
    parser.add_argument("--generation_key", default="generation")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto (the GPU when there is one), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=DTYPES, help="auto: bfloat16 on a GPU, float32 on a CPU")
    parser.add_argument("--rescore", action="store_true", help="score rows that already have a score again")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        raise UserError("--batch_size must be >= 1")
    return args


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    args = parse_args(argv)
    files = [Path(name) for name in args.files]
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise UserError(f"no result file {missing}")
    row_prompts([], args.prompt_config, args.data_dir)  # an unknown prompt config fails before the model loads
    model = RewardModel.from_pretrained(args.model, args.device, args.dtype, args.batch_size)
    for path in files:
        print(score_file(path, model, args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
