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
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, ExecutorKind, load_cluster_config
from skills_cli.pipeline.experiment import Submission, ensure_log_dir_is_absolute, submit_jobs, submit_options
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.options import (
    PARTITION,
    SUBMIT_OPTIONS,
    TIME,
    CommandSpec,
    Option,
    WrappedArguments,
    wrap_arguments,
)
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

# TensorRT-LLM's checkpoint converters in its release container, per --model_type
TRTLLM_EXAMPLES = "/app/tensorrt_llm/examples/models/core"
TRTLLM_FAMILIES = {"llama": "llama", "qwen": "qwen"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")  # fmt: skip

CONVERT_OPTIONS = (
    Option(
        "input_model",
        str,
        ...,
        "The model to convert: an HF folder, a megatron checkpoint, or a training "
        "checkpoint (checkpoints/step_N, or checkpoints/ for the newest).",
    ),  # fmt: skip
    Option("output_model", str, ..., "Where the converted model goes."),
    Option("convert_from", str, ..., "Input format.", choices=SOURCES),
    Option("convert_to", str, ..., "Output format.", choices=TARGETS),
    Option(
        "model_type",
        str | None,
        None,
        "Model family (default: read from the input's config.json; needed for trtllm when that is not readable here).",
        choices=tuple(MODEL_TYPES),
    ),  # fmt: skip
    Option(
        "hf_model",
        str | None,
        None,
        "megatron/checkpoint -> hf: the HF model the weights came from (default: the one the checkpoint names).",
    ),  # fmt: skip
    Option("dtype", str, "auto", "Output weights dtype (auto: as stored).", choices=DTYPES),
    Option("max_batch_size", int, 128, "trtllm: the engine's maximum batch size."),
    Option("max_input_len", int, 4096, "trtllm: the engine's maximum prompt length."),
    Option("max_seq_len", int, 8192, "trtllm: the engine's maximum prompt + output length."),
    Option("build_args", str, "", "trtllm: more trtllm-build arguments, as one string."),
    Option(
        "trtllm_examples_dir",
        str,
        TRTLLM_EXAMPLES,
        "trtllm: where the container keeps TensorRT-LLM's <family>/convert_checkpoint.py.",
    ),  # fmt: skip
    Option("num_nodes", int, 1, "Nodes (conversion runs on one).", panel="Resources"),
    Option(
        "num_gpus",
        int,
        0,
        "GPUs (0: one CPU process; several: tensor parallelism while converting; trtllm: the engines' TP size).",
        panel="Resources",
    ),  # fmt: skip
    Option(
        "container",
        str | None,
        None,
        "Container role (default: trtllm for --convert_to trtllm, else main).",
        panel="Resources",
    ),  # fmt: skip
    *SUBMIT_OPTIONS,
    PARTITION,
    TIME,
)


def read_config(values: dict) -> dict | None:
    """The input's HF config.json when this machine can read it (an HF folder, or a megatron checkpoint's copy)."""
    path = Path(values["input_model"])
    for candidate in (path / "config.json", path / "hf_config" / "config.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def check_input(values: dict, cluster: ClusterConfig) -> None:
    """On bare local jobs the input is on this machine: it must exist and be what --convert_from says (unless an
    upstream job of --run_after is what makes it)."""
    if cluster.executor is not ExecutorKind.NONE or values.get("run_after"):
        return
    path, source = Path(values["input_model"]), values["convert_from"]
    expected = {"hf": ("config.json",), "megatron": ("metadata.json",), "checkpoint": ("trainer_state.json",)}[source]
    if not path.exists():
        raise UserError(f"--input_model {path} does not exist")
    if source == "checkpoint" and not (path / expected[0]).is_file() and any(path.glob("step_*/trainer_state.json")):
        return  # a checkpoints directory: the newest step is converted
    if not any((path / name).is_file() for name in expected):
        raise UserError(f"--input_model {path} is not a{'n' if source == 'hf' else ''} {source} model "
                        f"({expected[0]} missing)")  # fmt: skip


def check_values(values: dict, cluster: ClusterConfig) -> str | None:
    """Everything checkable before submission; returns the model type (given or read from the config)."""
    check_direction(values["convert_from"], values["convert_to"])
    if values["input_model"].rstrip("/") == values["output_model"].rstrip("/"):
        raise UserError("--output_model must differ from --input_model")
    if values["num_nodes"] != 1:
        raise UserError("ns convert runs on one node: use --num_nodes 1 (and --num_gpus for tensor parallelism)")
    if values["num_gpus"] < 0 or (values["convert_to"] == "trtllm" and values["num_gpus"] < 1):
        raise UserError("--convert_to trtllm builds engines on GPUs: --num_gpus must be >= 1")
    check_input(values, cluster)
    config = read_config(values)
    model_type = values["model_type"]
    if config is not None:
        check_model_type(model_type, config.get("model_type"), values["input_model"])
        model_type = model_type or model_type_of(config.get("model_type"))
        if model_type is None:
            raise UserError(f"{values['input_model']}: model_type={config.get('model_type')!r} is not one ns convert "
                            f"supports ({', '.join(MODEL_TYPES)})")  # fmt: skip
        check_heads(config, max(values["num_gpus"], 1))
    if values["convert_to"] == "trtllm" and model_type is None:
        raise UserError("--convert_to trtllm needs --model_type (llama or qwen): the input's config.json is not "
                        "readable here")  # fmt: skip
    return model_type


def check_heads(config: dict, tp: int) -> None:
    for key in ("num_attention_heads", "num_key_value_heads"):
        heads = config.get(key)
        if heads and heads % tp:
            raise UserError(f"--num_gpus {tp} (tensor parallelism) does not divide {key}={heads} of the model")


def convert_script(values: dict, cluster: ClusterConfig, model_type: str | None) -> str:
    """hf/megatron/checkpoint conversions: our in-job program (under torchrun with several GPUs)."""
    gpus = values["num_gpus"]
    launcher = [cluster.python_executable]
    if gpus > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"]
    argv = [*launcher, "-m", "skills_cli.training.convert", "--input_model", values["input_model"],
            "--output_model", values["output_model"], "--convert_from", values["convert_from"],
            "--convert_to", values["convert_to"], "--dtype", values["dtype"]]  # fmt: skip
    if model_type:
        argv += ["--model_type", model_type]
    if values["hf_model"]:
        argv += ["--hf_model", values["hf_model"]]
    return quote_argv(argv)


def trtllm_script(values: dict, extra: list[str], model_type: str) -> str:
    """convert_checkpoint.py (TP over the GPUs) -> trtllm-build -> tokenizer files; the intermediate TensorRT-LLM
    checkpoint is removed once the engines are built."""
    source, output, gpus = values["input_model"], values["output_model"], values["num_gpus"]
    staging = f"{output.rstrip('/')}.trtllm_checkpoint"
    converter = f"{values['trtllm_examples_dir'].rstrip('/')}/{TRTLLM_FAMILIES[model_type]}/convert_checkpoint.py"
    dtype = values["dtype"]
    convert = ["python3", converter, "--model_dir", source, "--output_dir", staging, "--dtype", dtype,
               "--tp_size", str(gpus), "--pp_size", "1"]  # fmt: skip
    build = ["trtllm-build", "--checkpoint_dir", staging, "--output_dir", output, "--gemm_plugin", "auto",
             "--max_batch_size", str(values["max_batch_size"]), "--max_input_len", str(values["max_input_len"]),
             "--max_seq_len", str(values["max_seq_len"]), *extra]  # fmt: skip
    # the engines' folder gets the tokenizer (trtllm-serve reads it from there), not the HF config.json
    copy = (f"for f in {' '.join(TOKENIZER_FILES)}; do if [ -f {quote(source)}/\"$f\" ]; then "
            f"cp {quote(source)}/\"$f\" {quote(output)}/; fi; done")  # fmt: skip
    lines = ["set -euo pipefail", quote_argv(convert), quote_argv(build), copy, quote_argv(["rm", "-rf", staging])]
    return "\n".join(lines)


def convert_impl(_extra: WrappedArguments, **values) -> Submission:
    ensure_log_dir_is_absolute(values["log_dir"])
    cluster = load_cluster_config(values["cluster"], values["config_dir"])
    model_type = check_values(values, cluster)
    trtllm = values["convert_to"] == "trtllm"
    if values["build_args"] and not trtllm:
        raise UserError("--build_args are trtllm-build's: they apply to --convert_to trtllm only")
    build_args = wrap_arguments(values["build_args"]).args
    script = trtllm_script(values, build_args, model_type) if trtllm else convert_script(values, cluster, model_type)
    container = values["container"] or ("trtllm" if trtllm else "main")
    command = Command(argv=("bash", "-c", script), container=container, gpus=values["num_gpus"])
    job = Job(name="convert", commands=(command,),
              resources=Resources(nodes=1, gpus_per_node=values["num_gpus"], time_limit=values["time"],
                                  partition=values["partition"]))  # fmt: skip
    from skills_cli.pipeline.commands.run_cmd import log_change

    return submit_jobs([job], cluster, submit_options(values, default_expname="convert"), on_change=log_change)


CONVERT = CommandSpec(
    name="convert",
    help="Convert a model: hf <-> megatron (megatron-core distributed checkpoint), a training checkpoint -> hf, "
    "hf -> trtllm (TensorRT-LLM engines).",
    options=CONVERT_OPTIONS,
    impl=convert_impl,
)
