"""The megatron policy: an HF Llama/Qwen2 model rebuilt as a megatron-core GPTModel with tensor and pipeline
parallelism (policy.megatron_cfg), megatron's DistributedDataParallel and optimizer (the distributed optimizer
when `use_distributed_optimizer`), megatron distributed checkpoints, and HF export.

How `forward_backward` keeps the loss contract of `policy/base.py`: DDP averages gradients over
data-parallel ranks, so the loss handed to backward is `loss_fn`'s share x DP size (and x the number of
micro-batches under megatron's pipeline schedule, which divides by it); the gradients are then exactly the
global-batch gradient, as on the dtensor backend. Without pipeline parallelism the micro-batch loop is ours
(megatron's no-pipelining schedule allocates on CUDA); with it, megatron's 1F1B schedule runs, so
pipeline parallelism needs GPUs.

Attention: packed rows must keep their sequences apart. Packed micro-batches run as one THD stream with
cu_seqlens (`packed.thd_inputs`: the dtensor backend's flattened layout, padding left out where the loss
allows, each padded row's trailing padding otherwise a sequence of its own), with either layer spec: the local
spec's core attention is `packed.VarlenCoreAttention` (RoPE by position id, varlen flash kernels on GPUs),
and its decoder layers are compiled on GPUs (packed.py). Padded rows run the same way without
TransformerEngine; with it they need only the causal kernel: right padding comes after every real token, so
no real token attends to it.

Precision: bf16 parameters with fp32 main weights in the optimizer on GPUs (policy.precision=bfloat16), the
main weights starting from the checkpoint's own values as the dtensor backend's fp32 master weights do
(`model.set_main_weights`), float32 everywhere on CPU.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.batching import dummy_micro_batch
from skills_cli.training.components.model import compile_enabled, count_parameters, load_model, model_fingerprint
from skills_cli.training.components.optim import StepSchedule
from skills_cli.training.components.parallel import Distributed, all_reduce
from skills_cli.training.config import PolicyConfig
from skills_cli.training.megatron import bridge, dist_ckpt, packed
from skills_cli.training.megatron import model as mcore
from skills_cli.training.policy import policy_backend
from skills_cli.training.policy.base import LossFn, Policy
from skills_cli.training.policy.dtensor import check_backend

log = logging.getLogger("skills_cli.sft")
CHECKPOINT_SUBDIR = "megatron"


class MegatronPolicy(Policy):
    backend = "megatron"

    def __init__(self, config: PolicyConfig, dist: Distributed, total_steps: int, seed: int = 42, head: str = "lm"):
        import torch

        self.config, self.dist, self.device, self.head = config, dist, dist.device, head
        megatron = config.megatron_cfg
        self.tp_size, self.pp_size = megatron.tensor_model_parallel_size, megatron.pipeline_model_parallel_size
        bf16 = config.precision == "bfloat16" and self.device.type == "cuda"
        self.compute_dtype = torch.bfloat16 if bf16 else torch.float32
        policy_backend(config, self.backend, cuda=self.device.type == "cuda")  # no pipeline stages on CPU
        if self.device.type == "cpu" and config.precision == "bfloat16":
            log.info("CPU run: training in float32 (bf16 is used on GPUs only)")
        self.te = self.device.type == "cuda" and mcore.transformer_engine_available()
        # megatron's distributed optimizer is CUDA-only; on CPU the fp32 optimizer (cpu.cpu_fp32_optimizer)
        self.use_distributed_optimizer = megatron.use_distributed_optimizer and self.device.type == "cuda"
        if megatron.use_distributed_optimizer and not self.use_distributed_optimizer:
            log.info(
                "CPU run: policy.megatron_cfg.use_distributed_optimizer needs CUDA; using megatron's fp32 optimizer"
            )
        self.attn_implementation = "megatron_te" if self.te else "megatron_local"
        self._build_model(seed)
        self._build_optimizer()
        if bf16:  # fp32 main weights from the checkpoint's values, not from their bf16 copies
            mcore.set_main_weights(self.optimizer, self.gpt, self._loaded_weights)
        del self._loaded_weights
        self.schedule = StepSchedule(config.optimizer.kwargs.lr, config.scheduler, total_steps)

    def _build_model(self, seed: int) -> None:
        from megatron.core import parallel_state
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

        hf = load_model(self.config.model_name, head=self.head)
        self.shape = bridge.model_shape(hf.config)
        # a tied LM head is the embedding; a scalar head is its own weight (`score`)
        self.tied = self.shape.tie_word_embeddings and self.head == "lm"
        self.output_size = 1 if self.head == "scalar" else self.shape.vocab_size
        bridge.check_tensor_parallel(self.shape, self.tp_size)
        bridge.check_pipeline_parallel(self.shape, self.pp_size)
        self.fingerprint, self.num_params = model_fingerprint(hf), count_parameters(hf)
        self.rope_frequencies = packed.inverse_frequencies(self.shape, self.device)
        mcore.initialize_parallel(self.tp_size, self.pp_size, seed, self.device)
        self.transformer_config = mcore.transformer_config(self.shape, self.tp_size, self.pp_size, self.compute_dtype,
                                                           self.device, self.config.megatron_cfg.activation_checkpointing)  # fmt: skip
        gpt = mcore.build_gpt_model(self.shape, self.transformer_config, self.te, head=self.head)
        if not self.te and compile_enabled(self.device):
            packed.compile_decoder_layers(gpt)
        rows = bridge.padded_vocab_size(self.shape.vocab_size, self.tp_size)
        full = bridge.hf_to_megatron(hf.state_dict(), self.shape, te=self.te, vocab_rows=rows, head=self.head)
        self._loaded_weights = mcore.load_megatron_weights(gpt, full, self.tied)
        del hf, full
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, overlap_grad_reduce=False, overlap_param_gather=False,
            use_distributed_optimizer=self.use_distributed_optimizer,
        )  # fmt: skip
        self.model = DistributedDataParallel(config=self.transformer_config, ddp_config=ddp_config, module=gpt)
        self.gpt = gpt
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        self.dp_group = parallel_state.get_data_parallel_group()

    def _build_optimizer(self) -> None:
        from megatron.core.distributed import finalize_model_grads
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        kwargs = self.config.optimizer.kwargs
        optimizer_config = OptimizerConfig(
            optimizer="adam", lr=kwargs.lr, min_lr=0.0, weight_decay=kwargs.weight_decay,
            adam_beta1=kwargs.betas[0], adam_beta2=kwargs.betas[1], adam_eps=kwargs.eps,
            clip_grad=0.0,  # optimizer_step clips with the max_grad_norm it is given
            bf16=self.transformer_config.bf16,
            params_dtype=self.compute_dtype,
            use_distributed_optimizer=self.use_distributed_optimizer,
        )  # fmt: skip
        if self.device.type == "cpu":
            from skills_cli.training.megatron.cpu import cpu_fp32_optimizer

            self.optimizer = cpu_fp32_optimizer(optimizer_config, [self.model])
        else:
            # config_overrides={}: weight decay on every parameter, biases and norms included, as torch's AdamW
            # on the dtensor backend does (megatron's default exempts them)
            self.optimizer = get_megatron_optimizer(optimizer_config, [self.model], config_overrides={})
        # what megatron's schedules call: gradient sync after the last micro-batch, no sync before it
        self.transformer_config.finalize_model_grads_func = finalize_model_grads
        self.transformer_config.no_sync_func = self.model.no_sync
        self.transformer_config.grad_scale_func = self.optimizer.scale_loss

    # ---- compute ------------------------------------------------------------------------------------------

    def _model_inputs(self, micro_batch) -> dict:
        """Tensors for GPTModel.forward and the labels, on the device (see the module docstring)."""
        device = self.device
        if self.te and micro_batch.segment_ids is None:
            return {"input_ids": micro_batch.input_ids.to(device), "position_ids": micro_batch.position_ids.to(device),
                    "attention_mask": None, "labels": micro_batch.labels.to(device), "packed_seq_params": None}  # fmt: skip
        return packed.thd_inputs(micro_batch, device, self.rope_frequencies, self.compute_dtype)

    def forward_backward(self, micro_batches: list, loss_fn: LossFn, train: bool) -> list[dict]:
        import torch

        # every DP rank runs as many passes (the extra ones train nothing), like the dtensor backend
        passes = int(all_reduce(len(micro_batches), self.dp_group, self.device, op="max"))
        if passes == 0:
            return []
        items = [(mb, self._model_inputs(mb)) for mb in micro_batches]
        items += [(None, self._model_inputs(dummy_micro_batch(0)))] * (passes - len(micro_batches))
        with torch.set_grad_enabled(train):
            if self.pp_size == 1:
                results = self._run_one_stage(items, loss_fn, train)
            else:
                results = self._run_pipeline(items, loss_fn, train)
        return self._from_last_stage([values for values in results if values is not None])

    def _run_one_stage(self, items: list, loss_fn: LossFn, train: bool) -> list:
        """megatron's no-pipelining schedule, written out (megatron's needs CUDA): gradients accumulate in
        DDP's buffers without syncing until `finalize_model_grads` reduces them over DP once."""
        import contextlib

        from megatron.core.distributed import finalize_model_grads

        results = []
        for index, (micro_batch, inputs) in enumerate(items):
            last = index == len(items) - 1
            with self.model.no_sync() if train and not last else contextlib.nullcontext():
                output = self.model(inputs["input_ids"], inputs["position_ids"], inputs["attention_mask"],
                                    packed_seq_params=inputs["packed_seq_params"])  # fmt: skip
                # DDP averages gradients over DP ranks: x dp_size turns that into the sum (module docstring)
                loss, metrics = _loss(loss_fn, micro_batch, inputs["labels"], self.output_size, self.dp_size,
                                      output)  # fmt: skip
                if train:
                    loss.backward()
            results.append(metrics)
        if train:
            finalize_model_grads([self.model])
        return results

    def _run_pipeline(self, items: list, loss_fn: LossFn, train: bool) -> list:
        """megatron's 1F1B pipeline schedule (GPU only). It divides each loss by the number of micro-batches and
        DDP averages over DP, so the loss to backpropagate is loss_fn's share x micro-batches x DP size."""
        from megatron.core.pipeline_parallel import get_forward_backward_func

        scale = len(items) * self.dp_size

        def forward_step(data_iterator, model):
            micro_batch, inputs = next(data_iterator)
            output = model(inputs["input_ids"], inputs["position_ids"], inputs["attention_mask"],
                           packed_seq_params=inputs["packed_seq_params"])  # fmt: skip
            return output, partial(_loss, loss_fn, micro_batch, inputs["labels"], self.output_size, scale)

        return get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iter(items), model=[self.model], num_microbatches=len(items),
            seq_length=max(inputs["input_ids"].shape[1] for _, inputs in items),
            micro_batch_size=max(inputs["input_ids"].shape[0] for _, inputs in items), forward_only=not train,
        )  # fmt: skip

    def _from_last_stage(self, metrics: list[dict]) -> list[dict]:
        """With pipeline parallelism only the last stage has the metrics: it broadcasts them to its pipeline."""
        import torch.distributed as dist
        from megatron.core import parallel_state

        if self.pp_size == 1:
            return metrics
        box = [[{k: v.cpu() if hasattr(v, "cpu") else v for k, v in m.items()} for m in metrics]]
        dist.broadcast_object_list(box, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                   group=parallel_state.get_pipeline_model_parallel_group())  # fmt: skip
        return box[0]

    def optimizer_step(self, max_grad_norm: float | None, skip: bool = False) -> float:
        optimizer = self.optimizer
        optimizer.prepare_grads()
        if max_grad_norm is not None and max_grad_norm > 0:
            grad_norm = optimizer.clip_grad_norm(max_grad_norm)
        else:
            grad_norm = optimizer.get_grad_norm()
        if not skip:
            self.schedule.apply(optimizer.param_groups)
            optimizer.step_with_ready_grads()
        self.zero_grad()
        return float(grad_norm)

    def zero_grad(self) -> None:
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()

    def scheduler_step(self) -> None:
        self.schedule.step()

    def get_lr(self) -> float:
        return self.schedule.get_lr()

    # ---- checkpoints and export ---------------------------------------------------------------------------

    def save_checkpoint(self, checkpoint_dir: str | Path, step: int, trainer_state: dict, keep_last_k: int) -> Path:
        state = {**trainer_state, "backend": self.backend, "scheduler": self.schedule.state_dict(),
                 "fingerprint": self.fingerprint, "model_name": self.config.model_name,
                 "megatron": {"tensor_model_parallel_size": self.tp_size,
                              "pipeline_model_parallel_size": self.pp_size, "transformer_engine": self.te}}  # fmt: skip

        def write(tmp: Path) -> None:
            dist_ckpt.save(tmp / CHECKPOINT_SUBDIR, self.gpt, self.optimizer)

        return ckpt.save_atomically(checkpoint_dir, step, state, keep_last_k, write)

    def load_checkpoint(self, path: str | Path) -> dict:
        path = Path(path)
        state = ckpt.read_trainer_state(path)
        check_backend(path, state, self.backend)
        ckpt.check_fingerprint(path, state, self.fingerprint, self.config.model_name)
        dist_ckpt.load(path / CHECKPOINT_SUBDIR, self.gpt, self.optimizer)
        self.schedule.load_state_dict(state["scheduler"])
        ckpt.load_rng_state(path)
        return state

    def full_hf_state_dict(self) -> dict:
        full = mcore.gather_megatron_weights(self.gpt, self.tied)
        return bridge.megatron_to_hf(full, self.shape, te=self.te, head=self.head) if full else {}


def _loss(loss_fn: LossFn, micro_batch, labels, outputs: int, scale: float, output):
    """megatron's loss_func: (loss to backpropagate, metrics); metrics None for the padding passes."""
    logits = output[..., :outputs]  # drop the padded vocabulary rows (bridge.padded_vocab_size)
    if micro_batch is None:
        return logits.sum() * 0.0, None
    loss, values = loss_fn(logits, labels, micro_batch)
    metrics = {key: value.detach() if hasattr(value, "detach") else value for key, value in values.items()}
    return loss * scale, metrics
