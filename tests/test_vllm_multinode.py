"""vLLM across nodes for real: `ns start_server --server_type vllm --server_gpus 0 --server_nodes 2` on the local
cluster's `multi` partition. vLLM's CPU build has no Ray; it runs its multiprocessing executor, one worker per
node, tensor parallel across the two nodes over gloo (node 0 serves the API, node 1 runs headless; see
skills_cli/pipeline/servers/vllm.py for why not pipeline parallel). Queried with the official `openai` client,
its greedy completions (tokens and log-probabilities) equal a one-node vLLM server of the same model.

Both servers load at once (~2 min on two busy cores): the one-node reference is started here, with the same
`--dtype float32` (in bfloat16 the two-node sum of partial results rounds differently from one node's).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
from conftest import SMALL_KV_CACHE, local_vllm_config, run_ns, vllm_python, write_config
from multinode_support import job_nodes, write_multi_cluster
from test_golden_dry_run import check_golden, normalise
from test_slurm import finish

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import generate, wrap_arguments
from skills_cli.pipeline.servers import ServerSpec
from skills_cli.pipeline.store import JobState, Store

pytestmark = [pytest.mark.infra, pytest.mark.timeout(900)]

SERVER = ["--server_type", "vllm", "--server_gpus", "0", "--server_args=--dtype float32"]
PROMPTS = ["What is 2 + 3?", "12 + 7 = ", "Compute 345*6, then subtract 1000."]
STARTUP = 600  # seconds; a vLLM start costs ~50 s on two idle cores, several times that on busy ones
# The container nodes have Docker's 64 MiB /dev/shm; vLLM's message queue to the workers takes 10 chunks of this
# many MiB there (16 by default: "Insufficient space in /dev/shm ... 160 MiB required, 64 MiB free")
SMALL_QUEUE = {"VLLM_MQ_MAX_CHUNK_BYTES_MB": "4"}


def start_server(config_dir: Path, cluster: str, model: str, expname: str, *extra: str) -> tuple[str, str, Path]:
    """`ns start_server`: its address, API key and run dir (where the key file is)."""
    env = {**SMALL_KV_CACHE, **SMALL_QUEUE}
    result = run_ns("start_server", "--cluster", cluster, "--config_dir", str(config_dir), "--model", model,
                    "--expname", expname, *SERVER, *extra, timeout=STARTUP, env=env, check=True)  # fmt: skip
    key_file = Path(re.search(r"export OPENAI_API_KEY=\$\(cat (\S+)\)", result.stderr).group(1))
    return result.stdout.strip().splitlines()[-1], key_file.read_text().strip(), key_file.parent


def wait_until_serving(address: str, key: str, run_dir: Path, deadline: float, slurm_job: str | None = None):
    """An `openai` client of the server, once it answers; its own last words if it or its Slurm job ends first."""
    import openai

    client = openai.OpenAI(base_url=address, api_key=key, max_retries=0, timeout=30)
    while time.time() < deadline:
        if (run_dir / "server.exit").exists() or (slurm_job and not queued(slurm_job)):
            pytest.fail(f"the server ended: {(run_dir / 'server.log').read_text()[-3000:]}")
        try:
            client.models.list()
            return client
        except openai.APIConnectionError:
            time.sleep(3)
    pytest.fail(f"no answer from {address} in time: {(run_dir / 'server.log').read_text()[-3000:]}")


def queued(job_id: str) -> bool:
    """The Slurm job is pending or running (a node failure of another test's making ends it: rerun then)."""
    return bool(subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True).stdout.strip())


def greedy(client, model: str) -> list[list[tuple[str, float]]]:
    """Each prompt's 16 greedy tokens with their log-probabilities."""
    completions = []
    for prompt in PROMPTS:
        choice = client.completions.create(model=model, prompt=prompt, max_tokens=16, temperature=0, logprobs=1,
                                           seed=0).choices[0]  # fmt: skip
        completions.append(list(zip(choice.logprobs.tokens, choice.logprobs.token_logprobs, strict=True)))
    return completions


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """The tiny model (head size 32, two attention heads: one per node) under /tmp, which every node shares."""
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("vllm_nodes_model") / "tiny"))


@pytest.fixture(scope="module")
def configs(infra, tmp_path_factory) -> Path:
    """`vllm_multi`: the multi partition, the vLLM environment as the `vllm` role's interpreter (every node sees
    it at the same path), the test's vLLM settings forwarded; `local_vllm`: the one-node reference, here."""
    configs = tmp_path_factory.mktemp("vllm_nodes_configs")
    forwarded = ", ".join([*SMALL_KV_CACHE, *SMALL_QUEUE])
    write_multi_cluster(infra, configs, tmp_path_factory.mktemp("vllm_nodes_jobs"), "vllm_multi",
                        f"interpreters:\n  vllm: {vllm_python()}\nenv_vars: [{forwarded}]\n")  # fmt: skip
    local_vllm_config(configs)
    return configs


def test_two_node_cpu_vllm_serves_what_one_node_serves(configs, model):
    try:
        address, key, run_dir = start_server(configs, "vllm_multi", model, "vllm-2nodes", "--server_nodes", "2")
        one_address, one_key, one_run_dir = start_server(configs, "local_vllm", model, "vllm-1node")
        (record,) = Store().jobs("vllm-2nodes")
        deadline = time.time() + STARTUP
        two_nodes = wait_until_serving(address, key, run_dir, deadline, record.external_id)
        one_node = wait_until_serving(one_address, one_key, one_run_dir, deadline)
        served, reference = greedy(two_nodes, model), greedy(one_node, model)
        nodes = job_nodes(record.external_id)
        log = (run_dir / "server.log").read_text()
    finally:
        for expname in ("vllm-2nodes", "vllm-1node"):
            run_ns("cancel", expname, timeout=120)
    assert len(set(nodes)) == 2, nodes
    # node 0's API server led a world of two ranks; the other node ran its worker headless, joining it
    assert "world_size=2, local_world_size=1" in log, log[-3000:]
    assert "headless multiproc executor" in log, log[-3000:]
    assert "tensor_parallel_size=2" in log
    for two, one in zip(served, reference, strict=True):
        assert [token for token, _ in two] == [token for token, _ in one]
        assert [logprob for _, logprob in two] == pytest.approx([logprob for _, logprob in one], abs=1e-3)


def test_generate_with_a_two_node_cpu_vllm(configs, model, tmp_path):
    """The server part of `ns generate`: both nodes serve, the client on the first node reaches it."""
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + {i + 1}?"}) + "\n" for i in range(4)))
    result = run_ns("generate", "--cluster", "vllm_multi", "--config_dir", str(configs), "--input_file", str(data),
                    "--output_dir", str(tmp_path / "out"), "--model", model, "--expname", "vllm-2nodes-gen", *SERVER,
                    "--server_nodes", "2", "++prompt_config=generic/math", "++inference.tokens_to_generate=8",
                    env={**SMALL_KV_CACHE, **SMALL_QUEUE})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = finish("vllm-2nodes-gen", timeout=STARTUP)
    sbatch = Path(record.work_dir)  # on Slurm, the job's script; its run dir is run/<script name> beside it
    log = (sbatch.parent / "run" / sbatch.stem / "server.log").read_text()
    assert record.state is JobState.SUCCEEDED, log[-3000:]
    assert len(set(job_nodes(record.external_id))) == 2
    assert "world_size=2 rank=0" in log and "world_size=2 rank=1" in log, log[-3000:]
    rows = read_jsonl(tmp_path / "out" / "output.jsonl")
    assert [row["id"] for row in rows] == [0, 1, 2, 3] and all(row["num_generated_tokens"] == 8 for row in rows)


SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: batch
container_runtime: pyxis
containers:
  main: /lustre/images/skills.sqsh
  vllm: /lustre/images/vllm-cpu.sqsh
mounts: ["/lustre/me/workspace:/workspace"]
"""


def test_two_node_cpu_vllm_golden(config_dir, isolated_home):
    write_config(config_dir, "cluster", SLURM)
    submission = generate(
        ctx=wrap_arguments("++prompt_config=generic/math ++inference.tokens_to_generate=1024"), cluster="cluster",
        config_dir=str(config_dir), input_file="/workspace/in.jsonl", output_dir="/workspace/out",
        model="/workspace/model", server_type="vllm", server_gpus=0, server_nodes=2, expname="gen-vllm-cpu-nodes",
        dry_run=True,
    )  # fmt: skip
    text = normalise(submission.dry_run_text, isolated_home)
    check_golden("server_vllm_cpu_2nodes.txt", text)
    assert "ray " not in text  # the CPU build has no Ray
    assert '--master-addr "$SKILLS_CLI_HEAD_NODE"' in text and "--headless" in text


def test_cpu_nodes_must_share_out_the_attention_heads(tmp_path):
    """Tensor parallel across nodes splits the heads: a count the nodes cannot share is refused before queueing."""
    (tmp_path / "config.json").write_text('{"hidden_size": 96, "num_attention_heads": 3, "num_key_value_heads": 3}')
    with pytest.raises(UserError, match=r"splits the attention heads across the --server_nodes 2 nodes, but the "
                       r"model has 3; use a node count that divides it"):  # fmt: skip
        ServerSpec("vllm", str(tmp_path), gpus=0, nodes=2)
    assert ServerSpec("vllm", str(tmp_path), gpus=0, nodes=3).tensor_parallel == 3
