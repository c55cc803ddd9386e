"""Golden dry-run texts of generation jobs with self-hosted servers: vLLM multi-node (Ray), SGLang
multi-node (dist-init), TensorRT-LLM, and the embedded hf server; plus chunk/seed fan-out and merge."""

from __future__ import annotations

import pytest
from conftest import write_config
from test_golden_dry_run import check_golden, normalise

from skills_cli.pipeline import generate, wrap_arguments

SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers:
  main: /lustre/images/skills.sqsh
  vllm: vllm/vllm-openai:v0.10.1.1
  sglang: lmsysorg/sglang:v0.5.4
  trtllm: nvcr.io/nvidia/tensorrt-llm/release:1.0.0
mounts: ["/lustre/me/workspace:/workspace"]
"""


@pytest.mark.parametrize(
    "server_type,gpus,nodes", [("vllm", 8, 2), ("vllm", 0, 1), ("sglang", 8, 2), ("trtllm", 8, 1), ("hf", 1, 1)]
)
def test_server_job_golden(server_type, gpus, nodes, config_dir, isolated_home):
    write_config(config_dir, "cluster", SLURM)
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math ++inference.tokens_to_generate=1024"),
        cluster="cluster", config_dir=str(config_dir), input_file="/workspace/in.jsonl",
        output_dir="/workspace/out", model="/workspace/model", server_type=server_type, server_gpus=gpus,
        server_nodes=nodes, server_args="--max-model-len 8192" if server_type != "hf" else "",
        expname=f"gen-{server_type}", dry_run=True,
    )  # fmt: skip
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden(f"server_{server_type}{'_cpu' if gpus == 0 else ''}.txt", text)
    assert "SKILLS_SERVER_PORT=$(python3 -m skills_cli.common.ports" in text  # a free port per job
    assert "--ntasks=1" in text  # the client runs once, even on multi-node jobs
    if nodes > 1:
        assert 'export SKILLS_CLI_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)' in text
        assert f"#SBATCH --nodes={nodes}" in text


def test_chunks_and_seeds_fan_out_with_merge(config_dir, isolated_home):
    write_config(config_dir, "cluster", SLURM)
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math"), cluster="cluster", config_dir=str(config_dir),
        input_file="/workspace/in.jsonl", output_dir="/workspace/out", model="/workspace/model",
        server_type="vllm", server_gpus=1, num_chunks=2, num_random_seeds=2,
        postprocess_cmd="python /workspace/post.py /workspace/out", expname="fan", dry_run=True,
    )  # fmt: skip
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden("generate_chunks_seeds.txt", text)
    assert text.count("sbatch --parsable") == 6  # 2 seeds x (2 chunks + 1 merge)
    assert "output-rs1_chunk_1.jsonl" in text
    assert "--dependency=afterok:$_skills_job_0:$_skills_job_1" in text
