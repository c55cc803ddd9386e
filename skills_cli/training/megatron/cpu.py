"""The shims that let megatron-core 0.16 train on CPU (gloo), used only when no GPU is used.

megatron-core assumes CUDA in places that a CPU run reaches (the first two: ../shared/research/packages.md):
  * `torch.cuda.current_device()` names the device of scratch buffers (the attention's matmul buffer, the
    RoPE frequencies, the DDP gradient buffers). Without CUDA it raises; answering "cpu" puts them in CPU
    memory, which is where every tensor of a CPU run lives.
  * dropout regions fork the model-parallel CUDA RNG tracker, which `model_parallel_cuda_manual_seed` sets up
    with CUDA generators. The inference tracker's `fork()` is a no-op context; our models have no dropout
    (HF Llama/Qwen2 train with dropout 0), so nothing random happens inside it.
  * megatron's distributed-checkpoint writer (`dist_checkpointing.save`, torch_dist format) ends its copy of
    the tensors to host memory with `torch.cuda.synchronize()`; on CPU there is nothing to wait for, so it is
    a no-op.
  * megatron's optimizer wrappers create their scalars with `device='cuda'` and compute gradient norms and
    clipping with CUDA buffers. `cpu_fp32_optimizer` is megatron's own FP32Optimizer (the wrapper for fp32
    training without the distributed optimizer, which needs CUDA) with those CUDA-only members replaced by
    plain PyTorch; its gradient handling, parameter groups and sharded checkpoint state are megatron's.

This is what lets the tests train, checkpoint and export megatron models on a CPU-only machine with the same
code path as on GPUs. It patches `torch.cuda.current_device` and `torch.cuda.synchronize` process-wide, which is safe only because a CPU
process has no CUDA device for anything else to ask about: `apply_cpu_shims` refuses to run when CUDA is there.
"""

from __future__ import annotations

_APPLIED = False


def apply_cpu_shims() -> None:
    """Idempotent; call after megatron's parallel state is initialised and before building a model."""
    global _APPLIED
    import torch
    from megatron.core.tensor_parallel.random import initialize_rng_tracker

    if torch.cuda.is_available():
        raise RuntimeError("the megatron CPU shims must not be applied in a process that uses CUDA")
    if not _APPLIED:
        torch.cuda.current_device = lambda: "cpu"
        torch.cuda.synchronize = lambda device=None: None
        _APPLIED = True
    initialize_rng_tracker(inference_rng_tracker=True, force_reset=True)


def cpu_fp32_optimizer(optimizer_config, model_chunks: list):
    """megatron's FP32Optimizer around torch AdamW, usable without CUDA (see the module docstring)."""
    import torch
    from megatron.core import parallel_state
    from megatron.core.optimizer import FP32Optimizer, MegatronOptimizer, _get_param_groups

    class CPUFP32Optimizer(FP32Optimizer):
        def __init__(self, optimizer, config, init_state_fn):
            MegatronOptimizer.__init__(self, optimizer, config, init_state_fn)  # FP32Optimizer's wants CUDA
            self._scale = torch.ones(1)
            self.is_stub_optimizer = False

        @torch.no_grad()
        def get_grad_norm(self):
            """L2 norm over the model-parallel group (TP duplicates and tied copies counted once)."""
            grads = self.get_main_grads_for_grad_norm()
            square = (
                torch.stack([g.double().square().sum() for g in grads]).sum()
                if grads
                else torch.zeros((), dtype=torch.float64)
            )
            torch.distributed.all_reduce(square, group=self.get_grad_stats_parallel_group())
            return float(square.sqrt())

        @torch.no_grad()
        def clip_grad_norm(self, clip_grad: float) -> float:
            norm = self.get_grad_norm()
            coefficient = clip_grad / (norm + 1.0e-6)  # megatron's clip_grad_by_total_norm_fp32
            if coefficient < 1.0:
                for param in self.get_parameters():
                    if param.grad is not None:
                        param.grad.mul_(coefficient)
            return norm

    def init_state(opt, config=None):  # empty Adam moments, so a sharded checkpoint can be loaded into them
        for group in opt.param_groups:
            for param in group["params"]:
                if not opt.state[param]:
                    opt.state[param]["exp_avg"] = torch.zeros_like(param.data)
                    opt.state[param]["exp_avg_sq"] = torch.zeros_like(param.data)

    config = optimizer_config
    # config_overrides={}: weight decay on every parameter, as on the GPU path (policy/megatron.py)
    groups = _get_param_groups(model_chunks, config, config_overrides={})
    adam = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay,
                             betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps)  # fmt: skip
    optimizer = CPUFP32Optimizer(adam, config, init_state)
    optimizer.grad_stats_parallel_group = parallel_state.get_model_parallel_group()
    optimizer.tp_group = parallel_state.get_tensor_model_parallel_group()
    return optimizer
