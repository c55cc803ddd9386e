"""The megatron backend on CPU (gloo): HF weights -> megatron-core GPTModel give HF's logits (Llama and Qwen2,
tied and untied embeddings) and map back exactly; SFT with backend=megatron gives the dtensor backend's
losses, learns, resumes step for step and exports an HF model with its logits; TP=2 and DP=2 (2 processes)
give the 1-process numbers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from test_sft_support import conversation_rows, read_metrics, sft_config, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.training.algorithms.sft.trainer import SFTTrainer, main
from skills_cli.training.components import checkpoint as ckpt
from skills_cli.training.components.parallel import distributed_session
from skills_cli.training.megatron import bridge

STEPS = 6
# 32 samples, global batch 8 (4 steps an epoch); packed rows; a schedule whose state matters on resume
RUN_OPTIONS = (f"++sft.max_num_steps={STEPS}", "++sft.max_num_epochs=3", "++checkpointing.save_period=2",
               "++checkpointing.keep_last_k=3", "++policy.sequence_packing.enabled=true",
               "++policy.scheduler.name=cosine", "++policy.scheduler.warmup_steps=2")  # fmt: skip


def untied_model(tmp_path) -> str:
    """The tiny Llama with its own (random) LM head."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.05)
    model.save_pretrained(str(tmp_path / "untied"))
    return str(tmp_path / "untied")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "llama-untied"])
def test_hf_weights_give_hf_logits_and_map_back_exactly(arch, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from skills_cli.training.megatron import model as mcore

    path = untied_model(tmp_path) if arch == "llama-untied" else tiny_model(arch)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    shape = bridge.model_shape(hf.config)
    assert shape.tie_word_embeddings == (arch != "llama-untied") and shape.qkv_bias == (arch == "qwen2")
    with distributed_session() as dist:
        mcore.initialize_parallel(1, 1, seed=0, device=dist.device)
        config = mcore.transformer_config(shape, 1, 1, torch.float32, dist.device, activation_checkpointing=False)
        gpt = mcore.build_gpt_model(shape, config, te=False)
        mcore.load_megatron_weights(gpt, bridge.hf_to_megatron(hf.state_dict(), shape), shape.tie_word_embeddings)
        ids = torch.randint(0, shape.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
        causal = ~torch.ones(24, 24, dtype=torch.bool).tril()[None, None]
        with torch.no_grad():
            logits = gpt(ids, torch.arange(24).expand(2, 24), causal)[..., : shape.vocab_size]
            expected = hf(ids).logits
        back = bridge.megatron_to_hf(mcore.gather_megatron_weights(gpt, shape.tie_word_embeddings), shape)
    assert (logits - expected).abs().max().item() < 1e-4
    state = hf.state_dict()
    if shape.tie_word_embeddings:
        state.pop("lm_head.weight")  # the same tensor as the embedding; HF ties it on load
    assert back.keys() == state.keys() and all(back[name].equal(state[name]) for name in state)


def test_packed_stream_gives_each_sequences_hf_logits_and_compiled_layers_the_same_gradients():
    """The THD path (packed.py): one flattened stream of packed rows, RoPE by position id in the varlen core
    attention, gives every sequence HF's own logits; decoder layers compiled with dynamic token counts (the
    GPU path; here dynamo with the aot_eager backend) give the eager outputs (exactly) and gradients, for three
    token counts, and dynamo breaks the layer's graph only at the CPU attention's data-dependent offset check
    (on GPUs the flash kernel is a custom op inside the graph): not at megatron's per-sequence RoPE or at its
    row-parallel linear's deprecation warning."""
    import torch
    import torch._dynamo.testing
    from transformers import AutoModelForCausalLM

    from skills_cli.training.components.batching import make_micro_batches
    from skills_cli.training.components.data import SFTSample
    from skills_cli.training.megatron import model as mcore
    from skills_cli.training.megatron import packed

    hf = AutoModelForCausalLM.from_pretrained(tiny_model("qwen2"), dtype=torch.float32)
    shape = bridge.model_shape(hf.config)
    generator = torch.Generator().manual_seed(0)
    with distributed_session() as dist:
        mcore.initialize_parallel(1, 1, seed=0, device=dist.device)
        config = mcore.transformer_config(shape, 1, 1, torch.float32, dist.device, activation_checkpointing=False)
        gpt = mcore.build_gpt_model(shape, config, te=False)
        mcore.load_megatron_weights(gpt, bridge.hf_to_megatron(hf.state_dict(), shape), shape.tie_word_embeddings)
        batches = []
        for lengths in ((5, 7, 12), (9, 3, 8, 20), (30, 2)):  # 2 packed rows of 32 each, 3 token counts
            ids = [torch.randint(3, shape.vocab_size, (n,), generator=generator).tolist() for n in lengths]
            micro_batch = make_micro_batches([SFTSample(i, i) for i in ids], 2, 0, pack_capacity=32)[0]
            inputs = packed.thd_inputs(micro_batch, dist.device, packed.inverse_frequencies(shape, "cpu"),
                                       torch.float32)  # fmt: skip
            batches.append((ids, inputs))
        eager = [_output_and_grads(gpt, inputs) for _, inputs in batches]
        counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
        torch._dynamo.utils.counters.clear()
        assert packed.compile_decoder_layers(gpt, backend=counter) == shape.num_layers
        compiled = [_output_and_grads(gpt, inputs) for _, inputs in batches]
    breaks = torch._dynamo.utils.counters["graph_break"]
    assert (
        counter.frame_count > 0 and breaks and all(reason.startswith("Unsupported Tensor.item()") for reason in breaks)
    )
    for (ids, inputs), (logits, grads), (logits_c, grads_c) in zip(batches, eager, compiled, strict=True):
        assert torch.equal(logits, logits_c)
        assert ((grads - grads_c).norm() / grads.norm()).item() < 1e-6  # fp32; the sums may be ordered otherwise
        offsets = inputs["packed_seq_params"].cu_seqlens_q.tolist()
        assert len(offsets) == len(ids) + 1  # the padding is left out of the stream
        stream = inputs["input_ids"][0]
        for start, end in zip(offsets[:-1], offsets[1:], strict=True):
            with torch.no_grad():
                expected = hf(stream[start:end][None]).logits[0]
            assert (logits[0, start:end, : shape.vocab_size] - expected).abs().max().item() < 1e-4


def _output_and_grads(gpt, inputs):
    import torch

    gpt.zero_grad()
    logits = gpt(inputs["input_ids"], inputs["position_ids"], None, packed_seq_params=inputs["packed_seq_params"])
    logits.square().mean().backward()
    return logits.detach(), torch.cat([p.grad.reshape(-1) for p in gpt.parameters()])


def test_bf16_model_keeps_the_loaded_fp32_weights_for_the_optimizer():
    """A bf16 model rounds the checkpoint's fp32 weights; load_megatron_weights hands back the fp32 values (per
    parameter, this rank's shard) that set_main_weights starts the optimizer's fp32 main weights from on GPUs.
    Starting them from the bf16 copies instead stalled updates below half a bf16 step (bench/megatron_agreement.py:
    SFT loss after 3 steps at lr 1e-5 6.855 against dtensor's 6.729; 6.729 with the fp32 start)."""
    import torch
    from transformers import AutoModelForCausalLM

    from skills_cli.training.megatron import model as mcore

    hf = AutoModelForCausalLM.from_pretrained(tiny_model("qwen2"), dtype=torch.float32)
    shape = bridge.model_shape(hf.config)
    with distributed_session() as dist:
        mcore.initialize_parallel(1, 1, seed=0, device=dist.device)
        config = mcore.transformer_config(shape, 1, 1, torch.bfloat16, dist.device, activation_checkpointing=False)
        gpt = mcore.build_gpt_model(shape, config, te=False)
        loaded = mcore.load_megatron_weights(gpt, bridge.hf_to_megatron(hf.state_dict(), shape), True)
    params = dict(gpt.named_parameters())
    assert loaded.keys() == params.keys()
    assert all(loaded[name].dtype == torch.float32 and params[name].dtype == torch.bfloat16 for name in params)
    assert all(loaded[name].to(torch.bfloat16).equal(params[name]) for name in params)
    weight = "decoder.layers.0.mlp.linear_fc1.weight"  # random fp32 values: bf16 loses their low bits
    assert not loaded[weight].equal(params[weight].float())
    expected = hf.state_dict()["model.layers.0.mlp.gate_proj.weight"]
    assert loaded[weight][: expected.shape[0]].equal(expected)


def test_the_transformer_config_builds_without_the_cuda_graph_scope_warning():
    """megatron-core's default cuda_graph_scope ("full") warns that it is deprecated on every build; we capture no
    CUDA graphs and say so with the field's current spelling."""
    import warnings

    import torch
    from transformers import AutoConfig

    from skills_cli.training.megatron import model as mcore

    shape = bridge.model_shape(AutoConfig.from_pretrained(tiny_model("qwen2")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = mcore.transformer_config(
            shape, 1, 1, torch.float32, torch.device("cpu"), activation_checkpointing=False
        )
    assert config.cuda_graph_scope == []
    assert not [str(w.message) for w in caught if "scope" in str(w.message)]  # "full scope is deprecated. ..."


def test_tensor_parallel_shards_reassemble():
    """Every TP rank's slice of q/k/v and of gate/up holds whole heads and matching gate/up rows."""
    import torch

    shape = bridge.model_shape(_config(heads=4, kv_heads=2))
    q, k, v = (torch.randn(n * 16, 64) for n in (4, 2, 2))
    fused = bridge.fuse_qkv(q, k, v, shape)
    assert all(t.equal(s) for t, s in zip(bridge.split_qkv(fused, shape), (q, k, v), strict=True))
    rank0 = bridge.shard("decoder.layers.0.self_attention.linear_qkv.weight", fused, 0, 0, 2)
    assert rank0.equal(torch.cat([q[:32], k[:16], v[:16]]))  # group 0: its 2 query heads, its key, its value
    gate, up = torch.randn(256, 64), torch.randn(256, 64)
    name = "decoder.layers.0.mlp.linear_fc1.weight"
    parts = [bridge.shard(name, torch.cat([gate, up]), 0, rank, 2) for rank in range(2)]
    assert parts[1].equal(torch.cat([gate[128:], up[128:]]))
    assert bridge.unshard(name, parts, 0).equal(torch.cat([gate, up]))


def _config(heads: int, kv_heads: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=341, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=heads, num_key_value_heads=kv_heads)  # fmt: skip


def test_unsupported_models_and_layouts_are_user_errors():
    from transformers import GPT2Config

    with pytest.raises(UserError, match="supports model types llama, qwen2, not 'gpt2'"):
        bridge.model_shape(GPT2Config())
    shape = bridge.model_shape(_config(heads=4, kv_heads=2))
    with pytest.raises(
        UserError, match="tensor_model_parallel_size=4 does not divide the model's num_key_value_heads=2"
    ):
        bridge.check_tensor_parallel(shape, 4)
    with pytest.raises(
        UserError, match="pipeline_model_parallel_size=4 does not divide the model's num_hidden_layers=2"
    ):
        bridge.check_pipeline_parallel(shape, 4)
    assert bridge.padded_vocab_size(341) == 384 and bridge.padded_vocab_size(400, 3) == 768  # 128 x 3 rows a step


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("data") / "train.jsonl", conversation_rows(32))


def probe_logits(policy, samples, pad_id: int):
    """The policy's full-vocabulary logits for one padded micro-batch, through the Policy interface, laid out
    (rows, length, vocab), zero at padding (a policy may hand the loss one flattened stream, with or without the
    padding; labels then share its layout)."""
    from skills_cli.training.components.batching import make_micro_batches

    captured = []

    def keep_logits(logits, labels, micro_batch):
        import torch

        assert logits.shape[:-1] == labels.shape
        real = micro_batch.real_token_mask()
        flat = logits.detach().reshape(-1, logits.shape[-1])
        full = torch.zeros(*real.shape, flat.shape[-1])
        full[real] = flat if flat.shape[0] == int(real.sum()) else flat[real.reshape(-1)]
        captured.append(full)
        return logits.sum() * 0.0, {}

    policy.eval()
    policy.forward_backward(make_micro_batches(samples, len(samples), pad_id), keep_logits, train=False)
    return captured[0]


@pytest.fixture(scope="module")
def reference(train_file, tmp_path_factory):
    """The uninterrupted megatron run (in-process, so the trained model can be probed afterwards)."""
    output = tmp_path_factory.mktemp("megatron")
    with distributed_session() as dist:
        trainer = SFTTrainer(sft_config(tiny_model(), train_file, output, "++backend=megatron", *RUN_OPTIONS), dist)
        summary = trainer.fit()
        samples = trainer.train_data.samples[:3]
        logits = probe_logits(trainer.policy, samples, trainer.pad_id)
    return {"output": output, "summary": summary, "samples": samples, "logits": logits}


def test_megatron_sft_learns_and_matches_dtensor(reference, train_file, tmp_path):
    dtensor = tmp_path / "dtensor"
    with distributed_session() as dist:
        SFTTrainer(sft_config(tiny_model(), train_file, dtensor, *RUN_OPTIONS), dist).fit()
    got, expected = read_metrics(reference["output"]), read_metrics(dtensor)
    assert reference["summary"]["backend"] == "megatron" and [row["step"] for row in got] == list(range(1, STEPS + 1))
    assert got[0]["loss"] == pytest.approx(expected[0]["loss"], abs=1e-5)  # same model, same normalization
    for mine, theirs in zip(got, expected, strict=True):  # and the same updates, step for step
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-4)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], rel=1e-4)
        assert (mine["lr"], mine["num_valid_tokens"]) == (theirs["lr"], theirs["num_valid_tokens"])
    assert got[-1]["loss"] < got[0]["loss"] - 0.3, [row["loss"] for row in got]


def test_export_reloads_with_the_trained_logits(reference):
    import torch
    from transformers import AutoModelForCausalLM

    from skills_cli.training.components.batching import make_micro_batches

    export = reference["output"] / "final_hf"
    hf = AutoModelForCausalLM.from_pretrained(str(export), dtype=torch.float32)
    batch = make_micro_batches(reference["samples"], 3, 3)[0]
    with torch.no_grad():
        logits = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    real = batch.attention_mask.bool()
    assert (logits[real] - reference["logits"][real]).abs().max().item() < 1e-5
    base = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=batch.input_ids).logits[real], logits[real], atol=1e-3)


def test_average_megatron_checkpoints(reference, tmp_path):
    """Checkpoint averaging reads the megatron backend's distributed checkpoints too: the mean of steps 4 and 6
    in HF names, and one checkpoint alone reproduces the run's final export."""
    import torch
    from safetensors.torch import load_file

    from skills_cli.training import average_checkpoints
    from skills_cli.training.convert import training_checkpoint_weights

    checkpoints = reference["output"] / "checkpoints"
    assert average_checkpoints.main([str(checkpoints), "--last", "2", "--output_dir", str(tmp_path / "avg")]) == 0
    four, six = (training_checkpoint_weights(checkpoints / f"step_{n}", ckpt.read_trainer_state(checkpoints / f"step_{n}"),
                                             tiny_model()) for n in (4, 6))  # fmt: skip
    averaged = load_file(str(tmp_path / "avg" / "model.safetensors"))
    assert averaged.keys() == four.keys()
    for name, tensor in averaged.items():
        assert torch.allclose(tensor, (four[name] + six[name]) / 2, atol=1e-7), name
    assert not torch.equal(four["model.layers.0.mlp.down_proj.weight"], six["model.layers.0.mlp.down_proj.weight"])
    assert average_checkpoints.main([str(checkpoints / "step_6"), "--output_dir", str(tmp_path / "one")]) == 0
    final = load_file(str(reference["output"] / "final_hf" / "model.safetensors"))
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    assert one.keys() == final.keys() and all(one[k].equal(final[k]) for k in one)


def same_steps(got: list[dict], expected: list[dict]) -> None:
    keys = ("step", "epoch", "loss", "grad_norm", "lr", "num_valid_tokens")
    assert [{k: row[k] for k in keys} for row in got] == [{k: row[k] for k in keys} for row in expected]


def test_resume_continues_step_for_step(reference, train_file, tmp_path):
    """From step 2's megatron distributed checkpoint (model, fp32 Adam state, schedule, data position, RNG) the
    rerun reproduces steps 3-6 bit for bit and ends with the same weights."""
    from safetensors.torch import load_file

    saved = reference["output"] / "checkpoints" / "step_2"
    assert (saved / "megatron" / "metadata.json").is_file() and ckpt.read_trainer_state(saved)["backend"] == "megatron"
    shutil.copytree(saved, tmp_path / "checkpoints" / "step_2")
    summary = train(sft_config(tiny_model(), train_file, tmp_path, "++backend=megatron", *RUN_OPTIONS))
    assert summary["resumed_from_step"] == 2
    same_steps(read_metrics(tmp_path), read_metrics(reference["output"])[2:])
    a = load_file(str(tmp_path / "final_hf" / "model.safetensors"))
    b = load_file(str(reference["output"] / "final_hf" / "model.safetensors"))
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def train(config) -> dict:
    with distributed_session() as dist:
        return SFTTrainer(config, dist).fit()


def test_resume_restores_adams_step_count_from_the_param_groups():
    """The distributed optimizer (CUDA only) loads per-parameter `step` as the pre-load value, one tensor shared
    by all parameters; each gets its own copy of the count kept in the param groups (tests/test_sft_gpu.py checks
    the whole GPU resume)."""
    import types

    import torch

    from skills_cli.training.megatron.dist_ckpt import restore_adam_steps

    weights = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    adam = torch.optim.AdamW(weights, lr=0.1)
    sum(w.sum() for w in weights).backward()
    adam.step()
    shared = torch.zeros(())  # what megatron's load leaves: one zero tensor for every parameter
    for state in adam.state.values():
        state["step"] = shared
    adam.param_groups[0]["step"] = 4
    restore_adam_steps(types.SimpleNamespace(optimizer=adam))
    assert [float(adam.state[w]["step"]) for w in weights] == [4.0, 4.0]
    adam.step()  # each count moves by one, not by one per parameter
    assert [float(adam.state[w]["step"]) for w in weights] == [5.0, 5.0]
    restore_adam_steps(types.SimpleNamespace(chained_optimizers=[types.SimpleNamespace(optimizer=adam)]))
    assert float(adam.state[weights[0]]["step"]) == 4.0


def test_a_dtensor_checkpoint_is_refused(train_file, tmp_path):
    run_dir = tmp_path / "run"
    train(sft_config(tiny_model(), train_file, run_dir, "++sft.max_num_steps=1", "++checkpointing.save_period=1"))
    with pytest.raises(UserError, match="was written by backend=dtensor, this run uses backend=megatron"):
        train(sft_config(tiny_model(), train_file, run_dir, "++backend=megatron", "++sft.max_num_steps=2"))


def test_another_models_megatron_checkpoint_is_refused(train_file, tmp_path):
    run_dir = tmp_path / "run"
    train(sft_config(tiny_model(), train_file, run_dir, "++backend=megatron", "++sft.max_num_steps=1",
                     "++checkpointing.save_period=1"))  # fmt: skip
    other = sft_config(tiny_model(seed=1), train_file, run_dir, "++backend=megatron", "++sft.max_num_steps=2")
    with pytest.raises(UserError, match="was written for another model"):
        train(other)  # same shapes, other weights


def test_pipeline_parallel_and_recomputation_on_cpu_are_user_errors(train_file, tmp_path, capsys):
    args = [f"++policy.model_name={tiny_model()}", f"++data.train_data={train_file}", f"++output_dir={tmp_path}",
            "++policy.train_global_batch_size=8", "++backend=megatron",
            "++policy.megatron_cfg.pipeline_model_parallel_size=2"]  # fmt: skip
    assert main(args) == 2
    assert "pipeline_model_parallel_size > 1 needs GPUs" in capsys.readouterr().err
    args[-1] = "++policy.megatron_cfg.activation_checkpointing=true"
    assert main(args) == 2
    assert "activation_checkpointing needs GPUs" in capsys.readouterr().err


# ---- two processes ------------------------------------------------------------------------------------------


def torchrun(args: list[str], timeout: float = 300) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "skills_cli.training.algorithms.sft", *args]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]


def cli_args(train_file, output_dir, *extra) -> list[str]:
    return [f"++policy.model_name={tiny_model()}", f"++data.train_data={train_file}", f"++output_dir={output_dir}",
            "++policy.train_global_batch_size=8", "++policy.train_micro_batch_size=2",
            "++policy.max_total_sequence_length=256", "++policy.optimizer.kwargs.lr=1e-3",
            "++policy.optimizer.kwargs.weight_decay=0.0", "++backend=megatron", *RUN_OPTIONS, *extra]  # fmt: skip


def test_tensor_parallel_2_matches_one_process(reference, train_file, tmp_path):
    """TP=2 (column/row-parallel linears, vocabulary-parallel embedding padded to 384 rows, gathered logits):
    the 1-process losses and gradient norms, and an export with the same weights."""
    from safetensors.torch import load_file

    torchrun(cli_args(train_file, tmp_path, "++policy.megatron_cfg.tensor_model_parallel_size=2"))
    for mine, theirs in zip(read_metrics(tmp_path), read_metrics(reference["output"]), strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], abs=1e-5)
    a = load_file(str(tmp_path / "final_hf" / "model.safetensors"))
    b = load_file(str(reference["output"] / "final_hf" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)


def test_data_parallel_2_resumes_a_one_process_checkpoint(reference, train_file, tmp_path):
    """DP=2 (DDP gradient all-reduce, per-rank micro-batches) picking up the 1-process run's step_4: the
    distributed checkpoint reloads under another layout and steps 5-6 match."""
    shutil.copytree(reference["output"] / "checkpoints" / "step_4", tmp_path / "checkpoints" / "step_4")
    torchrun(cli_args(train_file, tmp_path))
    got, expected = read_metrics(tmp_path), read_metrics(reference["output"])[4:]
    assert [row["step"] for row in got] == [5, 6]
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
        assert mine["grad_norm"] == pytest.approx(theirs["grad_norm"], abs=1e-5)
