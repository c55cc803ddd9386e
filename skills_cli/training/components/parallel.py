"""Process group, device mesh and model parallelism for the dtensor backend (FSDP2 + optional DTensor TP).

The mesh is always 2D, ("dp", "tp"): data parallelism shards parameters with FSDP2 (`fully_shard`, per decoder
layer then the root) over "dp"; tensor parallelism splits each decoder layer's attention and MLP projections
over "tp" (column-wise q/k/v and gate/up, row-wise o and down, so each layer needs one all-reduce in forward
per block). Embeddings, norms and the LM head stay whole on each TP rank (only FSDP-sharded).

FSDP averages gradients over the DP ranks; the trainer backpropagates `dp_size x` its normalized loss, so the
average is the sum of the ranks' gradients, i.e. exactly the global-batch gradient (each rank's loss is
already divided by the global valid-token count). Scaling the loss rather than setting FSDP's gradient divide
factor to 1 keeps one code path for NCCL and gloo (gloo has no PREMUL_SUM, which a custom factor needs).

On GPUs each decoder layer's `forward` is compiled (torch.compile) before sharding, as torchtitan does: the
RMSNorms, rotary embeddings, SwiGLU and residual adds become a few fused kernels instead of many small
elementwise launches, and the identical layers share one compiled graph (on an H100, a 0.5B model's median
step went from 2.94 s to 1.70 s with compiled layers and loss). FSDP's hooks stay
outside (they wrap the module call, not `forward`); the flash-attention kernels are custom ops inside the graph
(`model.py`), and the token dimension is dynamic from the first compilation (`_token_dims_dynamic`). Layers
under tensor parallelism are left eager. `SKILLS_CLI_SFT_COMPILE=0` turns compilation off.

Without torchrun the trainer still runs as a world of one (an in-memory store, gloo on CPU), so every code
path (FSDP, DCP checkpoints, the full-state-dict export) is the same as in a multi-GPU job.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.training.components.model import compile_enabled

log = logging.getLogger("skills_cli.sft")

# Projections split by tensor parallelism: names inside a Llama/Qwen-style decoder layer.
COLWISE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
ROWWISE = ("self_attn.o_proj", "mlp.down_proj")


@dataclass
class Distributed:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: Any  # torch.device
    created_group: bool  # we initialised the default process group (and destroy it at the end)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join torchrun's process group (env RANK/WORLD_SIZE), reuse an existing one, or make a world of one."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        threads = gpu_host_threads(torch.get_num_threads(), os.environ)
        if threads is not None:
            torch.set_num_threads(threads)
        if "PYTORCH_CUDA_ALLOC_CONF" not in os.environ and hasattr(torch.cuda.memory, "_set_allocator_settings"):
            # micro-batches of varying sizes fragment the caching allocator; growing segments in place avoids
            # the cudaFree/cudaMalloc (device-wide synchronisations) that fragmentation forces (torchtitan's default)
            torch.cuda.memory._set_allocator_settings("expandable_segments:True")
        torch.cuda.set_device(device)
    created = False
    if not dist.is_initialized():
        # gloo for CPU tensors (and DCP's object collectives), NCCL for GPU tensors
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        created = True
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, device, created)


GPU_HOST_THREADS = 4  # torch's CPU thread pool in a GPU trainer, unless $OMP_NUM_THREADS says otherwise


def gpu_host_threads(current: int, environ) -> int | None:
    """The size of torch's CPU thread pool for a process that trains on a GPU (None: leave it as it is).

    The host's tensor work there is small: packing micro-batches, picking a stream's real tokens, offsets. On
    a 16-core H100 machine with a pool of all 16 threads, a profiled DPO step charged 26-36 ms of GPU idle time
    a micro-batch to CPU `aten::index` calls of a few thousand elements, and 22 ms to one `repeat_interleave`
    (the same calls take ~1 ms a micro-batch on a 2-core host). Unprofiled, one machine start gave DPO a median
    step of 0.718 s with 4 threads and with 1, the start before 0.749 s with 16; starts of the same kind differ
    by more than that, so only the profile's stalls are shown to be the pool's. torchrun already gives each of
    several processes one thread; a user's $OMP_NUM_THREADS wins."""
    if "OMP_NUM_THREADS" in environ:
        return None
    return min(current, GPU_HOST_THREADS)


def build_mesh(device_type: str, world_size: int, tp_size: int):
    """The ("dp", "tp") device mesh; consecutive ranks share a TP group (same node, fastest links)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device_type, (world_size // tp_size, tp_size), mesh_dim_names=("dp", "tp"))


def all_reduce(value: float, group, device, op: str = "sum") -> float:
    """A Python number reduced over `group` (float64, so token counts stay exact)."""
    import torch
    import torch.distributed as dist

    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
    dist.all_reduce(tensor, op=ops[op], group=group)
    return float(tensor.item())


def decoder_layers(model) -> list:
    """The transformer blocks of an HF causal LM (FSDP and activation-checkpointing units)."""
    import torch

    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if isinstance(layers, torch.nn.ModuleList):
        return list(layers)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks"):
            return list(module)
    raise UserError(f"cannot find the decoder layers of {type(model).__name__} (expected model.model.layers)")


def check_tensor_parallel(model_config, tp_size: int) -> None:
    """TP splits attention by heads: both head counts (and the MLP width) must be multiples of the TP size."""
    if tp_size == 1:
        return
    heads = model_config.num_attention_heads
    kv_heads = getattr(model_config, "num_key_value_heads", None) or heads
    for name, value in (("num_attention_heads", heads), ("num_key_value_heads", kv_heads),
                        ("intermediate_size", getattr(model_config, "intermediate_size", tp_size))):  # fmt: skip
        if value % tp_size:
            raise UserError(
                f"policy.dtensor_cfg.tensor_parallel_size={tp_size} does not divide the model's {name}={value}; "
                f"use a TP size that divides num_attention_heads={heads} and num_key_value_heads={kv_heads}"
            )


def apply_tensor_parallel(model, tp_mesh) -> None:
    """Column-wise q/k/v/gate/up, row-wise o/down in every decoder layer (attention then runs on local heads:
    HF reshapes with -1 heads, so it needs no change)."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    for layer in decoder_layers(model):
        names = {name for name, _ in layer.named_modules()}
        missing = [name for name in COLWISE + ROWWISE if name not in names]
        if missing:
            raise UserError(f"tensor parallelism needs {', '.join(missing)} in each decoder layer of "
                            f"{type(model).__name__}; use tensor_parallel_size=1 for this model")  # fmt: skip
        plan = {**{n: ColwiseParallel() for n in COLWISE}, **{n: RowwiseParallel() for n in ROWWISE}}
        parallelize_module(layer, tp_mesh, plan)


def apply_fsdp(model, dp_mesh, mixed_precision: bool, cpu_offload: bool, one_graph: bool = False) -> None:
    """FSDP2 per decoder layer then the root; bf16 compute with fp32 gradient reduction when `mixed_precision`.
    With `one_graph` (one DP rank, whole decoder layers: `policy.dtensor_cfg.compile_scope=stack`) the root is the
    only FSDP unit and, where torch.compile runs, the decoder stack is compiled as one graph.

    The sharded parameters stay in the dtype they were loaded in (fp32): they are the master weights the
    optimizer updates; FSDP casts them to bf16 when it gathers them for compute.
    """
    import torch
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if one_graph and dp_mesh.size() > 1:
        raise ValueError("one_graph needs a single data-parallel rank (FSDP units per layer shard the weights)")
    if compile_enabled(dp_mesh.device_type):
        (compile_decoder_stack if one_graph else compile_decoder_layers)(model)
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision \
        else MixedPrecisionPolicy()  # fmt: skip
    offload = CPUOffloadPolicy() if cpu_offload else OffloadPolicy()
    # Resharding after forward frees each layer's gathered weights until backward; with one DP rank there is
    # nothing to free (the shard is the whole layer), only a re-gather per micro-batch to pay for.
    reshard = dp_mesh.size() > 1
    if not one_graph:
        # With one rank, one unit (the root) has the same parameters, names and checkpoints and drops FSDP's four
        # Python hooks per layer and micro-batch (which a compiled stack could not trace), but holds every layer's
        # bf16 gradients until the end of each backward (2 bytes a parameter) and reduces them in one buffer.
        for layer in decoder_layers(model):
            fully_shard(layer, mesh=dp_mesh, mp_policy=policy, offload_policy=offload, reshard_after_forward=reshard)
    # the root's parameters (embeddings, final norm, LM head) are used at the end of forward and again first
    # in backward: keeping them gathered saves an all-gather per micro-batch
    fully_shard(model, mesh=dp_mesh, mp_policy=policy, offload_policy=offload, reshard_after_forward=False)


def shard_frozen(model, dp_mesh) -> None:
    """FSDP2 over `dp_mesh` for a model that is only run forward (a distillation teacher): per decoder layer then
    the root, every one resharded after its forward, so a rank holds its 1/DP share of the weights plus one
    gathered layer at a time. The weights keep their dtype (no mixed-precision cast). Its forwards are
    collectives: every DP rank must run as many."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=dp_mesh, reshard_after_forward=True)
    fully_shard(model, mesh=dp_mesh, reshard_after_forward=True)


def compile_decoder_layers(model) -> int:
    """torch.compile each decoder layer's `forward` in place (the module, its parameter names and state dict are
    unchanged); layers holding DTensor parameters (tensor parallelism) stay eager. Returns how many were."""
    import torch
    from torch.distributed.tensor import DTensor

    compiled = 0
    for layer in decoder_layers(model):
        if any(isinstance(p, DTensor) for p in layer.parameters()):
            continue
        layer.forward = _token_dims_dynamic(torch.compile(layer.forward))
        compiled += 1
    if compiled:
        log.info("compiled the forward of %d decoder layers (torch.compile)", compiled)
    return compiled


def compile_decoder_stack(model, backend: str = "inductor") -> None:
    """torch.compile the base model's `forward` (embeddings, every decoder layer, the final norm) as one graph, in
    place: one compiled call and one compiled backward a micro-batch instead of one per layer, so the host's time
    to queue a micro-batch falls well under the GPU's time to run it. Needs no FSDP unit inside the stack (its
    hooks cannot be traced). The token dimension is dynamic from the first compilation on, as for the layers."""
    import torch

    base = model.get_decoder()
    if base is model or not isinstance(getattr(base, "layers", None), torch.nn.ModuleList):
        log.info("no decoder stack found in %s: compiling per decoder layer", type(model).__name__)
        compile_decoder_layers(model)
        return
    compiled = torch.compile(base.forward, backend=backend)

    def forward(*args, **kwargs):
        _mark_token_dims(kwargs, ("input_ids",))
        return compiled(*args, **kwargs)

    base.forward = forward
    log.info("compiled the decoder stack of %s as one graph (torch.compile)", type(model).__name__)


def _token_dims_dynamic(compiled_forward):
    """Mark the token dimension (and the sequence-offset count) of a decoder layer's inputs dynamic before each
    call, so the first compilation is already the general one. Left to automatic dynamic shapes, the first
    micro-batch compiles static and each dimension turns symbolic only when it first changes: a micro-batch
    with an unusual row count (the last of a step, a one-row GRPO remainder) then recompiled mid-run (~10 s on
    an H200, seen at GRPO step 19). Only these dimensions: dynamic=True on everything compiled for ~95 s on an
    H100 instead of ~16 s."""
    import torch

    def forward(hidden_states, *args, **kwargs):
        if hidden_states.dim() == 3:
            torch._dynamo.maybe_mark_dynamic(hidden_states, 1)
        _mark_token_dims(kwargs)
        return compiled_forward(hidden_states, *args, **kwargs)

    return forward


def _mark_token_dims(kwargs: dict, token_ids: tuple[str, ...] = ()) -> None:
    """Mark the token dimension of a compiled decoder's keyword inputs dynamic (`token_ids`: more (rows, tokens)
    inputs, e.g. a stack's input_ids), and the count of sequence offsets."""
    import torch

    mark = torch._dynamo.maybe_mark_dynamic
    for name in (*token_ids, "position_ids", "cache_position"):
        value = kwargs.get(name)
        if value is not None:
            mark(value, value.dim() - 1)
    for value in kwargs.get("position_embeddings") or ():
        if value.dim() == 3:
            mark(value, 1)
    for name in ("cu_seq_lens_q", "cu_seq_lens_k"):
        if kwargs.get(name) is not None:
            mark(kwargs[name], 0)


def clip_grad_norm_(parameters, max_norm: float | None):
    """The global L2 norm of all gradients (clipped to `max_norm` when given), DTensor-aware, as a float64 0-dim
    tensor on the gradients' device: nothing here waits for the GPU (the clip coefficient stays a device
    tensor), so the optimizer's kernels queue right behind the norm's.

    With TP some gradients live on the 2D mesh and some on the DP mesh only; the norm of each group is reduced
    to a plain tensor on its own mesh before they are combined, which `torch.nn.utils.clip_grad_norm_` cannot
    do across meshes.
    """
    import torch
    from torch.distributed.tensor import DTensor

    parameters = [p for p in parameters if p.grad is not None]
    groups: dict[Any, list] = {}
    for p in parameters:
        key = p.grad.device_mesh if isinstance(p.grad, DTensor) else None
        groups.setdefault(key, []).append(p.grad)
    squares = []
    for grads in groups.values():
        norm = torch.nn.utils.get_total_norm(grads, norm_type=2.0)
        norm = norm.full_tensor() if isinstance(norm, DTensor) else norm
        squares.append(norm.double() ** 2)
    total = torch.stack(squares).sum().sqrt() if squares else torch.zeros((), dtype=torch.float64)
    if max_norm is not None and max_norm > 0:
        coefficient = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        for grads in groups.values():
            torch._foreach_mul_(grads, coefficient.to(grads[0].device, torch.float32))
    return total


@contextlib.contextmanager
def distributed_session() -> Iterator[Distributed]:
    """`init_distributed` for the length of a run; the group is destroyed at the end only if we created it."""
    import torch.distributed as dist

    context = init_distributed()
    try:
        yield context
    finally:
        if context.created_group and dist.is_initialized():
            dist.destroy_process_group()
