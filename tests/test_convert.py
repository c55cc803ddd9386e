"""Model conversion: hf -> megatron -> hf gives back the same tensors (Llama and Qwen2), the megatron checkpoint
loads into megatron's GPTModel with HF's logits, a training checkpoint of either backend converts to the
trainer's own final export, bad requests fail with one line, `ns convert` runs locally end to end, and its
TensorRT-LLM job is pinned by a golden dry-run text."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import run_ns, write_config
from test_golden_dry_run import check_golden, normalise
from test_sft_support import conversation_rows, sft_config, tiny_model, write_jsonl

from skills_cli.common.errors import UserError
from skills_cli.training import convert


def same_tensors(first, second) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(str(first / "model.safetensors")), load_file(str(second / "model.safetensors"))
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)


@pytest.mark.parametrize("arch,model_type", [("llama", "llama"), ("qwen2", "qwen")])
def test_hf_to_megatron_to_hf_is_lossless(arch, model_type, tmp_path):
    source = tiny_model(arch)
    assert convert.main(["--input_model", source, "--output_model", str(tmp_path / "mcore"), "--convert_from", "hf",
                         "--convert_to", "megatron", "--model_type", model_type]) == 0  # fmt: skip
    assert (tmp_path / "mcore" / "metadata.json").is_file() and (
        tmp_path / "mcore" / "hf_config" / "config.json"
    ).is_file()
    assert convert.main(["--input_model", str(tmp_path / "mcore"), "--output_model", str(tmp_path / "hf"),
                         "--convert_from", "megatron", "--convert_to", "hf"]) == 0  # fmt: skip
    assert same_tensors(tmp_path / "hf", Path(source))
    text = "<|im_start|>user\nWhat is 12+7?<|im_end|>\n"
    from skills_cli.inference.model_loading import load_tokenizer

    assert load_tokenizer(tmp_path / "hf").encode(text) == load_tokenizer(source).encode(text)


def test_megatron_checkpoint_loads_into_gpt_model_with_hf_logits(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from skills_cli.training.components.parallel import distributed_session
    from skills_cli.training.megatron import bridge, dist_ckpt
    from skills_cli.training.megatron import model as mcore

    convert.hf_to_megatron(tiny_model(), str(tmp_path / "mcore"))
    hf = AutoModelForCausalLM.from_pretrained(tiny_model(), dtype=torch.float32)
    shape = bridge.model_shape(hf.config)
    ids = torch.randint(0, shape.vocab_size, (1, 16), generator=torch.Generator().manual_seed(1))
    with distributed_session() as dist:
        mcore.initialize_parallel(1, 1, seed=0, device=dist.device)
        config = mcore.transformer_config(shape, 1, 1, torch.float32, dist.device, activation_checkpointing=False)
        gpt = mcore.build_gpt_model(shape, config, te=False)
        dist_ckpt.load(tmp_path / "mcore", gpt)
        with torch.no_grad():
            logits = gpt(ids, torch.arange(16)[None], ~torch.ones(16, 16, dtype=torch.bool).tril()[None, None])
    with torch.no_grad():
        assert (logits[..., : shape.vocab_size] - hf(ids).logits).abs().max().item() < 1e-4


@pytest.mark.parametrize("backend", ["dtensor", "megatron"])
def test_training_checkpoint_converts_to_the_trainers_export(backend, tmp_path):
    from skills_cli.training.algorithms.sft.trainer import SFTTrainer
    from skills_cli.training.components.parallel import distributed_session

    train = write_jsonl(tmp_path / "train.jsonl", conversation_rows(16))
    run_dir = tmp_path / "run"
    config = sft_config(tiny_model(), train, run_dir, f"++backend={backend}", "++sft.max_num_steps=2",
                        "++checkpointing.save_period=2")  # fmt: skip
    with distributed_session() as dist:
        SFTTrainer(config, dist).fit()
    # the checkpoints directory: its newest step (2, the last one, so the final export's weights)
    assert convert.main(["--input_model", str(run_dir / "checkpoints"), "--output_model", str(tmp_path / "hf"),
                         "--convert_from", "checkpoint", "--convert_to", "hf"]) == 0  # fmt: skip
    assert same_tensors(tmp_path / "hf", run_dir / "final_hf")


def fails(capsys, *args: str) -> str:
    assert convert.main(list(args)) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_bad_conversion_requests(capsys, tmp_path):
    common = ["--output_model", str(tmp_path / "out")]
    assert "converting checkpoint->megatron is not supported" in fails(
        capsys, "--input_model", tiny_model(), *common, "--convert_from", "checkpoint", "--convert_to", "megatron"
    )
    assert "--input_model: no HF model at" in fails(
        capsys, "--input_model", str(tmp_path / "nope"), *common, "--convert_from", "hf", "--convert_to", "megatron"
    )
    assert "--model_type qwen does not match" in fails(
        capsys,
        "--input_model",
        tiny_model(),
        *common,
        "--convert_from",
        "hf",
        "--convert_to",
        "megatron",
        "--model_type",
        "qwen",
    )
    assert "not a megatron distributed checkpoint" in fails(
        capsys, "--input_model", tiny_model(), *common, "--convert_from", "megatron", "--convert_to", "hf"
    )
    assert "not a training checkpoint" in fails(
        capsys, "--input_model", str(tmp_path), *common, "--convert_from", "checkpoint", "--convert_to", "hf"
    )
    assert "must differ from --input_model" in fails(
        capsys, "--input_model", tiny_model(), "--output_model", tiny_model(), "--convert_from", "hf",
        "--convert_to", "megatron")  # fmt: skip


# ---- ns convert --------------------------------------------------------------------------------------------------

SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers:
  main: /lustre/images/skills.sqsh
  trtllm: nvcr.io/nvidia/tensorrt-llm/release:1.0.0
mounts: ["/lustre/me/workspace:/workspace"]
"""


def test_trtllm_engine_build_golden(config_dir, isolated_home):
    from skills_cli.pipeline.commands.convert import CONVERT

    write_config(config_dir, "cluster", SLURM)
    submission = CONVERT.python_api(
        cluster="cluster", config_dir=str(config_dir), input_model="/workspace/Llama-3.1-8B-Instruct",
        output_model="/workspace/llama-trt", convert_from="hf", convert_to="trtllm", model_type="llama",
        num_gpus=8, max_seq_len=16384, build_args="--use_paged_context_fmha enable", expname="to-trtllm", dry_run=True,
    )  # fmt: skip
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden("convert_trtllm.txt", text)
    assert "--container-image=nvcr.io/nvidia/tensorrt-llm/release:1.0.0" in text and "#SBATCH --gpus-per-node=8" in text


def test_megatron_conversion_compiles_to_torchrun_on_several_gpus(config_dir, isolated_home):
    from skills_cli.pipeline.commands.convert import CONVERT

    write_config(config_dir, "cluster", SLURM)
    text = CONVERT.python_api(
        cluster="cluster", config_dir=str(config_dir), input_model="/workspace/qwen", output_model="/workspace/mcore",
        convert_from="hf", convert_to="megatron", model_type="qwen", num_gpus=4, dry_run=True,
    ).dry_run_text  # fmt: skip
    assert "-m torch.distributed.run --standalone --nproc_per_node=4 -m skills_cli.training.convert" in text
    assert "--convert_to megatron --dtype auto --model_type qwen" in text
    assert "--container-image=/lustre/images/skills.sqsh" in text


@pytest.mark.parametrize("args,message", [
    (["--convert_from", "megatron", "--convert_to", "trtllm"], "converting megatron->trtllm is not supported"),
    (["--convert_from", "hf", "--convert_to", "trtllm", "--num_gpus", "0"], "--num_gpus must be >= 1"),
    (["--convert_from", "hf", "--convert_to", "megatron", "--model_type", "qwen"], "--model_type qwen does not match"),
    (["--convert_from", "hf", "--convert_to", "megatron", "--num_gpus", "3"], "--num_gpus 3 (tensor parallelism) "
     "does not divide num_attention_heads=2"),
    (["--convert_from", "megatron", "--convert_to", "hf"], "is not a megatron model (metadata.json missing)"),
    (["--convert_from", "hf", "--convert_to", "hf"], "converting hf->hf is not supported"),
    (["--convert_from", "hf", "--convert_to", "megatron", "--build_args", "--x 1"], "apply to --convert_to trtllm"),
])  # fmt: skip
def test_bad_requests_fail_before_submission(args, message, tmp_path):
    from skills_cli.pipeline.store import Store

    result = run_ns("convert", "--input_model", tiny_model(), "--output_model", str(tmp_path / "out"),
                    "--expname", "bad", *args)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not Store().has_experiment("bad")


def test_missing_input_and_unknown_model_type(tmp_path, config_dir):
    missing = run_ns("convert", "--input_model", str(tmp_path / "nope"), "--output_model", str(tmp_path / "o"),
                     "--convert_from", "hf", "--convert_to", "megatron")  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    write_config(config_dir, "slurm", SLURM)
    remote = run_ns("convert", "--cluster", "slurm", "--config_dir", str(config_dir), "--input_model", "/workspace/m",
                    "--output_model", "/workspace/t", "--convert_from", "hf", "--convert_to", "trtllm", "--num_gpus", "8",
                    "--dry_run")  # fmt: skip
    assert remote.returncode == 2 and "--convert_to trtllm needs --model_type" in remote.stderr
    bad_type = run_ns("convert", "--input_model", tiny_model(), "--output_model", str(tmp_path / "o"),
                      "--convert_from", "hf", "--convert_to", "megatron", "--model_type", "gpt")  # fmt: skip
    assert bad_type.returncode == 2 and "gpt" in bad_type.stderr


def test_ns_convert_round_trip_runs_locally(tmp_path):
    """hf -> megatron, then megatron -> hf after it (--run_after), as real local jobs."""
    from skills_cli.pipeline.experiment import wait
    from skills_cli.pipeline.store import Store

    source = tmp_path / "tiny"
    shutil.copytree(tiny_model("qwen2"), source)
    run_ns("convert", "--input_model", str(source), "--output_model", str(tmp_path / "mcore"), "--convert_from", "hf",
           "--convert_to", "megatron", "--expname", "to-mcore", "--detach", check=True)  # fmt: skip
    run_ns("convert", "--input_model", str(tmp_path / "mcore"), "--output_model", str(tmp_path / "hf"),
           "--convert_from", "megatron", "--convert_to", "hf", "--expname", "to-hf", "--run_after", "to-mcore",
           "--detach", check=True)  # fmt: skip
    store = Store()
    records = wait(store.jobs("to-mcore") + store.jobs("to-hf"), store, timeout=600, poll=1.0)
    assert [r.state.value for r in records] == ["SUCCEEDED", "SUCCEEDED"], run_ns("logs", "to-hf").stdout[-3000:]
    assert same_tensors(tmp_path / "hf", source)


def test_model_type_is_checked_in_the_program_too():
    with pytest.raises(UserError, match="--model_type llama does not match"):
        convert.check_model_type("llama", "qwen2", "/m")
