"""Model conversion, the in-job program of `ns convert`: HF <-> megatron-core distributed checkpoints, and our
training checkpoints (`checkpoints/step_N` of either backend) -> HF.

    python -m skills_cli.training.convert --input_model /models/qwen --output_model /models/qwen-mcore \\
        --convert_from hf --convert_to megatron [--model_type qwen]
    torchrun --nproc_per_node 8 -m skills_cli.training.convert ...   # hf -> megatron with TP=8 (big models)
    python -m skills_cli.training.convert --input_model RUN/checkpoints/step_800 --output_model RUN/step800-hf \\
        --convert_from checkpoint --convert_to hf

hf -> megatron builds the megatron GPTModel (`training/megatron`), loads the HF weights into it and writes a
megatron distributed checkpoint (torch_dist, reshardable to any TP/PP), plus `hf_config/` (the HF config,
generation config and tokenizer files) so that the checkpoint names its architecture. megatron -> hf needs no
model: it reads the checkpoint's model tensors (full, in one process) and maps them back, so it also reads the
`megatron/` part of a megatron-backend training checkpoint. A dtensor-backend training checkpoint is read
with torch.distributed.checkpoint the same way (`checkpoint.load_model_weights`). HF output is written like
the trainer's final export (`export.save_hf_model`). `--dtype auto` keeps the dtype the weights are stored in.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.process import die_with_launcher
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.export import copy_tokenizer, empty_state_dict, save_hf_model
from skills_cli.training.components.model import check_model_path
from skills_cli.training.convert_spec import DIRECTIONS, DTYPES, MODEL_TYPES, check_direction, check_model_type
from skills_cli.training.megatron import bridge, dist_ckpt

log = logging.getLogger("skills_cli.convert")

MODEL_KEYS = ("embedding.", "decoder.", "output_layer.")  # model tensors in a megatron checkpoint (not optimizer.*)


def _dtype(name: str, fallback):
    import torch

    return fallback if name == "auto" else getattr(torch, name)


# ---- hf -> megatron ---------------------------------------------------------------------------------------------


def hf_to_megatron(input_model: str, output_model: str, model_type: str | None = None, dtype: str = "auto") -> Path:
    """Write `input_model` as a megatron distributed checkpoint; with several processes (torchrun), the model is
    split over them with tensor parallelism while converting. Collective."""
    import torch.distributed as dist
    from transformers import AutoConfig, AutoModelForCausalLM

    from skills_cli.training.components.parallel import distributed_session
    from skills_cli.training.megatron import model as mcore

    check_model_path(input_model, "--input_model")
    hf_config = AutoConfig.from_pretrained(input_model)
    check_model_type(model_type, hf_config.model_type, input_model)
    shape = bridge.model_shape(hf_config)
    output = Path(output_model)
    with distributed_session() as session:
        tp = session.world_size
        bridge.check_tensor_parallel(shape, tp)
        hf = AutoModelForCausalLM.from_pretrained(input_model, dtype="auto" if dtype == "auto" else _dtype(dtype, None))
        weights_dtype = next(hf.parameters()).dtype
        mcore.initialize_parallel(tp, 1, seed=0, device=session.device)
        te = session.device.type == "cuda" and mcore.transformer_engine_available()
        config = mcore.transformer_config(shape, tp, 1, weights_dtype, session.device, activation_checkpointing=False)
        gpt = mcore.build_gpt_model(shape, config, te)
        rows = bridge.padded_vocab_size(shape.vocab_size, tp)
        mcore.load_megatron_weights(gpt, bridge.hf_to_megatron(hf.state_dict(), shape, te=te, vocab_rows=rows),
                                    shape.tie_word_embeddings)  # fmt: skip
        del hf
        if session.is_main:
            shutil.rmtree(output, ignore_errors=True)
        dist.barrier()
        dist_ckpt.save(output, gpt)
        if session.is_main:
            write_hf_config(input_model, output / dist_ckpt.HF_CONFIG_DIR)
        dist.barrier()
    log.info("wrote megatron checkpoint %s (%s, TP=%d when written; loads under any TP/PP)", output, weights_dtype, tp)
    return output


def write_hf_config(hf_dir: str, output: Path) -> None:
    """The files that say what the weights are: config, generation config, tokenizer (copied verbatim)."""
    output.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        if (Path(hf_dir) / name).is_file():
            shutil.copy2(Path(hf_dir) / name, output / name)
    copy_tokenizer(hf_dir, output)


# ---- megatron -> hf ---------------------------------------------------------------------------------------------


def read_megatron_model(directory: str | Path) -> dict:
    """Full model tensors of a megatron distributed checkpoint by megatron name with global layer numbers, read in
    this process (no process group, no model). Megatron stores the layers stacked (layer index first) and names
    the norms as the TransformerEngine spec does, whichever spec wrote them."""
    import warnings

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory))
    metadata = reader.read_metadata()
    state = {key: torch.empty(meta.size, dtype=meta.properties.dtype)
             for key, meta in metadata.state_dict_metadata.items()
             if key.startswith(MODEL_KEYS) and isinstance(meta, TensorStorageMetadata)}  # fmt: skip
    if not state:
        raise UserError(f"{directory}: no model tensors in this megatron checkpoint")
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, storage_reader=reader, no_dist=True)
    weights = {}
    for key, tensor in state.items():
        if key.startswith("decoder.layers."):
            rest = key[len("decoder.layers.") :]
            weights.update({f"decoder.layers.{i}.{rest}": layer for i, layer in enumerate(tensor.unbind(0))})
        else:
            weights[key] = tensor
    return weights


def megatron_to_hf(input_model: str, output_model: str, hf_model: str | None = None, model_type: str | None = None,
                   dtype: str = "auto") -> Path:  # fmt: skip
    """An HF directory from a megatron checkpoint; the architecture comes from its `hf_config/` or `hf_model`."""
    directory = Path(input_model)
    if not dist_ckpt.is_megatron_checkpoint(directory):
        raise UserError(f"--input_model {directory}: not a megatron distributed checkpoint (no metadata.json)")
    base = hf_model or str(directory / dist_ckpt.HF_CONFIG_DIR)
    check_model_path(base, "--hf_model (the HF model the checkpoint was made from)")
    return _write_hf(read_megatron_model(directory), base, output_model, base, model_type, dtype)


def _write_hf(megatron_weights: dict, base: str, output_model: str, tokenizer_dir: str, model_type: str | None,
              dtype: str) -> Path:  # fmt: skip
    from transformers import AutoConfig

    hf_config = AutoConfig.from_pretrained(base)
    check_model_type(model_type, hf_config.model_type, base)
    shape = bridge.model_shape(hf_config)
    state = bridge.megatron_to_hf(megatron_weights, shape, te=True)
    stored = next(iter(state.values())).dtype
    output = save_hf_model(state, base, output_model, _dtype(dtype, stored), tokenizer_dir=tokenizer_dir)
    log.info("wrote HF model %s", output)
    return output


# ---- training checkpoint -> hf ------------------------------------------------------------------------------------


def resolve_step_dir(path: str | Path) -> Path:
    """A `step_N` directory as given, or the newest complete one of a checkpoints directory."""
    path = Path(path)
    if (path / ckpt.STATE_FILE).is_file():
        return path
    latest = ckpt.latest_checkpoint(path)
    if latest is None:
        raise UserError(f"--input_model {path}: not a training checkpoint (no {ckpt.STATE_FILE}) and no complete "
                        f"step_N checkpoint in it")  # fmt: skip
    return latest


def checkpoint_to_hf(input_model: str, output_model: str, hf_model: str | None = None, model_type: str | None = None,
                     dtype: str = "auto") -> Path:  # fmt: skip
    """The model weights of a training checkpoint (dtensor or megatron backend) as an HF directory."""
    step_dir = resolve_step_dir(input_model)
    state = ckpt.read_trainer_state(step_dir)
    base = hf_model or state["model_name"]
    check_model_path(base, "--hf_model (the model the run started from)")
    tokenizer = state.get("tokenizer") or base
    from transformers import AutoConfig

    check_model_type(model_type, AutoConfig.from_pretrained(base).model_type, base)
    weights = training_checkpoint_weights(step_dir, state, base)
    stored = next(iter(weights.values())).dtype
    output = save_hf_model(weights, base, output_model, _dtype(dtype, stored), tokenizer_dir=tokenizer)
    log.info("wrote HF model %s", output)
    return output


def training_checkpoint_weights(step_dir: Path, state: dict, base: str) -> dict:
    """The model weights of a training checkpoint as full CPU tensors with HF names, for either backend: the
    dtensor backend's DCP shards, or the megatron backend's distributed checkpoint (its model copy: bf16 when
    it trained in bf16, the fp32 master weights living in the optimizer's buckets)."""
    if state.get("backend", "dtensor") == "megatron":
        from transformers import AutoConfig

        shape = bridge.model_shape(AutoConfig.from_pretrained(base))
        return bridge.megatron_to_hf(read_megatron_model(step_dir / "megatron"), shape, te=True)
    return ckpt.load_model_weights(step_dir, empty_state_dict(base))


# ---- the program --------------------------------------------------------------------------------------------------


def convert(input_model: str, output_model: str, convert_from: str, convert_to: str, model_type: str | None = None,
            hf_model: str | None = None, dtype: str = "auto") -> Path:  # fmt: skip
    check_direction(convert_from, convert_to)
    if (convert_from, convert_to) not in DIRECTIONS:
        raise UserError(
            f"{convert_from}->{convert_to} runs TensorRT-LLM's tools (ns convert renders them), not this program"
        )
    if Path(input_model).resolve() == Path(output_model).resolve():
        raise UserError("--output_model must differ from --input_model")
    if convert_from == "hf":
        return hf_to_megatron(input_model, output_model, model_type, dtype)
    if convert_from == "megatron":
        return megatron_to_hf(input_model, output_model, hf_model, model_type, dtype)
    return checkpoint_to_hf(input_model, output_model, hf_model, model_type, dtype)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m skills_cli.training.convert", description=__doc__.splitlines()[0])
    parser.add_argument("--input_model", required=True)
    parser.add_argument("--output_model", required=True)
    parser.add_argument("--convert_from", required=True, choices=("hf", "megatron", "checkpoint"))
    parser.add_argument("--convert_to", required=True, choices=("hf", "megatron"))
    parser.add_argument("--model_type", choices=tuple(MODEL_TYPES), default=None,
                        help="checked against the model's config")  # fmt: skip
    parser.add_argument("--hf_model", default=None,
                        help="the HF model a megatron/training checkpoint was made from (default: the one it names)")  # fmt: skip
    parser.add_argument("--dtype", choices=DTYPES, default="auto")
    return parser.parse_args(argv)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    die_with_launcher()  # under torchrun (several GPUs) workers must die with it
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    output = convert(args.input_model, args.output_model, args.convert_from, args.convert_to, args.model_type,
                     args.hf_model, args.dtype)  # fmt: skip
    print(json.dumps({"output_model": str(output)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
