"""HF Llama/Qwen2 <-> megatron-core GPTModel: the architecture settings and the weight mapping.

Names (HF `model.layers.{i}.` -> megatron `decoder.layers.{i}.`; the local layer spec keeps the norms as
their own modules, the TransformerEngine spec fuses them into the following linear layer):

    embed_tokens                       embedding.word_embeddings          (vocabulary rows padded, see below)
    input_layernorm                    input_layernorm | self_attention.linear_qkv.layer_norm_weight
    q_proj, k_proj, v_proj (+ biases)  self_attention.linear_qkv          (one fused matrix, grouped layout)
    o_proj                             self_attention.linear_proj
    post_attention_layernorm           pre_mlp_layernorm | mlp.linear_fc1.layer_norm_weight
    gate_proj, up_proj                 mlp.linear_fc1                     ([gate; up], SwiGLU chunks it in two)
    down_proj                          mlp.linear_fc2
    model.norm                         decoder.final_layernorm
    lm_head (untied models)            output_layer

linear_qkv's rows are grouped by key/value head: for each of the `num_query_groups` groups, its
heads/groups query heads, then its key head, then its value head (head_dim rows each). Tensor parallelism
then splits linear_qkv into contiguous row blocks (whole groups per rank), and linear_fc1 into the matching
blocks of gate and of up, which is why `shard`/`unshard` treat fc1 as two halves.

The vocabulary is padded to a multiple of 128 (of 128 x TP when TP does not divide 128) so the embedding and
the output layer split evenly over tensor-parallel ranks, and stays the same for every power-of-two TP, so a
megatron checkpoint reloads under another TP. Padded rows are zeros; logits are cut back to the real
vocabulary before any loss sees them, and the export drops the rows again.

Everything here works on full (unsharded) tensors in plain dicts and needs no process group; `model.py`
applies it to the live, sharded model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from skills_cli.common.errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
VOCAB_MULTIPLE = 128


@dataclass(frozen=True)
class ModelShape:
    """What megatron needs to know of an HF decoder to rebuild it."""

    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    ffn_hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling_factor: float | None  # Llama 3 frequency scaling
    tie_word_embeddings: bool
    qkv_bias: bool


def _rope(hf_config) -> tuple[float, float | None]:
    """(theta, llama3 factor or None) from `rope_parameters` (transformers 5) or `rope_theta`/`rope_scaling`."""
    params = dict(getattr(hf_config, "rope_parameters", None) or {})
    scaling = getattr(hf_config, "rope_scaling", None) or {}
    theta = params.get("rope_theta", getattr(hf_config, "rope_theta", 10000.0))
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type == "default":
        return float(theta), None
    source = params if params.get("rope_type") == "llama3" else scaling
    llama3_defaults = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if rope_type == "llama3" and all(float(source.get(k, v)) == v for k, v in llama3_defaults.items()):
        return float(theta), float(source["factor"])
    raise UserError(f"the megatron backend supports default and Llama 3 RoPE (low/high frequency factors 1/4, 8192 "
                    f"original positions), not rope_type={rope_type!r} with {source}")  # fmt: skip


def model_shape(hf_config) -> ModelShape:
    """The shape of a Llama- or Qwen2-family HF config; a UserError for anything the mapping cannot represent."""
    model_type = hf_config.model_type
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"the megatron backend supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, "
                        f"not {model_type!r}; use backend=dtensor for this model")  # fmt: skip
    if getattr(hf_config, "hidden_act", "silu") != "silu":
        raise UserError(f"the megatron backend expects SwiGLU (hidden_act=silu), not {hf_config.hidden_act!r}")
    if model_type == "llama" and (getattr(hf_config, "attention_bias", False) or getattr(hf_config, "mlp_bias", False)):
        raise UserError("the megatron backend does not support Llama models with attention_bias or mlp_bias")
    if getattr(hf_config, "use_sliding_window", False):
        raise UserError("the megatron backend does not support sliding-window attention (use_sliding_window=true)")
    theta, factor = _rope(hf_config)
    heads = hf_config.num_attention_heads
    return ModelShape(
        model_type=model_type,
        num_layers=hf_config.num_hidden_layers,
        hidden_size=hf_config.hidden_size,
        num_heads=heads,
        num_kv_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        ffn_hidden_size=hf_config.intermediate_size,
        vocab_size=hf_config.vocab_size,
        max_position_embeddings=hf_config.max_position_embeddings,
        rms_norm_eps=hf_config.rms_norm_eps,
        rope_theta=theta,
        rope_scaling_factor=factor,
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2",
    )


def padded_vocab_size(vocab_size: int, tp_size: int = 1) -> int:
    multiple = VOCAB_MULTIPLE if VOCAB_MULTIPLE % tp_size == 0 else VOCAB_MULTIPLE * tp_size
    return math.ceil(vocab_size / multiple) * multiple


def check_tensor_parallel(shape: ModelShape, tp_size: int) -> None:
    for name, value in (("num_attention_heads", shape.num_heads), ("num_key_value_heads", shape.num_kv_heads),
                        ("intermediate_size", shape.ffn_hidden_size)):  # fmt: skip
        if value % tp_size:
            raise UserError(f"policy.megatron_cfg.tensor_model_parallel_size={tp_size} does not divide the model's "
                            f"{name}={value}")  # fmt: skip


def check_pipeline_parallel(shape: ModelShape, pp_size: int) -> None:
    if shape.num_layers % pp_size:
        raise UserError(f"policy.megatron_cfg.pipeline_model_parallel_size={pp_size} does not divide the model's "
                        f"num_hidden_layers={shape.num_layers}")  # fmt: skip


# ---- q/k/v and gate/up fusion -------------------------------------------------------------------------------


def fuse_qkv(q, k, v, shape: ModelShape):
    """HF q/k/v projections (weights or biases) -> megatron's grouped linear_qkv layout."""
    import torch

    groups, per_group, dim = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads, shape.head_dim
    rest = q.shape[1:]
    fused = torch.cat([q.reshape(groups, per_group * dim, *rest), k.reshape(groups, dim, *rest),
                       v.reshape(groups, dim, *rest)], dim=1)  # fmt: skip
    return fused.reshape(groups * (per_group + 2) * dim, *rest)


def split_qkv(qkv, shape: ModelShape):
    """Inverse of `fuse_qkv`: (q, k, v)."""
    groups, per_group, dim = shape.num_kv_heads, shape.num_heads // shape.num_kv_heads, shape.head_dim
    rest = qkv.shape[1:]
    grouped = qkv.reshape(groups, (per_group + 2) * dim, *rest)
    q, k, v = grouped.split([per_group * dim, dim, dim], dim=1)
    return (q.reshape(groups * per_group * dim, *rest), k.reshape(groups * dim, *rest),
            v.reshape(groups * dim, *rest))  # fmt: skip


# ---- whole-model mapping (full tensors) ------------------------------------------------------------------------


def _layer_names(te: bool) -> dict[str, str]:
    """HF name inside a decoder layer -> megatron name inside a decoder layer (the one-to-one parameters)."""
    return {
        "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight" if te else "input_layernorm.weight",
        "self_attn.o_proj.weight": "self_attention.linear_proj.weight",
        "post_attention_layernorm.weight": "mlp.linear_fc1.layer_norm_weight" if te else "pre_mlp_layernorm.weight",
        "mlp.down_proj.weight": "mlp.linear_fc2.weight",
    }


def _pad_rows(tensor, rows: int):
    import torch

    if tensor.shape[0] == rows:
        return tensor
    return torch.cat([tensor, tensor.new_zeros(rows - tensor.shape[0], *tensor.shape[1:])])


def hf_to_megatron(hf: dict, shape: ModelShape, te: bool = False, vocab_rows: int | None = None,
                   head: str = "lm") -> dict:  # fmt: skip
    """A full HF state dict -> full megatron tensors by megatron name (global layer numbers). The scalar head's
    `score` (heads.py) is the output layer."""
    rows = vocab_rows or padded_vocab_size(shape.vocab_size)
    out = {"embedding.word_embeddings.weight": _pad_rows(hf["model.embed_tokens.weight"], rows),
           "decoder.final_layernorm.weight": hf["model.norm.weight"]}  # fmt: skip
    if head == "scalar":
        out["output_layer.weight"] = hf["score.weight"]
    elif not shape.tie_word_embeddings:
        out["output_layer.weight"] = _pad_rows(hf["lm_head.weight"], rows)
    for i in range(shape.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        for hf_name, mg_name in _layer_names(te).items():
            out[dst + mg_name] = hf[src + hf_name]
        attn = src + "self_attn."
        out[dst + "self_attention.linear_qkv.weight"] = fuse_qkv(
            hf[attn + "q_proj.weight"], hf[attn + "k_proj.weight"], hf[attn + "v_proj.weight"], shape
        )
        if shape.qkv_bias:
            out[dst + "self_attention.linear_qkv.bias"] = fuse_qkv(
                hf[attn + "q_proj.bias"], hf[attn + "k_proj.bias"], hf[attn + "v_proj.bias"], shape
            )
        import torch

        out[dst + "mlp.linear_fc1.weight"] = torch.cat([hf[src + "mlp.gate_proj.weight"],
                                                        hf[src + "mlp.up_proj.weight"]])  # fmt: skip
    return out


def megatron_to_hf(mg: dict, shape: ModelShape, te: bool = False, head: str = "lm") -> dict:
    """Inverse of `hf_to_megatron` (padded vocabulary rows dropped; a tied LM head is left to the HF model)."""
    vocab = shape.vocab_size
    out = {"model.embed_tokens.weight": mg["embedding.word_embeddings.weight"][:vocab],
           "model.norm.weight": mg["decoder.final_layernorm.weight"]}  # fmt: skip
    if head == "scalar":
        out["score.weight"] = mg["output_layer.weight"]
    elif not shape.tie_word_embeddings:
        out["lm_head.weight"] = mg["output_layer.weight"][:vocab]
    for i in range(shape.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        for hf_name, mg_name in _layer_names(te).items():
            out[dst + hf_name] = mg[src + mg_name]
        attn = dst + "self_attn."
        q, k, v = split_qkv(mg[src + "self_attention.linear_qkv.weight"], shape)
        out.update({attn + "q_proj.weight": q, attn + "k_proj.weight": k, attn + "v_proj.weight": v})
        if shape.qkv_bias:
            q, k, v = split_qkv(mg[src + "self_attention.linear_qkv.bias"], shape)
            out.update({attn + "q_proj.bias": q, attn + "k_proj.bias": k, attn + "v_proj.bias": v})
        gate, up = mg[src + "mlp.linear_fc1.weight"].chunk(2)
        out.update({dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up})
    return {name: tensor.contiguous() for name, tensor in out.items()}


# ---- tensor-parallel shards -------------------------------------------------------------------------------------


def is_gated_fc1(name: str) -> bool:
    return name.endswith("mlp.linear_fc1.weight") or name.endswith("mlp.linear_fc1.bias")


def shard(name: str, full, partition_dim: int | None, tp_rank: int, tp_size: int):
    """This TP rank's part of a full megatron tensor (`partition_dim` None: replicated)."""
    if partition_dim is None or tp_size == 1:
        return full
    if is_gated_fc1(name):  # each rank holds [its gate rows; its up rows]
        import torch

        gate, up = full.chunk(2, dim=0)
        return torch.cat([gate.chunk(tp_size)[tp_rank], up.chunk(tp_size)[tp_rank]])
    return full.chunk(tp_size, dim=partition_dim)[tp_rank]


def unshard(name: str, parts: list, partition_dim: int | None):
    """Inverse of `shard`, from every TP rank's part in rank order."""
    import torch

    if partition_dim is None or len(parts) == 1:
        return parts[0]
    if is_gated_fc1(name):
        halves = [part.chunk(2, dim=0) for part in parts]
        return torch.cat([torch.cat([g for g, _ in halves]), torch.cat([u for _, u in halves])])
    return torch.cat(parts, dim=partition_dim)
