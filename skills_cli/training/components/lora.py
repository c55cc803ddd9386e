"""LoRA adapters for the dtensor policy (peft), and folding them back into plain HF weights.

With `policy.lora_cfg.enabled` the base weights are frozen and low-rank adapters (rank `dim`, scale
`alpha / dim`) are trained on the chosen projections; the optimizer sees only the adapters, so its state is
tiny. Everything outside the trainer wants ordinary HF tensors: the rollout engine's refit and the final HF
export get `merged_state_dict`, where each adapted weight is W + (alpha / dim) * B @ A under the original
parameter name, exactly what `peft`'s merge_and_unload would produce, computed on the gathered full tensors
(FSDP shards the adapters like any other parameter).
"""

from __future__ import annotations

import re

from skills_cli.common.errors import UserError

PEFT_PREFIX = "base_model.model."
ADAPTER = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.default\.weight$")


def apply_lora(model, lora_config):
    """The model wrapped with trainable LoRA adapters (peft); base weights frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise UserError("policy.lora_cfg.enabled=true needs peft (pip install peft)") from None
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    missing = [target for target in lora_config.target_modules if target not in names]
    if missing:
        raise UserError(f"policy.lora_cfg.target_modules: the model has no module named {', '.join(missing)} "
                        f"(e.g. {', '.join(sorted(n for n in names if n.endswith('proj'))[:8])})")  # fmt: skip
    config = LoraConfig(r=lora_config.dim, lora_alpha=lora_config.alpha, lora_dropout=lora_config.dropout,
                        target_modules=list(lora_config.target_modules), bias="none")  # fmt: skip
    return get_peft_model(model, config)


def merged_state_dict(state_dict: dict, scale: float) -> dict:
    """Plain HF names and tensors from a (full) peft state dict: adapters folded into their base weights."""
    import torch

    adapters: dict[str, dict[str, torch.Tensor]] = {}
    plain = {}
    for name, tensor in state_dict.items():
        name = name.removeprefix(PEFT_PREFIX)
        match = ADAPTER.match(name)
        if match:
            adapters.setdefault(match["module"], {})[match["which"]] = tensor
        else:
            plain[name.replace(".base_layer.", ".")] = tensor
    for module, pair in adapters.items():
        weight_name = f"{module}.weight"
        base = plain[weight_name]
        delta = (pair["B"].float() @ pair["A"].float()) * scale
        plain[weight_name] = (base.float() + delta).to(base.dtype)
    return plain
