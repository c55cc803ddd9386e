"""The reward-model trainer: a causal LM with a scalar head (`head="scalar"`, either policy backend) trained with the
Bradley-Terry loss on preference pairs; the export is an HF `AutoModelForSequenceClassification`.

    torchrun --nproc_per_node 8 -m skills_cli.training.algorithms.rm [--config rm.yaml] \\
        ++policy.model_name=/models/sft ++data.train_data=pairs.jsonl ++output_dir=/runs/rm

Keys are NeMo-RL's rm.yaml loop names plus TRL's RewardTrainer options (`config.py` here); the loop over global
batches of pairs, validation and metrics are `algorithms/dpo/pairs.py`'s, the run (resume, deadline, saves,
export) the shared skeleton's. A sequence's score is the head's output at its last token that is not the pad
id, exactly where the exported model reads it, so `final_hf` scores a pair as the trainer did.
"""

from __future__ import annotations

from skills_cli.training.algorithms.dpo.pairs import PairTrainer
from skills_cli.training.algorithms.rm.config import RMConfig
from skills_cli.training.algorithms.rm.loss import bradley_terry_loss
from skills_cli.training.components.batching import to_device
from skills_cli.training.components.preferences import last_token_values
from skills_cli.training.trainer import main_for, run_trainer


class RMTrainer(PairTrainer):
    """One reward-model run on this rank."""

    algorithm = "rm"
    loop_name = "rm"
    head = "scalar"

    @property
    def margin_key(self) -> str | None:
        return self.config.data.margin_key

    def pair_terms(self, logits, labels, batch) -> dict:
        scores = last_token_values(batch, logits)
        (margins,) = to_device(scores.device, batch.margins)
        return bradley_terry_loss(scores, margins, self.config.rm.center_rewards_coefficient)


def run(config: RMConfig) -> dict:
    """Train with `config` in this process (joining torchrun's group when launched by it); returns the run
    summary (the exported model is at `summary["final_hf_path"]`)."""
    return run_trainer(RMTrainer, config)


main = main_for(RMTrainer, RMConfig)
