"""One server per eval job: wall time and model-server start-ups of `ns eval` with one job per generation
program (the old layout, `--num_jobs` = the number of programs) against the default packing. JSON out.

    .venv/bin/python bench/eval_jobs.py [--benchmarks arith:8,gsm8k:4] [--max_samples 20] [--tokens 16]
                                        [--programs_at_once 1 2] [--out FILE]

Runs the real `ns eval` on executor none with the embedded hf server and a tiny model built here; the gsm8k
data comes from the mirror at $SKILLS_BENCHMARKS_DIR. The packed layout runs once per `--programs_at_once`
value. Every run gets its own store and output folder, so nothing is skipped as already done. Server
start-ups are counted from the servers' logs (one ready line each); every layout must produce the same
generations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

READY = "hf_server: ready:"


def ns(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "skills_cli", *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"ns {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


def programs(benchmarks: str) -> int:
    """Generation programs of `--benchmarks` (one per seed; one for a benchmark without SAMPLES)."""
    return sum(int(part.split(":")[1]) if ":" in part else 1 for part in benchmarks.split(","))


def generations(output: Path) -> dict[str, list[str]]:
    results = output / "eval-results"
    return {str(path.relative_to(results)): [json.loads(line)["generation"] for line in path.open()]
            for path in sorted(results.glob("*/output*.jsonl"))}  # fmt: skip


def run_layout(args: argparse.Namespace, work: Path, label: str, num_jobs: int | None, at_once: int = 1) -> dict:
    """One `ns eval` in its own store; its wall time, jobs and server start-ups."""
    home, output = work / label / "home", work / label / "evals"
    env = {**os.environ, "SKILLS_CLI_HOME": str(home)}
    layout = ["--num_jobs", str(num_jobs)] if num_jobs else []
    start = time.perf_counter()
    ns("eval", "--benchmarks", args.benchmarks, "--data_dir", str(work / "data"), "--output_dir", str(output),
       "--model", str(work / "model"), "--server_type", "hf", "--max_samples", str(args.max_samples),
       "--programs_at_once", str(at_once), "--expname", label, *layout,
       f"++inference.tokens_to_generate={args.tokens}", env=env)  # fmt: skip
    wall = time.perf_counter() - start
    server_logs = list((home / "logs" / label).glob("*-server.log"))
    starts = sum(path.read_text().count(READY) for path in server_logs)
    jobs = len(list((home / "logs" / label).glob("*.log"))) - len(server_logs)
    return {"num_jobs": num_jobs or "default", "programs_at_once": at_once, "wall_s": round(wall, 2),
            "server_starts": starts, "jobs": jobs, "generations": generations(output)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", default="arith:8,gsm8k:4")
    parser.add_argument("--max_samples", type=int, default=20, help="problems per benchmark")
    parser.add_argument("--tokens", type=int, default=16, help="tokens generated per answer")
    parser.add_argument("--programs_at_once", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    mirror = os.environ.get("SKILLS_BENCHMARKS_DIR")
    if not mirror:
        raise SystemExit("set SKILLS_BENCHMARKS_DIR to the benchmark mirror (gsm8k is read from it)")
    from skills_cli.inference.tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-eval-jobs-") as tmp:
        work = Path(tmp)
        build_tiny_model(work / "model")
        names = [part.split(":")[0] for part in args.benchmarks.split(",")]
        ns("prepare_data", *names, "--data_dir", mirror, "--output_dir", str(work / "data"), env=dict(os.environ))
        before = run_layout(args, work, "before", programs(args.benchmarks))
        after = [run_layout(args, work, f"after-{at_once}", None, at_once) for at_once in args.programs_at_once]
    reference = before.pop("generations")
    same = all(run.pop("generations") == reference for run in after)
    report = {"bench": "eval_jobs", "benchmarks": args.benchmarks, "max_samples": args.max_samples,
              "tokens": args.tokens, "programs": programs(args.benchmarks), "before_one_job_per_program": before,
              "after_default_num_jobs": after, "same_generations": same,
              "speedup": [round(before["wall_s"] / run["wall_s"], 2) for run in after],
              "machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
