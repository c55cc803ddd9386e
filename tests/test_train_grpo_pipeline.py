"""`ns train grpo` / `ns nemo_rl grpo` compile and validation (the trainer itself is tested in test_grpo_*)."""

from __future__ import annotations

import json

import pytest
from conftest import run_ns, write_config

SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers: {main: /lustre/images/skills.sqsh, vllm: vllm/vllm-openai:v0.10.1.1}
"""
# seed 001's 8B dtensor recipe: 64 prompts x 32 generations, global batch 512, importance-sampling correction
SEED_001_FLAGS = ["++grpo.num_prompts_per_step=64", "++grpo.num_generations_per_prompt=32",
                  "++policy.train_global_batch_size=512", "++policy.max_total_sequence_length=4096",
                  "++loss_fn.use_importance_sampling_correction=true"]  # fmt: skip


def model_dir(tmp_path, heads: int = 32, kv_heads: int = 8):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"num_attention_heads": heads, "num_key_value_heads": kv_heads}))
    (path / "tokenizer.json").write_text("{}")  # checked for presence before submission, never loaded here
    return path


def grpo(config_dir, *extra, check=False):
    return run_ns("nemo_rl", "grpo", "--cluster", "slurm", "--config_dir", str(config_dir), "--expname", "grpo-8b",
                  "--output_dir", "/workspace/grpo", "--hf_model", "/workspace/Llama-3.1-8B-Instruct",
                  "--training_data", "/workspace/openmath.jsonl", "--num_nodes", "1", "--num_gpus", "8",
                  "--dry_run", *extra, check=check)  # fmt: skip


def test_seed001_grpo_call_compiles_to_torchrun(config_dir):
    write_config(config_dir, "slurm", SLURM)
    text = grpo(config_dir, *SEED_001_FLAGS, "--swanlab_project", "grpo-dev", check=True).stdout
    assert "#SBATCH --gpus-per-node=8" in text
    assert "-m torch.distributed.run --nproc_per_node=8 --standalone -m skills_cli.training.algorithms.grpo" in text
    for flag in ("++backend=dtensor", "++policy.model_name=/workspace/Llama-3.1-8B-Instruct",
                 "++data.train_data=/workspace/openmath.jsonl", "++grpo.num_generations_per_prompt=32",
                 "++loss_fn.use_importance_sampling_correction=true", "++logger.swanlab_enabled=true",
                 "++logger.swanlab.project=grpo-dev", "++logger.swanlab.name=grpo-8b"):  # fmt: skip
        assert flag in text, flag


@pytest.mark.parametrize("extra,message", [
    (["++grpo.num_generations_per_prompt=1"], "at least 2 generations per prompt"),
    (["++grpo.num_prompts_per_step=3", "++grpo.num_generations_per_prompt=4", "++policy.train_global_batch_size=8"],
     "valid global batch sizes: 1, 2, 3, 4, 6, 12"),
    (["++grpo.num_prompts_per_step=4", "++grpo.num_generations_per_prompt=4", "++policy.train_global_batch_size=16",
      "++policy.train_micro_batch_size=1", "++policy.dtensor_cfg.tensor_parallel_size=1", "--num_gpus", "8",
      "--num_nodes", "1", "++grpo.num_prompts_per_step=12"], "divisible by the data-parallel size 8"),
    (["++loss_fn.ratio_clip_c=0.5"], "ratio_clip_c=0.5 must be > 1"),
    (["++policy.generation.max_new_tokens=4096", "++policy.max_total_sequence_length=4096"], "leaves no room"),
    (["++grpo.num_prompt_per_step=4"], "did you mean 'num_prompts_per_step'"),
])  # fmt: skip
def test_bad_grpo_flags_fail_before_submission(config_dir, extra, message):
    write_config(config_dir, "slurm", SLURM)
    result = grpo(config_dir, *extra)
    assert result.returncode == 2, result.stdout
    assert message in result.stderr


def test_vllm_rollouts_run_in_the_vllm_container(config_dir):
    write_config(config_dir, "slurm", SLURM)
    text = grpo(
        config_dir,
        "++policy.generation.backend=vllm",
        "++policy.generation.vllm_cfg.gpu_memory_utilization=0.5",
        check=True,
    ).stdout
    assert "--container-image=vllm/vllm-openai:v0.10.1.1" in text
    assert "++policy.generation.backend=vllm" in text
    default = grpo(config_dir, check=True).stdout
    assert "--container-image=/lustre/images/skills.sqsh" in default and "vllm-openai" not in default


def test_disable_wandb_wins_over_overrides(config_dir):
    write_config(config_dir, "slurm", SLURM)
    text = grpo(config_dir, "--wandb_project", "p", "++logger.wandb_enabled=true", "--disable_wandb", check=True).stdout
    assert text.index("++logger.wandb_enabled=true") < text.rindex("++logger.wandb_enabled=false")
    assert "++logger.wandb.project=p" not in text
