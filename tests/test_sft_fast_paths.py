"""The GPU fast paths of the SFT trainer, checked on CPU against the plain computations they replace:
varlen attention on flattened micro-batches (sequence offsets instead of 4D masks) and the fused token-NLL
loss (gradient computed in the forward pass, no fp32 copy of the logits)."""

from __future__ import annotations

import pytest
from test_sft_normalization import GLOBAL_BATCH, train_file  # noqa: F401 (fixture)
from test_sft_support import sft_config, tiny_model

from skills_cli.training.algorithms.sft.trainer import SFTTrainer
from skills_cli.training.components.batching import make_micro_batches
from skills_cli.training.components.data import IGNORE_INDEX, SFTSample
from skills_cli.training.components.model import ATTENTION_ENV, VARLEN_ATTENTION
from skills_cli.training.components.parallel import GPU_HOST_THREADS, distributed_session, gpu_host_threads


def samples(lengths: list[int]) -> list[SFTSample]:
    return [SFTSample(list(range(5, 5 + n)), [0] * (n // 2) + [1] * (n - n // 2)) for n in lengths]


def test_varlen_inputs_mark_every_sequence_and_padding():
    packed = make_micro_batches(samples([5, 3, 4, 2]), 2, pad_id=0, pack_capacity=8)[0]
    packed.drop_padding = False  # GRPO's layout: every (row, position) kept
    inputs, labels = packed.model_inputs(VARLEN_ATTENTION, None, "cpu")
    # bins (first fit decreasing, capacity 8): [5, 3] and [4, 2] + 2 padding tokens
    assert inputs["cu_seq_lens_q"].tolist() == [0, 5, 8, 12, 14, 16]
    assert inputs["input_ids"].shape == labels.shape == (1, 16)
    assert inputs["max_length_q"] == 8
    padded = make_micro_batches(samples([5, 3]), 2, pad_id=0)[0]
    padded.drop_padding = False
    inputs, _ = padded.model_inputs(VARLEN_ATTENTION, None, "cpu")
    assert inputs["cu_seq_lens_q"].tolist() == [0, 5, 8, 10]  # row 2: 3 tokens, then its 2 padding tokens


def test_sft_varlen_inputs_leave_the_padding_out():
    """SFT's micro-batches drop padding from the flattened stream: only real tokens, in order, with their
    positions and labels, and one offset per real sequence."""
    packed = make_micro_batches(samples([5, 3, 4, 2]), 2, pad_id=0, pack_capacity=8)[0]
    assert packed.drop_padding and packed.row_tokens.tolist() == [8, 6]
    inputs, labels = packed.model_inputs(VARLEN_ATTENTION, None, "cpu")
    assert inputs["cu_seq_lens_q"].tolist() == [0, 5, 8, 12, 14]
    assert inputs["input_ids"].shape == labels.shape == (1, 14)
    real = packed.real_token_mask()
    assert inputs["input_ids"][0].tolist() == packed.input_ids[real].tolist()
    assert labels[0].tolist() == packed.labels[real].tolist()
    assert inputs["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 0, 1]
    padded = make_micro_batches(samples([5, 3]), 2, pad_id=0)[0]
    inputs, labels = padded.model_inputs(VARLEN_ATTENTION, None, "cpu")
    assert inputs["cu_seq_lens_q"].tolist() == [0, 5, 8]
    assert inputs["input_ids"][0].tolist() == [5, 6, 7, 8, 9, 5, 6, 7]


def test_scaled_token_nll_matches_cross_entropy():
    import torch
    import torch.nn.functional as F

    from skills_cli.training.components.loss import EAGER_CHUNK_ROWS, normalized_loss

    torch.manual_seed(0)
    rows = EAGER_CHUNK_ROWS + 37  # more than one eager chunk
    logits = torch.randn(1, rows, 50, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (1, rows))
    labels[0, ::3] = IGNORE_INDEX
    loss = normalized_loss(logits, labels, 123.0)
    loss.backward()
    reference_logits = logits.detach().clone().requires_grad_(True)
    reference = F.cross_entropy(reference_logits[0], labels[0], ignore_index=IGNORE_INDEX, reduction="sum") / 123.0
    (reference * 2).backward()  # a backend's loss multiplier (the DP size) reaches the fused gradient too
    logits.grad = None
    normalized_loss(logits, labels, 123.0).mul(2).backward()
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(logits.grad, reference_logits.grad, atol=1e-7)
    with torch.no_grad():
        assert normalized_loss(logits, labels, 123.0).item() == pytest.approx(reference.item(), rel=1e-6)


def loss_and_gradients(config) -> tuple[float, dict, str]:
    with distributed_session() as dist:
        trainer = SFTTrainer(config, dist)
        stats = trainer.forward_backward(GLOBAL_BATCH)
        model = trainer.policy.model
        grads = {name: p.grad.full_tensor().clone() for name, p in model.named_parameters()}
        implementation = model.config._attn_implementation
    return stats.loss, grads, implementation


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_varlen_attention_trains_like_masked_sdpa(layout, train_file, tmp_path, monkeypatch):  # noqa: F811
    """The whole trainer with varlen attention (its CPU reference kernel) gives the loss and gradients of the
    4D-mask SDPA path, on a model with grouped-query attention (qwen2 tiny: 4 heads, 2 KV heads)."""
    overrides = ["++policy.train_micro_batch_size=4"]
    if layout == "packed":
        overrides += ["++policy.sequence_packing.enabled=true", "++policy.max_total_sequence_length=128"]
    model = tiny_model("qwen2")
    masked = loss_and_gradients(sft_config(model, train_file, tmp_path / "sdpa", *overrides))
    monkeypatch.setenv(ATTENTION_ENV, VARLEN_ATTENTION)
    varlen = loss_and_gradients(sft_config(model, train_file, tmp_path / "varlen", *overrides))
    assert varlen[2] == VARLEN_ATTENTION and masked[2] != VARLEN_ATTENTION
    assert varlen[0] == pytest.approx(masked[0], abs=1e-5)
    worst = max((varlen[1][key] - masked[1][key]).abs().max().item() for key in masked[1])
    assert worst < 1e-5, f"gradients differ by {worst}"


def test_varlen_attention_without_offsets_is_plain_causal_attention():
    """A plain `model(input_ids=...)` call (no sequence offsets) treats each row as one sequence."""
    import torch

    from skills_cli.training.components.model import load_model

    ids = torch.randint(4, 200, (3, 17))
    reference = load_model(tiny_model("qwen2"), "sdpa")
    varlen = load_model(tiny_model("qwen2"), VARLEN_ATTENTION)
    with torch.no_grad():
        assert torch.allclose(varlen(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-5)


def test_varlen_attention_with_tensor_and_sequence_parallelism(train_file, tmp_path, monkeypatch):  # noqa: F811
    """TP=2 with sequence parallelism pads the flattened row to a multiple of 2; with varlen attention the added
    positions must be a sequence of their own (the CPU kernel refuses offsets that do not cover every token).
    Losses and gradient norms match one process step for step."""
    from test_sft_normalization import read_metrics, run_args, torchrun

    from skills_cli.training.algorithms.sft.trainer import main

    monkeypatch.setenv(ATTENTION_ENV, VARLEN_ATTENTION)
    model = tiny_model()
    # one packed row of 127 tokens per micro-batch: an odd length, so sequence parallelism pads every pass
    packed = ["++policy.train_micro_batch_size=1", "++policy.sequence_packing.enabled=true",
              "++policy.max_total_sequence_length=127"]  # fmt: skip
    assert main(run_args(model, train_file, tmp_path / "one", *packed)) == 0
    torchrun(run_args(model, train_file, tmp_path / "sp", *packed, "++policy.dtensor_cfg.tensor_parallel_size=2",
                      "++policy.dtensor_cfg.sequence_parallel=true"))  # fmt: skip
    for mine, theirs in zip(read_metrics(tmp_path / "sp"), read_metrics(tmp_path / "one"), strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], abs=1e-5)


def test_varlen_model_honours_a_4d_mask_given_without_offsets():
    """Inputs prepared for SDPA (a packed row's 4D block mask, e.g. GRPO's reference model fed the megatron
    policy's micro-batches) run through transformers' SDPA with that mask."""
    import torch

    from skills_cli.training.components.model import load_model

    packed = make_micro_batches(samples([9, 6, 7]), 1, pad_id=0, pack_capacity=32)[0]
    inputs, _ = packed.model_inputs("sdpa", torch.float32, "cpu")
    reference = load_model(tiny_model("qwen2"), "sdpa")
    varlen = load_model(tiny_model("qwen2"), VARLEN_ATTENTION)
    with torch.no_grad():
        assert torch.allclose(varlen(**inputs).logits, reference(**inputs).logits, atol=1e-5)


def test_flash_varlen_custom_ops_have_shapes_and_a_backward_without_a_graph_break():
    """The GPU kernel's custom-op wrapper, on meta tensors (no GPU here): aten's meta functions give the forward's
    and the backward's shapes, autograd reaches the backward op, and dynamo traces it without a graph break."""
    import torch

    from skills_cli.training.components.model import flash_varlen_kernel

    kernel = flash_varlen_kernel()
    q = torch.empty(100, 14, 64, device="meta", dtype=torch.bfloat16, requires_grad=True)
    k = torch.empty(100, 2, 64, device="meta", dtype=torch.bfloat16, requires_grad=True)
    v = torch.empty(100, 2, 64, device="meta", dtype=torch.bfloat16, requires_grad=True)
    cu_seqlens = torch.empty(5, device="meta", dtype=torch.int32)
    out, lse, _, _ = torch.ops.skills_cli.flash_varlen_fwd(q, k, v, cu_seqlens, 64, 0.125)
    assert out.shape == q.shape and lse.shape == (14, 100) and lse.dtype == torch.float32
    kernel(q, k, v, cu_seqlens, 64, 0.125).sum().backward()
    assert q.grad.shape == q.shape and k.grad.shape == k.shape and v.grad.shape == v.shape
    explained = torch._dynamo.explain(lambda a, b, c, d: kernel(a, b, c, d, 64, 0.125) * 2)(q, k, v, cu_seqlens)
    assert explained.graph_break_count == 0 and explained.graph_count == 1


def test_the_decoder_stack_compiled_as_one_graph_gives_the_eager_logits_and_gradients():
    """`compile_scope=stack`'s compilation (parallel.compile_decoder_stack; inductor on GPUs, aot_eager here: the
    same dynamo trace and autograd split) over flattened varlen micro-batches of two token counts: the logits and
    every gradient equal the eager model's, and the model's parameters and state dict keep their names."""
    import torch

    from skills_cli.training.components.model import load_model
    from skills_cli.training.components.parallel import compile_decoder_stack

    def logits_and_grads(model, inputs):
        model.zero_grad()
        logits = model(**inputs).logits
        logits.square().sum().backward()
        return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}

    batches = [
        make_micro_batches(samples(lengths), 2, pad_id=0, pack_capacity=24)[0] for lengths in ([9, 6, 7, 5], [11, 4])
    ]
    eager, compiled = (load_model(tiny_model("qwen2"), VARLEN_ATTENTION) for _ in range(2))
    compiled.load_state_dict(eager.state_dict())
    names = list(compiled.state_dict())
    compile_decoder_stack(compiled, backend="aot_eager")
    assert list(compiled.state_dict()) == names
    for batch in batches:
        inputs, _ = batch.model_inputs(VARLEN_ATTENTION, torch.float32, "cpu")
        (want, want_grads), (got, got_grads) = (logits_and_grads(m, inputs) for m in (eager, compiled))
        assert torch.allclose(got, want, atol=1e-5)
        torch.testing.assert_close(
            got_grads, want_grads, rtol=1e-4, atol=1e-5
        )  # fp32 rounding, summed in another order


def test_micro_batches_hold_each_samples_tokens_labels_and_positions():
    """The vectorised batch builders (flat_ids_and_labels) against each sample's own ids, shifted labels and
    positions: packed rows (segments, positions restarting, padding) and padded rows."""
    import random

    generator = random.Random(3)
    lengths = [generator.randint(1, 9) for _ in range(11)]
    data = [SFTSample([generator.randint(3, 99) for _ in range(n)], [generator.randint(0, 1) for _ in range(n)])
            for n in lengths]  # fmt: skip
    for batch in make_micro_batches(data, 2, pad_id=0, pack_capacity=12):
        for r in range(batch.input_ids.shape[0]):
            start, segment = 0, 0
            while start < int(batch.row_tokens[r]):
                sample = next(s for s in data if s.input_ids == batch.input_ids[r, start : start + len(s)].tolist()
                              and batch.segment_ids[r, start] == segment)  # fmt: skip
                end = start + len(sample)
                assert batch.labels[r, start:end].tolist() == sample.labels()
                assert batch.position_ids[r, start:end].tolist() == list(range(len(sample)))
                assert (batch.segment_ids[r, start:end] == segment).all()
                start, segment = end, segment + 1
            assert (batch.input_ids[r, start:] == 0).all() and (batch.labels[r, start:] == IGNORE_INDEX).all()
    padded = make_micro_batches(data, 4, pad_id=0)
    for index, sample in enumerate(data):
        batch, row = padded[index // 4], index % 4
        n = len(sample)
        assert (
            batch.input_ids[row, :n].tolist() == sample.input_ids and batch.labels[row, :n].tolist() == sample.labels()
        )
        assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
        assert (batch.labels[row, n:] == IGNORE_INDEX).all() and (batch.input_ids[row, n:] == 0).all()


def test_a_gpu_trainer_keeps_a_small_cpu_thread_pool_unless_omp_num_threads_is_set():
    """A GPU trainer's host work is small tensor ops: a pool of every core's thread made them stalls the GPU
    waited for; a user's (or torchrun's) $OMP_NUM_THREADS is kept, and a smaller pool is never grown."""
    assert GPU_HOST_THREADS < 16
    assert gpu_host_threads(16, {}) == GPU_HOST_THREADS
    assert gpu_host_threads(2, {}) == 2
    assert gpu_host_threads(16, {"OMP_NUM_THREADS": "12"}) is None
