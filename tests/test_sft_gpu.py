"""SFT on a CUDA GPU: the paths a CPU run cannot reach. bf16 compute over fp32 master weights, FSDP2's CPU
offload, checkpoints of GPU state (and megatron's distributed optimizer, CUDA-only) resumed mid-run.

Skipped without a GPU (CI has none); on one, e.g. through the device tool:

    python3 -m pytest tests/test_sft_gpu.py -q

GPU kernels (flash attention's backward accumulates with atomics) are not bitwise deterministic, so a resumed
run is compared with the uninterrupted one within a bf16 tolerance instead of exactly as on CPU.
"""

from __future__ import annotations

import shutil

import pytest
from test_sft_support import conversation_rows, read_metrics, sft_config, tiny_model, write_jsonl

torch = pytest.importorskip("torch")

from skills_cli.training.algorithms.sft.trainer import SFTTrainer  # noqa: E402
from skills_cli.training.components.checkpoint import step_checkpoints  # noqa: E402
from skills_cli.training.components.parallel import distributed_session  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (tests/test_sft_gpu.py)")

# 40 samples, global batch 8: 5 steps an epoch; 8 steps cross an epoch boundary; saves at 2, 4, 6, 8
RUN = ("++sft.max_num_steps=8", "++sft.max_num_epochs=4", "++checkpointing.save_period=2",
       "++checkpointing.keep_last_k=4", "++policy.sequence_packing.enabled=true", "++policy.train_micro_batch_size=2",
       "++policy.precision=bfloat16", "++policy.optimizer.kwargs.lr=3e-3")  # fmt: skip


@pytest.fixture(params=["dtensor", "megatron"])
def backend(request):
    if request.param == "megatron":
        pytest.importorskip("megatron.core")
    return request.param


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", conversation_rows(40))


def fit(config) -> SFTTrainer:
    with distributed_session() as dist:
        trainer = SFTTrainer(config, dist)
        trainer.summary = trainer.fit()
    return trainer


def close_steps(got: list[dict], expected: list[dict], rel: float) -> None:
    assert [row["step"] for row in got] == [row["step"] for row in expected]
    for a, b in zip(got, expected, strict=True):
        assert a["num_valid_tokens"] == b["num_valid_tokens"] and a["lr"] == pytest.approx(b["lr"], rel=1e-6)
        assert a["loss"] == pytest.approx(b["loss"], rel=rel), (a, b)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=20 * rel), (a, b)


def master_weight_dtypes(trainer: SFTTrainer) -> set:
    """The dtypes the optimizer updates: FSDP2's sharded parameters (dtensor); megatron's fp32 main copies."""
    optimizer = trainer.policy.optimizer
    inner = getattr(optimizer, "optimizer", optimizer)  # megatron wraps torch's Adam
    return {p.dtype for group in inner.param_groups for p in group["params"]}


def test_bf16_learns_over_fp32_master_weights_and_resumes(backend, train_file, tmp_path):
    reference = fit(sft_config(tiny_model(), train_file, tmp_path / "ref", *RUN, f"++backend={backend}"))
    rows = read_metrics(tmp_path / "ref")
    assert reference.dist.device.type == "cuda" and reference.summary["status"] == "finished"
    assert master_weight_dtypes(reference) == {torch.float32}
    if backend == "megatron":
        assert reference.policy.use_distributed_optimizer
        assert {p.dtype for p in reference.model.parameters()} == {torch.bfloat16}  # compute copies
    losses = [row["loss"] for row in rows]
    assert all(map(torch.isfinite, torch.tensor(losses))) and losses[-1] < 0.85 * losses[0], losses
    assert [step for step, _ in step_checkpoints(tmp_path / "ref" / "checkpoints")] == [2, 4, 6, 8]

    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "ref" / "checkpoints" / "step_4", resumed_dir / "checkpoints" / "step_4")
    resumed = fit(sft_config(tiny_model(), train_file, resumed_dir, *RUN, f"++backend={backend}"))
    assert resumed.summary["resumed_from_step"] == 4
    close_steps(read_metrics(resumed_dir), rows[4:], rel=2e-3)


def test_cpu_offload_trains_like_the_gpu_resident_run(train_file, tmp_path):
    options = (*RUN, "++sft.max_num_steps=4", "++checkpointing.enabled=false")
    fit(sft_config(tiny_model(), train_file, tmp_path / "resident", *options))
    offloaded = fit(sft_config(tiny_model(), train_file, tmp_path / "offload", *options,
                               "++policy.dtensor_cfg.cpu_offload=true"))  # fmt: skip
    devices = {p.to_local().device.type for p in offloaded.model.parameters()}
    assert devices == {"cpu"}, devices  # the sharded fp32 parameters (and so AdamW's state) live in CPU memory
    assert master_weight_dtypes(offloaded) == {torch.float32}
    close_steps(read_metrics(tmp_path / "offload"), read_metrics(tmp_path / "resident"), rel=5e-3)
