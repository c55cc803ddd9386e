"""megatron-core GPTModel from an HF Llama/Qwen2 model: parallel state, the model for this rank's pipeline
stage and tensor-parallel rank, HF weights into its shards, and the full weights gathered back.

Layer spec: TransformerEngine's when `transformer_engine` imports (fused kernels, packed sequences through
cu_seqlens), else megatron's local spec (plain PyTorch; on CPU always) with its core attention replaced by
`VarlenCoreAttention`: megatron's own materialises (rows, heads, L, L) scores and a mask, which at 4096 tokens
held a 0.5B model to one packed row per micro-batch and ~5% MFU on an H100; ours takes the same THD stream
and offsets as TransformerEngine's and runs the varlen flash kernels on GPUs. The fusions that keep bf16
intermediates (RoPE, bias-SwiGLU) stay off: NeMo-RL issue #1801 traced most logprob mismatches against vLLM
to them.
"""

from __future__ import annotations

import logging
import re

from skills_cli.training.megatron.bridge import ModelShape, padded_vocab_size, shard, unshard

log = logging.getLogger("skills_cli.sft")

LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def transformer_engine_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformer_engine") is not None


def initialize_parallel(tp_size: int, pp_size: int, seed: int, device) -> None:
    """megatron's tensor/pipeline/data-parallel groups over the default process group (rebuilt if a previous
    run in this process left some), and its RNG tracker (the CPU shims on CPU)."""
    from megatron.core import parallel_state, tensor_parallel

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp_size, pipeline_model_parallel_size=pp_size)
    if device.type == "cpu":
        from skills_cli.training.megatron.cpu import apply_cpu_shims

        apply_cpu_shims()
    else:
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def transformer_config(shape: ModelShape, tp_size: int, pp_size: int, dtype, device, activation_checkpointing: bool):
    import torch
    from megatron.core.transformer import TransformerConfig

    recompute = {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1} \
        if activation_checkpointing else {}  # fmt: skip
    return TransformerConfig(
        num_layers=shape.num_layers, hidden_size=shape.hidden_size, num_attention_heads=shape.num_heads,
        num_query_groups=shape.num_kv_heads, kv_channels=shape.head_dim, ffn_hidden_size=shape.ffn_hidden_size,
        normalization="RMSNorm", layernorm_epsilon=shape.rms_norm_eps, gated_linear_unit=True,
        activation_func=torch.nn.functional.silu, add_bias_linear=False, add_qkv_bias=shape.qkv_bias,
        hidden_dropout=0.0, attention_dropout=0.0, attention_softmax_in_fp32=True,
        tensor_model_parallel_size=tp_size, pipeline_model_parallel_size=pp_size, sequence_parallel=False,
        params_dtype=dtype, pipeline_dtype=dtype, bf16=dtype == torch.bfloat16,
        # the random initialisation is overwritten by the HF weights, but it is also where megatron marks each
        # weight's tensor-parallel split (`partition_dim`), which the grad norm and the weight mapping read
        use_cpu_initialization=device.type == "cpu", perform_initialization=True,
        gradient_accumulation_fusion=False, bias_activation_fusion=False, bias_dropout_fusion=False,
        apply_rope_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        # micro-batches differ in length: pipeline stages exchange shapes (megatron's check for this setting
        # wants the MoE all-to-all dispatcher, though a dense model has no experts to dispatch to)
        variable_seq_lengths=pp_size > 1, moe_token_dispatcher_type="alltoall",
        **recompute,
    )  # fmt: skip


def build_gpt_model(shape: ModelShape, config, te: bool):
    """The GPTModel of this rank's pipeline stage (full-vocabulary logits: parallel_output=False)."""
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    if te:
        spec = get_gpt_layer_with_transformer_engine_spec()
    else:
        spec = get_gpt_layer_local_spec(normalization="RMSNorm")
        spec.submodules.self_attention.submodules.core_attention = varlen_core_attention_class()
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab_size(shape.vocab_size, config.tensor_model_parallel_size),
        max_sequence_length=shape.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=False,
        share_embeddings_and_output_weights=shape.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=shape.rope_theta,
        rope_scaling=shape.rope_scaling_factor is not None,
        rope_scaling_factor=shape.rope_scaling_factor or 8.0,
    )
    # megatron's own layers are created in params_dtype, but the local spec's RMSNorm is torch's, created in
    # float32: one dtype for all (as Megatron-LM's Float16Module does), or DDP makes a second gradient buffer
    # and the norms run in float32 on bf16 activations
    return model.to(dtype=config.params_dtype)


_VARLEN_CORE_ATTENTION = None


def varlen_core_attention_class():
    """megatron's core-attention module contract over packed (THD) inputs, computed by `model.varlen_attention`
    (flash kernels on GPUs, masked SDPA on CPU). Built on first use: importing this module needs no megatron."""
    global _VARLEN_CORE_ATTENTION
    if _VARLEN_CORE_ATTENTION is not None:
        return _VARLEN_CORE_ATTENTION
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.module import MegatronModule

    from skills_cli.training.components.model import varlen_attention

    class VarlenCoreAttention(MegatronModule):
        """Packed THD inputs (`packed_seq_params`): query (tokens, heads, head_dim), key/value (tokens, query
        groups, head_dim) of this TP rank, causal inside each sequence. Anything else (a plain call with a mask)
        goes to megatron's own core attention, which holds no parameters."""

        def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                     softmax_scale=None, cp_comm_type=None, pg_collection=None):  # fmt: skip
            super().__init__(config=config)
            self.unpacked = DotProductAttention(config, layer_number, attn_mask_type, attention_type,
                                                attention_dropout, softmax_scale, cp_comm_type, pg_collection)  # fmt: skip
            self.softmax_scale = self.unpacked.softmax_scale  # megatron's rule (query-key layer scaling included)
            self.plain = not config.window_size and not (attention_dropout or config.attention_dropout)

        def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                    packed_seq_params=None):  # fmt: skip
            if packed_seq_params is None or packed_seq_params.qkv_format != "thd":
                return self.unpacked(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                                     attention_bias=attention_bias, packed_seq_params=packed_seq_params)  # fmt: skip
            if attention_bias is not None or not self.plain:
                raise ValueError("the varlen core attention supports no attention bias, window or dropout")
            return varlen_attention(query.contiguous(), key.contiguous(), value.contiguous(),
                                    packed_seq_params.cu_seqlens_q, int(packed_seq_params.max_seqlen_q),
                                    float(self.softmax_scale))  # fmt: skip

    _VARLEN_CORE_ATTENTION = VarlenCoreAttention
    return VarlenCoreAttention


def global_name(model, name: str) -> str:
    """`decoder.layers.{local}.x` -> `decoder.layers.{global}.x` (a pipeline stage numbers its layers from 0)."""
    match = LAYER.match(name)
    if not match:
        return name
    layer = model.decoder.layers[int(match.group(1))]
    return f"decoder.layers.{layer.layer_number - 1}.{match.group(2)}"


def partition_dim(param) -> int | None:
    return param.partition_dim if getattr(param, "tensor_model_parallel", False) else None


def _source_name(model, name: str, tied: bool) -> str:
    # a tied LM head on the last stage of a pipeline is a copy of the first stage's embedding
    return "embedding.word_embeddings.weight" if tied and name == "output_layer.weight" else global_name(model, name)


def load_megatron_weights(model, full: dict, tied: bool) -> None:
    """Copy full megatron tensors (by global name, see bridge.hf_to_megatron) into this rank's shards."""
    import torch
    from megatron.core import parallel_state

    tp_rank, tp_size = (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            part = shard(name, full[_source_name(model, name, tied)], partition_dim(param), tp_rank, tp_size)
            if part.shape != param.shape:
                raise RuntimeError(f"{name}: HF weight gives {tuple(part.shape)}, the model has {tuple(param.shape)}")
            param.copy_(part)


def gather_megatron_weights(model, tied: bool) -> dict:
    """Full megatron tensors (global names, CPU) on global rank 0, {} elsewhere. Collective over all ranks."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state

    stage: dict = {}
    if parallel_state.get_data_parallel_rank() == 0:  # one model replica suffices
        tp_group = parallel_state.get_tensor_model_parallel_group()
        tp_size = parallel_state.get_tensor_model_parallel_world_size()
        for name, param in model.named_parameters():
            dim = partition_dim(param)
            if tied and name == "output_layer.weight":
                continue  # the pipeline's first stage holds the same tensor as the embedding
            tensor = param.detach()
            if dim is not None and tp_size > 1:
                parts = [torch.empty_like(tensor) for _ in range(tp_size)]
                dist.all_gather(parts, tensor.contiguous(), group=tp_group)
                tensor = unshard(name, parts, dim)
            if parallel_state.get_tensor_model_parallel_rank() == 0:
                stage[global_name(model, name)] = tensor.cpu().clone()
        if (
            parallel_state.get_tensor_model_parallel_rank() == 0
            and parallel_state.get_pipeline_model_parallel_world_size() > 1
        ):
            stages = [None] * parallel_state.get_pipeline_model_parallel_world_size()
            pp_group = parallel_state.get_pipeline_model_parallel_group()
            dist.gather_object(stage, stages if dist.get_rank() == 0 else None, dst=0, group=pp_group)
            stage = {k: v for part in (stages if dist.get_rank() == 0 else []) for k, v in part.items()}
    return stage if dist.get_rank() == 0 else {}
