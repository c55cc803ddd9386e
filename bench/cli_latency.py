"""CLI latency: median of N wall times for `ns --help` and `ns run_cmd --dry_run ...`, as JSON.

    .venv/bin/python bench/cli_latency.py [--repeats 10] [--out bench/results/cli_latency.json]

Target: `ns --help` <= 0.5 s on the 2-core development machine (nothing heavy imported on that path).
Each run is a fresh process, as a user would start it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "ns --help": ["--help"],
    "ns run_cmd --dry_run (local)": ["run_cmd", "--expname", "bench", "--dry_run", "python train.py --lr 1e-5"],
    "ns run_cmd --dry_run (slurm)": [
        "run_cmd",
        "--cluster",
        "slurm",
        "--expname",
        "bench",
        "--num_gpus",
        "8",
        "--dry_run",
        "python train.py --lr 1e-5",
    ],
}


def time_command(argv: list[str], repeats: int, env: dict) -> dict:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "skills_cli", *argv], capture_output=True, env=env)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{argv} failed: {result.stderr.decode()[-500:]}")
    return {
        "median_s": round(statistics.median(times), 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "runs": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "SKILLS_CLI_HOME": home}
        # the packaged slurm example names an identity file; the dry run must not need it
        results = {name: time_command(argv, args.repeats, env) for name, argv in CASES.items()}
    report = {
        "benchmark": "cli_latency",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "target_help_s": 0.5,
        "results": results,
        "help_meets_target": results["ns --help"]["median_s"] <= 0.5,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
