"""Frozen models sharded over data-parallel ranks (components/frozen.py: GRPO's and PPO's reference, DPO's
on-the-fly reference, distillation's teacher), on two CPU ranks of either policy backend: ranks with unequal
micro-batch counts still run their forwards in step (a rank short of forwards runs one-token ones), and every
sharded forward gives the whole model's logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_sft_support import tiny_model

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("backend", ["dtensor", "megatron"])
def test_ranks_with_unequal_micro_batch_counts_get_the_whole_models_logits(backend, tmp_path):
    out = tmp_path / "rank"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(TESTS / "frozen_ranks.py"), "--model", tiny_model(), "--backend", backend, "--out", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    # unmatched collectives hang: the timeout turns that into a failure
    result = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["micro_batches"] for r in reports] == [1, 3]  # rank 0 ran two one-token forwards after its own
    assert [r["shards"] for r in reports] == [2, 2]
    assert [len(r["logit_gaps"]) for r in reports] == [1, 3]
    assert max(gap for r in reports for gap in r["logit_gaps"]) < 1e-5
    assert [r["after_even_out"] for r in reports] == [3, 3]
