"""Frozen models beside the policy: GRPO's and PPO's reference, DPO's on-the-fly reference, distillation's teacher.

Each is a plain HF model in the policy's compute dtype, in eval mode, without gradients, on either backend
(its inputs are the micro-batches' HF layout). It is either whole on every rank (the fastest forward, for a
model that fits one device beside the policy) or, `sharded`, FSDP-sharded over the policy's data-parallel ranks
(`parallel.shard_frozen`): a rank then holds 1/DP of the weights plus one gathered layer at a time, which is
what a model too large to copy onto every device needs. A sharded model's forward is a collective over those
ranks, so every rank must run as many forwards, in the same order relative to the policy's own collectives:
`even_out` pads a rank's micro-batch list with loss-free one-token ones for a loop that runs the model inside
the policy's passes (a distillation loss), `forward_each` runs it over a list on its own (reference passes).
"""

from __future__ import annotations

from collections.abc import Callable

from skills_cli.training.components.batching import dummy_micro_batch
from skills_cli.training.components.parallel import all_reduce, shard_frozen


class FrozenModel:
    """A frozen HF model and how it is laid out over the data-parallel ranks."""

    def __init__(self, model, policy, device, sharded: bool):
        self.model, self.policy, self.device, self.sharded = model, policy, device, sharded

    @classmethod
    def load(cls, model_name: str, policy, device, sharded: bool) -> FrozenModel:
        """`model_name` in `policy`'s compute dtype on `device`; sharded over its data-parallel ranks when asked
        and there is more than one (one rank's shard would be the whole model, gathered again every forward).
        Its attention is the policy's HF one; beside a megatron policy (whose inputs are padded rows or 4D masks,
        `batching.MicroBatch.model_inputs`) transformers' default for this device."""
        from skills_cli.training.components.model import load_model

        attention = policy.attn_implementation
        model = load_model(model_name, attn_implementation=None if attention.startswith("megatron") else attention)
        model.to(dtype=policy.compute_dtype).eval().requires_grad_(False)
        sharded = sharded and policy.dp_size > 1
        if sharded:
            shard_frozen(model, policy.data_parallel_mesh())
        return cls(model.to(device=device), policy, device, sharded)

    def logits(self, inputs: dict):
        import torch

        with torch.no_grad():
            return self.model(**inputs).logits

    @property
    def shards(self) -> int:
        """Over how many ranks the weights are split, read from the weights themselves."""
        from torch.distributed.tensor import DTensor

        weight = next(self.model.parameters())
        return weight.device_mesh.size() if isinstance(weight, DTensor) else 1

    def even_out(self, batches: list, pad_id: int) -> list:
        """`batches` plus loss-free one-token micro-batches up to the most any data-parallel rank has (sharded
        only): for loops that run this model on every micro-batch in step with the policy's collectives."""
        missing = self._missing(len(batches))
        return batches + [dummy_micro_batch(pad_id) for _ in range(missing)]

    def forward_each(self, batches: list, use: Callable) -> None:
        """`use(batch, logits, labels)` for each of `batches`, in the policy's input layout. Sharded, the ranks
        first agree on how many forwards to run (before any: a count exchanged after a rank's own loop would meet
        another rank's forwards still gathering weights), and a rank with fewer batches runs the rest on
        one-token inputs."""
        missing = self._missing(len(batches))
        for batch in batches:
            inputs, labels = self.inputs(batch)
            use(batch, self.logits(inputs), labels)
        for _ in range(missing):
            self.logits(self.inputs(dummy_micro_batch(0))[0])

    def inputs(self, batch) -> tuple[dict, object]:
        """A micro-batch's model inputs and labels on this rank's device, in the policy's attention layout."""
        # an HF model, whole or FSDP-sharded (no sequence parallelism): it takes `logits_to_keep`
        policy = self.policy
        return batch.model_inputs(policy.attn_implementation, policy.compute_dtype, self.device, select_logits=True)

    def _missing(self, count: int) -> int:
        if not self.sharded:
            return 0
        return int(all_reduce(count, self.policy.dp_group, self.device, op="max")) - count
