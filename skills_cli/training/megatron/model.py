"""megatron-core GPTModel from an HF Llama/Qwen2 model: parallel state, the model for this rank's pipeline
stage and tensor-parallel rank, HF weights into its shards, and the full weights gathered back.

Layer spec: TransformerEngine's when `transformer_engine` imports (fused kernels, packed sequences through
cu_seqlens), else megatron's local spec (plain PyTorch; on CPU always) with its core attention replaced by
`packed.VarlenCoreAttention` (RoPE per token, then the varlen flash kernels on GPUs; packed.py says why), and
no position embedding in the GPTModel itself. The fusions that keep bf16 intermediates (megatron's RoPE and
bias-SwiGLU kernels) stay off: NeMo-RL issue #1801 traced most logprob mismatches against vLLM to them.
"""

from __future__ import annotations

import logging
import re

from skills_cli.training.megatron.bridge import ModelShape, padded_vocab_size, shard, unshard
from skills_cli.training.megatron.packed import varlen_core_attention_spec

log = logging.getLogger("skills_cli.sft")

LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.*)$")


def transformer_engine_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformer_engine") is not None


_groups_built_for: tuple | None = None  # (default process group, tp, pp) megatron's groups were made over


def initialize_parallel(tp_size: int, pp_size: int, seed: int, device) -> None:
    """megatron's tensor/pipeline/data-parallel groups over the default process group, and its RNG tracker (the
    CPU shims on CPU). The groups of this process group and sizes are kept (a PPO critic beside its actor
    shares them: the actor's DDP holds them); any others (a previous run in this process) are rebuilt."""
    global _groups_built_for
    import torch.distributed as dist
    from megatron.core import parallel_state, tensor_parallel

    wanted = (dist.group.WORLD, tp_size, pp_size)
    if not (parallel_state.model_parallel_is_initialized() and _groups_built_for == wanted):
        if parallel_state.model_parallel_is_initialized():
            parallel_state.destroy_model_parallel()
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp_size,
                                                 pipeline_model_parallel_size=pp_size)  # fmt: skip
        _groups_built_for = wanted
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
        # no CUDA graphs are captured; the field's own default ("full") is deprecated and warns on every build
        cuda_graph_scope=[],
        **recompute,
    )  # fmt: skip


def build_gpt_model(shape: ModelShape, config, te: bool, head: str = "lm"):
    """The GPTModel of this rank's pipeline stage: full-vocabulary logits (parallel_output=False) for the LM
    head, a score per token for the scalar head (`scalar_output_layer`: critics and reward models)."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import (
        get_gpt_layer_local_spec,
        get_gpt_layer_with_transformer_engine_spec,
    )

    device = torch.device("cpu") if config.use_cpu_initialization else torch.device("cuda", torch.cuda.current_device())
    if te:
        spec = get_gpt_layer_with_transformer_engine_spec()
    else:  # RoPE happens in the core attention (packed.py)
        spec = get_gpt_layer_local_spec(normalization="RMSNorm")
        spec.submodules.self_attention.submodules.core_attention = varlen_core_attention_spec(shape, device)
    model = GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=padded_vocab_size(shape.vocab_size, config.tensor_model_parallel_size),
        max_sequence_length=shape.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=False,
        share_embeddings_and_output_weights=shape.tie_word_embeddings and head == "lm",
        position_embedding_type="rope" if te else "none",
        rotary_base=shape.rope_theta,
        rope_scaling=shape.rope_scaling_factor is not None,
        rope_scaling_factor=shape.rope_scaling_factor or 8.0,
    )
    if head == "scalar" and model.post_process:
        model.output_layer = scalar_output_layer(config.hidden_size)
    # megatron's own layers are created in params_dtype on the GPU, but the local spec's RMSNorm is torch's and
    # the scalar head ours, both created in float32 on the CPU: one dtype for all (as Megatron-LM's Float16Module
    # does), or DDP makes a second gradient buffer and the norms run in float32 on bf16 activations; one device
    # for all, or they stay on the CPU where the distributed optimizer's buffers do not move them (its off
    # setting then handed megatron's Float16Optimizer CPU parameters on a GPU run)
    return model.to(device=device, dtype=config.params_dtype)


def scalar_output_layer(hidden_size: int):
    """The scalar head in GPTModel's `output_layer` place: HF's bias-free `score` (1 x hidden), zero at first
    (heads.py), replicated on every tensor-parallel rank rather than split (one output row cannot be): with
    sequence parallelism off each TP rank sees the same final hidden states, so the copies get the same
    gradients, and the grad norm counts a parameter without `tensor_model_parallel` once."""
    import torch

    class _ScalarOutputLayer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1, hidden_size))

        def forward(self, hidden_states, weight=None, runtime_gather_output=None):
            return torch.nn.functional.linear(hidden_states, self.weight), None

    return _ScalarOutputLayer()


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


def load_megatron_weights(model, full: dict, tied: bool) -> dict:
    """Copy full megatron tensors (by global name, see bridge.hf_to_megatron) into this rank's shards. Returns
    {parameter name: this rank's shard} in the source's precision (`set_main_weights` uses it)."""
    import torch
    from megatron.core import parallel_state

    tp_rank, tp_size = (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
    )
    parts = {}
    with torch.no_grad():
        for name, param in model.named_parameters():
            part = shard(name, full[_source_name(model, name, tied)], partition_dim(param), tp_rank, tp_size)
            if part.shape != param.shape:
                raise RuntimeError(f"{name}: HF weight gives {tuple(part.shape)}, the model has {tuple(param.shape)}")
            param.copy_(part)
            parts[name] = part
    return parts


def set_main_weights(optimizer, model, weights: dict) -> None:
    """Start the optimizer's fp32 main weights from `weights` (load_megatron_weights' shards, fp32) rather than
    from the bf16 model parameters megatron copies them from. Otherwise each weight's fp32 start is rounded to
    bf16 and an update smaller than half a bf16 step never moves it (with Adam's first steps at lr 1e-5, most
    of a model's weights), while FSDP's fp32 master weights round afresh after every update: the dtensor
    backend then trains from the same start in expectation as fp32, this backend much more slowly."""
    import torch

    by_param = {param: weights[name] for name, param in model.named_parameters()}
    with torch.no_grad():
        for wrapper in getattr(optimizer, "chained_optimizers", [optimizer]):
            for param, main, start, end in _main_copies(wrapper):
                main.copy_(by_param[param].reshape(-1)[start:end].view_as(main))


def _main_copies(wrapper):
    """(bf16 model parameter, its fp32 main copy, the flat range of the parameter that copy holds) in one of
    megatron's mixed-precision optimizer wrappers."""
    if hasattr(wrapper, "shard_fp32_from_float16_groups"):  # the distributed optimizer: a shard per parameter
        for model_group, main_group in zip(wrapper.model_float16_groups, wrapper.shard_fp32_from_float16_groups,
                                           strict=True):  # fmt: skip
            for param, main in zip(model_group, main_group, strict=True):
                span = wrapper._get_model_param_range_map(param)["param"]
                yield param, main, span.start, span.end
    else:  # Float16OptimizerWithFloat16Params: a whole fp32 copy per parameter
        for model_group, main_group in zip(wrapper.float16_groups, wrapper.fp32_from_float16_groups, strict=True):
            for param, main in zip(model_group, main_group, strict=True):
                yield param, main, 0, param.numel()


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
