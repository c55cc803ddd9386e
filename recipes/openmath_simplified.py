"""The OpenMathReasoning tutorial as one script with our Python API: data -> baseline -> SDG -> SFT -> eval.

    python recipes/openmath_simplified.py --workspace /workspace --cluster slurm --dry_run     # print every job
    python recipes/openmath_simplified.py --workspace /workspace --cluster slurm               # the real thing
    python recipes/openmath_simplified.py --workspace /tmp/ws --cluster slurm_local --stand_in  # tiny stand-ins

Stages (experiment names as in the tutorial; each waits for what it needs with run_after):
  download-14b          the model to improve (Qwen2.5-14B-Instruct)
  baseline-eval         aime24:8, aime25:8 on a vLLM server (prepare_data aime24 aime25 runs first)
  prepare-data          raw forum posts -> data.jsonl
  problem-extraction    generate with the extract-problems prompt, then a postprocess step keeps the problems
  download-qwq, convert-qwq-trtllm   the solution model as a TensorRT-LLM engine
  solution-generation   generic/math solutions from the TensorRT-LLM server (temperature 0.6)
  prepare-sft-data      python -m skills_cli.training.prepare_data (the SFT data filters)
  training              ns train sft (dtensor, or --backend megatron) with the tutorial's flags
  convert-14b-hf        the newest training checkpoint -> HF (our checkpoints convert from either backend)
  final-eval            aime24:8, aime25:8 again on the improved model; summarize_results prints both tables

`--stand_in` swaps every heavy piece for a tiny one so the whole chain runs on a CPU machine: tiny locally built
models instead of downloads, a handful of forum posts, the embedded hf server instead of vLLM/TensorRT-LLM
(no engine conversion), a few SFT steps, 4 problems per benchmark. The job graph is otherwise the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from skills_cli.cli.output import show
from skills_cli.common.errors import UserError
from skills_cli.pipeline import convert, generate, prepare_data, run_cmd, summarize_results, train_sft, wrap_arguments
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.shell import quote, quote_argv
from skills_cli.pipeline.store import JobState, Store

POSTPROCESS = '''"""Keep the problem the extraction model wrote after "Problem:" (or the post itself), one row per post."""
import json, sys
with open(sys.argv[1]) as source, open(sys.argv[2], "w") as out:
    for line in source:
        row = json.loads(line)
        text = row.get("generation") or ""
        problem = text.split("Problem:", 1)[1].strip() if "Problem:" in text else row["forum_post"]
        out.write(json.dumps({"problem": problem, "source_id": row["id"]}) + "\\n")
'''
RAW_DATA_SCRIPT = (
    "https://raw.githubusercontent.com/NVIDIA/NeMo-Skills/refs/heads/main/recipes/openmathreasoning/"
    "scripts/prepare_raw_data.py"
)
FORUM_POSTS = [
    f"Hi all, how do I find {a} + {b}? Thanks!" for a, b in ((3, 4), (12, 30), (7, 8), (25, 17), (9, 9), (40, 2))
]
SEED_003_SFT_FLAGS = ["++sft.max_num_epochs=4", "++policy.dtensor_cfg.tensor_parallel_size=8",
                      "++policy.max_total_sequence_length=8192", "++policy.train_global_batch_size=32",
                      "++policy.optimizer.kwargs.lr=1e-5", "++policy.dtensor_cfg.sequence_parallel=true",
                      "++policy.dtensor_cfg.activation_checkpointing=true"]  # fmt: skip
STAND_IN_SFT_FLAGS = ["++sft.max_num_steps=3", "++sft.max_num_epochs=10", "++policy.train_global_batch_size=4",
                      "++policy.max_total_sequence_length=512", "++policy.optimizer.kwargs.lr=1e-3",
                      "++checkpointing.save_period=1"]  # fmt: skip


@dataclass(frozen=True)
class Scale:
    """What differs between the real run and the stand-in run."""

    server_type: str
    server_gpus: int
    benchmarks: str
    max_samples: int
    tokens: int
    sft_flags: list
    num_gpus: int

    @classmethod
    def of(cls, stand_in: bool, num_gpus: int) -> Scale:
        if stand_in:
            return cls("hf", 0, "aime24:2,aime25:2", 4, 16, STAND_IN_SFT_FLAGS, 0)
        return cls("vllm", num_gpus, "aime24:8,aime25:8", -1, 16384, SEED_003_SFT_FLAGS, num_gpus)


class Recipe:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ws = Path(args.workspace).resolve()
        self.scale = Scale.of(args.stand_in, args.num_gpus)
        self.common = {"cluster": args.cluster, "config_dir": args.config_dir, "dry_run": args.dry_run}
        self.dry_runs: list[str] = []
        self.expnames: list[str] = []

    def after(self, *names: str) -> list[str]:
        """run_after names (a dry run submits nothing, so there is nothing to wait for)."""
        return [] if self.args.dry_run else list(names)

    def keep(self, submission, expname: str) -> None:
        self.expnames.append(expname)
        if self.args.dry_run and submission is not None and submission.dry_run_text:
            self.dry_runs.append(f"# ---- {expname} ----\n{submission.dry_run_text}")

    def download(self, expname: str, repo: str, target: Path, seed: int) -> None:
        if self.args.stand_in:  # no hub: a tiny model stands in for the download
            command = quote_argv([sys.executable, "-m", "skills_cli.inference.tiny_model", "--output_dir", str(target),
                                  "--seed", str(seed)])  # fmt: skip
        else:
            command = quote_argv(["huggingface-cli", "download", repo, "--local-dir", str(target)])
        self.keep(run_cmd(ctx=wrap_arguments(command), expname=expname, log_dir=str(target.parent / f"{expname}-logs"),
                          detach=True, **self.common), expname)  # fmt: skip

    def evaluation(self, expname: str, model: str, output: str, run_after: list[str]) -> None:
        extra = f"++inference.tokens_to_generate={self.scale.tokens}"
        submission = evaluate(ctx=wrap_arguments(extra), benchmarks=self.scale.benchmarks, data_dir=str(self.ws / "data"),
                              output_dir=output, model=model, server_type=self.scale.server_type,
                              server_gpus=self.scale.server_gpus, max_samples=self.scale.max_samples, expname=expname,
                              run_after=self.after(*run_after), detach=True, **self.common)  # fmt: skip
        self.keep(submission, expname)

    def run(self) -> None:
        ws = self.ws
        if not self.args.dry_run and self.args.stand_in:
            ws.mkdir(parents=True, exist_ok=True)
        base, qwq = ws / "Qwen2.5-14B-Instruct", ws / "QwQ-32B"
        self.download("download-14b", "Qwen/Qwen2.5-14B-Instruct", base, seed=0)
        # benchmark data: from a local mirror when given (offline), else downloaded
        if not self.args.dry_run:
            prepare_data(
                benchmarks=["aime24", "aime25"], data_dir=self.args.benchmarks_mirror, output_dir=str(ws / "data")
            )
        self.evaluation("baseline-eval", str(base), str(ws / "evals" / "baseline"), ["download-14b"])
        self.sdg(qwq)
        self.training(base)
        self.evaluation("final-eval", str(ws / "training" / "qwen2.5-14b-improved-hf"), str(ws / "evals" / "after-training"),
                        ["convert-14b-hf"])  # fmt: skip

    def sdg(self, qwq: Path) -> None:
        ws, scale = self.ws, self.scale
        # the job writes the postprocess script and the raw data: the workspace lives on the cluster
        write_script = f"printf '%s' {quote(POSTPROCESS)} > {ws}/postprocess_problem_extraction.py"
        if self.args.stand_in:
            posts = "".join(json.dumps({"id": i, "forum_post": p}) + "\n" for i, p in enumerate(FORUM_POSTS))
            make_data = f"{write_script} && printf '%s' {quote(posts)} > {ws}/data.jsonl"
        else:  # the tutorial's raw AoPS posts
            make_data = (f"{write_script} && cd {ws} && wget -q {RAW_DATA_SCRIPT} && python prepare_raw_data.py && "
                         "head -n 1000 raw_aops_data.jsonl > data.jsonl")  # fmt: skip
        self.keep(run_cmd(ctx=wrap_arguments(make_data), expname="prepare-data", log_dir=str(ws / "prepare-data"),
                          detach=True, **self.common), "prepare-data")  # fmt: skip
        self.keep(generate(
            ctx=wrap_arguments("++prompt_config=generic/extract-problems ++prompt_template=qwen-instruct "
                               f"++inference.tokens_to_generate={min(scale.tokens, 2048)}"),
            input_file=f"{ws}/data.jsonl", output_dir=f"{ws}/sdg/problems", expname="problem-extraction",
            postprocess_cmd=quote_argv(["python3", f"{ws}/postprocess_problem_extraction.py",
                                        f"{ws}/sdg/problems/output.jsonl", f"{ws}/sdg/extracted-problems.jsonl"]),
            run_after=self.after("prepare-data", "download-14b"), model=str(ws / "Qwen2.5-14B-Instruct"),
            server_type=scale.server_type, server_gpus=scale.server_gpus, detach=True, **self.common,
        ), "problem-extraction")  # fmt: skip
        self.download("download-qwq", "Qwen/QwQ-32B", qwq, seed=1)
        solver, server, waits = str(qwq), scale.server_type, ["problem-extraction", "download-qwq"]
        if not self.args.stand_in:  # the tutorial serves the solution model with TensorRT-LLM
            self.keep(convert(input_model=str(qwq), output_model=str(ws / "qwq32b-trtllm"), convert_from="hf",
                              convert_to="trtllm", model_type="qwen", num_gpus=scale.num_gpus, max_seq_len=10000,
                              expname="convert-qwq-trtllm", run_after=self.after("download-qwq"), detach=True,
                              **self.common), "convert-qwq-trtllm")  # fmt: skip
            solver, server, waits = str(ws / "qwq32b-trtllm"), "trtllm", ["problem-extraction", "convert-qwq-trtllm"]
        self.keep(generate(
            ctx=wrap_arguments("++prompt_config=generic/math ++inference.temperature=0.6 "
                               f"++inference.tokens_to_generate={min(scale.tokens, 8192)} ++prompt_template=qwen-instruct"),
            input_file=f"{ws}/sdg/extracted-problems.jsonl", output_dir=f"{ws}/sdg/solutions",
            expname="solution-generation", run_after=self.after(*waits), model=solver, server_type=server,
            server_gpus=scale.server_gpus, detach=True, **self.common,
        ), "solution-generation")  # fmt: skip

    def training(self, base: Path) -> None:
        ws, scale = self.ws, self.scale
        # the stand-in's tiny solver is never right: keep its solutions as unlabeled so the chain has data
        prepare = quote_argv([sys.executable, "-m", "skills_cli.training.prepare_data",
                              f"++input_files={ws}/sdg/solutions/output.jsonl", f"++output_path={ws}/sft-data.jsonl",
                              "++prompt_config=generic/math", "++prompt_template=qwen-instruct",
                              "++filters.remove_contaminated=false", "++add_unlabeled=true",
                              f"++filters.remove_no_think_tags={'false' if self.args.stand_in else 'true'}",
                              "++filters.trim_solutions=false", "++filters.drop_multi_boxed=false"])  # fmt: skip
        self.keep(run_cmd(ctx=wrap_arguments(prepare), expname="prepare-sft-data", log_dir=str(ws / "prepare-sft-data"),
                          run_after=self.after("solution-generation"), detach=True, **self.common), "prepare-sft-data")  # fmt: skip
        self.keep(train_sft(ctx=wrap_arguments(" ".join(scale.sft_flags)), backend=self.args.backend, hf_model=str(base),
                            training_data=f"{ws}/sft-data.jsonl", output_dir=f"{ws}/training", num_nodes=1,
                            num_gpus=scale.num_gpus, expname="training",
                            run_after=self.after("download-14b", "prepare-sft-data"), detach=True, **self.common),
                  "training")  # fmt: skip
        self.keep(convert(input_model=f"{ws}/training/checkpoints", output_model=f"{ws}/training/qwen2.5-14b-improved-hf",
                          convert_from="checkpoint", convert_to="hf", num_gpus=min(scale.num_gpus, 1),
                          expname="convert-14b-hf", run_after=self.after("training"), detach=True, **self.common),
                  "convert-14b-hf")  # fmt: skip


def wait_for_all(expnames: list[str], timeout: float) -> bool:
    store = Store()
    ok = True
    for expname in expnames:
        records = wait(store.jobs(expname), store, timeout=timeout, poll=2.0)
        states = {r.name: r.state.value for r in records}
        print(f"{expname:22s} {', '.join(f'{n}={s}' for n, s in states.items())}")
        ok = ok and all(r.state is JobState.SUCCEEDED for r in records)
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workspace", required=True, help="shared folder visible to every job (the tutorial's /workspace)"
    )
    parser.add_argument("--cluster", default="local")
    parser.add_argument("--config_dir", default=None)
    parser.add_argument("--backend", choices=("dtensor", "megatron"), default="dtensor")
    parser.add_argument("--num_gpus", type=int, default=8)
    parser.add_argument("--stand_in", action="store_true", help="tiny models and data: runs on CPUs in minutes")
    parser.add_argument("--benchmarks_mirror", default=None, help="local folder with <benchmark>/test.jsonl (offline)")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for each experiment")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = Recipe(args)
    try:
        recipe.run()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(recipe.dry_runs))
        return 0
    if not wait_for_all(recipe.expnames, args.timeout):
        print("a stage failed: see `ns status <expname>` and `ns logs <expname>`", file=sys.stderr)
        return 1
    for name, folder in (("baseline", "baseline"), ("after training", "after-training")):
        print(f"==== {name} ====")
        show("summarize_results", summarize_results(results_dir=str(recipe.ws / "evals" / folder),
                                                    cluster=args.cluster, config_dir=args.config_dir))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
