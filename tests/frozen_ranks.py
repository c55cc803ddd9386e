"""Run by tests/test_frozen_model.py under torchrun (2 CPU ranks): a frozen model sharded over the data-parallel
ranks of a real policy of `--backend`, with rank r holding 2r + 1 micro-batches (unequal counts, as packing
gives). Each rank writes to `--out`.<rank>.json how far the sharded model's logits are from the whole model's
(per micro-batch), over how many ranks it is split, and its micro-batch count after `even_out`. Forwards not
evened out would leave the ranks' FSDP collectives unmatched: the run would hang (the test's timeout) or fail."""

from __future__ import annotations

import argparse
import json

import torch

from skills_cli.training.components.batching import padded_micro_batch
from skills_cli.training.components.data import SFTSample
from skills_cli.training.components.frozen import FrozenModel
from skills_cli.training.components.model import load_model
from skills_cli.training.components.parallel import distributed_session
from skills_cli.training.config import PolicyConfig
from skills_cli.training.policy import build_policy


def micro_batches(rank: int) -> list:
    """2 * rank + 1 micro-batches of two sequences each, different on every rank and batch."""
    generator = torch.Generator().manual_seed(rank)
    batches = []
    for index in range(2 * rank + 1):
        lengths = (5 + index, 9 - index % 3)
        samples = [SFTSample(torch.randint(3, 200, (n,), generator=generator).tolist(), [1] * n) for n in lengths]
        batches.append(padded_micro_batch(samples, 0))
    return batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with distributed_session() as dist:
        policy = build_policy(PolicyConfig(model_name=args.model, precision="float32"), dist, 1, backend=args.backend)
        whole = load_model(args.model).eval()
        frozen = FrozenModel.load(args.model, policy, dist.device, sharded=True)
        rank, batches, gaps = dist.rank, micro_batches(dist.rank), []

        def compare(batch, logits, labels) -> None:
            with torch.no_grad():
                expected = whole(**frozen.inputs(batch)[0]).logits
            gaps.append(float((logits - expected).abs().max()))

        frozen.forward_each(batches, compare)
        evened = frozen.even_out(batches, 0)
        for batch in evened:  # as a loss function running the frozen model on every micro-batch does
            frozen.logits(frozen.inputs(batch)[0])
        report = {"logit_gaps": gaps, "shards": frozen.shards, "micro_batches": len(batches),
                  "after_even_out": len(evened)}  # fmt: skip
        with open(f"{args.out}.{rank}.json", "w") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main()
