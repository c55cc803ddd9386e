"""What `ns convert` can do, shared by the launcher (checks before submission) and the in-job program; torch-free."""

from __future__ import annotations

from skills_cli.common.errors import UserError

# (from, to) handled by python -m skills_cli.training.convert; hf -> trtllm runs TensorRT-LLM's own tools
DIRECTIONS = (("hf", "megatron"), ("megatron", "hf"), ("checkpoint", "hf"))
TRTLLM_DIRECTIONS = (("hf", "trtllm"),)
SOURCES = ("hf", "megatron", "checkpoint")
TARGETS = ("hf", "megatron", "trtllm")
MODEL_TYPES = {"llama": ("llama",), "qwen": ("qwen2",)}  # --model_type -> HF config model_type
DTYPES = ("auto", "bfloat16", "float16", "float32")


def check_direction(convert_from: str, convert_to: str) -> None:
    if (convert_from, convert_to) not in DIRECTIONS + TRTLLM_DIRECTIONS:
        supported = ", ".join(f"{a}->{b}" for a, b in DIRECTIONS + TRTLLM_DIRECTIONS)
        raise UserError(f"converting {convert_from}->{convert_to} is not supported; supported: {supported}")


def check_model_type(model_type: str | None, hf_model_type: str | None, where: str) -> None:
    """--model_type llama|qwen must agree with the model's config (a check: the config decides the mapping)."""
    if model_type is None:
        return
    if model_type not in MODEL_TYPES:
        raise UserError(f"--model_type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if hf_model_type is not None and hf_model_type not in MODEL_TYPES[model_type]:
        raise UserError(
            f"--model_type {model_type} does not match {where}: its config says model_type={hf_model_type!r}"
        )


def model_type_of(hf_model_type: str | None) -> str | None:
    """The --model_type for an HF config's model_type (None: not one we convert)."""
    return next((name for name, types in MODEL_TYPES.items() if hf_model_type in types), None)
