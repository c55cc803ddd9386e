"""The dtensor policy: an HF causal LM sharded with FSDP2 over data parallelism, optional DTensor tensor
parallelism, AdamW and the LambdaLR schedule, DCP checkpoints and the HF export.

The building blocks live in `parallel.py` (mesh, TP plan, FSDP, gradient clipping), `model.py` (loading,
fingerprint), `optim.py`, `checkpoint.py` and `export.py`; this class puts them together behind `Policy`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.batching import dummy_micro_batch
from skills_cli.training.components.export import gather_full_state_dict
from skills_cli.training.components.meta_init import broadcast_object, empty_model, materialize
from skills_cli.training.components.model import count_parameters, load_model, model_fingerprint
from skills_cli.training.components.optim import build_optimizer, build_scheduler
from skills_cli.training.components.parallel import (
    Distributed,
    all_reduce,
    apply_fsdp,
    apply_tensor_parallel,
    build_mesh,
    check_tensor_parallel,
    clip_grad_norm_,
)
from skills_cli.training.components.sequence_parallel import apply_sequence_parallel, sequence_parallel_inputs
from skills_cli.training.config import PolicyConfig
from skills_cli.training.policy.base import LossFn, Policy

log = logging.getLogger("skills_cli.sft")


class DTensorPolicy(Policy):
    backend = "dtensor"

    def __init__(self, config: PolicyConfig, dist: Distributed, total_steps: int, head: str = "lm"):
        import torch

        self.config, self.dist, self.device, self.head = config, dist, dist.device, head
        self.mixed_precision = config.precision == "bfloat16" and dist.device.type == "cuda"
        self.compute_dtype = torch.bfloat16 if self.mixed_precision else torch.float32
        self._build_model()
        # with LoRA only the adapters train: the optimizer (and its state) never sees the frozen base weights
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], config.optimizer)
        self.scheduler = build_scheduler(self.optimizer, config.scheduler, total_steps)

    def _build_model(self) -> None:
        config, dtensor = self.config, self.config.dtensor_cfg
        tp = dtensor.tensor_parallel_size
        self.tp_size, self.sequence_parallel = tp, dtensor.sequence_parallel and tp > 1
        self.mesh = build_mesh(self.device.type, self.dist.world_size, tp)
        self.dp_rank, self.dp_group = self.mesh["dp"].get_local_rank(), self.mesh["dp"].get_group()
        self.dp_size = self.mesh["dp"].size()
        # rank 0 alone reads the checkpoint; every rank shards a meta-initialized copy (see meta_init.py)
        loaded = load_model(config.model_name, head=self.head) if self.dist.is_main else None
        model = empty_model(config.model_name, head=self.head)
        check_tensor_parallel(model.config, tp)
        self.fingerprint = broadcast_object(model_fingerprint(loaded) if loaded is not None else None)
        self.num_params = count_parameters(model)
        self.attn_implementation = model.config._attn_implementation or "sdpa"
        if dtensor.activation_checkpointing:
            enable_activation_checkpointing(model)
        if config.lora_cfg.enabled:
            if tp > 1:
                raise UserError("policy.lora_cfg.enabled=true with tensor_parallel_size > 1 is not supported; use TP=1 "
                                "(LoRA keeps the trained state small enough for FSDP alone)")  # fmt: skip
            from skills_cli.training.components.lora import apply_lora

            model = apply_lora(model, config.lora_cfg)
            loaded = apply_lora(loaded, config.lora_cfg) if loaded is not None else None  # rank 0's adapter init wins
        if tp > 1:
            if dtensor.sequence_parallel:
                apply_sequence_parallel(model, self.mesh["tp"])
            else:
                apply_tensor_parallel(model, self.mesh["tp"])
        if self.device.type == "cpu" and config.precision == "bfloat16":
            # CPU bf16 matmuls are slow or emulated and gloo gains nothing from bf16 reductions; float32 also
            # keeps CPU runs exactly comparable across micro-batch sizes, packing and DP layouts (the tests)
            log.info("CPU run: training in float32 (bf16 mixed precision is used on GPUs only)")
        offload = dtensor.cpu_offload and self.device.type == "cuda"
        if dtensor.cpu_offload and not offload:
            log.info("CPU run: policy.dtensor_cfg.cpu_offload has nothing to do (parameters are in CPU memory)")
        apply_fsdp(model, self.mesh["dp"], self.mixed_precision, offload, self._one_graph(offload))
        materialize(model, "cpu" if offload else self.device, loaded.state_dict() if loaded is not None else {})
        del loaded
        model.train()
        self.model = model

    def _one_graph(self, offload: bool) -> bool:
        """`dtensor_cfg.compile_scope=stack` where it applies: one data-parallel rank and decoder layers as loaded
        (no tensor parallelism, CPU offload, activation checkpointing or LoRA wrapping them); else per layer."""
        dtensor = self.config.dtensor_cfg
        if dtensor.compile_scope != "stack":
            return False
        blockers = {"data parallelism": self.dp_size > 1, "tensor parallelism": self.tp_size > 1,
                    "cpu_offload": offload, "activation_checkpointing": dtensor.activation_checkpointing,
                    "LoRA": self.config.lora_cfg.enabled}  # fmt: skip
        found = [name for name, present in blockers.items() if present]
        if found:
            log.info("policy.dtensor_cfg.compile_scope=stack does not apply with %s: compiling per decoder layer",
                     ", ".join(found))  # fmt: skip
        return not found

    def data_parallel_mesh(self):
        return self.mesh["dp"]

    # ---- compute ------------------------------------------------------------------------------------------

    def forward_backward(self, micro_batches: list, loss_fn: LossFn, train: bool) -> list[dict]:
        import torch

        # FSDP's collectives need every DP rank to run as many passes: the extra ones train nothing
        passes = int(all_reduce(len(micro_batches), self.dp_group, self.device, op="max"))
        metrics = []
        with torch.set_grad_enabled(train):
            for index, micro_batch in enumerate(micro_batches):
                if train and self.dp_size == 1 and index in (0, passes - 1):
                    # one DP rank: gather the weights and reduce the gradients once per step, not per micro-batch
                    # (set at the first and the last pass only: each call walks every module of the model)
                    _accumulate_unsharded(self.model, last=index == passes - 1)
                inputs, labels = micro_batch.model_inputs(self.attn_implementation, self.compute_dtype, self.device,
                                                          select_logits=not self.sequence_parallel)  # fmt: skip
                logits = self._logits(inputs, labels.shape[1])
                loss, values = loss_fn(logits, labels, micro_batch)
                if train:
                    # FSDP averages gradients over DP ranks; scaling by dp_size turns that into the sum we need
                    (loss * self.dp_size).backward()
                metrics.append(_detached(values))
            for _ in range(passes - len(micro_batches)):
                self._empty_pass(train)
        return metrics

    def _logits(self, inputs: dict, length: int):
        """The model's logits for `inputs`; with sequence parallelism the inputs are padded to a multiple of the
        TP size and the logits cut back to `length`."""
        if not self.sequence_parallel:
            return self.model(**inputs).logits
        padded = sequence_parallel_inputs(inputs, self.tp_size, self.compute_dtype, self.attn_implementation)
        return self.model(**padded).logits[:, :length]

    def _empty_pass(self, train: bool) -> None:
        """A one-token forward (and a zero backward) that only joins the other ranks' FSDP collectives."""
        inputs, _ = dummy_micro_batch(0).model_inputs(self.attn_implementation, self.compute_dtype, self.device)
        logits = self._logits(inputs, inputs["input_ids"].shape[1])
        if train:
            (logits.sum() * 0.0).backward()

    def optimizer_step(self, max_grad_norm: float | None, skip: bool = False) -> float:
        return float(self.optimizer_step_async(max_grad_norm, skip))

    def optimizer_step_async(self, max_grad_norm: float | None, skip: bool = False):
        grad_norm = clip_grad_norm_(self.model.parameters(), max_grad_norm)
        if not skip:
            self.optimizer.step()
        self.zero_grad()
        return grad_norm

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def scheduler_step(self) -> None:
        self.scheduler.step()

    def get_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    # ---- checkpoints and export ---------------------------------------------------------------------------

    def save_checkpoint(self, checkpoint_dir: str | Path, step: int, trainer_state: dict, keep_last_k: int) -> Path:
        state = {**trainer_state, "backend": self.backend, "scheduler": self.scheduler.state_dict(),
                 "fingerprint": self.fingerprint, "model_name": self.config.model_name}  # fmt: skip
        return ckpt.save_checkpoint(checkpoint_dir, step, self.model, self.optimizer, state, keep_last_k)

    def load_checkpoint(self, path: str | Path) -> dict:
        path = Path(path)
        state = ckpt.read_trainer_state(path)
        check_backend(path, state, self.backend)
        ckpt.check_fingerprint(path, state, self.fingerprint, self.config.model_name)
        ckpt.load_checkpoint(path, self.model, self.optimizer)
        self.scheduler.load_state_dict(state["scheduler"])
        return state

    def full_hf_state_dict(self) -> dict:
        state_dict = gather_full_state_dict(self.model)
        if self.config.lora_cfg.enabled and state_dict:
            from skills_cli.training.components.lora import merged_state_dict

            lora = self.config.lora_cfg
            state_dict = merged_state_dict(state_dict, lora.alpha / lora.dim)
        return state_dict

    def rollout_weights(self):
        """Each parameter gathered in turn on this rank's device (`full_tensor`, an all-gather over its mesh):
        no trip through host memory and never more than one full tensor at a time. LoRA weights need merging,
        which the default (full state dict, merged on rank 0) does."""
        if self.config.lora_cfg.enabled:
            yield from super().rollout_weights()
            return
        from torch.distributed.tensor import DTensor

        for name, parameter in self.model.named_parameters():
            tensor = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
            yield name, tensor.detach()


def check_backend(path: Path, state: dict, backend: str) -> None:
    """A checkpoint resumes only on the backend that wrote it (their sharded layouts differ)."""
    saved = state.get("backend", "dtensor")  # checkpoints from before the megatron backend are dtensor's
    if saved != backend:
        raise UserError(f"checkpoint {path} was written by backend={saved}, this run uses backend={backend}; "
                        f"convert it to HF (ns convert) and start from that, or use a new checkpoint directory")  # fmt: skip


def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in backward (transformers' per-layer, non-reentrant
    checkpointing). It checkpoints the layer's `forward` inside its `__call__`, so FSDP's all-gather hooks stay
    outside the recomputed region, as with torchtitan's checkpoint_wrapper."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _accumulate_unsharded(model, last: bool) -> None:
    """With a single data-parallel rank FSDP's shard is the whole model, so resharding after each micro-batch's
    backward (and gathering again for the next forward) and "reducing" each micro-batch's gradients only copy,
    cast and add memory (an H100 profile of a 0.5B model showed such kernels at up to ~15% of GPU time, though
    no end-to-end gain was measured apart from other changes). Until the step's last pass the weights stay
    gathered and gradients accumulate unsharded (in fp32); the last pass reshards and reduces as usual."""
    model.set_requires_gradient_sync(last, recurse=True)
    model.set_reshard_after_backward(last, recurse=True)


def _detached(values: dict) -> dict:
    return {key: value.detach() if hasattr(value, "detach") else value for key, value in values.items()}
