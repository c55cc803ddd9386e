"""The dtensor policy's model without a full copy on every rank: meta-device init, then rank 0's weights.

Loading the HF model in fp32 on every rank costs ranks x 4 bytes x parameters of host memory (a 70B model on an
8-GPU node: 2.2 TB) and as many disk reads. Instead:
  1. rank 0 alone loads the checkpoint (CPU, fp32 master weights);
  2. every rank builds the same architecture with its *parameters* on the meta device (no memory, no random
     init) while its *buffers* are computed for real: RoPE tables and other non-persistent buffers are not in
     the checkpoint, so they must come from the constructor, as in a normal load;
  3. tensor parallelism and FSDP2 shard the meta model, `to_empty` allocates each rank's shards on its device,
     and `set_model_state_dict(..., broadcast_from_rank0=True)` fills them from rank 0's full state dict
     (each rank keeps only its shard).
A world of one takes the same path (the tests exercise it), so there is one way to build the model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within this block, every parameter a module registers is replaced by a meta tensor of the same shape and
    dtype; buffers are untouched. (Each parameter exists for real only for the moment between its creation and
    its registration, so peak memory is one tensor, and initializers run on meta tensors, i.e. for free.)"""
    import torch

    original = torch.nn.Module.register_parameter

    def register_on_meta(module, name, parameter):
        if parameter is not None and parameter.device.type != "meta":
            parameter = torch.nn.Parameter(parameter.to("meta"), requires_grad=parameter.requires_grad)
        original(module, name, parameter)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original


def empty_model(path: str, head: str = "lm"):
    """The model of `path` with meta parameters and real buffers, configured like `model.load_model`'s."""
    import torch
    from transformers import AutoConfig

    from skills_cli.training.components.heads import from_config
    from skills_cli.training.components.model import attention_kwargs

    config = AutoConfig.from_pretrained(path)
    with parameters_on_meta():
        model = from_config(config, head, dtype=torch.float32, **attention_kwargs())
    model.config.use_cache = False
    return model


def broadcast_object(value, src: int = 0):
    """`value` from rank `src` on every rank (any picklable object)."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def materialize(model, device, full_state_dict: dict) -> None:
    """Allocate the sharded (meta) parameters on `device` and fill them from rank 0's `full_state_dict` (ignored
    on the other ranks). Collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    model.to_empty(device=device)
    for name, buffer in model.named_buffers():  # to_empty allocated buffers uninitialized too: put them back
        buffer.copy_(buffers[name].to(buffer.device))
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)
    set_model_state_dict(model, full_state_dict, options=options)
