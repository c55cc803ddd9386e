"""DPO from synthetic data on a tiny model: SDG -> graded samples -> preference pairs -> ns train dpo -> ns eval.

    python recipes/dpo_from_sdg.py [--size default|small] [--output_dir DIR] [--cluster local] [--config_dir DIR]
                                   [--start_model DIR]

Stages, each one experiment `dpo-<stage>` that waits for the previous one (`run_after`); the whole chain is
submitted at once and the job supervisors (or Slurm) run it in order:

  data       ns prepare_data arith, then the warm-up set and the SDG problems as recipes/quickstart.py makes them
             (the model learns half of the multiplication facts and meets the commuted other half in SDG)
  model      a tiny random base model (2 layers, hidden size 64)
  warmup     ns train sft on the warm-up set: a policy that gets some SDG problems right when sampling
             (`--start_model DIR`, a model already trained on arith with that prompt, replaces model and warmup)
  baseline   ns eval --benchmarks arith:K on the warmed-up model, with the embedded hf server
  sdg        ns generate: K sampled solutions (temperature 0.7, one job per seed) for each SDG problem
  pairs      grade them (python -m skills_cli.evaluation.grade), then python -m skills_cli.training.prepare_data
             ++mode=preference pairs a correct (chosen) with an incorrect (rejected) solution of the same problem,
             none of an arith test problem; problems the model always or never solves are skipped (logged)
  dpo        ns train dpo from the warmed-up model on those pairs (the warmed-up model is the reference)
  final      ns eval on the DPO model

It ends with a baseline / after-DPO table of `ns summarize_results`. A rerun skips every stage whose output is
already there, and `--cluster NAME --config_dir DIR` runs the same chain on a Slurm cluster (the output folder
must then be a path on the cluster), as the quickstart does: the chain runner is the quickstart's.

What to expect (default size, executor none, on a shared 2-core CPU machine: 8 minutes, 5 of them the warm-up):
about 15 of the 121 SDG problems' samples are right per seed, giving 67 pairs from 22 problems (6 problems
always solved and 93 never were skipped); DPO (with the chosen solutions' NLL) moved pass@1[avg-of-8] on the
200 arith test problems from 6.56% to 7.12% and majority@8 from 7.00% to 8.50%: small, as for the quickstart's
stages, since a model this small learns little beyond the multiplication facts.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from quickstart import (
    MAKE_SETS,
    SEQUENCE,
    TOKENS,
    Stage,
    accuracy,
    correct,
    recipe_parser,
    show_stages,
    submit_chain,
    wait_for,
)

from skills_cli.common.errors import UserError
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline import generate, run_cmd, train_dpo, train_sft, wrap_arguments
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.shell import quote, quote_argv

PREFIX = "dpo"
SEED_MIXED = 64  # sums and differences in the warm-up set, besides half of the multiplication rows


@dataclass(frozen=True)
class Size:
    """How much of everything: `default` is the documented run, `small` the test's."""

    warmup_steps: int
    sdg_mixed: int  # sums and differences among the SDG problems (besides the other multiplication rows)
    samples: int  # sampled solutions per SDG problem: the more, the more problems have both grades
    pairs_per_problem: int
    dpo_steps: int
    eval_samples: int  # per test problem (arith:K)
    eval_problems: int  # the first N test problems (-1: all 200)


SIZES = {
    "default": Size(warmup_steps=200, sdg_mixed=64, samples=8, pairs_per_problem=4, dpo_steps=10, eval_samples=8,
                    eval_problems=-1),
    "small": Size(warmup_steps=100, sdg_mixed=0, samples=4, pairs_per_problem=2, dpo_steps=4, eval_samples=1,
                  eval_problems=40),
}  # fmt: skip


@dataclass(frozen=True)
class RecipeStage(Stage):
    @property
    def expname(self) -> str:
        return f"{PREFIX}-{self.name}"


class DPOFromSDG:
    """The stages of one run: paths under `out`, sizes, and the submission options every stage shares."""

    def __init__(self, out: str, size: Size, cluster: ClusterConfig, config_dir: str | None,
                 start_model: str | None = None):  # fmt: skip
        self.out, self.size = out, size
        self.start = start_model or self.model("warmup")  # the policy SDG samples from, DPO's start and reference
        self.python = cluster.python_executable
        self.common = {"cluster": cluster.name, "config_dir": config_dir, "detach": True}
        self.data = f"{out}/data"
        self.sets = f"{out}/data/quickstart"  # where the quickstart's data script writes
        self.prompt = f"{self.sets}/prompt.yaml"

    def model(self, name: str) -> str:
        return f"{self.out}/models/{name}"

    def stages(self) -> list[RecipeStage]:
        warmup = [self.model_stage(), self.warmup_stage()] if self.start == self.model("warmup") else []
        return [self.data_stage(), *warmup, self.eval_stage("baseline", self.start), self.sdg_stage(),
                self.pairs_stage(), self.dpo_stage(), self.eval_stage("final", self.model("dpo"))]  # fmt: skip

    def shell_stage(self, name: str, command: str, marker: str) -> RecipeStage:
        """A run_cmd stage that marks its end with a file (its command is not idempotent by itself)."""
        script = f"{command} && touch {quote(marker)}"
        return RecipeStage(name, (marker,), lambda after: run_cmd(
            ctx=wrap_arguments(script), expname=f"{PREFIX}-{name}", run_after=after, **self.common))  # fmt: skip

    def data_stage(self) -> RecipeStage:
        prepare = quote_argv([self.python, "-m", "skills_cli", "prepare_data", "arith", "--output_dir", self.data])
        sets = quote_argv([self.python, "-c", MAKE_SETS, self.data, str(SEED_MIXED), str(self.size.sdg_mixed)])
        return self.shell_stage("data", f"{prepare} && {sets}", f"{self.sets}/.done")

    def model_stage(self) -> RecipeStage:
        build = quote_argv([self.python, "-m", "skills_cli.inference.tiny_model", "--output_dir", self.model("base"),
                            "--hidden_size", "64", "--num_layers", "2"])  # fmt: skip
        return self.shell_stage("model", build, f"{self.model('base')}/.done")

    def training_stage(self, name: str, trainer, start: str, data: str, flags: str) -> RecipeStage:
        output = f"{self.out}/training/{name}"
        return RecipeStage(name, (f"{output}/logs/summary.json",), lambda after: trainer(  # summary.json comes last
            ctx=wrap_arguments(flags), hf_model=start, training_data=data, output_dir=output,
            final_hf_path=self.model(name), num_gpus=0, expname=f"{PREFIX}-{name}", run_after=after, **self.common))  # fmt: skip

    def warmup_stage(self) -> RecipeStage:
        steps = self.size.warmup_steps
        flags = f"++sft.max_num_steps={steps} ++sft.max_num_epochs=1000 {policy_flags(steps, '3e-3')}"
        return self.training_stage("warmup", train_sft, self.model("base"), f"{self.sets}/seed.jsonl", flags)

    def eval_stage(self, name: str, model: str) -> RecipeStage:
        output = f"{self.out}/evals/{name}"
        extra = f"++prompt_config={self.prompt} ++inference.tokens_to_generate={TOKENS}"
        return RecipeStage(name, (f"{output}/metrics.json",), lambda after: evaluate(
            ctx=wrap_arguments(extra), benchmarks=f"arith:{self.size.eval_samples}", data_dir=self.data,
            output_dir=output, max_samples=self.size.eval_problems, model=model, server_type="hf",
            expname=f"{PREFIX}-{name}", run_after=after, **self.common))  # fmt: skip

    def sdg_stage(self) -> RecipeStage:
        output = f"{self.out}/sdg"
        extra = f"++prompt_config={self.prompt} ++inference.tokens_to_generate={TOKENS} ++inference.temperature=0.7"
        done = tuple(f"{output}/output-rs{seed}.jsonl.done" for seed in range(self.size.samples))
        return RecipeStage("sdg", done, lambda after: generate(
            ctx=wrap_arguments(extra), input_file=f"{self.sets}/sdg_problems.jsonl", output_dir=output,
            num_random_seeds=self.size.samples, model=self.start, server_type="hf",
            expname=f"{PREFIX}-sdg", run_after=after, **self.common))  # fmt: skip

    def pairs_stage(self) -> RecipeStage:
        sdg, pairs = f"{self.out}/sdg", f"{self.out}/pairs.jsonl"
        grade = quote_argv([self.python, "-m", "skills_cli.evaluation.grade", "--results_dir", sdg])
        build = quote_argv([self.python, "-m", "skills_cli.training.prepare_data", "++mode=preference",
                            f"++input_files={sdg}/output-rs*.jsonl", f"++output_path={pairs}",
                            f"++prompt_config={self.prompt}", f"++contamination_file={self.data}/arith/test.jsonl",
                            f"++max_pairs_per_problem={self.size.pairs_per_problem}"])  # fmt: skip
        return self.shell_stage("pairs", f"{grade} && {build}", f"{pairs}.done")

    def dpo_stage(self) -> RecipeStage:
        # DPO plus the NLL of the chosen solution (as in iterative reasoning preference optimization): DPO alone
        # widened the margin by pushing both likelihoods down and lost accuracy (6.6% -> 4.6% in 40 steps)
        steps = self.size.dpo_steps
        flags = (f"++dpo.max_num_steps={steps} ++dpo.max_num_epochs=1000 ++dpo.reference_policy_kl_penalty=0.1 "
                 f"++dpo.sft_loss_weight=1.0 {policy_flags(steps, '1e-4')}")  # fmt: skip
        return self.training_stage("dpo", train_dpo, self.start, f"{self.out}/pairs.jsonl", flags)


def policy_flags(steps: int, lr: str) -> str:
    """The policy keys of both trainings: 32 rows (pairs for DPO) per step, float32, one checkpoint at the end."""
    return (f"++policy.train_global_batch_size=32 ++policy.train_micro_batch_size=32 "
            f"++policy.max_total_sequence_length={SEQUENCE} ++policy.optimizer.kwargs.lr={lr} "
            f"++policy.optimizer.kwargs.weight_decay=0.0 ++policy.scheduler.name=cosine ++policy.precision=float32 "
            f"++checkpointing.save_period={steps}")  # fmt: skip


def report(out: str, args: argparse.Namespace, size: Size) -> int:
    """The baseline / after-DPO table (summarize_results of both evaluations)."""
    results = {name: accuracy(out, name, args.cluster, args.config_dir)["metrics"] for name in ("baseline", "final")}
    k = size.eval_samples
    modes = [f"pass@1[avg-of-{k}]", f"majority@{k}", f"pass@{k}"] if k > 1 else ["greedy"]  # as metrics.py names them
    print(f"\narith (test split), {results['final'][modes[0]]['num_entries']} problems x {k} samples:")
    print(f"{'':22s}{'baseline':>12s}{'after DPO':>12s}")
    for mode in modes:
        print(f"{mode:22s}" + "".join(f"{correct(results[name], mode):11.2f}%" for name in ("baseline", "final")))
    headline = modes[0]
    before, after = correct(results["baseline"], headline), correct(results["final"], headline)
    print(
        f"dpo_from_sdg done: {headline} on arith {before:.2f}% (baseline) -> {after:.2f}% (after DPO); outputs in {out}"
    )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = recipe_parser(__doc__.splitlines()[0], SIZES, "dpo_from_sdg_output")
    parser.add_argument("--start_model", default=None,
                        help="an HF model folder already trained on arith (skips the model and warmup stages)")  # fmt: skip
    return parser.parse_args(argv)


def local_path(path: str | None) -> str | None:
    return None if path is None else str(Path(path).resolve())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = SIZES[args.size]
    start = time.time()
    try:
        cluster = load_cluster_config(args.cluster, args.config_dir)
        remote = cluster.runs_remotely and cluster.ssh_tunnel is not None
        paths = (args.output_dir, args.start_model)
        out, start_model = paths if remote else map(local_path, paths)  # paths on the cluster stay as given
        submitted_from = time.time()
        stages = DPOFromSDG(out, size, cluster, args.config_dir, start_model).stages()
        records = wait_for(submit_chain(stages, cluster), submitted_from)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = show_stages(records, start)
    if failed:
        print(f"the chain stopped at {failed[0]}: see `ns status {failed[0]}` and `ns logs {failed[0]}`",
              file=sys.stderr)  # fmt: skip
        return 1
    return report(out, args, size)


if __name__ == "__main__":
    sys.exit(main())
