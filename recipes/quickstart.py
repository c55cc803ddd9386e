"""Quickstart: the post-training lifecycle of a tiny model on `arith`, as jobs chained with run_after.

    bash scripts/quickstart.sh                     # installs .venv if needed, then runs this recipe
    python recipes/quickstart.py [--size default|small|smoke] [--output_dir DIR] [--cluster local] [--config_dir DIR]

Stages, each one experiment `quickstart-<stage>` that waits for the previous one (`run_after`); the whole chain
is submitted at once and the job supervisors (or Slurm) run it in order:

  data       ns prepare_data arith, then from its train split the seed SFT set (reference solutions) and the SDG
             problems, and a one-line prompt config (the problem is the user turn)
  model      a tiny random base model (python -m skills_cli.inference.tiny_model: 2 layers, hidden size 64)
  warmup     ns train sft on the seed set (200 steps)
  baseline   ns eval --benchmarks arith:K on the warmed-up model, with the embedded hf server
  sdg        ns generate: sampled solutions (temperature 0.7, one job per seed) for each SDG problem
  filter     grade them; python -m skills_cli.training.prepare_data keeps the correct ones (deduplicated, at most 4
             per problem, none of an arith test problem); the SFT set is the seed set plus those
  sft        ns train sft from the warmed-up model on that set (300 steps; rejection-sampling fine-tuning)
  after-sft  ns eval on the SFT model
  grpo       ns train grpo on the SDG problems (answers only; lr 1e-4 with a KL penalty: larger steps scramble
             a model this small, see tests/test_grpo_learning.py)
  final      ns eval on the GRPO model

It ends with `ns summarize_results` of the three evaluations and a baseline / after SFT / final table. A rerun
skips every stage whose output is already there (checked where the jobs run), so an interrupted quickstart
continues where it stopped; `--cluster NAME --config_dir DIR` runs the same chain on a Slurm cluster (the output
folder must then be a path on the cluster).

What to expect: a random 2-layer model learns multiplication facts in minutes (and answers some unseen ones
from the swapped fact, 8 * 9 from 9 * 8) but not two-digit sums, so accuracies stay low and the gain comes
from the products. In controls run outside the recipe (the same steps with the seed set alone) most of the gain
came from the extra SFT steps; the harvested solutions added 0-2 points and GRPO moved accuracy by under a point.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline import generate, run_cmd, summarize_results, train_grpo, train_sft, wrap_arguments
from skills_cli.pipeline.cluster import ClusterConfig, load_cluster_config
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.progress import Progress
from skills_cli.pipeline.shell import quote, quote_argv
from skills_cli.pipeline.store import JobRecord, JobState, Store

PREFIX = "quickstart"
TOKENS = 32  # generation budget: "12 * 12 = 144. The answer is \boxed{144}." is 23 tokens
SEQUENCE = 64  # prompt + solution, in tokens

# Runs in the data job. A tiny model cannot learn two-digit sums in minutes, but it learns multiplication facts and
# answers unseen ones from the commuted fact (8 * 9 from 9 * 8): the seed set holds every other multiplication row
# of the train split and a few sums and differences; the SDG problems are the other multiplication rows and more
# sums and differences. Rejection sampling then harvests the facts the warmed-up model gets right by commuting.
MAKE_SETS = """
import json, os, sys
data, seed_mixed, sdg_mixed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(line) for line in open(f"{data}/arith/train.jsonl")]
products = [row for row in rows if row["operation"] == "*"]
others = [row for row in rows if row["operation"] != "*"]
seed = products[0::2] + others[:seed_mixed]
problems = products[1::2] + others[seed_mixed : seed_mixed + sdg_mixed]
def chat(row):
    return {"messages": [{"role": "user", "content": row["problem"]}, {"role": "assistant", "content": row["solution"]}],
            "problem": row["problem"], "expected_answer": row["expected_answer"]}
def write(name, items):
    with open(f"{data}/quickstart/.{name}", "w") as out:
        out.writelines(json.dumps(item) + "\\n" for item in items)
    os.replace(f"{data}/quickstart/.{name}", f"{data}/quickstart/{name}")
os.makedirs(f"{data}/quickstart", exist_ok=True)
with open(f"{data}/quickstart/prompt.yaml", "w") as out:
    out.write('user: "{problem}"\\n')
write("seed.jsonl", [chat(row) for row in seed])
keys = ("id", "problem", "expected_answer", "operation")
write("sdg_problems.jsonl", [{key: row[key] for key in keys} for row in problems])
print(f"seed set: {len(seed)} rows; SDG problems: {len(problems)}")
"""


@dataclass(frozen=True)
class Size:
    """How much of everything: `default` is the README's run, `small` the test's; `smoke` runs every stage with
    a few steps after the warm-up, too few to learn more (the chain alone: the test over Slurm)."""

    seed_mixed: int  # sums and differences in the seed set (besides half of the multiplication rows)
    sdg_mixed: int  # sums and differences among the SDG problems (besides the other multiplication rows)
    samples: int  # sampled solutions per SDG problem
    eval_samples: int  # per test problem (arith:K); all 200 test problems are evaluated
    sft_steps: int
    grpo_steps: int


SIZES = {
    "default": Size(seed_mixed=64, sdg_mixed=64, samples=8, eval_samples=8, sft_steps=300, grpo_steps=20),
    "small": Size(seed_mixed=64, sdg_mixed=16, samples=4, eval_samples=4, sft_steps=300, grpo_steps=4),
    "smoke": Size(seed_mixed=16, sdg_mixed=8, samples=2, eval_samples=2, sft_steps=10, grpo_steps=1),
}
WARMUP_STEPS = 200  # every size: fewer leave the SDG without a correct solution to keep


@dataclass(frozen=True)
class Stage:
    name: str
    done_when: tuple[str, ...]  # paths (on the cluster) that all exist once the stage has finished
    submit: Callable[[list[str]], object]  # run_after -> the submission

    @property
    def expname(self) -> str:
        return f"{PREFIX}-{self.name}"


class Quickstart:
    """The stages of one run: paths under `out`, sizes, and the submission options every stage shares."""

    def __init__(self, out: str, size: Size, cluster: ClusterConfig, config_dir: str | None):
        self.out, self.size, self.cluster = out, size, cluster
        self.python = cluster.python_executable
        self.common = {"cluster": cluster.name, "config_dir": config_dir, "detach": True}
        self.data = f"{out}/data"
        self.prompt = f"{out}/data/quickstart/prompt.yaml"

    def model(self, name: str) -> str:
        return f"{self.out}/models/{name}"

    def shell_stage(self, name: str, command: str, marker: str) -> Stage:
        """A run_cmd stage that marks its end with a file (its command is not idempotent by itself)."""
        script = f"{command} && touch {quote(marker)}"
        return Stage(name, (marker,), lambda after: run_cmd(ctx=wrap_arguments(script), expname=f"{PREFIX}-{name}",
                                                            run_after=after, **self.common))  # fmt: skip

    def stages(self) -> list[Stage]:
        return [self.data_stage(), self.model_stage(), self.warmup_stage(), self.eval_stage("baseline", "warmup"),
                self.sdg_stage(), self.filter_stage(), self.sft_stage(), self.eval_stage("after-sft", "sft"),
                self.grpo_stage(), self.eval_stage("final", "final")]  # fmt: skip

    def data_stage(self) -> Stage:
        prepare = quote_argv([self.python, "-m", "skills_cli", "prepare_data", "arith", "--output_dir", self.data])
        sets = quote_argv([self.python, "-c", MAKE_SETS, self.data, str(self.size.seed_mixed),
                           str(self.size.sdg_mixed)])  # fmt: skip
        return self.shell_stage("data", f"{prepare} && {sets}", f"{self.data}/quickstart/.done")

    def model_stage(self) -> Stage:
        build = quote_argv([self.python, "-m", "skills_cli.inference.tiny_model", "--output_dir", self.model("base"),
                            "--hidden_size", "64", "--num_layers", "2"])  # fmt: skip
        return self.shell_stage("model", build, f"{self.model('base')}/.done")

    def sft_flags(self, steps: int, lr: str) -> str:
        return (f"++sft.max_num_steps={steps} ++sft.max_num_epochs=1000 ++policy.train_global_batch_size=32 "
                f"++policy.train_micro_batch_size=32 ++policy.max_total_sequence_length={SEQUENCE} "
                f"++policy.optimizer.kwargs.lr={lr} ++policy.optimizer.kwargs.weight_decay=0.0 "
                f"++policy.scheduler.name=cosine ++policy.precision=float32 ++checkpointing.save_period={steps}")  # fmt: skip

    def training_stage(self, name: str, start: str, data: str, flags: str, trainer=train_sft) -> Stage:
        output = f"{self.out}/training/{name}"
        summary = f"{output}/logs/{'summary' if trainer is train_grpo else 'metrics'}.json"  # written last
        final = self.model("final" if trainer is train_grpo else name)
        return Stage(name, (summary,), lambda after: trainer(
            ctx=wrap_arguments(flags), hf_model=start, training_data=data, output_dir=output, final_hf_path=final,
            num_gpus=0, expname=f"{PREFIX}-{name}", run_after=after, **self.common))  # fmt: skip

    def warmup_stage(self) -> Stage:
        flags = self.sft_flags(WARMUP_STEPS, "3e-3")
        return self.training_stage("warmup", self.model("base"), f"{self.data}/quickstart/seed.jsonl", flags)

    def eval_stage(self, name: str, model: str) -> Stage:
        output = f"{self.out}/evals/{name}"
        extra = f"++prompt_config={self.prompt} ++inference.tokens_to_generate={TOKENS}"
        return Stage(name, (f"{output}/metrics.json",), lambda after: evaluate(
            ctx=wrap_arguments(extra), benchmarks=f"arith:{self.size.eval_samples}", data_dir=self.data, output_dir=output,
            model=self.model(model), server_type="hf", expname=f"{PREFIX}-{name}",
            run_after=after, **self.common))  # fmt: skip

    def sdg_stage(self) -> Stage:
        output = f"{self.out}/sdg"
        extra = f"++prompt_config={self.prompt} ++inference.tokens_to_generate={TOKENS}"
        done = tuple(f"{output}/output-rs{seed}.jsonl.done" for seed in range(self.size.samples))
        return Stage("sdg", done, lambda after: generate(
            ctx=wrap_arguments(extra), input_file=f"{self.data}/quickstart/sdg_problems.jsonl", output_dir=output,
            num_random_seeds=self.size.samples, model=self.model("warmup"), server_type="hf",
            expname=f"{PREFIX}-sdg", run_after=after, **self.common))  # fmt: skip

    def filter_stage(self) -> Stage:
        sdg, kept = f"{self.out}/sdg", f"{self.out}/sdg/correct.jsonl"
        grade = quote_argv([self.python, "-m", "skills_cli.evaluation.grade", "--results_dir", sdg])
        keep = quote_argv([self.python, "-m", "skills_cli.training.prepare_data", f"++input_files={sdg}/output-rs*.jsonl",
                           f"++output_path={kept}", f"++prompt_config={self.prompt}",
                           f"++contamination_file={self.data}/arith/test.jsonl", "++filters.max_per_problem=4"])  # fmt: skip
        merge = (
            f"cat {quote(self.data + '/quickstart/seed.jsonl')} {quote(kept)} > {quote(self.out + '/sft_data.jsonl')}"
        )
        return self.shell_stage("filter", f"{grade} && {keep} && {merge}", f"{self.out}/sft_data.jsonl.done")

    def sft_stage(self) -> Stage:
        flags = self.sft_flags(self.size.sft_steps, "3e-3")
        return self.training_stage("sft", self.model("warmup"), f"{self.out}/sft_data.jsonl", flags)

    def grpo_stage(self) -> Stage:
        steps = self.size.grpo_steps
        flags = (f"++data.prompt_config={self.prompt} ++grpo.num_prompts_per_step=32 "
                 f"++grpo.num_generations_per_prompt=8 ++grpo.max_num_steps={steps} ++grpo.max_num_epochs=100 "
                 f"++policy.train_global_batch_size=256 ++policy.train_micro_batch_size=64 "
                 f"++policy.max_total_sequence_length={SEQUENCE} ++policy.generation.max_new_tokens={TOKENS} "
                 f"++policy.generation.temperature=0.7 ++policy.optimizer.kwargs.lr=1e-4 "
                 f"++policy.optimizer.kwargs.weight_decay=0.0 ++loss_fn.reference_policy_kl_penalty=0.05 "
                 f"++policy.precision=float32 ++checkpointing.save_period={steps}")  # fmt: skip
        problems = f"{self.data}/quickstart/sdg_problems.jsonl"
        return self.training_stage("grpo", self.model("sft"), problems, flags, trainer=train_grpo)


# ---- running the chain -------------------------------------------------------------------------------------------


def existing(paths: list[str], cluster: ClusterConfig) -> set[str]:
    """Which of `paths` exist where the jobs run: here, or on the Slurm login node over SSH (one command)."""
    if not cluster.runs_remotely or cluster.ssh_tunnel is None:
        return {path for path in paths if Path(path).exists()}
    from skills_cli.pipeline.executors.tunnel import ClusterTunnel

    script = "; ".join(f"test -e {quote(path)} && echo {quote(path)}" for path in paths) + "; true"
    with ClusterTunnel(cluster) as tunnel:
        return set(tunnel.run(script, timeout=60).stdout.splitlines())


def submit_chain(stages: list[Stage], cluster: ClusterConfig) -> list[str]:
    """Submit the unfinished stages, each after the previous submitted one; returns their experiment names."""
    done = existing([path for stage in stages for path in stage.done_when], cluster)
    submitted: list[str] = []
    for stage in stages:
        if all(path in done for path in stage.done_when):
            print(f"{stage.expname}: already done, skipped")
            continue
        stage.submit(submitted[-1:])
        submitted.append(stage.expname)
        print(f"{stage.expname}: submitted" + (f" (after {submitted[-2]})" if len(submitted) > 1 else ""))
    return submitted


def wait_for(expnames: list[str], since: float) -> dict[str, list[JobRecord]]:
    """The final states of the jobs each stage submitted at `since` or later (the chain cancels what follows a
    failure), with their progress on stderr meanwhile. The store keeps every earlier run of the same experiment
    names (another output folder, an earlier attempt): their jobs must not count in this run's table."""
    store = Store()
    records = [r for name in expnames for r in store.jobs(name) if r.submitted_at >= since]
    with Progress.on() as progress:
        records = wait(records, store, poll=2.0, progress=progress)
    return {name: [r for r in records if r.expname == name] for name in expnames}


def stage_seconds(records: list[JobRecord]) -> float | None:
    times = [(r.started_at, r.ended_at) for r in records if r.started_at and r.ended_at]
    return max(end for _, end in times) - min(start for start, _ in times) if times else None


def accuracy(out: str, name: str, cluster: str, config_dir: str | None) -> dict:
    """summarize_results of one evaluation (fetched from the cluster when remote): arith's metrics and the plot."""
    result = summarize_results(results_dir=f"{out}/evals/{name}", cluster=cluster, config_dir=config_dir)
    arith = next(benchmark for benchmark in result["results"] if benchmark.name == "arith")
    return {"metrics": arith.metrics, "plot": result["plot"]}


def correct(metrics: dict, mode: str) -> float:
    return metrics[mode]["symbolic_correct"]


EVALUATIONS = (("baseline", "baseline"), ("after-sft", "after SFT"), ("final", "final"))


def report(out: str, args: argparse.Namespace, size: Size) -> int:
    """The before/after table of the three evaluations (summarize_results of each) and where the plots are."""
    results = {name: accuracy(out, name, args.cluster, args.config_dir) for name, _ in EVALUATIONS}
    k = size.eval_samples
    modes = [f"pass@1[avg-of-{k}]", f"majority@{k}", f"pass@{k}"]
    print(f"\narith (test split), {results['final']['metrics'][modes[0]]['num_entries']} problems x {k} samples:")
    print(f"{'':22s}" + "".join(f"{label:>12s}" for _, label in EVALUATIONS))
    for mode in modes:
        print(f"{mode:22s}" + "".join(f"{correct(results[name]['metrics'], mode):11.2f}%" for name, _ in EVALUATIONS))
    print("pass@k plots: " + ", ".join(str(results[name]["plot"]) for name, _ in EVALUATIONS))
    before, after = correct(results["baseline"]["metrics"], modes[0]), correct(results["final"]["metrics"], modes[0])
    print(f"quickstart done: {modes[0]} on arith {before:.2f}% (baseline) -> {after:.2f}% (final); outputs in {out}")
    return 0


def recipe_parser(description: str, sizes: dict, output_folder: str) -> argparse.ArgumentParser:
    """The options every arith recipe takes: --size (a key of `sizes`), --output_dir (default ./`output_folder`),
    --cluster, --config_dir."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--size", choices=sorted(sizes), default="default")
    parser.add_argument("--output_dir", default=str(Path.cwd() / output_folder),
                        help="where every stage writes (a path on the cluster for Slurm)")  # fmt: skip
    parser.add_argument("--cluster", default="local")
    parser.add_argument("--config_dir", default=None)
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return recipe_parser(__doc__.splitlines()[0], SIZES, "quickstart_output").parse_args(argv)


def show_stages(records: dict[str, list[JobRecord]], start: float) -> list[str]:
    """Print each submitted stage's state and wall time; returns the stages that did not succeed."""
    if not records:
        print("every stage was already done")
    else:
        print(f"\n{'stage':24s}{'state':>11s}{'seconds':>9s}")
    for name, jobs in records.items():
        states = {r.state.value for r in jobs}
        seconds = stage_seconds(jobs)
        shown = "-" if seconds is None else f"{seconds:.0f}"
        print(f"{name:24s}{states.pop() if len(states) == 1 else 'MIXED':>11s}{shown:>9s}")
    print(f"total {time.time() - start:.0f} s")
    return [name for name, jobs in records.items() if any(r.state is not JobState.SUCCEEDED for r in jobs)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = SIZES[args.size]
    start = time.time()
    try:
        cluster = load_cluster_config(args.cluster, args.config_dir)
        remote = cluster.runs_remotely and cluster.ssh_tunnel is not None
        out = args.output_dir if remote else str(Path(args.output_dir).resolve())
        submitted_from = time.time()
        records = wait_for(submit_chain(Quickstart(out, size, cluster, args.config_dir).stages(), cluster),
                           submitted_from)  # fmt: skip
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = show_stages(records, start)
    if failed:
        print(
            f"the chain stopped at {failed[0]}: see `ns status {failed[0]}` and `ns logs {failed[0]}`", file=sys.stderr
        )
        return 1
    return report(out, args, size)


if __name__ == "__main__":
    sys.exit(main())
