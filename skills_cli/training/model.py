"""Loading the HF causal LM to train, its fingerprint, and its size.

The fingerprint identifies the *starting* model: a hash of the architecture (config fields that shape the
weights), every parameter's name and shape, and a sample of the loaded weight values. It is stored in each
checkpoint; resuming recomputes it from `policy.model_name` and refuses a checkpoint written for another model
(a different architecture, or the same architecture with other weights), which would otherwise load silently
whenever the shapes happen to match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from skills_cli.common.errors import UserError

# Config fields that determine the model's weights and computation.
ARCHITECTURE_KEYS = ("model_type", "architectures", "vocab_size", "hidden_size", "intermediate_size",
                     "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                     "tie_word_embeddings", "rope_theta", "rms_norm_eps")  # fmt: skip
VALUES_PER_TENSOR = 64  # weight values hashed per parameter: enough to tell two checkpoints apart


def check_model_path(path: str, what: str = "policy.model_name") -> Path:
    if not path:
        raise UserError(f"{what} is required (a local HF model directory)")
    directory = Path(path)
    if not (directory / "config.json").is_file():
        raise UserError(f"{what}: no HF model at {path} (config.json not found)")
    return directory


def load_model(path: str, attn_implementation: str | None = None):
    """The model in float32 on CPU: fp32 master weights, which sharding then moves to the device."""
    import torch
    from transformers import AutoModelForCausalLM

    check_model_path(path)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    model.config.use_cache = False  # no KV cache in training
    return model


def model_fingerprint(model) -> str:
    """sha256 over architecture, parameter names/shapes and a strided sample of each parameter's values."""
    import torch

    digest = hashlib.sha256()
    config = model.config.to_dict()
    digest.update(json.dumps({k: config.get(k) for k in ARCHITECTURE_KEYS}, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}".encode())
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // VALUES_PER_TENSOR)
        digest.update(json.dumps(flat[::stride][:VALUES_PER_TENSOR].to(torch.float32).tolist()).encode())
    return digest.hexdigest()


def count_parameters(model) -> int:
    """Parameters of the full model (tied embeddings counted once), before any sharding."""
    return sum(p.numel() for p in model.parameters())
