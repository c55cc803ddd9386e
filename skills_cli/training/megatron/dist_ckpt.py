"""megatron-core distributed checkpoints (`megatron.core.dist_checkpointing`, torch_dist format).

Tensors are saved as globally-named sharded tensors (`decoder.layers.self_attention.linear_qkv.weight` with the
layer as one more axis, and so on), each rank writing its own shards, so a checkpoint reloads under another
tensor/pipeline/data-parallel layout. Two uses:
  * training checkpoints of the megatron backend: `step_N/megatron/` holds `model` and `optimizer` (the
    optimizer's fp32 main weights and Adam moments; the distributed optimizer's are `dp_reshardable`);
  * `ns convert --convert_to megatron`: `model` only, plus the HF config and tokenizer files next to it
    (`hf_config/`), so the checkpoint says which architecture it holds.
"""

from __future__ import annotations

from pathlib import Path

HF_CONFIG_DIR = "hf_config"


def _sharded(model, optimizer, is_loading: bool) -> dict:
    model_state = model.sharded_state_dict()
    state = {"model": model_state}
    if optimizer is not None:
        # dp_reshardable: each rank's optimizer shard as is, no gather (only a DP-size change needs resharding)
        metadata = {"distrib_optim_sharding_type": "dp_reshardable"}
        state["optimizer"] = optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata)
    return state


def save(directory: str | Path, model, optimizer=None) -> None:
    """Collective: every rank writes its shards of `model` (a GPTModel) and `optimizer` (megatron's)."""
    from megatron.core import dist_checkpointing

    Path(directory).mkdir(parents=True, exist_ok=True)
    dist_checkpointing.save(_sharded(model, optimizer, is_loading=False), str(directory))


def _torch_adams(optimizer) -> list:
    """The torch Adam/AdamW instances inside megatron's optimizer wrappers (chained or not)."""
    import torch

    wrappers = getattr(optimizer, "chained_optimizers", [optimizer])
    inner = [getattr(wrapper, "optimizer", None) for wrapper in wrappers]
    return [opt for opt in inner if isinstance(opt, (torch.optim.Adam, torch.optim.AdamW))]


def prime_optimizer_state(optimizer) -> None:
    """Give every parameter of torch Adam(W) an (empty) state before loading into it. Without apex or
    TransformerEngine, megatron's distributed optimizer reads a `step` from each parameter's state when it
    builds its sharded state dict, which a run that has not stepped yet does not have (megatron-core 0.16.1);
    the loaded checkpoint then overwrites these zeros."""
    import torch

    for adam in _torch_adams(optimizer):
        for group in adam.param_groups:
            for param in group["params"]:
                state = adam.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)


def restore_adam_steps(optimizer) -> None:
    """Put the checkpoint's Adam step count back into every parameter's state.

    Without apex or TransformerEngine, megatron-core 0.16.1's distributed optimizer saves torch Adam's `step`
    in its param groups and sets it from there on load, but then copies each parameter's state from the
    bucket-space checkpoint, where `step` is a non-persistent object: the value of the state the load started
    from (0 after `prime_optimizer_state`) overwrites the restored count. Adam's bias correction then restarts
    and the first steps after a resume move the weights differently from the uninterrupted run (seen on an
    H200: the loss 1% off one step after resuming). Its load also hands every parameter the same `step`
    tensor, which torch's AdamW then increments once per parameter (14 a step for a 14-tensor model). The
    param groups still hold the count: each parameter gets its own tensor of it back."""
    import torch

    for adam in _torch_adams(optimizer):
        for group in adam.param_groups:
            if "step" not in group:
                continue
            for param in group["params"]:
                state = adam.state.get(param)
                if state and isinstance(state.get("step"), torch.Tensor):
                    old = state["step"]
                    state["step"] = torch.tensor(float(group["step"]), dtype=old.dtype, device=old.device)


def load(directory: str | Path, model, optimizer=None) -> None:
    """Collective: fill `model` (and `optimizer`) from a checkpoint written by `save`."""
    from megatron.core import dist_checkpointing

    if optimizer is not None:
        prime_optimizer_state(optimizer)
    state = dist_checkpointing.load(_sharded(model, optimizer, is_loading=True), str(directory))
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    # the local spec's `_extra_state` entries (TransformerEngine's FP8 metadata slots) hold nothing
    missing = [name for name in missing if not name.endswith("_extra_state")]
    if missing or unexpected:
        raise RuntimeError(f"{directory}: checkpoint does not match the model: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")  # fmt: skip
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
        restore_adam_steps(optimizer)


def is_megatron_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / "metadata.json").is_file()
