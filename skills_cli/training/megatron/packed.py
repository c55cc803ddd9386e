"""Packed (THD) micro-batches on megatron's local layer spec (no TransformerEngine): the inputs, RoPE per
token, the varlen core attention and compiled decoder layers.

A micro-batch runs as one flattened stream of sequences with their offsets, the dtensor backend's layout
(`batching.MicroBatch.model_inputs` with `model.VARLEN_ATTENTION`, padding left out where the loss allows), and
the core attention runs `model.varlen_attention` (PyTorch's varlen flash kernels on GPUs, masked SDPA on CPU):
megatron's own materialises (rows, heads, L, L) scores and a mask.

RoPE: megatron applies it to THD inputs one sequence at a time (`_apply_rotary_pos_emb_thd`: a host sync for
the offsets, then a slice and a copy per sequence, for queries and keys in every layer: ~30 sequences in 8
packed rows of 4096 tokens, so thousands of small launches a micro-batch, and a graph break that keeps the
layer from compiling). Here the GPTModel has no position embedding of its own; the core attention rotates queries and keys
by each token's position id, one elementwise pass that the compiled layer fuses with the projections' layout
copies. cos and sin are computed once a micro-batch (`thd_inputs`, carried in `PackedRope`) and rounded to the
activations' dtype there, as megatron rounds them before multiplying (a cast inside the compiled graph need not
round). A plain call with an attention mask (no packed parameters) rotates by 0..s-1, as megatron does, and
runs megatron's own core attention. The frequencies are megatron's (`RotaryEmbedding`: base, Llama 3 scaling).

Compilation (GPUs; `SKILLS_CLI_SFT_COMPILE=0` turns it off, as for the dtensor backend): each TransformerLayer's
`forward` is torch.compile'd, the token dimension dynamic from the first compilation, so the RMSNorms, RoPE,
SwiGLU and residual adds become a few fused kernels and the identical layers share one graph. On an H200 (no
TransformerEngine; bench/sft_throughput.py) the 0.5B model went from 85k to 121k tokens/s/GPU at 8 packed rows
a micro-batch, with the dtensor backend at 127k in the same run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("skills_cli.sft")

_CLASSES: dict = {}


def packed_rope_class():
    """megatron's PackedSeqParams with each token's RoPE cos and sin (positions restart with each sequence)."""
    if "params" not in _CLASSES:
        from megatron.core.packed_seq_params import PackedSeqParams

        @dataclass
        class PackedRope(PackedSeqParams):
            rope_cos: object = None  # (tokens, head_dim) in the activations' dtype
            rope_sin: object = None

        _CLASSES["params"] = PackedRope
    return _CLASSES["params"]


def thd_inputs(micro_batch, device, inv_freq, dtype) -> dict:
    """A micro-batch as one THD row for GPTModel.forward: every sequence (a padded row's padding too, unless
    the micro-batch leaves padding out) its own, the labels in the same layout, RoPE's cos and sin by position
    id (`inv_freq`: `inverse_frequencies`; `dtype`: the activations')."""
    from skills_cli.training.components.model import VARLEN_ATTENTION

    inputs, labels = micro_batch.model_inputs(VARLEN_ATTENTION, None, device)
    offsets, longest = inputs["cu_seq_lens_q"], inputs["max_length_q"]  # the row length: an upper bound
    cos, sin = rope_cos_sin(inputs["position_ids"].reshape(-1), inv_freq, dtype)
    params = packed_rope_class()(qkv_format="thd", cu_seqlens_q=offsets, cu_seqlens_kv=offsets,
                                 max_seqlen_q=longest, max_seqlen_kv=longest, rope_cos=cos, rope_sin=sin)  # fmt: skip
    return {"input_ids": inputs["input_ids"], "position_ids": inputs["position_ids"], "attention_mask": None,
            "labels": labels, "packed_seq_params": params}  # fmt: skip


def rope_cos_sin(positions, inv_freq, dtype):
    """(cos, sin), each (tokens, head_dim) in `dtype`, of `positions` (tokens,) at frequencies `inv_freq`
    (head_dim / 2,) in float32, in megatron's non-interleaved layout (as HF Llama/Qwen2)."""
    import torch

    freqs = positions.to(device=inv_freq.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate(x, cos, sin):
    """RoPE: x (tokens, ..., heads, head_dim) rotated by `rope_cos_sin`'s (tokens, head_dim) cos and sin."""
    import torch

    shape = (x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])
    cos, sin = cos.reshape(shape), sin.reshape(shape)
    first, second = torch.chunk(x, 2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def inverse_frequencies(shape, device):
    """megatron's RoPE frequencies for `shape` (bridge.ModelShape), float32 on `device`."""
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    rope = RotaryEmbedding(kv_channels=shape.head_dim, rotary_percent=1.0, rotary_base=shape.rope_theta,
                           rope_scaling=shape.rope_scaling_factor is not None,
                           rope_scaling_factor=shape.rope_scaling_factor or 8.0, use_cpu_initialization=True)  # fmt: skip
    return rope.inv_freq.to(device)


def varlen_core_attention_spec(shape, device):
    """The layer spec entry of the core attention: `VarlenCoreAttention` with RoPE's frequencies."""
    from megatron.core.transformer.spec_utils import ModuleSpec

    return ModuleSpec(module=varlen_core_attention_class(), params={"inv_freq": inverse_frequencies(shape, device)})


def varlen_core_attention_class():
    """Built on first use: importing this module needs no megatron."""
    if "attention" in _CLASSES:
        return _CLASSES["attention"]
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.module import MegatronModule

    from skills_cli.training.components.model import varlen_attention

    class VarlenCoreAttention(MegatronModule):
        """RoPE, then attention. Packed THD inputs (`PackedRope`): query (tokens, heads, head_dim), key/value
        (tokens, query groups, head_dim) of this TP rank, causal inside each sequence, through the varlen kernel.
        A plain call with a mask ((s, b, heads, head_dim), positions 0..s-1) goes to megatron's own core
        attention, which holds no parameters."""

        def __init__(self, config, layer_number, attn_mask_type, attention_type, attention_dropout=None,
                     softmax_scale=None, cp_comm_type=None, pg_collection=None, inv_freq=None):  # fmt: skip
            super().__init__(config=config)
            self.unpacked = DotProductAttention(config, layer_number, attn_mask_type, attention_type,
                                                attention_dropout, softmax_scale, cp_comm_type, pg_collection)  # fmt: skip
            self.softmax_scale = self.unpacked.softmax_scale  # megatron's rule (query-key layer scaling included)
            self.plain = not config.window_size and not (attention_dropout or config.attention_dropout)
            self.inv_freq = inv_freq  # a plain attribute: model.to(bf16) must not round it

        def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                    packed_seq_params=None):  # fmt: skip
            import torch

            if packed_seq_params is None or packed_seq_params.qkv_format != "thd":
                cos, sin = rope_cos_sin(torch.arange(query.shape[0]), self.inv_freq, query.dtype)
                query, key = rotate(query, cos, sin), rotate(key, cos, sin)
                return self.unpacked(query, key, value, attention_mask, attn_mask_type=attn_mask_type,
                                     attention_bias=attention_bias, packed_seq_params=packed_seq_params)  # fmt: skip
            if attention_bias is not None or not self.plain:
                raise ValueError("the varlen core attention supports no attention bias, window or dropout")
            cos, sin = packed_seq_params.rope_cos, packed_seq_params.rope_sin
            query, key = rotate(query, cos, sin), rotate(key, cos, sin)
            return varlen_attention(query.contiguous(), key.contiguous(), value.contiguous(),
                                    packed_seq_params.cu_seqlens_q, int(packed_seq_params.max_seqlen_q),
                                    float(self.softmax_scale))  # fmt: skip

    _CLASSES["attention"] = VarlenCoreAttention
    return VarlenCoreAttention


def compile_decoder_layers(gpt, backend="inductor") -> int:
    """torch.compile each TransformerLayer's `forward` in place (names and state dict unchanged); `backend`:
    torch.compile's (the tests trace with aot_eager on CPU). Returns how many were compiled."""
    import warnings

    import torch

    from skills_cli.training.components.model import flash_varlen_kernel

    flash_varlen_kernel()  # built before tracing: a first-use branch in the graph would guard on the global
    # megatron's row-parallel linear warns (a deprecation) on every call, passing itself tp_group=None: a graph
    # break in two places of every layer unless dynamo skips the call
    torch._dynamo.config.ignore_logging_functions.add(warnings.warn)
    for layer in gpt.decoder.layers:
        layer.forward = _token_dims_dynamic(torch.compile(layer.forward, backend=backend))
    if len(gpt.decoder.layers):
        log.info("compiled the forward of %d megatron decoder layers (torch.compile)", len(gpt.decoder.layers))
    return len(gpt.decoder.layers)


def _token_dims_dynamic(compiled_forward):
    """Mark the token dimension of a layer's inputs (hidden states (s, b, h), the offsets, the position ids)
    dynamic before each call: the first compilation is the general one, no recompilation when the next
    micro-batch has another token count (see `parallel._token_dims_dynamic`, the dtensor backend's)."""
    import torch

    mark = torch._dynamo.maybe_mark_dynamic

    def forward(*args, **kwargs):
        if "hidden_states" in kwargs:
            kwargs["hidden_states"] = _standard_strides(kwargs["hidden_states"])
            mark(kwargs["hidden_states"], 0)
        elif args:
            args = (_standard_strides(args[0]), *args[1:])
            mark(args[0], 0)
        params = kwargs.get("packed_seq_params")
        if params is not None:
            for name in ("cu_seqlens_q", "cu_seqlens_kv", "rope_cos", "rope_sin"):
                tensor = getattr(params, name, None)
                if tensor is not None:
                    mark(tensor, 0)
        return compiled_forward(*args, **kwargs)

    return forward


def _standard_strides(hidden):
    """The same strides for every layer's input, so all layers share one compilation: the first layer's
    (s, 1, h) comes from a transpose whose unit dimension has stride s x h, the others' has h (a copy of the
    first layer's input, one small pass a micro-batch)."""
    import torch

    standard, step = [], 1
    for size in reversed(hidden.shape):
        standard.insert(0, step)
        step *= size
    return hidden if hidden.stride() == tuple(standard) else hidden.clone(memory_format=torch.contiguous_format)
