"""`ns train sft` / `ns nemo_rl sft` compile and validation (the trainer itself is tested in test_sft_*)."""

from __future__ import annotations

import json
import time

import pytest
from conftest import run_ns, write_config

from skills_cli.pipeline.store import JobRecord, JobState, Store

SEED_003_FLAGS = [
    "++sft.max_num_epochs=4", "++policy.dtensor_cfg.tensor_parallel_size=8", "++policy.max_total_sequence_length=8192",
    "++policy.train_global_batch_size=32", "++policy.optimizer.kwargs.lr=1e-5",
    "++policy.dtensor_cfg.sequence_parallel=true", "++policy.dtensor_cfg.activation_checkpointing=true",
]  # fmt: skip
SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers: {main: /lustre/images/skills.sqsh}
"""


def model_dir(tmp_path, heads: int = 8, kv_heads: int = 8):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"num_attention_heads": heads, "num_key_value_heads": kv_heads}))
    (path / "tokenizer.json").write_text("{}")  # checked for presence before submission, never loaded here
    return path


def test_seed003_nemo_rl_sft_call_compiles_to_torchrun(tmp_path, config_dir):
    write_config(config_dir, "slurm", SLURM)
    result = run_ns("nemo_rl", "sft", "--cluster", "slurm", "--config_dir", str(config_dir), "--expname", "training",
                    "--run_after", "download-14b", "--run_after", "prepare-sft-data", "--output_dir", "/workspace/training",
                    "--hf_model", "/workspace/Qwen2.5-14B-Instruct", "--num_nodes", "2", "--num_gpus", "8",
                    "--training_data", "/workspace/sft-data.jsonl", "--cache_dir", "/workspace/nemo-rl-cache",
                    "--final_hf_path", "/workspace/training/qwen2.5-14b-improved-hf", "--dry_run", *SEED_003_FLAGS)  # fmt: skip
    assert (
        result.returncode == 2 and "--run_after 'download-14b': no experiment" in result.stderr
    )  # checked, not ignored
    result = run_ns("train", "sft", "--cluster", "slurm", "--config_dir", str(config_dir), "--expname", "training",
                    "--output_dir", "/workspace/training", "--hf_model", "/workspace/Qwen2.5-14B-Instruct",
                    "--num_nodes", "2", "--num_gpus", "8", "--training_data", "/workspace/sft-data.jsonl",
                    "--final_hf_path", "/workspace/out-hf", "--dry_run", *SEED_003_FLAGS, check=True)  # fmt: skip
    text = result.stdout
    assert "#SBATCH --nodes=2" in text and "#SBATCH --gpus-per-node=8" in text
    assert "-m torch.distributed.run --nproc_per_node=8 --nnodes=2" in text
    assert "-m skills_cli.common.node_rendezvous --shared_dir /workspace/training --" in text
    assert "--rdzv_endpoint={rendezvous_host}:{rendezvous_port}" in text and '--node_rank="$SLURM_NODEID"' in text
    assert "++policy.model_name=/workspace/Qwen2.5-14B-Instruct" in text and "++sft.max_num_epochs=4" in text


@pytest.mark.parametrize("extra,message", [
    (["++policy.train_global_batch_size=30", "++policy.train_micro_batch_size=4"],
     "valid micro-batch sizes: 1, 2, 3, 5, 6, 10, 15, 30"),
    (["++policy.dtensor_cfg.tensor_parallel_size=3"], "cannot be split into model-parallel groups of 3"),
    (["++sft.max_num_epoch=2"], "did you mean 'max_num_epochs'"),
    (["++backend=megatron"], "choose the backend with --backend"),
])  # fmt: skip
def test_bad_training_inputs_fail_before_submission(tmp_path, extra, message):
    model = model_dir(tmp_path)
    data = tmp_path / "sft.jsonl"
    data.write_text("{}\n")
    result = run_ns("train", "sft", "--hf_model", str(model), "--training_data", str(data), "--output_dir",
                    str(tmp_path / "out"), "--num_gpus", "0", "--expname", "bad", *extra)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not Store().has_experiment("bad")


def test_missing_model_unknown_backend_and_heads(tmp_path, config_dir):
    data = tmp_path / "sft.jsonl"
    data.write_text("{}\n")
    missing = run_ns("train", "sft", "--hf_model", str(tmp_path / "nope"), "--training_data", str(data),
                     "--output_dir", str(tmp_path / "o"))  # fmt: skip
    assert missing.returncode == 2 and "no Hugging Face model there" in missing.stderr
    backend = run_ns(
        "train", "sft", "--backend", "jax", "--hf_model", "/m", "--training_data", "/d", "--output_dir", "/o"
    )
    assert backend.returncode == 2 and "'jax' is not one of dtensor, megatron" in backend.stderr
    write_config(config_dir, "slurm", SLURM)
    model = model_dir(tmp_path, heads=12, kv_heads=2)
    heads = run_ns("train", "sft", "--cluster", "slurm", "--config_dir", str(config_dir), "--hf_model", str(model),
                   "--training_data", "/d", "--output_dir", "/o", "--num_gpus", "4", "--dry_run",
                   "++policy.dtensor_cfg.tensor_parallel_size=4")  # fmt: skip
    assert heads.returncode == 2 and "does not divide num_key_value_heads=2" in heads.stderr
    (model / "tokenizer.json").unlink()
    untokenized = run_ns("train", "sft", "--hf_model", str(model), "--training_data", str(data), "--output_dir",
                         str(tmp_path / "o"), "--num_gpus", "0")  # fmt: skip
    assert untokenized.returncode == 2 and f"--hf_model {model}: no tokenizer files in {model}" in untokenized.stderr
    # after an upstream that may still be writing the model (config.json first, the tokenizer last), the job
    # checks the tokenizer when it starts: the submission must not fail on a half-written folder
    store = Store()
    store.add_experiment("download", "local", "none")
    store.add_job(JobRecord(uid="20260101-000000-00000000", expname="download", name="download", cluster="local",
                            executor="none", external_id="1", state=JobState.RUNNING, submitted_at=time.time()))  # fmt: skip
    waiting = run_ns("train", "sft", "--hf_model", str(model), "--training_data", str(data), "--output_dir",
                     str(tmp_path / "o"), "--num_gpus", "0", "--run_after", "download", "--dry_run")  # fmt: skip
    assert waiting.returncode == 0, waiting.stderr


def sft_data(tmp_path, rows: int = 16):
    path = tmp_path / "sft.jsonl"
    lines = []
    for i in range(rows):
        messages = [{"role": "user", "content": f"What is {i} + {i}?"},
                    {"role": "assistant", "content": f"{i} + {i} = {2 * i}. The answer is \\boxed{{{2 * i}}}."}]  # fmt: skip
        lines.append(json.dumps({"messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


TRAIN_FLAGS = ["++sft.max_num_steps=3", "++policy.train_global_batch_size=4", "++policy.train_micro_batch_size=2",
               "++policy.max_total_sequence_length=256", "++policy.optimizer.kwargs.lr=1e-3",
               "++checkpointing.save_period=2"]  # fmt: skip


def run_training(tmp_path, extra: list[str], expname: str):
    from skills_cli.inference.tiny_model import build_tiny_model
    from skills_cli.pipeline.experiment import wait

    model = build_tiny_model(tmp_path / "tiny")
    out = tmp_path / "training"
    run_ns("train", "sft", "--hf_model", str(model), "--training_data", str(sft_data(tmp_path)), "--output_dir",
           str(out), "--final_hf_path", str(tmp_path / "final"), "--expname", expname, "--detach", *extra,
           *TRAIN_FLAGS, check=True, timeout=600)  # fmt: skip
    store = Store()
    (record,) = wait(store.jobs(expname), store, timeout=600, poll=1.0)
    return record, out


def test_train_sft_runs_locally_and_exports(tmp_path):
    record, out = run_training(tmp_path, [], "sft-local")
    assert record.state.value == "SUCCEEDED", run_ns("logs", "sft-local").stdout[-3000:]
    assert (tmp_path / "final" / "config.json").is_file()
    metrics = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]


@pytest.mark.infra
def test_train_sft_through_the_local_slurm(tmp_path, slurm_config):
    import sys

    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    record, out = run_training(tmp_path, ["--cluster", "slurm_local", "--config_dir", str(slurm_config)], "sft-slurm")
    assert record.executor == "slurm"
    assert record.state.value == "SUCCEEDED", run_ns("logs", "sft-slurm").stdout[-3000:]
    assert (tmp_path / "final" / "config.json").is_file()


def test_megatron_backend_compiles_with_its_parallel_layout(tmp_path, config_dir):
    write_config(config_dir, "slurm", SLURM)
    model = model_dir(tmp_path, heads=8, kv_heads=4)
    common = ["train", "sft", "--backend", "megatron", "--cluster", "slurm", "--config_dir", str(config_dir),
              "--hf_model", str(model), "--training_data", "/d.jsonl", "--output_dir", "/o", "--num_gpus", "8",
              "--dry_run", "++policy.train_global_batch_size=32"]  # fmt: skip
    result = run_ns(*common, "++policy.megatron_cfg.tensor_model_parallel_size=4",
                    "++policy.megatron_cfg.pipeline_model_parallel_size=2", check=True)  # fmt: skip
    text = result.stdout
    assert "-m skills_cli.training.algorithms.sft ++backend=megatron" in text
    assert "++policy.dtensor_cfg.enabled=false ++policy.megatron_cfg.enabled=true" in text
    assert "++policy.megatron_cfg.pipeline_model_parallel_size=2" in text
    heads = run_ns(*common, "++policy.megatron_cfg.tensor_model_parallel_size=8")
    assert heads.returncode == 2 and "tensor parallel size 8 does not divide num_key_value_heads=4" in heads.stderr
    layout = run_ns(*common, "++policy.megatron_cfg.tensor_model_parallel_size=3")
    assert layout.returncode == 2 and "cannot be split into model-parallel groups of 3" in layout.stderr


def test_dependent_jobs_chain_copies_that_resume(config_dir):
    """`--dependent_jobs 2`: three sbatch jobs with the same training command, each told its deadline (so it
    saves before the time limit), each copy submitted after the previous one ends (afterany: a job stopped by
    its deadline still hands over); the trainer resumes from the newest checkpoint."""
    write_config(config_dir, "slurm", SLURM)
    result = run_ns("train", "sft", "--cluster", "slurm", "--config_dir", str(config_dir), "--expname", "sft-long",
                    "--output_dir", "/w/out", "--hf_model", "/w/model", "--training_data", "/w/d.jsonl",
                    "--num_gpus", "8", "--time", "04:00:00", "--dependent_jobs", "2", "--dry_run", check=True)  # fmt: skip
    text = result.stdout
    commands = [line for line in text.splitlines() if "-m skills_cli.training.algorithms.sft" in line]
    assert len(commands) == 3
    training = [c[c.index("python3 -m torch.distributed.run") :] for c in commands]
    assert len(set(training)) == 1 and "++checkpointing.checkpoint_dir=/w/out/checkpoints" in training[0]
    assert text.count('_skills_end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null)') == 3  # Slurm's end time
    assert text.count("|| echo $(( $(date +%s) + 14400 )))") == 3  # else start + limit
    assert "--dependency=afterany:$_skills_job_0 " in text and "--dependency=afterany:$_skills_job_1 " in text
    assert "job-name=sft-cont1" in text and "job-name=sft-cont2" in text
