"""Golden dry-run texts of generation jobs with self-hosted servers: vLLM multi-node (Ray), SGLang
multi-node (dist-init), TensorRT-LLM, and the embedded hf server; plus chunk/seed fan-out and merge.

SGLang and TensorRT-LLM cannot be installed here (their packages need CUDA), so their command lines are never
run in these tests. Instead every flag we render for them is checked, by exact name, against the flags their
CLIs accept, recorded in tests/data/server_cli_flags.json from their source:

- SGLang 0.5.23, `python -m sglang.launch_server`: the option strings of the argparse parser that
  `ServerArgs.add_cli_args` (sglang/srt/server_args.py) builds, run from the PyPI wheel sglang==0.5.23
  (sglang-0.5.23-cp311-cp311-manylinux_2_34_x86_64.whl, sha256 00b3cd5b265ac76c...).
- TensorRT-LLM 1.2.1: the v1.2.1 tag's source is out of reach here (PyPI's tensorrt-llm 1.2.1 is a stub that
  downloads the wheel from NVIDIA's own index), so the closest stored versions of NVIDIA/TensorRT-LLM:
  `trtllm-serve`: 00209af149e7774406881a37283dce303571eb11:tensorrt_llm/commands/serve.py, the click options of
  `serve`, a main-branch commit of the 1.2 cycle (after PR #9104's --config alias, Nov 2025, and before PR
  #12105's renames, Mar 2026); `trtllm-build`: 65f1d1536e18aea3380e6e270e00895a709333eb:tensorrt_llm/commands/
  build.py plus the plugin flags of c20322ffd3dc0740ca530c9fad989b22e64f6e06:tensorrt_llm/plugin/plugin.py;
  `convert_checkpoint.py`: 368f8f2ade001e8fcb955be39e4812f918d7fb92 (examples/models/core/llama) and
  0df9aaf38338424867a1ca1faa71173501205001 (examples/models/core/qwen).
"""

from __future__ import annotations

import json
import shlex
from itertools import pairwise
from pathlib import Path

import pytest
from conftest import write_config
from test_golden_dry_run import check_golden, normalise

from skills_cli.pipeline import generate, wrap_arguments
from skills_cli.pipeline.commands.convert import CONVERT, TRTLLM_FAMILIES
from skills_cli.pipeline.servers.base import SERVER_KINDS, ServerSpec
from skills_cli.training.convert_spec import DTYPES

CLIS = json.loads((Path(__file__).parent / "data" / "server_cli_flags.json").read_text())
SERVER_CLI = {"sglang": "sglang", "trtllm": "trtllm-serve"}  # server kind -> its CLI in CLIS
# --server_args pass the user's words to their server as they are, so each uses its own server's spelling
SERVER_ARGS = {"vllm": "--max-model-len 8192", "sglang": "--context-length 8192", "trtllm": "--max_seq_len 8192",
               "hf": ""}  # fmt: skip

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
        server_nodes=nodes, server_args=SERVER_ARGS[server_type],
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


# ---- the flags we render exist in the servers' CLIs ----------------------------------------------------------


def unknown_flags(argv: list[str], cli: str) -> list[str]:
    """The `--flag` words of `argv` (a `--flag=value` by its name) that the CLI does not accept, exactly spelled."""
    accepted = set(CLIS[cli]["flags"])
    flags = [word.split("=", 1)[0] for word in argv if word.startswith("--")]
    return [flag for flag in flags if flag not in accepted]


def invalid_values(argv: list[str], cli: str) -> list[tuple[str, str]]:
    """(flag, value) pairs of `argv` whose value is not among the choices the CLI allows for that flag."""
    choices = CLIS[cli].get("choices", {})
    return [(flag, value) for flag, value in pairwise(argv) if flag in choices and value not in choices[flag]]


def rendered_server_argvs(server_type: str) -> list[list[str]]:
    """Every shape of the kind's command line: one node and several where it spans nodes, its fewest GPUs and a
    full node, the default host and all interfaces where it may listen there."""
    kind = SERVER_KINDS.get(server_type)
    hosts = (None,) if kind.loopback_only else (None, "0.0.0.0")
    return [kind.argv(ServerSpec(server_type, "/workspace/model", gpus=gpus, nodes=nodes, host=host), "python3")
            for nodes in ((1, 2) if kind.multi_node else (1,)) for gpus in sorted({kind.min_gpus, 8})
            for host in hosts]  # fmt: skip


@pytest.mark.parametrize("server_type", sorted(SERVER_CLI))
def test_every_server_flag_we_render_is_in_its_cli(server_type):
    cli = SERVER_CLI[server_type]
    argvs = rendered_server_argvs(server_type)
    for argv in argvs:
        assert unknown_flags(argv, cli) == [], f"{shlex.join(argv)}: not flags of {cli} {CLIS[cli]['version']}"
        assert invalid_values(argv, cli) == []
    rendered = {word for argv in argvs for word in argv if word.startswith("--")}
    assert {"--host", "--port"} <= rendered  # the check above saw the flags, not an empty command line
    assert unknown_flags(SERVER_ARGS[server_type].split(), cli) == []  # the golden jobs' pass-through is real too


def trtllm_build_script(model_type: str, config_dir, isolated_home) -> list[list[str]]:
    """The argv of every command of the `ns convert --convert_to trtllm` job's script (no --build_args)."""
    write_config(config_dir, "cluster", SLURM)
    submission = CONVERT.python_api(
        cluster="cluster", config_dir=str(config_dir), input_model="/workspace/hf-model", output_model="/workspace/trt",
        convert_from="hf", convert_to="trtllm", model_type=model_type, num_gpus=8, expname="to-trtllm", dry_run=True,
    )  # fmt: skip
    lines = normalise(submission.dry_run_text, isolated_home).splitlines()
    return [shlex.split(line) for line in lines if line.startswith(("python3 ", "trtllm-build "))]


@pytest.mark.parametrize("model_type", sorted(TRTLLM_FAMILIES))
def test_every_flag_of_the_trtllm_conversion_is_in_tensorrt_llms_cli(model_type, config_dir, isolated_home):
    convert, build = trtllm_build_script(model_type, config_dir, isolated_home)
    converter = f"trtllm-convert-{TRTLLM_FAMILIES[model_type]}"
    assert convert[1].endswith(f"/{TRTLLM_FAMILIES[model_type]}/convert_checkpoint.py") and build[0] == "trtllm-build"
    for argv, cli in ((convert, converter), (build, "trtllm-build")):
        assert "--output_dir" in argv
        assert unknown_flags(argv, cli) == [] and invalid_values(argv, cli) == [], f"{shlex.join(argv)} vs {cli}"
    # every --dtype ns convert offers is one the converter takes
    assert set(DTYPES) <= set(CLIS[converter]["choices"]["--dtype"])


@pytest.mark.parametrize(
    "cli,real,wrong",
    [("sglang", "--tp-size", "--tp"),  # an abbreviation argparse may accept, but not a flag of SGLang's
     ("sglang", "--context-length", "--max-model-len"),  # vLLM's spelling
     ("trtllm-serve", "--tp_size", "--tp-size"),  # dash for underscore
     ("trtllm-build", "--max_seq_len", "--max_sequence_len")],
)  # fmt: skip
def test_a_renamed_flag_fails_the_check(cli, real, wrong):
    assert unknown_flags([real, "8"], cli) == []
    assert unknown_flags([wrong, "8"], cli) == [wrong]
    assert unknown_flags([f"{wrong}=8"], cli) == [wrong]


def test_a_value_outside_the_clis_choices_fails_the_check():
    assert invalid_values(["--gemm_plugin", "auto"], "trtllm-build") == []
    assert invalid_values(["--gemm_plugin", "automatic"], "trtllm-build") == [("--gemm_plugin", "automatic")]
