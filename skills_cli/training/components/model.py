"""Loading the HF causal LM to train, its fingerprint, and its size.

The fingerprint identifies the *starting* model: a hash of the architecture (config fields that shape the
weights), every parameter's name and shape, and a sample of the loaded weight values. It is stored in each
checkpoint; resuming recomputes it from `policy.model_name` and refuses a checkpoint written for another model
(a different architecture, or the same architecture with other weights), which would otherwise load silently
whenever the shapes happen to match.

Attention on GPUs: packed rows run through variable-length flash attention (`VARLEN_ATTENTION`, registered with
transformers' AttentionInterface). Every micro-batch, packed or padded, is flattened into one row of tokens and
`cu_seq_lens_q` gives where each sequence starts (`batching.MicroBatch.model_inputs`), so the kernel attends
causally inside each sequence and skips everything across sequences: no (L x L) mask in memory, and attention
work proportional to the sum of the squared sequence lengths rather than to rows x L^2. The kernel is PyTorch's
own flash-attention build (`aten._flash_attention_forward/_backward`, the one SDPA uses), so it needs no
flash-attn package; grouped-query attention is native (no repeated K/V). On CPU (the tests), and for float32 on
GPUs, the same function runs SDPA with a block-causal mask built from the offsets, so the flattening and
`cu_seq_lens` plumbing is exercised there too.
`SKILLS_CLI_SFT_ATTENTION=sdpa` keeps transformers' SDPA with explicit block-diagonal masks (for comparisons).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from skills_cli.common.errors import UserError

# Config fields that determine the model's weights and computation.
ARCHITECTURE_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                     "tie_word_embeddings", "rope_theta", "rms_norm_eps")  # fmt: skip
VALUES_PER_TENSOR = 64  # weight values hashed per parameter: enough to tell two checkpoints apart


def check_model_path(path: str, what: str = "policy.model_name") -> Path:
    if not path:
        raise UserError(f"{what} is required (a local HF model directory)")
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise UserError(f"{what}: no HF model at {path} (config.json not found)")
    return directory


VARLEN_ATTENTION = "skills_varlen"  # the attention implementation name registered with transformers
ATTENTION_ENV = "SKILLS_CLI_SFT_ATTENTION"  # "sdpa" forces transformers' SDPA with explicit masks
COMPILE_ENV = "SKILLS_CLI_SFT_COMPILE"  # "0": no torch.compile in the trainer (decoder layers, loss)


def compile_enabled(device) -> bool:
    """torch.compile is used on GPUs only (CPU runs are the tests: eager, and no compiler start-up)."""
    return getattr(device, "type", device) == "cuda" and os.environ.get(COMPILE_ENV, "1") != "0"


def load_model(path: str, attn_implementation: str | None = None, head: str = "lm"):
    """The model in float32 on CPU: fp32 master weights, which sharding then moves to the device. `head`: "lm"
    (a causal LM) or "scalar" (a score per token: critics and reward models, `heads.py`).

    Attention: `attn_implementation` when given, else varlen flash attention where it runs (an NVIDIA GPU of
    compute capability >= 8.0 with PyTorch's flash kernels), else transformers' default (SDPA)."""
    import torch

    from skills_cli.training.components.heads import from_pretrained

    check_model_path(path)
    model = from_pretrained(path, head, dtype=torch.float32, **attention_kwargs(attn_implementation))
    model.config.use_cache = False  # no KV cache in training
    return model


def attention_kwargs(attn_implementation: str | None = None) -> dict:
    """`from_pretrained`/`from_config` keyword arguments selecting `attn_implementation`, else the default
    (`default_attention`); registers the varlen implementation with transformers when it is the one chosen."""
    attn_implementation = attn_implementation or default_attention()
    if attn_implementation == VARLEN_ATTENTION:
        register_varlen_attention()
    return {"attn_implementation": attn_implementation} if attn_implementation else {}


def default_attention() -> str | None:
    """VARLEN_ATTENTION on GPUs whose flash kernels PyTorch has, unless $SKILLS_CLI_SFT_ATTENTION names another."""
    import torch

    forced = os.environ.get(ATTENTION_ENV)
    if forced:
        return forced
    if torch.cuda.is_available() and torch.backends.cuda.is_flash_attention_available():
        if torch.cuda.get_device_capability() >= (8, 0):
            return VARLEN_ATTENTION
    return None


def register_varlen_attention() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    flash_varlen_kernel()


def varlen_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                             cu_seq_lens_q=None, max_length_q=None, sliding_window=None, **kwargs):  # fmt: skip
    """transformers' attention-function contract: query (rows, heads, tokens, head_dim), key/value (rows,
    kv_heads, tokens, head_dim); returns ((rows, tokens, heads, head_dim), None).

    With `cu_seq_lens_q` (int32 offsets, first 0, last rows x tokens) and `max_length_q` (an upper bound on the
    sequences' lengths) the rows are one flattened stream of sequences (`batching.MicroBatch.model_inputs`);
    without them each row is one sequence (a plain `model(input_ids=...)` call). Attention is causal inside each
    sequence. transformers builds no mask for this implementation, so a padding mask given to the model is not
    seen: only right-padded rows (whose padding no real token attends to) are computed correctly that way; a
    4D mask given without offsets (inputs made for SDPA) is honoured through transformers' SDPA function."""
    import torch

    if sliding_window is not None or dropout:
        raise RuntimeError(f"{VARLEN_ATTENTION} supports neither sliding-window attention nor attention dropout")
    if cu_seq_lens_q is None and attention_mask is not None:
        # a caller's own 4D mask (inputs prepared for SDPA, e.g. for another backend's layout): honour it
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    rows, _, length, _ = query.shape
    if cu_seq_lens_q is None:
        cu_seq_lens_q = torch.arange(0, rows * length + 1, length, dtype=torch.int32, device=query.device)
        max_length_q = length
    # (rows, heads, tokens, head_dim) -> (rows x tokens, heads, head_dim); no copy when the layout allows
    q, k, v = (
        t.transpose(1, 2).reshape(rows * length, t.shape[1], t.shape[3]).contiguous() for t in (query, key, value)
    )
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    out = varlen_attention(q, k, v, cu_seq_lens_q, int(max_length_q), float(scale))
    return out.reshape(rows, length, *out.shape[1:]), None


def varlen_attention(q, k, v, cu_seqlens, max_length: int, scale: float):
    """Causal attention inside each sequence of a flattened stream: q (tokens, heads, head_dim), k/v (tokens,
    kv_heads, head_dim), `cu_seqlens` int32 offsets (first 0, last the token count), `max_length` an upper
    bound of the sequences' lengths. The flash kernels for fp16/bf16 on GPUs, masked SDPA otherwise."""
    import torch

    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        return _flash_varlen(q, k, v, cu_seqlens, max_length, scale)
    # the flash kernel leaves tokens past the last offset unwritten: make the same mistake fail here
    if int(cu_seqlens[-1]) != q.shape[0]:
        raise RuntimeError(f"cu_seq_lens_q ends at {int(cu_seqlens[-1])}, not at the {q.shape[0]} tokens")
    return _masked_varlen(q, k, v, cu_seqlens, scale)


def _flash_varlen(q, k, v, cu_seqlens, max_length: int, scale: float):
    return flash_varlen_kernel()(q, k, v, cu_seqlens, max_length, scale)


def flash_varlen_kernel():
    """The varlen flash function, built once per process (its ops register globally). Built when the attention
    implementation is registered, so a compiled layer never traces the first-use branch (whose guard on the
    global would recompile every layer once)."""
    global _FLASH_VARLEN
    if _FLASH_VARLEN is None:
        _FLASH_VARLEN = _flash_function()
    return _FLASH_VARLEN


def _masked_varlen(q, k, v, cu_seqlens, scale: float):
    """The same attention through SDPA with an explicit (tokens x tokens) block-causal mask: for CPU (the tests)
    and for float32 on GPUs (the flash kernels take only fp16/bf16); slower, quadratic in the flattened length."""
    import torch
    import torch.nn.functional as F

    tokens = q.shape[0]
    positions = torch.arange(tokens, device=q.device)
    segment = torch.searchsorted(cu_seqlens[1:].to(torch.int64), positions, right=True)
    allowed = (segment[:, None] == segment[None, :]) & (positions[:, None] >= positions[None, :])
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                         attn_mask=allowed, scale=scale)  # fmt: skip
    return out.transpose(0, 1)


_FLASH_VARLEN = None  # built on first use: importing this module must not import torch
FLASH_OP_ENV = "SKILLS_CLI_FLASH_OP"  # "0": the kernel as a graph break (torch.compiler.disable) instead of an op


def _flash_function():
    """PyTorch's varlen flash-attention kernels (causal, no dropout) with their backward.

    By default they are registered as custom ops (`skills_cli::flash_varlen_fwd/bwd`) whose shapes come from
    aten's own meta functions, so torch.compile traces a decoder layer as one graph around them: no graph break,
    so no resumed sub-frames to compile and guard separately (each of which recompiled on its own the first time
    a new micro-batch shape reached it), and inductor fuses the projections' layout copies with the rest.
    $SKILLS_CLI_FLASH_OP=0 keeps the earlier form: an autograd function left out of the graph (a graph break)."""
    import torch

    if os.environ.get(FLASH_OP_ENV, "1") == "0" or not hasattr(torch.library, "custom_op"):
        return _flash_autograd_function()
    return _flash_custom_op()


def _flash_custom_op():
    import torch

    def forward_kernel(q, k, v, cu_seqlens, max_length, scale):
        out, lse, seed, offset, _ = torch.ops.aten._flash_attention_forward(
            q, k, v, cu_seqlens, cu_seqlens, max_length, max_length, 0.0, True, False, scale=scale
        )
        return out, lse, seed, offset

    # explicit schemas: this module's postponed annotations cannot be evaluated for schema inference
    @torch.library.custom_op("skills_cli::flash_varlen_fwd", mutates_args=(), schema=(
        "(Tensor q, Tensor k, Tensor v, Tensor cu_seqlens, int max_length, float scale) -> (Tensor, Tensor, Tensor, Tensor)"))  # fmt: skip
    def flash_fwd(q, k, v, cu_seqlens, max_length, scale):
        return forward_kernel(q, k, v, cu_seqlens, max_length, scale)

    @flash_fwd.register_fake
    def _(q, k, v, cu_seqlens, max_length, scale):
        return forward_kernel(q, k, v, cu_seqlens, max_length, scale)  # aten's meta function gives the shapes

    @torch.library.custom_op("skills_cli::flash_varlen_bwd", mutates_args=(), schema=(
        "(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, Tensor cu_seqlens, int max_length, "
        "float scale, Tensor seed, Tensor offset) -> (Tensor, Tensor, Tensor)"))  # fmt: skip
    def flash_bwd(grad_out, q, k, v, out, lse, cu_seqlens, max_length, scale, seed, offset):
        dq, dk, dv = torch.ops.aten._flash_attention_backward(
            grad_out.contiguous(), q, k, v, out, lse, cu_seqlens, cu_seqlens, max_length, max_length, 0.0, True,
            seed, offset, scale=scale,
        )  # fmt: skip
        return dq, dk, dv

    @flash_bwd.register_fake
    def _(grad_out, q, k, v, out, lse, cu_seqlens, max_length, scale, seed, offset):
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)

    def setup_context(ctx, inputs, output):
        q, k, v, cu_seqlens, max_length, scale = inputs
        out, lse, seed, offset = output
        ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, seed, offset)
        ctx.max_length, ctx.scale = max_length, scale

    def backward(ctx, grad_out, *unused_grads):
        q, k, v, out, lse, cu_seqlens, seed, offset = ctx.saved_tensors
        dq, dk, dv = flash_bwd(grad_out, q, k, v, out, lse, cu_seqlens, ctx.max_length, ctx.scale, seed, offset)
        return dq, dk, dv, None, None, None

    flash_fwd.register_autograd(backward, setup_context=setup_context)

    def flash_varlen(q, k, v, cu_seqlens, max_length, scale):
        return flash_fwd(q, k, v, cu_seqlens, max_length, scale)[0]

    return flash_varlen


def _flash_autograd_function():
    """The kernels as an autograd function kept out of torch.compile graphs (a graph break)."""
    import torch

    class FlashVarlen(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, cu_seqlens, max_length, scale):
            out, lse, rng_state, unused, _ = torch.ops.aten._flash_attention_forward(
                q, k, v, cu_seqlens, cu_seqlens, max_length, max_length, 0.0, True, False, scale=scale
            )
            ctx.save_for_backward(q, k, v, out, lse, cu_seqlens, rng_state, unused)
            ctx.max_length, ctx.scale = max_length, scale
            return out

        @staticmethod
        def backward(ctx, grad_out):
            q, k, v, out, lse, cu_seqlens, rng_state, unused = ctx.saved_tensors
            dq, dk, dv = torch.ops.aten._flash_attention_backward(
                grad_out.contiguous(),
                q,
                k,
                v,
                out,
                lse,
                cu_seqlens,
                cu_seqlens,
                ctx.max_length,
                ctx.max_length,
                0.0,
                True,
                rng_state,
                unused,
                scale=ctx.scale,
            )
            return dq, dk, dv, None, None, None

    return torch.compiler.disable(FlashVarlen.apply)


def model_fingerprint(model) -> str:
    """sha256 over architecture, parameter names/shapes and a strided sample of each parameter's values."""
    import torch

    digest = hashlib.sha256()
    config = model.config.to_dict()
    digest.update(json.dumps({k: config.get(k) for k in ARCHITECTURE_KEYS}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // VALUES_PER_TENSOR)
        digest.update(json.dumps(flat[::stride][:VALUES_PER_TENSOR].to(torch.float32).tolist()).encode())
    return digest.hexdigest()


def count_parameters(model) -> int:
    """Parameters of the full model (tied embeddings counted once), before any sharding."""
    return sum(p.numel() for p in model.parameters())
