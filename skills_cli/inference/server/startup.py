"""Start-up of the hf server: fail fast on a wrong model path, a missing key or a busy port, then load the
model, warm it up and hand back a ready Engine. Failures are `StartupError`s, printed as one line."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

from skills_cli.inference.engine.params import SamplingParams
from skills_cli.inference.server.auth import API_KEY_ENV, is_loopback, job_api_key

if TYPE_CHECKING:
    from skills_cli.inference.server.batching import Engine


class StartupError(Exception):
    """Printed as one line, `hf_server: <message>`, before exiting with status 1."""


WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_local_reference(model: str) -> bool:
    """A path (absolute, relative, ~, or existing) rather than a hub id like `org/name`."""
    return Path(model).expanduser().is_absolute() or model.startswith((".", "~")) or Path(model).exists()


def check_model_reference(model: str) -> None:
    """Catch a wrong local path before spending seconds importing torch; hub ids go on to transformers."""
    if not is_local_reference(model):
        return
    path = Path(model).expanduser()
    if not path.is_dir():
        raise StartupError(f"cannot load model from {model}: no such directory")
    if not (path / "config.json").is_file():
        raise StartupError(f"cannot load model from {model}: no config.json (not a Hugging Face model directory)")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise StartupError(f"cannot load model from {model}: no weights (*.safetensors or *.bin) in it")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise StartupError(f"cannot load model from {model}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def server_api_key(host: str) -> str | None:
    """The key from the environment; refuse to listen beyond this machine without one."""
    if API_KEY_ENV in os.environ and not os.environ[API_KEY_ENV].strip():
        raise StartupError(f"${API_KEY_ENV} is set but empty; set it to a key or unset it")
    key = job_api_key()
    if key is None and not is_loopback(host):
        raise StartupError(f"refusing to listen on {host} without an API key: set ${API_KEY_ENV} or use 127.0.0.1")
    return key


def served_name(model: str) -> str:
    """A local model is served under its directory's base name (its path stays on this machine); a hub id as is."""
    return Path(model).expanduser().resolve().name if is_local_reference(model) else model


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind now so a busy port fails at once; listening starts only when the model is ready."""
    try:
        family, kind, protocol, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, protocol)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # allows TIME_WAIT leftovers, not a live listener
        sock.bind(address)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port}: {error}") from None
    return sock


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise StartupError("--device cuda requested but torch sees no CUDA device")
    return requested


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":  # bfloat16 is fast on GPUs; on CPU it is slow and lossy, so float32
        return torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]


def default_num_threads() -> int:
    """Usable CPUs minus one: the event loop (HTTP, JSON, tokenization) needs a core of its own.

    Measured on 2 cores with the tiny model: 1 torch thread gave ~2x the tokens/s of 2, because the HTTP
    thread and the torch pool otherwise fight over both cores.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, usable - 1)


def load_engine(model: str, device: str, dtype: str, max_batch_size: int, num_threads: int) -> Engine:
    """The model and tokenizer loaded, wrapped in an Engine and warmed up; StartupError on any failure."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    from skills_cli.inference.model_loading import load_tokenizer
    from skills_cli.inference.server.batching import Engine

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(num_threads)
    device = pick_device(device)
    try:
        tokenizer = load_tokenizer(model)
        loaded = AutoModelForCausalLM.from_pretrained(model, dtype=pick_dtype(dtype, device))
    except Exception as error:
        reason = (str(error).strip().splitlines() or [""])[0]
        raise StartupError(f"cannot load model from {model}: {type(error).__name__}: {reason}") from None
    engine = Engine(loaded.to(device).eval(), tokenizer, max_batch_size=max_batch_size)
    try:  # one short generation exercises prefill, decode and the cache surgery before we accept traffic
        engine.generate([tokenizer.encode("1+1=") or [engine.pad_id]], SamplingParams(max_new_tokens=2, temperature=0))
    except Exception as error:
        raise StartupError(
            f"cannot load model from {model}: warm-up generation failed: {type(error).__name__}: {error}"
        ) from None
    return engine
