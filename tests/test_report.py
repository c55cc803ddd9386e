"""`ns report` on real local runs: run_cmd jobs (executor none) write training and evaluation metrics files
and a plot; the report must show the whole run_after chain, states, logs, curves, tables and the plot, in one
HTML file that references nothing outside itself, or as Markdown. Slurm experiments are reported from the
store alone."""

from __future__ import annotations

import base64
import json
import re
import struct
import sys
import zlib
from pathlib import Path

from conftest import run_ns, write_config

from skills_cli.pipeline import report, run_cmd, wrap_arguments
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.reporting.collect import host_path, read_artifact
from skills_cli.pipeline.store import JobRecord, JobState, Store, SubmissionRecord, new_uid

EVAL_METRICS = {
    "gsm8k": {
        "pass@1[avg-of-4]": {"num_entries": 40, "avg_tokens": 211.6, "symbolic_correct": 62.5,
                             "symbolic_correct_std": 3.1, "no_answer": 2.5},
        "majority@4": {"num_entries": 40, "avg_tokens": 211.6, "symbolic_correct": 70.0, "no_answer": 0.0},
        "pass@4": {"num_entries": 40, "avg_tokens": 211.6, "symbolic_correct": 85.0, "no_answer": 0.0},
    },
    # a grader with further verdicts and summary figures: the same columns as ns summarize_results prints
    "ifeval": {
        "greedy": {"num_entries": 541, "avg_tokens": 300.0, "prompt_strict_accuracy": 40.0, "no_answer": 1.0,
                   "prompt_loose_accuracy": 45.0, "instruction_strict_accuracy": 52.5},
    },
}  # fmt: skip

# what the jobs run: writes a training run's files or an evaluation's files into OUT
WRITER = """
import json, sys, pathlib
kind, out = sys.argv[1], pathlib.Path(sys.argv[2])
if kind == "train":
    (out / "logs").mkdir(parents=True, exist_ok=True)
    with open(out / "logs" / "metrics.jsonl", "w") as f:
        for step in range(1, 9):
            f.write(json.dumps({"step": step, "loss": round(2.0 / step, 4), "train/reward": step / 10, "lr": 1e-5}) + "\\n")
    (out / "logs" / "metrics.json").write_text(json.dumps({"status": "finished", "final_loss": 0.25, "final_step": 8}))
else:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(sys.argv[3])
    (out / "pass_at_k.png").write_bytes(bytes.fromhex(sys.argv[4]))
print("wrote", kind, "files")
"""


def tiny_png() -> bytes:
    """A valid 2x1 RGB PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    pixels = b"\x00" + b"\xff\x00\x00" + b"\x00\x00\xff"
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))  # fmt: skip


def run_chain(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """prep -> train -> eval, three experiments with run_after, as real local jobs."""
    writer = tmp_path / "writer.py"
    writer.write_text(WRITER)
    train_dir, eval_dir, png = tmp_path / "train", tmp_path / "evals" / "baseline", tiny_png()
    assert run_cmd(ctx=wrap_arguments("echo preparing data"), expname="prep").succeeded
    assert run_cmd(ctx=wrap_arguments(f"{sys.executable} {writer} train {train_dir}"), expname="train",
                   run_after=["prep"], output_dir=str(train_dir)).succeeded  # fmt: skip
    metrics = json.dumps(EVAL_METRICS)
    result = run_ns("run_cmd", "--expname", "eval", "--run_after", "train", "--output_dir", str(eval_dir),
                    f"{sys.executable} {writer} eval {eval_dir} '{metrics}' {png.hex()}", check=True)  # fmt: skip
    assert "SUCCEEDED" in result.stdout
    return train_dir, eval_dir, png


def polyline(svg_html: str, title: str) -> list[tuple[float, float]]:
    match = re.search(rf'aria-label="{re.escape(title)}">.*?<polyline points="([^"]+)"', svg_html)
    assert match, f"no curve {title!r}"
    return [tuple(map(float, point.split(","))) for point in match.group(1).split()]


def test_html_report_covers_the_chain_with_curves_tables_and_the_plot(tmp_path):
    train_dir, eval_dir, png = run_chain(tmp_path)
    out = tmp_path / "report.html"
    result = run_ns("report", "eval", "--output", str(out), check=True)
    assert str(out) in " ".join(result.stdout.split())
    text = out.read_text()
    # the chain, upstream first, each with its jobs and states
    assert [m for m in re.findall(r'<h2 id="exp-\d+">([^<]+)</h2>', text)] == ["prep", "train", "eval"]
    assert text.count('<span class="SUCCEEDED">SUCCEEDED</span>') == 3
    assert "3 experiment(s), 3 job(s): 3 succeeded" in text
    records = {name: Store().jobs(name)[0] for name in ("prep", "train", "eval")}
    for record in records.values():
        assert record.log_path in text
    # training: final values, a loss curve going down and a reward curve going up (SVG y grows downwards)
    assert "final loss = <b>0.25</b>" in text and "train/reward = <b>0.8</b>" in text
    loss, reward = polyline(text, "loss"), polyline(text, "train/reward")
    assert len(loss) == len(reward) == 8
    assert all(a[0] < b[0] and a[1] <= b[1] for a, b in zip(loss, loss[1:], strict=False))
    assert all(a[1] > b[1] for a, b in zip(reward, reward[1:], strict=False))
    assert "lr" not in re.findall(r'aria-label="([^"]+)"', text)  # not a loss/reward/accuracy: table only
    assert "<td>final_step</td><td class=num>8</td>" in text  # the summary file
    # evaluation: seed 003's table layout, and the plot embedded byte for byte
    assert (
        "<td>pass@1[avg-of-4]</td><td class=num>40</td><td class=num>212</td><td class=num>62.50% ± 3.10</td>" in text
    )
    assert "<td>pass@4</td>" in text and "85.00%" in text
    (embedded,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert base64.b64decode(embedded) == png == (eval_dir / "pass_at_k.png").read_bytes()
    # self-contained: nothing fetched from anywhere
    assert not re.search(r"https?://|<script|<link|@import|url\(", text)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', text))


def test_markdown_report_and_format_from_the_suffix(tmp_path):
    _, eval_dir, _ = run_chain(tmp_path)
    path = report(expname="eval", output=str(tmp_path / "r.md"))
    text = path.read_text()
    assert text.startswith("# Experiment report: eval\n")
    assert "Run-after chain: prep → train → eval" in text
    assert "| pass@1[avg-of-4] | 40 | 212 | 62.50% ± 3.10 | 2.50% |" in text
    assert (
        "| evaluation_mode | num_entries | avg_tokens | prompt_strict_accuracy | no_answer | prompt_loose_accuracy | instruction_strict_accuracy |"
        in text
    )
    assert "| greedy | 541 | 300 | 40.00% | 1.00% | 45.00% | 52.50% |" in text
    assert re.search(r"\| loss \| 1–8 \| 2 \| 0\.25 \| 0\.25 \| 2 \| █[▁-█]{6}▁ \|", text), text
    assert f"]({(eval_dir / 'pass_at_k.png').as_uri()})" in text
    # the default name, and --format overriding the suffix
    default = run_ns("report", "train", "--format", "md", check=True)
    assert Path("train-report.md").read_text().startswith("# Experiment report: train\n"), default.stdout
    assert "## prep" in Path("train-report.md").read_text() and "## eval" not in Path("train-report.md").read_text()


def test_failed_jobs_show_exit_code_log_tail_and_the_cancelled_dependent(tmp_path):
    run_cmd(ctx=wrap_arguments("echo the dataset is missing; exit 3"), expname="broken")
    run_cmd(ctx=wrap_arguments(f"touch {tmp_path}/never"), expname="after", run_after=["broken"],
            dependency_type="afterany", detach=True)  # fmt: skip
    path = report(expname="after", output=str(tmp_path / "r.html"))
    text = path.read_text()
    assert '<span class="FAILED">FAILED</span>' in text and "<td>exit code 3</td><td>3</td>" in text
    assert "last lines of the log of broken (FAILED)" in text and "the dataset is missing" in text
    assert "1 failed" in text


def test_unknown_experiment_is_an_error():
    run_cmd(ctx=wrap_arguments("true"), expname="known")
    result = run_ns("report", "unknown")
    assert result.returncode == 2
    assert result.stderr.startswith("error: no experiment named 'unknown' (known: known)"), result.stderr


def test_slurm_experiment_is_reported_from_the_store_without_contacting_the_cluster(tmp_path, config_dir, monkeypatch):
    from skills_cli.pipeline.executors import slurm, tunnel

    def contacted(*args, **kwargs):
        raise AssertionError("the report contacted the cluster")

    monkeypatch.setattr(slurm.SlurmExecutor, "refresh", contacted)
    monkeypatch.setattr(tunnel.ClusterTunnel, "__init__", contacted)
    write_config(config_dir, "remote", "executor: slurm\nssh_tunnel:\n  host: login.invalid\n  user: me\n"
                 "  job_dir: /lustre/me/jobs\n  connect_timeout: 2\n")  # fmt: skip
    store = Store()
    store.remember_cluster("remote", str(config_dir / "remote.yaml"))
    uid = new_uid()
    store.add_job(JobRecord(uid=uid, expname="sft-big", name="sft", cluster="remote", executor="slurm",
                            state=JobState.RUNNING, external_id="4242", log_path="/lustre/me/jobs/sft-big/logs/sft-4242.log",
                            submitted_at=1_700_000_000.0, started_at=1_700_000_060.0))  # fmt: skip
    store.add_experiment("sft-big", "remote", "slurm")
    store.add_submission(SubmissionRecord("sft-big", 1_700_000_000.0, "remote", [], ["/lustre/me/training"], [uid]))
    text = report(expname="sft-big", output=str(tmp_path / "r.md")).read_text()
    assert "| sft | RUNNING |  |  | 4242 |" in text, text
    assert "login.invalid:/lustre/me/jobs/sft-big/logs/sft-4242.log" in text
    assert "### Outputs in `login.invalid:/lustre/me/training`" in text
    assert "not fetched" in text and "ns summarize_results --cluster remote /lustre/me/training" in text
    assert "so far" in text  # a running job's duration


def test_docker_output_paths_are_read_through_the_mounts(tmp_path):
    cluster = parse_cluster_config({"executor": "local", "containers": {"main": "img"},
                                    "mounts": [f"{tmp_path}/ws:/workspace", "/data:/workspace/data:ro"]}, "docker")  # fmt: skip
    assert host_path("/workspace/evals/x", cluster) == f"{tmp_path}/ws/evals/x"
    assert host_path("/workspace/data/gsm8k", cluster) == "/data/gsm8k"  # the longest mount wins
    assert host_path("/workspacex/y", cluster) == "/workspacex/y"
    none = parse_cluster_config({"executor": "none"}, "local")
    assert host_path("/workspace/evals/x", none) == "/workspace/evals/x"


def test_grpo_series_layout_gives_curves_unless_its_rows_are_next_to_it(tmp_path):
    series = tmp_path / "metrics.json"
    series.write_text(json.dumps({"train/loss": {"1": 0.5, "2": 0.4, "3": 0.2}, "train/reward": {"1": 0.1, "2": 0.3}}))
    artifact = read_artifact(series, has_rows=False)
    assert artifact.kind == "curves"
    assert artifact.data == {"train/loss": [(1, 0.5), (2, 0.4), (3, 0.2)], "train/reward": [(1, 0.1), (2, 0.3)]}
    assert read_artifact(series, has_rows=True) is None
    flat = tmp_path / "summary.json"
    flat.write_text(json.dumps({"status": "finished", "final_step": 3}))
    assert read_artifact(flat, has_rows=False).kind == "summary"


def test_json_outputs_are_read_by_their_recorded_kind(tmp_path):
    """Files written through common.artifacts carry kind and version: the report reads them by kind."""
    from skills_cli.common.artifacts import EVALUATION, TRAINING_SERIES, TRAINING_SUMMARY, write_json_artifact

    modes = {"pass@1": {"num_entries": 10, "avg_tokens": 12.0, "symbolic_correct": 40.0, "no_answer": 0.0}}
    evaluation = write_json_artifact(tmp_path / "eval" / "metrics.json", EVALUATION, {"arith": modes})
    artifact = read_artifact(evaluation, has_rows=False)
    assert (artifact.kind, artifact.data) == ("eval", {"arith": modes})  # no `kind`/`version` rows in the table
    series = write_json_artifact(tmp_path / "logs" / "metrics.json", TRAINING_SERIES, {"loss": {"1": 0.9, "2": 0.5}})
    assert read_artifact(series, has_rows=False).data == {"loss": [(1, 0.9), (2, 0.5)]}
    summary = write_json_artifact(tmp_path / "logs" / "summary.json", TRAINING_SUMMARY, {"status": "finished"})
    assert read_artifact(summary, has_rows=False).data == {"status": "finished"}
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"kind": "evaluation", "version": 99, "arith": modes}))
    unreadable = read_artifact(newer, has_rows=False)
    assert unreadable.kind == "other" and "version 99 is newer" in unreadable.data
