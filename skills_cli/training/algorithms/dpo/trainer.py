"""The DPO trainer (and its IPO, SimPO and conservative variants), on either policy backend.

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.dpo [--config dpo.yaml] \\
        ++policy.model_name=/models/sft ++data.train_data=pairs.jsonl ++output_dir=/runs/dpo \\
        ++dpo.reference_policy_kl_penalty=0.1 ++policy.train_global_batch_size=64

Without torchrun it runs as one process. Keys are NeMo-RL's dpo.yaml names (`config.py` here); the loop over
global batches of pairs, validation and metrics are `pairs.py`'s, the run (resume, deadline, saves, export) the
shared skeleton's. The reference policy is the starting model: its sequence log-probabilities are computed once,
before the first step, for every training and validation pair (`dpo.reference_logprobs=precomputed`, sharded over
data-parallel ranks, no second model in memory; recomputed identically when a run resumes), or by a frozen copy
of the starting model next to each micro-batch (`on_the_fly`). SimPO needs no reference.
"""

from __future__ import annotations

from skills_cli.training.algorithms.dpo.config import DPOConfig
from skills_cli.training.algorithms.dpo.loss import DPOTerms, dpo_loss
from skills_cli.training.algorithms.dpo.pairs import PAIR_METRICS, PairTrainer
from skills_cli.training.components.batching import shard_for_rank, to_device
from skills_cli.training.components.logprobs import token_logprobs
from skills_cli.training.components.preferences import PreferenceDataset, per_sequence_sums
from skills_cli.training.trainer import main_for, run_trainer


def sequence_logprobs(logits, labels, batch):
    """(pairs, 2) summed log-probabilities of each sequence's completion tokens."""
    return per_sequence_sums(batch, token_logprobs(logits, labels))


class DPOTrainer(PairTrainer):
    """One DPO run on this rank: pairs, the policy, the reference log-probabilities, the step."""

    algorithm = "dpo"
    loop_name = "dpo"
    metric_names = (*PAIR_METRICS, "preference_loss", "sft_loss")

    def after_policy(self) -> None:
        self.terms = DPOTerms.from_config(self.config.dpo)
        self.reference_model, self.reference_tables = None, {}
        if not self.terms.uses_reference:
            return
        if self.config.dpo.reference_logprobs == "on_the_fly":
            self.reference_model = self._load_reference_model()
            return
        self.reference_tables["train"] = self.precompute_reference(self.train_data)
        if self.val_data is not None:
            self.reference_tables["validation"] = self.precompute_reference(self.val_data)

    def _load_reference_model(self):
        """A frozen copy of the starting model in the compute dtype (components/frozen.py): whole on every rank,
        or with `reference.sharded` FSDP-sharded over the data-parallel ranks (the precomputed default needs
        none)."""
        from skills_cli.training.components.frozen import FrozenModel

        return FrozenModel.load(self.config.policy.model_name, self.policy, self.dist.device,
                                self.config.reference.sharded)  # fmt: skip

    def micro_batches(self, pairs: list) -> list:
        batches = super().micro_batches(pairs)
        for batch in batches:  # the loss reads log-probabilities at the completion tokens alone
            batch.logits_at_targets = True
        return batches

    def precompute_reference(self, dataset: PreferenceDataset):
        """(pairs, 2) float32 CPU table of the starting policy's sequence log-probabilities: each data-parallel
        rank computes a contiguous share, one all-reduce assembles it."""
        import torch

        pairs = dataset.pairs
        share = shard_for_rank(pairs, self.policy.dp_rank, self.dp_size)  # (self.dp_rank is set once build returns)
        batches = self.micro_batches(share) if share else []

        def capture(logits, labels, batch):
            sums = sequence_logprobs(logits, labels, batch)
            return sums.sum() * 0.0, {"sums": sums.detach().cpu()}

        self.policy.eval()
        results = self.policy.forward_backward(batches, capture, train=False)
        self.policy.train()
        table = torch.zeros((len(pairs), 2), dtype=torch.float32)
        for batch, result in zip(batches, results, strict=True):
            table[batch.pair_indices] = result["sums"].float()
        table = table.to(self.dist.device)
        torch.distributed.all_reduce(table, group=self.policy.dp_group)
        return table.cpu()

    def prepare(self, batches: list, split: str) -> None:
        import torch

        if self.reference_model is not None:
            self.reference_model.forward_each(batches, self._keep_reference_sums)
            return
        for batch in batches:
            if self.reference_tables:
                batch.reference_sums = self.reference_tables[split][batch.pair_indices]
            else:
                batch.reference_sums = torch.zeros((len(batch.pairs), 2), dtype=torch.float32)

    @staticmethod
    def _keep_reference_sums(batch, logits, labels) -> None:
        batch.reference_sums = sequence_logprobs(logits, labels, batch)  # stays on the device: no wait for it

    def summary_fields(self) -> dict:
        shards = {"reference_shards": self.reference_model.shards} if self.reference_model is not None else {}
        return {**super().summary_fields(), **shards}

    def pair_terms(self, logits, labels, batch) -> dict:
        policy = sequence_logprobs(logits, labels, batch)
        reference, counts = to_device(policy.device, batch.reference_sums, batch.num_completion_tokens)
        return dpo_loss(policy, reference, counts, self.terms)


def run(config: DPOConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it)."""
    return run_trainer(DPOTrainer, config)


main = main_for(DPOTrainer, DPOConfig)
