"""Average the model weights of several training checkpoints into one HF model (checkpoint averaging).

    python -m skills_cli.training.average_checkpoints RUN/checkpoints/step_800 RUN/checkpoints/step_1000 \\
        --output_dir RUN/averaged [--model BASE_MODEL] [--dtype bfloat16]
    python -m skills_cli.training.average_checkpoints RUN/checkpoints --last 3 --output_dir RUN/averaged

Runs in one process without GPUs: each checkpoint (the dtensor backend's sharded DCP files or the megatron
backend's distributed checkpoint) is read into full CPU tensors with HF names (both formats reshard on load),
summed in float32, divided by their number, and written like the trainer's final export. All
checkpoints must come from the same starting model (same fingerprint). The architecture and tokenizer come
from the model the run started from (stored in each checkpoint), or `--model`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.training.components.checkpoint import STATE_FILE, read_trainer_state, step_checkpoints
from skills_cli.training.components.export import empty_state_dict, save_hf_model  # noqa: F401  (empty_state_dict: re-exported)
from skills_cli.training.components.model import check_model_path
from skills_cli.training.convert import training_checkpoint_weights


def resolve_checkpoints(paths: list[str], last: int | None) -> list[Path]:
    """Step directories as given, or the newest `last` of a checkpoint directory."""
    if last is not None:
        if len(paths) != 1:
            raise UserError("--last takes one checkpoint directory")
        found = [path for _, path in step_checkpoints(paths[0])][-last:]
        if len(found) < last:
            raise UserError(f"{paths[0]} has {len(found)} complete checkpoints, fewer than --last {last}")
        return found
    resolved = [Path(p) for p in paths]
    for path in resolved:
        if not (path / STATE_FILE).is_file():
            raise UserError(f"{path} is not a complete training checkpoint (no {STATE_FILE})")
    return resolved


def average_checkpoints(paths: list[Path], output_dir: str | Path, base_model: str | None = None,
                        dtype: str = "float32") -> Path:  # fmt: skip
    """Write the mean of the checkpoints' model weights as an HF directory; returns it."""
    import torch

    if not paths:
        raise UserError("no checkpoints to average")
    states = [read_trainer_state(path) for path in paths]
    if len({state["fingerprint"] for state in states}) > 1:
        raise UserError("the checkpoints were trained from different models; only checkpoints of one run "
                        "(or runs from the same starting model) can be averaged")  # fmt: skip
    base = base_model or states[0]["model_name"]
    check_model_path(base, "--model (the model the run started from)")
    total = None
    for path, state in zip(paths, states, strict=True):
        weights = {name: tensor.float() for name, tensor in training_checkpoint_weights(path, state, base).items()}
        total = weights if total is None else {name: total[name] + tensor for name, tensor in weights.items()}
    average = {name: tensor / len(paths) for name, tensor in total.items()}
    tokenizer = states[0].get("tokenizer") if base_model is None else base_model
    return save_hf_model(average, base, output_dir, getattr(torch, dtype), tokenizer_dir=tokenizer or base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skills_cli.training.average_checkpoints",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("checkpoints", nargs="+", help="step_N directories, or one checkpoint directory with --last")
    parser.add_argument("--last", type=int, default=None, help="average the newest N checkpoints of the directory")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--model", default=None, help="the base model (default: the one stored in the checkpoints)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    args = parser.parse_args(argv)
    try:
        paths = resolve_checkpoints(args.checkpoints, args.last)
        output = average_checkpoints(paths, args.output_dir, args.model, args.dtype)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"averaged {len(paths)} checkpoints into {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
