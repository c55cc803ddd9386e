"""recipes/openmath_simplified.py: the tutorial as one script. Its dry run prints the real job graph (vLLM,
TensorRT-LLM build, torchrun SFT with the tutorial's flags, checkpoint conversion) anywhere; with tiny
stand-ins it runs for real on the local Slurm over SSH."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import benchmarks_dir, write_config

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "openmath_simplified.py"
SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers: {main: /images/skills.sqsh, vllm: vllm/vllm-openai:v0.10.1.1, trtllm: nvcr.io/nvidia/tensorrt-llm/release:1.0.0}
"""
STAGES = ["download-14b", "baseline-eval", "prepare-data", "problem-extraction", "download-qwq", "convert-qwq-trtllm",
          "solution-generation", "prepare-sft-data", "training", "convert-14b-hf", "final-eval"]  # fmt: skip


def recipe(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECIPE), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT)  # fmt: skip


def test_dry_run_prints_the_tutorials_job_graph(config_dir, tmp_path):
    write_config(config_dir, "slurm", SLURM)
    workspace = tmp_path / "workspace"
    result = recipe("--workspace", str(workspace), "--cluster", "slurm", "--config_dir", str(config_dir), "--dry_run")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert [
        line.split()[2] for line in text.splitlines() if line.startswith("# ---- ") and line.endswith(" ----")
    ] == STAGES
    assert "huggingface-cli download Qwen/Qwen2.5-14B-Instruct" in text and "Qwen/QwQ-32B" in text
    assert "vllm/vllm-openai" in text  # baseline and final evals on vLLM servers
    assert "trtllm-build --checkpoint_dir" in text and "--max_seq_len 10000" in text
    assert "-m skills_cli.training.algorithms.sft" in text and "++policy.dtensor_cfg.tensor_parallel_size=8" in text
    assert "++filters.remove_no_think_tags=true" in text
    assert "--convert_from checkpoint --convert_to hf" in text or "-m skills_cli.training.convert" in text
    assert not workspace.exists()  # a dry run writes nothing


def test_bad_cluster_is_one_error_line(config_dir, tmp_path):
    result = recipe("--workspace", str(tmp_path), "--cluster", "nosuch", "--config_dir", str(config_dir), "--dry_run")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


@pytest.mark.infra
def test_stand_in_run_on_the_local_slurm(slurm_config, tmp_path):
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    workspace = tmp_path / "workspace"
    result = recipe("--workspace", str(workspace), "--cluster", "slurm_local", "--config_dir", str(slurm_config),
                    "--stand_in", "--benchmarks_mirror", str(benchmarks_dir()), "--timeout", "1200", timeout=1500)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in STAGES:
        if stage != "convert-qwq-trtllm":  # the stand-in serves the solver with the hf server: no engine build
            assert f"{stage} " in result.stdout
    assert "FAILED" not in result.stdout
    assert "==== after training ====" in result.stdout
    for folder in ("baseline", "after-training"):
        metrics = json.loads((workspace / "evals" / folder / "metrics.json").read_text())
        assert metrics["aime24"]["pass@2"]["num_entries"] == 4
    exported = workspace / "training" / "qwen2.5-14b-improved-hf"
    assert (exported / "config.json").is_file() and (exported / "tokenizer.json").is_file()
    assert len((workspace / "sft-data.jsonl").read_text().splitlines()) > 0
