"""`ns convert`: model format conversion as a job (NeMo-Skills' flags).

    ns convert --input_model /workspace/Qwen2.5-1.5B --output_model /workspace/qwen-mcore \
        --convert_from hf --convert_to megatron --model_type qwen --num_gpus 1
    ns convert --input_model /workspace/training/checkpoints/step_800 --output_model /workspace/step800-hf \
        --convert_from checkpoint --convert_to hf
    ns convert --input_model /workspace/Llama-3.1-8B --output_model /workspace/llama-trt --convert_from hf \
        --convert_to trtllm --num_gpus 8 --max_seq_len 8192 --build_args "--use_paged_context_fmha enable"

hf <-> megatron and checkpoint -> hf run `python -m skills_cli.training.convert` in the `main` container (with
more than one GPU under torchrun: the model is split with tensor parallelism while converting). hf -> trtllm
runs TensorRT-LLM's own tools in the `trtllm` container: the model family's `convert_checkpoint.py` (TP over
`--num_gpus`), then `trtllm-build` (plus `--build_args`), then copies the tokenizer files next to the engines.
Directions, the input's existence (bare local jobs) and the model type are checked before anything is submitted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.options import CommandSpec, QueuedSpec, WrappedArguments, option, wrap_arguments
from skills_cli.pipeline.shell import quote, quote_argv
from skills_cli.training.convert_spec import (
    DTYPES,
    MODEL_TYPES,
    SOURCES,
    TARGETS,
    check_direction,
    check_model_type,
    model_type_of,
)

log = logging.getLogger("skills_cli")

# TensorRT-LLM's checkpoint converters in its release container, per --model_type
TRTLLM_EXAMPLES = "/app/tensorrt_llm/examples/models/core"
TRTLLM_FAMILIES = {"llama": "llama", "qwen": "qwen"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ConvertSpec(QueuedSpec):
    input_model: str = option(..., "The model to convert: an HF folder, a megatron checkpoint, or a training "
                              "checkpoint (checkpoints/step_N, or checkpoints/ for the newest).")  # fmt: skip
    output_model: str = option(..., "Where the converted model goes.")
    convert_from: str = option(..., "Input format.", choices=SOURCES)
    convert_to: str = option(..., "Output format.", choices=TARGETS)
    model_type: str | None = option(None, "Model family (default: read from the input's config.json; needed for "
                                    "trtllm when that is not readable here).", choices=tuple(MODEL_TYPES))  # fmt: skip
    hf_model: str | None = option(None, "megatron/checkpoint -> hf: the HF model the weights came from (default: "
                                  "the one the checkpoint names).")  # fmt: skip
    dtype: str = option("auto", "Output weights dtype (auto: as stored).", choices=DTYPES)
    max_batch_size: int = option(128, "trtllm: the engine's maximum batch size.")
    max_input_len: int = option(4096, "trtllm: the engine's maximum prompt length.")
    max_seq_len: int = option(8192, "trtllm: the engine's maximum prompt + output length.")
    build_args: str = option("", "trtllm: more trtllm-build arguments, as one string.")
    trtllm_examples_dir: str = option(TRTLLM_EXAMPLES, "trtllm: where the container keeps TensorRT-LLM's "
                                      "<family>/convert_checkpoint.py.")  # fmt: skip
    num_nodes: int = option(1, "Nodes (conversion runs on one).", panel="Resources")
    num_gpus: int = option(0, "GPUs (0: one CPU process; several: tensor parallelism while converting; trtllm: the "
                           "engines' TP size).", panel="Resources")  # fmt: skip
    container: str | None = option(None, "Container role (default: trtllm for --convert_to trtllm, else main).",
                                   panel="Resources")  # fmt: skip

    @property
    def to_trtllm(self) -> bool:
        return self.convert_to == "trtllm"


def read_config(spec: ConvertSpec) -> dict | None:
    """The input's HF config.json when this machine can read it (an HF folder, or a megatron checkpoint's copy)."""
    path = Path(spec.input_model)
    for candidate in (path / "config.json", path / "hf_config" / "config.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def check_input(spec: ConvertSpec, cluster: ClusterConfig) -> None:
    """On bare local jobs the input is on this machine: it must exist and be what --convert_from says (unless an
    upstream job of --run_after is what makes it)."""
    if not cluster.jobs_see_local_paths or spec.run_after:
        return
    path, source = Path(spec.input_model), spec.convert_from
    expected = {"hf": ("config.json",), "megatron": ("metadata.json",), "checkpoint": ("trainer_state.json",)}[source]
    if not path.exists():
        raise UserError(f"--input_model {path} does not exist")
    if source == "checkpoint" and not (path / expected[0]).is_file() and any(path.glob("step_*/trainer_state.json")):
        return  # a checkpoints directory: the newest step is converted
    if not any((path / name).is_file() for name in expected):
        raise UserError(f"--input_model {path} is not a{'n' if source == 'hf' else ''} {source} model "
                        f"({expected[0]} missing)")  # fmt: skip


def check_options(spec: ConvertSpec) -> None:
    check_direction(spec.convert_from, spec.convert_to)
    if spec.input_model.rstrip("/") == spec.output_model.rstrip("/"):
        raise UserError("--output_model must differ from --input_model")
    if spec.num_nodes != 1:
        raise UserError("ns convert runs on one node: use --num_nodes 1 (and --num_gpus for tensor parallelism)")
    if spec.num_gpus < 0 or (spec.to_trtllm and spec.num_gpus < 1):
        raise UserError("--convert_to trtllm builds engines on GPUs: --num_gpus must be >= 1")


def checked_model_type(spec: ConvertSpec, cluster: ClusterConfig) -> str | None:
    """Everything checkable before submission; returns the model type (given or read from the config)."""
    check_options(spec)
    check_input(spec, cluster)
    config = read_config(spec)
    model_type = spec.model_type
    if config is None:
        log.info("%s: config.json is not readable here; the model type and whether --num_gpus divides the "
                 "attention heads were not checked before submission", spec.input_model)  # fmt: skip
    else:
        check_model_type(model_type, config.get("model_type"), spec.input_model)
        model_type = model_type or model_type_of(config.get("model_type"))
        if model_type is None:
            raise UserError(f"{spec.input_model}: model_type={config.get('model_type')!r} is not one ns convert "
                            f"supports ({', '.join(MODEL_TYPES)})")  # fmt: skip
        check_heads(config, max(spec.num_gpus, 1))
    if spec.to_trtllm and model_type is None:
        raise UserError("--convert_to trtllm needs --model_type (llama or qwen): the input's config.json is not "
                        "readable here")  # fmt: skip
    return model_type


def check_heads(config: dict, tp: int) -> None:
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = config.get(key)
        if heads and heads % tp:
            raise UserError(f"--num_gpus {tp} (tensor parallelism) does not divide {key}={heads} of the model")


def convert_script(spec: ConvertSpec, cluster: ClusterConfig, model_type: str | None) -> str:
    """hf/megatron/checkpoint conversions: our in-job program (under torchrun with several GPUs)."""
    launcher = [cluster.python_for(spec.container or "main")]
    if spec.num_gpus > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={spec.num_gpus}"]
    argv = [*launcher, "-m", "skills_cli.training.convert", "--input_model", spec.input_model,
            "--output_model", spec.output_model, "--convert_from", spec.convert_from,
            "--convert_to", spec.convert_to, "--dtype", spec.dtype]  # fmt: skip
    if model_type:
        argv += ["--model_type", model_type]
    if spec.hf_model:
        argv += ["--hf_model", spec.hf_model]
    return quote_argv(argv)


def trtllm_script(spec: ConvertSpec, extra: list[str], model_type: str) -> str:
    """convert_checkpoint.py (TP over the GPUs) -> trtllm-build -> tokenizer files; the intermediate TensorRT-LLM
    checkpoint is removed once the engines are built."""
    source, output = spec.input_model, spec.output_model
    staging = f"{output.rstrip('/')}.trtllm_checkpoint"
    converter = f"{spec.trtllm_examples_dir.rstrip('/')}/{TRTLLM_FAMILIES[model_type]}/convert_checkpoint.py"
    convert = ["python3", converter, "--model_dir", source, "--output_dir", staging, "--dtype", spec.dtype,
               "--tp_size", str(spec.num_gpus), "--pp_size", "1"]  # fmt: skip
    build = ["trtllm-build", "--checkpoint_dir", staging, "--output_dir", output, "--gemm_plugin", "auto",
             "--max_batch_size", str(spec.max_batch_size), "--max_input_len", str(spec.max_input_len),
             "--max_seq_len", str(spec.max_seq_len), *extra]  # fmt: skip
    # the engines' folder gets the tokenizer (trtllm-serve reads it from there), not the HF config.json
    copy = (f"for f in {' '.join(TOKENIZER_FILES)}; do if [ -f {quote(source)}/\"$f\" ]; then "
            f"cp {quote(source)}/\"$f\" {quote(output)}/; fi; done")  # fmt: skip
    lines = ["set -euo pipefail", quote_argv(convert), quote_argv(build), copy, quote_argv(["rm", "-rf", staging])]
    return "\n".join(lines)


def convert_impl(_extra: WrappedArguments, spec: ConvertSpec) -> Submission:
    ensure_log_dir_is_absolute(spec.log_dir)
    cluster = load_cluster_config(spec.cluster, spec.config_dir)
    model_type = checked_model_type(spec, cluster)
    if spec.build_args and not spec.to_trtllm:
        raise UserError("--build_args are trtllm-build's: they apply to --convert_to trtllm only")
    build_args = wrap_arguments(spec.build_args).args
    if spec.to_trtllm:
        script = trtllm_script(spec, build_args, model_type)
    else:
        script = convert_script(spec, cluster, model_type)
    container = spec.container or ("trtllm" if spec.to_trtllm else "main")
    command = Command(argv=("bash", "-c", script), container=container, gpus=spec.num_gpus)
    job = Job(name="convert", commands=(command,),
              resources=Resources(nodes=1, gpus_per_node=spec.num_gpus, time_limit=spec.time,
                                  partition=spec.partition))  # fmt: skip
    return submit_jobs([job], cluster, submit_options(spec, default_expname="convert"))  # fmt: skip


CONVERT = CommandSpec(
    name="convert",
    help="Convert a model: hf <-> megatron (megatron-core distributed checkpoint), a training checkpoint -> hf, "
    "hf -> trtllm (TensorRT-LLM engines).",
    spec_type=ConvertSpec,
    impl=convert_impl,
)
