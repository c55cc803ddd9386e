"""`ns generate --num_chunks 4` on the local cluster's `multi` partition (the host's node and two container nodes):
the chunk jobs, each with its own embedded hf server and a tiny local model, land on different nodes (the cluster
asks for whole nodes, `sbatch_args: {exclusive: ""}`), and the merge job's file holds exactly the rows a
single-job run of the same input and seed writes, in input order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_ns
from multinode_support import job_nodes, write_multi_cluster
from test_slurm import finish

from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import generate, wrap_arguments
from skills_cli.pipeline.store import JobState

pytestmark = pytest.mark.infra

ROWS, CHUNKS, SEED = 8, 4, 5
# one request at a time: each row is decoded alone, so its tokens do not depend on which rows share its batch
SAMPLING = ["++prompt_config=generic/math", "++inference.tokens_to_generate=12", "++max_concurrent_requests=1"]
# what a row holds apart from its timing
COMPARED = ("id", "problem", "generation", "finish_reason", "num_generated_tokens")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))  # under /tmp: every node reads it


def compared(path: Path) -> list[tuple]:
    return [tuple(row[key] for key in COMPARED) for row in read_jsonl(path)]


@pytest.mark.timeout(900)
def test_generate_chunks_spread_over_the_nodes_and_merge_to_the_single_job_rows(infra, tiny_model, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + {2 * i}?"}) + "\n" for i in range(ROWS)))
    (tmp_path / "configs").mkdir()
    multi = write_multi_cluster(infra, tmp_path / "configs", tmp_path / "jobs", extra='sbatch_args:\n  exclusive: ""\n')
    out = tmp_path / "chunked"
    run_ns("generate", "--cluster", "slurm_multi", "--config_dir", str(multi), "--expname", "mn-generate",
           "--input_file", str(data), "--output_dir", str(out), "--model", tiny_model, "--server_type", "hf",
           "--num_chunks", str(CHUNKS), "--random_seeds", str(SEED), *SAMPLING, check=True)  # fmt: skip
    reference = generate(ctx=wrap_arguments(" ".join(SAMPLING)), input_file=str(data), output_dir=str(tmp_path / "one"),
                         model=tiny_model, server_type="hf", random_seeds=[SEED], expname="one-job")  # fmt: skip
    assert reference.succeeded, run_ns("logs", "one-job").stdout[-3000:]

    records = finish("mn-generate", timeout=600)
    assert [r.name for r in records] == [f"generate-rs{SEED}-chunk{k}" for k in range(CHUNKS)] + [f"merge-rs{SEED}"]
    assert all(r.state is JobState.SUCCEEDED for r in records), run_ns("logs", "mn-generate").stdout[-4000:]
    nodes = {r.name: job_nodes(r.external_id) for r in records}
    print("nodes per job:", nodes)
    assert all(len(chunk) == 1 for chunk in nodes.values()), nodes
    assert len({nodes[r.name][0] for r in records[:CHUNKS]}) >= 2, nodes  # the chunks did not all share one node

    merged = out / f"output-rs{SEED}.jsonl"
    assert [row[0] for row in compared(merged)] == list(range(ROWS))  # every row once, in input order
    assert compared(merged) == compared(tmp_path / "one" / f"output-rs{SEED}.jsonl")
