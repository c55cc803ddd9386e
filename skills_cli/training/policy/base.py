"""The policy interface: what a training algorithm (SFT, GRPO) needs from a model-parallel backend.

A `Policy` owns the model, its parallel layout, the optimizer, the learning-rate scheduler, checkpoints and the
HF export. Algorithms see only micro-batches in and losses out, so the same SFT or GRPO loop runs on the dtensor
backend (FSDP2 + DTensor TP, `policy/dtensor.py`) and the megatron backend (megatron-core GPTModel with TP/PP,
`policy/megatron.py`).

The loss contract (`forward_backward`):

    loss_fn(logits, labels, micro_batch) -> (loss, metrics)

  * `logits`: float tensor (rows, length, vocab) over the *full* vocabulary (a scalar-head policy, `head="scalar"`:
    (rows, length, 1), a score per token) (a backend that splits the
    vocabulary over tensor-parallel ranks gathers it first), in the compute dtype; `labels`: int64 tensor
    (rows, length) on the same device, IGNORE_INDEX where no loss. Both may have the rows of a packed
    micro-batch flattened into one (flash-attention packing): reshape per-token extras to `labels.shape`.
  * `micro_batch`: the `batching.MicroBatch` given (any extra attributes it carries travel with it).
  * `loss`: a scalar tensor, this micro-batch's share of the *global-batch* loss (e.g. its token-NLL sum divided
    by the global valid-token count over all micro-batches and data-parallel ranks). The backend backpropagates
    it when `train=True`, scaling it as its gradient reduction needs, so that after all micro-batches of all
    data-parallel ranks the gradients equal the gradient of the global-batch loss.
  * `metrics`: a dict the backend hands back (tensor values detached).

Collectives: every data-parallel rank must call `forward_backward` together (the number of micro-batches may
differ: the backend runs gradient-free passes so the ranks' collectives match, without calling `loss_fn`).
With pipeline parallelism only the last stage computes logits and calls `loss_fn`; the megatron backend then
broadcasts the metrics dicts to the other stages, so every rank gets the same list.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# loss_fn(logits, labels, micro_batch) -> (loss scalar tensor, metrics dict)
LossFn = Callable[[Any, Any, Any], "tuple[Any, dict]"]


class Policy(ABC):
    """A trainable causal LM on this rank, with its optimizer and scheduler (see the module docstring)."""

    backend: str  # "dtensor" | "megatron"
    dp_rank: int
    dp_size: int
    dp_group: Any  # torch.distributed ProcessGroup of this rank's data-parallel peers
    device: Any  # torch.device
    num_params: int  # of the full model, tied embeddings counted once
    fingerprint: str  # of the starting HF model (model.model_fingerprint)
    compute_dtype: Any  # torch.bfloat16 on GPUs with precision=bfloat16, else torch.float32
    attn_implementation: str
    model: Any  # the backend's (wrapped) module
    config: Any  # the policy section of the trainer's config (training.config.PolicyConfig)
    dist: Any  # this rank's components.parallel.Distributed
    head: str = "lm"  # "lm": next-token logits; "scalar": a score per token (critics, reward models; heads.py)

    # ---- compute ------------------------------------------------------------------------------------------

    @abstractmethod
    def forward_backward(self, micro_batches: list, loss_fn: LossFn, train: bool) -> list[dict]:
        """Run each micro-batch, call `loss_fn`, backpropagate when `train` (gradients accumulate in the
        parameters until `optimizer_step`); returns `loss_fn`'s metrics dicts, one per micro-batch. Collective
        over the data-parallel group (and the model-parallel groups)."""

    @abstractmethod
    def optimizer_step(self, max_grad_norm: float | None, skip: bool = False) -> float:
        """Clip the gradients to `max_grad_norm` (none when None or <= 0), update the weights unless `skip`,
        zero the gradients; returns the global gradient norm before clipping. Collective."""

    def optimizer_step_async(self, max_grad_norm: float | None, skip: bool = False):
        """`optimizer_step` without waiting for the device where the backend can: the norm comes back as a value
        `float()` turns into the number (a device tensor; converting it waits), so the caller may do host work
        while the update runs."""
        return self.optimizer_step(max_grad_norm, skip)

    @abstractmethod
    def zero_grad(self) -> None: ...

    def train(self) -> None:
        """Training mode (dropout on, if the model has any)."""
        self.model.train()

    def eval(self) -> None:
        """Evaluation mode."""
        self.model.eval()

    # ---- learning rate -------------------------------------------------------------------------------------

    @abstractmethod
    def scheduler_step(self) -> None:
        """Advance the learning-rate schedule by one optimizer step."""

    @abstractmethod
    def get_lr(self) -> float:
        """The learning rate the next `optimizer_step` uses."""

    # ---- checkpoints and export ---------------------------------------------------------------------------

    @abstractmethod
    def save_checkpoint(self, checkpoint_dir: str | Path, step: int, trainer_state: dict, keep_last_k: int) -> Path:
        """Save model, optimizer, scheduler and RNG states with `trainer_state` (JSON-able) as
        `<checkpoint_dir>/step_<step>` (atomically, see `training/checkpoint.py`); returns it. Collective."""

    @abstractmethod
    def load_checkpoint(self, path: str | Path) -> dict:
        """Restore what `save_checkpoint` wrote (refusing another model's checkpoint); returns the
        trainer_state. Collective."""

    @abstractmethod
    def full_hf_state_dict(self) -> dict:
        """Full tensors on CPU under the HF model's parameter names on rank 0, {} elsewhere. Collective."""

    def data_parallel_mesh(self):
        """A DeviceMesh over this rank's data-parallel peers (what FSDP shards a frozen model over, `frozen.py`)."""
        from torch.distributed.device_mesh import DeviceMesh

        return DeviceMesh.from_group(self.dp_group, self.device.type)

    def rollout_weights(self) -> Iterator[tuple[str, Any]]:
        """(HF name, full tensor) pairs of the current weights on *every* rank, for a rollout engine's refit;
        consumed one at a time, so a backend can stream them from device memory. Collective: every rank must
        exhaust the iterator. This default gathers the full state dict on rank 0 (CPU) and broadcasts it."""
        yield from broadcast_state_dict(self.full_hf_state_dict(), self.device).items()

    def export_hf(self, path: str | Path, tokenizer_dir: str | Path) -> Path:
        """Write the current weights as an HF model directory (rank 0 writes); returns the path. Collective."""
        import torch

        from skills_cli.training.components.export import save_hf_model

        state_dict = self.full_hf_state_dict()
        if self.dist.is_main:
            save_hf_model(state_dict, self.config.model_name, path, self.compute_dtype, tokenizer_dir=tokenizer_dir,
                          head=self.head)  # fmt: skip
        torch.distributed.barrier()
        return Path(path)


def broadcast_state_dict(state_dict: dict, device) -> dict:
    """Rank 0's full state dict on every rank (CPU tensors). A world of one returns it as is."""
    import torch
    import torch.distributed as dist

    if dist.get_world_size() == 1:
        return state_dict
    layout = [[(name, tuple(t.shape), t.dtype) for name, t in state_dict.items()] if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(layout, src=0)
    # NCCL moves device tensors only: stage each on this rank's device, then bring it back to CPU
    transport = device if device.type == "cuda" else torch.device("cpu")
    result = {}
    for name, shape, dtype in layout[0]:
        tensor = (
            state_dict[name].to(transport)
            if dist.get_rank() == 0
            else torch.empty(shape, dtype=dtype, device=transport)
        )
        dist.broadcast(tensor, src=0)
        result[name] = tensor.cpu()
    return result
