"""Tensor parallelism with sequence parallelism (`policy.dtensor_cfg.sequence_parallel=true`) for Llama/Qwen-style
HF models.

Plain TP keeps every activation whole on each TP rank; with SP the parts of a layer that are not split by TP
(the RMSNorms and the residual stream) hold only 1/TP of the sequence on each rank, which divides their
activation memory by the TP size. The layouts:
  embed_tokens   whole weights, output cut to this rank's sequence shard
  *_layernorm    sequence-parallel (each rank normalizes its positions)
  self_attn, mlp inputs all-gathered to the full sequence, q/k/v/gate/up column-wise, o/down row-wise with
                 their outputs reduce-scattered back onto the sequence
  model.norm     sequence-parallel; lm_head (whole weights) on the gathered sequence, so the loss sees the full
                 vocabulary, as the policy contract requires
Sequence sharding needs every row length to be a multiple of the TP size and an explicit 4D attention mask
(transformers sizes its own masks from the local, sharded length): `sequence_parallel_inputs` arranges both,
padding with masked positions that no loss or real token sees.
"""

from __future__ import annotations

from skills_cli.common.errors import UserError

LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")


def apply_sequence_parallel(model, tp_mesh) -> None:
    """The TP+SP plan above, on the model (embeddings, final norm, LM head) and on every decoder layer."""
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        PrepareModuleInput,
        PrepareModuleOutput,
        RowwiseParallel,
        SequenceParallel,
        parallelize_module,
    )

    from skills_cli.training.components.parallel import COLWISE, ROWWISE, decoder_layers

    base = getattr(model, "model", None)
    if (
        base is None
        or not all(hasattr(base, name) for name in ("embed_tokens", "norm"))
        or not hasattr(model, "lm_head")
    ):
        raise UserError(f"sequence parallelism needs model.embed_tokens, model.norm and lm_head in {type(model).__name__}; "
                        "set policy.dtensor_cfg.sequence_parallel=false")  # fmt: skip
    # Embeddings and LM head keep whole weights (FSDP shards them over DP): splitting them over TP would untie a
    # tied embedding (two parameters where the model has one). Their activations still switch layouts: the
    # embedding output is cut to this rank's sequence shard (no communication), the LM head gathers it back.
    parallelize_module(model, tp_mesh, {
        "model.embed_tokens": PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=Shard(1)),
        "model.norm": SequenceParallel(),
        "lm_head": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),),
                                      use_local_output=True),
    })  # fmt: skip
    for layer in decoder_layers(model):
        names = {name for name, _ in layer.named_modules()}
        missing = [n for n in (*COLWISE, *ROWWISE, *LAYER_NORMS, "self_attn", "mlp") if n not in names]
        if missing:
            raise UserError(f"sequence parallelism needs {', '.join(missing)} in each decoder layer of "
                            f"{type(model).__name__}; set policy.dtensor_cfg.sequence_parallel=false")  # fmt: skip
        plan = {
            **{norm: SequenceParallel() for norm in LAYER_NORMS},
            "self_attn": PrepareModuleInput(input_kwarg_layouts={"hidden_states": Shard(1)},
                                            desired_input_kwarg_layouts={"hidden_states": Replicate()}),
            "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            **{name: ColwiseParallel() for name in COLWISE},
            **{name: RowwiseParallel(output_layouts=Shard(1)) for name in ROWWISE},
        }  # fmt: skip
        parallelize_module(layer, tp_mesh, plan)


def sequence_parallel_inputs(inputs: dict, tp_size: int, dtype, attn_implementation: str) -> dict:
    """Model inputs whose length is a multiple of `tp_size` (the caller cuts the logits back to the original
    length, so labels and per-token extras never see the added positions).

    Eager/SDPA attention gets an explicit 4D additive mask: a 2D padding mask becomes block-causal over (real
    tokens | padding), a 4D one is extended so each added position attends only to itself (no empty softmax
    row). Flash attention (packed rows flattened into one) needs no mask: the added positions restart their
    position ids, which makes them a sequence of their own."""
    import torch

    from skills_cli.training.components.batching import block_causal_mask

    ids = inputs["input_ids"]
    rows, length = ids.shape
    pad = (-length) % tp_size
    out = dict(inputs)
    if pad:
        out["input_ids"] = torch.cat([ids, ids.new_zeros((rows, pad))], 1)
        positions = torch.arange(pad, device=ids.device).expand(rows, pad)
        out["position_ids"] = torch.cat([inputs["position_ids"], positions.to(inputs["position_ids"].dtype)], 1)
    if attn_implementation.startswith("flash_attention"):
        return out
    if "cu_seq_lens_q" in inputs:
        # varlen flash attention (model.VARLEN_ATTENTION): the added positions become one more sequence (the
        # kernel leaves tokens past the last offset unwritten)
        if pad:
            cu = inputs["cu_seq_lens_q"]
            cu = torch.cat([cu, torch.full((1,), length + pad, dtype=cu.dtype, device=cu.device)])
            out["cu_seq_lens_q"] = out["cu_seq_lens_k"] = cu
        return out
    mask = inputs.get("attention_mask")
    if mask is None or mask.dim() == 2:
        real = mask if mask is not None else torch.ones_like(ids)
        segments = torch.where(real.bool(), 0, 1)
        if pad:
            segments = torch.cat([segments, torch.full((rows, pad), 2, dtype=segments.dtype, device=ids.device)], 1)
        out["attention_mask"] = block_causal_mask(segments, dtype)
    elif pad:
        extended = torch.full((rows, 1, length + pad, length + pad), torch.finfo(mask.dtype).min, dtype=mask.dtype,
                              device=mask.device)  # fmt: skip
        extended[:, :, :length, :length] = mask
        diagonal = torch.arange(length, length + pad, device=mask.device)
        extended[:, :, diagonal, diagonal] = 0
        out["attention_mask"] = extended
    return out
