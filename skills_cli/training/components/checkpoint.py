"""Training checkpoints: everything needed to continue a run step for step.

Layout of `<checkpoint_dir>/step_N/`:
  dcp/                   dtensor backend: model and optimizer state (torch.distributed.checkpoint, sharded:
                         every rank writes its own shards, and a later run may use another world size)
  megatron/              megatron backend instead: a megatron-core distributed checkpoint (`model.*` and
                         `optimizer.*` sharded tensors, see training/megatron/dist_ckpt.py)
  rng/rank_R.pt          each rank's RNG states (python, numpy, torch CPU, CUDA)
  trainer_state.json     step, data position (epoch, index in that epoch's shuffled order), scheduler state,
                         the model fingerprint and the run's config; written last, so it marks a complete save

Writes go to `tmp_step_N` and rank 0 renames it to `step_N` once every rank has finished (a rename within one
directory is atomic), so a job killed mid-save leaves only a `tmp_step_*` that the next run deletes. The
newest complete `step_N` is resumed automatically; only the last `keep_last_k` are kept.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.training.components.optim import implementation_flags, set_implementation_flags

log = logging.getLogger("skills_cli.sft")

STEP_DIR = re.compile(r"^step_(\d+)$")
STATE_FILE = "trainer_state.json"


def step_checkpoints(checkpoint_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a trainer_state.json), oldest first."""
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        match = STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    found = step_checkpoints(checkpoint_dir)
    return found[-1][1] if found else None


def remove_partial_saves(checkpoint_dir: str | Path) -> None:
    """Delete `tmp_step_*` left by a save that was interrupted (rank 0 only, before anyone saves)."""
    directory = Path(checkpoint_dir)
    if directory.is_dir():
        for path in directory.glob("tmp_step_*"):
            shutil.rmtree(path, ignore_errors=True)


def read_trainer_state(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE_FILE).read_text())


def rng_state() -> dict:
    import torch

    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    try:
        import numpy

        state["numpy"] = numpy.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy

        numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _model_and_optimizer_state(model, optimizer) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optim": optimizer_state}


def save_checkpoint(checkpoint_dir: str | Path, step: int, model, optimizer, trainer_state: dict,
                    keep_last_k: int) -> Path:  # fmt: skip
    """Save on every rank (collective); returns the final `step_N` path."""
    import torch.distributed.checkpoint as dcp

    def write(tmp: Path) -> None:
        dcp.save(_model_and_optimizer_state(model, optimizer), checkpoint_id=str(tmp / "dcp"))

    return save_atomically(checkpoint_dir, step, trainer_state, keep_last_k, write)


def save_atomically(checkpoint_dir: str | Path, step: int, trainer_state: dict, keep_last_k: int, write) -> Path:
    """The save protocol shared by the backends: `write(tmp_dir)` (collective: each rank writes its part of the
    model and optimizer state), each rank's RNG states, then trainer_state.json and the atomic rename by rank 0.
    Returns the final `step_N` path."""
    import torch
    import torch.distributed as dist

    directory = Path(checkpoint_dir)
    tmp, final = directory / f"tmp_step_{step}", directory / f"step_{step}"
    rank = dist.get_rank()
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    dist.barrier()
    write(tmp)
    torch.save(rng_state(), tmp / "rng" / f"rank_{rank}.pt")
    dist.barrier()
    if rank == 0:
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2, default=str) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _keep_last(directory, keep_last_k)
        log.info("saved checkpoint %s", final)
    dist.barrier()
    return final


def _keep_last(directory: Path, keep_last_k: int | None) -> None:
    if keep_last_k is None or keep_last_k <= 0:  # null (checkpointing.keep_last_k): keep every checkpoint
        return
    for _, path in step_checkpoints(directory)[:-keep_last_k]:
        shutil.rmtree(path, ignore_errors=True)


def check_fingerprint(path: Path, state: dict, fingerprint: str, model_name: str) -> None:
    if state.get("fingerprint") != fingerprint:
        raise UserError(
            f"checkpoint {path} was written for another model ({state.get('model_name')!r}, fingerprint "
            f"{str(state.get('fingerprint'))[:12]}) than policy.model_name={model_name!r} (fingerprint "
            f"{fingerprint[:12]}); use a new checkpointing.checkpoint_dir, or the model it was trained from"
        )


def load_checkpoint(path: Path, model, optimizer) -> None:
    """Load model, optimizer and this rank's RNG states from `path` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    state = _model_and_optimizer_state(model, optimizer)
    dcp.load(state, checkpoint_id=str(path / "dcp"))
    built_for_this_machine = implementation_flags(optimizer)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    set_implementation_flags(optimizer, built_for_this_machine)
    load_rng_state(path)


def load_rng_state(path: Path) -> None:
    """This rank's RNG states as saved (absent when resuming on more ranks than saved: those keep the seed's)."""
    import torch
    import torch.distributed as dist

    rng_file = Path(path) / "rng" / f"rank_{dist.get_rank()}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))


def load_model_weights(path: str | Path, state_dict: dict) -> dict:
    """Fill a plain (unsharded) `state_dict` from a checkpoint's model state, in one process, no process group."""
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    if not (path / "dcp").is_dir():
        raise UserError(f"{path} is not a training checkpoint (no dcp/ directory)")
    state = {"model": state_dict}
    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(state, checkpoint_id=str(path / "dcp"), no_dist=True)
    return state["model"]
