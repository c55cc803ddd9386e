"""A compact decoder forward over a Hugging Face causal LM's own modules, with a slot-based static KV cache.

Why our own forward instead of calling the HF model with a `StaticCache`: HF's cache keeps one
`cache_position` for the whole batch, so rows of different lengths must be left-padded to a common length
and a finished row cannot be replaced by a new prompt until the whole batch is done. Here every cache row
("slot") has its own position: prompts are prefilled into free slots while other slots are mid-generation
(continuous refill), and one decode step serves rows at any mix of positions. The step has static shapes
for a given (rows, cache length) bucket, so it can be captured in a CUDA graph.

Numerics follow the HF modules because they *are* the HF modules: embeddings, RMSNorms (q/k norms for
Qwen3), projections with their biases (Qwen2's q/k/v bias, Llama's optional attention/MLP bias), the MLP
and the LM head are called as they are; RoPE uses cos/sin tables computed once by the model's own
`rotary_emb` (so rope scaling variants apply) and cast to the model dtype, as HF does. Only attention is
ours: prefill uses `scaled_dot_product_attention` (causal, prompts right-padded, so padding never reaches a
real token); decode, on CUDA, a Triton kernel that reads each row's cache up to its own position
(cuda_kernels.decode_attention), elsewhere grouped-query matmuls over the slot's cache with positions > the
row's masked out; softmax in float32 either way. On CUDA the decode step also runs the RMSNorms (the HF
module's formula, its weight) and RoPE + cache write as one Triton launch each. Weights are read from the
modules at every call and never copied, so an in-place update of the parameters (`load_weights`) reaches
captured graphs too.

Supported: decoder-only Llama, Qwen2 and Qwen3 checkpoints without sliding-window attention.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from skills_cli.common.errors import UserError
from skills_cli.inference.engine.sampling import cuda_kernels_for

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")


def check_supported(model) -> None:
    """UserError unless `model` is an HF causal LM of a family this forward reproduces."""
    config = model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(
            f"the torch rollout engine supports model types {', '.join(SUPPORTED_MODEL_TYPES)}, not {model_type!r}"
        )
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        raise UserError("sliding-window attention layers are not supported by the torch rollout engine")
    if not hasattr(model, "lm_head") or not hasattr(getattr(model, "model", None), "layers"):
        raise UserError(f"{type(model).__name__} is not a causal LM with .model.layers and .lm_head")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def _rms_norm(kernels, module, hidden: torch.Tensor) -> torch.Tensor:
    """The HF RMSNorm `module` on hidden: one Triton launch on CUDA (same formula), the module elsewhere."""
    if kernels is not None and hasattr(module, "variance_epsilon") and module.weight.dtype == hidden.dtype:
        return kernels.rms_norm(module, hidden)
    return module(hidden)


def _rope_and_store(kernels, cache, index: int, rope, qkv, positions: torch.Tensor) -> torch.Tensor:
    """RoPE on a decode step's query and key [rows, heads, head_dim] at each row's position, key and value
    written into layer `index`'s cache row i at positions[i]; returns the rotated query."""
    query, key, value = qkv
    if kernels is not None:
        return kernels.rope_and_store(query, key, value, *rope, positions, cache.keys[index], cache.values[index])
    cos, sin = rope[0][positions].unsqueeze(1), rope[1][positions].unsqueeze(1)
    query, key = _rope(query, cos, sin), _rope(key, cos, sin)
    rows = torch.arange(query.shape[0], device=query.device)
    cache.keys[index][rows, :, positions] = key
    cache.values[index][rows, :, positions] = value
    return query


class KVCache:
    """Keys and values of every layer for `slots` sequences of up to `length` tokens: [layers, slots, kv_heads, length, head_dim].

    Zero-initialised so that never-written positions hold finite numbers (they are masked, but 0 * NaN is NaN).
    """

    def __init__(self, layers: int, slots: int, kv_heads: int, length: int, head_dim: int, dtype, device):
        shape = (layers, slots, kv_heads, length, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)

    @staticmethod
    def bytes_needed(layers: int, slots: int, kv_heads: int, length: int, head_dim: int, dtype) -> int:
        return 2 * layers * slots * kv_heads * length * head_dim * torch.empty(0, dtype=dtype).element_size()


class CompactDecoder:
    """Prefill and decode steps over the modules of an HF `*ForCausalLM`."""

    def __init__(self, model):
        check_supported(model)
        config = model.config
        self.model = model
        self.layers = model.model.layers
        attention = self.layers[0].self_attn
        self.head_dim = attention.head_dim
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.group = self.num_heads // self.num_kv_heads
        self.scaling = attention.scaling
        self.qk_norm = hasattr(attention, "q_norm")
        self.vocab_size = model.lm_head.out_features

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def rope_tables(self, length: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [length, head_dim] for positions 0..length-1, from the model's rotary embedding."""
        positions = torch.arange(length, device=device).unsqueeze(0)
        probe = torch.empty(1, dtype=dtype, device=device)
        cos, sin = self.model.model.rotary_emb(probe, positions)
        return cos[0].contiguous(), sin[0].contiguous()

    def _project(self, attention, hidden: torch.Tensor, shape: tuple[int, ...]):
        """q, k, v of `hidden` [..., hidden_size] as [..., heads, head_dim], q/k normalised where the model does."""
        query = attention.q_proj(hidden).view(*shape, self.num_heads, self.head_dim)
        key = attention.k_proj(hidden).view(*shape, self.num_kv_heads, self.head_dim)
        value = attention.v_proj(hidden).view(*shape, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            query, key = attention.q_norm(query), attention.k_norm(key)
        return query, key, value

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        # model-dtype logits: the sampler upcasts as it reads (a float32 copy is 0.6 GB at batch 1024)
        return self.model.lm_head(self.model.model.norm(hidden))

    def prefill(self, cache: KVCache, rope, slots: torch.Tensor, input_ids: torch.Tensor, lengths: torch.Tensor):
        """Run right-padded prompts [rows, width] into cache `slots` from position 0; logits [rows, vocab] (model dtype) at each last token."""
        rows, width = input_ids.shape
        cos, sin = rope[0][:width], rope[1][:width]
        hidden = self.model.model.embed_tokens(input_ids)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            query, key, value = self._project(attention, layer.input_layernorm(hidden), (rows, width))
            query = _rope(query.transpose(1, 2), cos, sin)
            key = _rope(key.transpose(1, 2), cos, sin)
            value = value.transpose(1, 2)
            cache.keys[index][slots, :, :width] = key
            cache.values[index][slots, :, :width] = value
            if self.group > 1:
                key = key.repeat_interleave(self.group, dim=1)
                value = value.repeat_interleave(self.group, dim=1)
            mixed = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=self.scaling)
            hidden = hidden + attention.o_proj(mixed.transpose(1, 2).reshape(rows, width, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        last = hidden[torch.arange(rows, device=hidden.device), lengths - 1]
        return self._head(last)

    def decode(self, cache: KVCache, rope, input_ids: torch.Tensor, positions: torch.Tensor, length: int):
        """One token for each of the first `rows` slots at its own position; logits [rows, vocab] (model dtype).

        Attention reads each row's cache positions 0..position only (the step's `length` bucket bounds them);
        positions are clamped to length-1, so idle slots (whose positions run on) write inside their own row
        and stay harmless.
        """
        rows = input_ids.shape[0]
        positions = positions.clamp(max=length - 1)
        kernels = cuda_kernels_for(input_ids.device)
        attend = self._attention_for(positions, length)
        hidden = self.model.model.embed_tokens(input_ids)
        for index, layer in enumerate(self.layers):
            attention = layer.self_attn
            normed = _rms_norm(kernels, layer.input_layernorm, hidden)
            query, key, value = self._project(attention, normed, (rows,))
            query = _rope_and_store(kernels, cache, index, rope, (query, key, value), positions)
            mixed = attend(query, cache.keys[index], cache.values[index])
            hidden = hidden + attention.o_proj(mixed)
            hidden = hidden + layer.mlp(_rms_norm(kernels, layer.post_attention_layernorm, hidden))
        return self._head(hidden)

    def _attention_for(self, positions: torch.Tensor, length: int):
        """attend(query, keys, values) -> [rows, heads * head_dim] for one decode step: the Triton kernel on
        CUDA (each row's own length), masked matmuls over the `length` bucket elsewhere (the reference)."""
        kernels = cuda_kernels_for(positions.device)
        if kernels is not None:
            return partial(kernels.decode_attention, lengths=positions + 1, scale=self.scaling, length=length)
        future = torch.arange(length, device=positions.device).unsqueeze(0) > positions.unsqueeze(1)
        return partial(self._attend_masked, future=future.view(-1, 1, 1, length))

    def _attend_masked(self, query, keys, values, future: torch.Tensor) -> torch.Tensor:
        """Grouped-query attention over the first `length` cache positions with `future` ones masked out,
        scores and softmax in float32."""
        rows, length = query.shape[0], future.shape[-1]
        keys, values = keys[:rows, :, :length], values[:rows, :, :length]
        grouped = query.view(rows, self.num_kv_heads, self.group, self.head_dim)
        scores = torch.matmul(grouped, keys.transpose(-1, -2)).float() * self.scaling
        weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1).to(values.dtype)
        return torch.matmul(weights, values).reshape(rows, self.num_heads * self.head_dim)
