"""Evaluation end to end: prepare_data from the shared mirror, `ns eval` with the tiny model and the embedded
server (locally and on Slurm over SSH), `ns summarize_results` tables, metrics.json and the plot; reruns
that skip finished parts; and the bad inputs of the evaluation commands."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import benchmarks_dir, run_ns

from skills_cli.common.artifacts import EVALUATION, read_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline import prepare_data, summarize_results, wrap_arguments
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.commands.eval_jobs import pack_programs
from skills_cli.pipeline.commands.evaluate import EvalSpec, compile_eval
from skills_cli.pipeline.commands.generate import CLIENT
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.jobs import Command, Job
from skills_cli.pipeline.store import JobState, Store

MIRROR = benchmarks_dir()
FAST = "++inference.tokens_to_generate=8"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def data_dir(tmp_path) -> Path:
    if not (MIRROR / "gsm8k" / "test.jsonl").is_file():
        pytest.fail(f"benchmark mirror not found at {MIRROR} (set SKILLS_BENCHMARKS_DIR)")
    out = tmp_path / "data"
    prepare_data(benchmarks=["gsm8k", "math500", "arith"], data_dir=str(MIRROR), output_dir=str(out))
    return out


def test_prepare_data_from_mirror_is_validated_and_idempotent(tmp_path):
    out = tmp_path / "data"
    lines = prepare_data(benchmarks=["gsm8k", "math500", "aime24", "aime25", "amc23", "arith"], data_dir=str(MIRROR),
                         output_dir=str(out))  # fmt: skip
    assert any("gsm8k/test: 1319 rows" in line for line in lines)
    assert any("arith/train: 2000 rows from generated locally" in line for line in lines)
    rows = read_jsonl(out / "math500" / "test.jsonl")
    assert len(rows) == 500 and {"id", "problem", "expected_answer", "level", "subject"} <= set(rows[0])
    again = prepare_data(benchmarks=["gsm8k", "arith"], data_dir=str(MIRROR), output_dir=str(out))
    assert all("up to date" in line for line in again)


def test_prepare_data_bad_inputs(tmp_path):
    with pytest.raises(UserError, match=r"unknown benchmark 'gsm9k'; known: aime24, aime25, amc23, arith, .*gsm8k"):
        prepare_data(benchmarks=["gsm9k"], data_dir=str(MIRROR), output_dir=str(tmp_path))
    broken = tmp_path / "mirror" / "gsm8k"
    broken.mkdir(parents=True)
    (broken / "test.jsonl").write_text('{"id": "a", "problem": "p", "expected_answer": "1"}\n{"id": "b", \n')
    with pytest.raises(UserError, match=r"test\.jsonl:2: malformed JSON line"):
        prepare_data(benchmarks=["gsm8k"], data_dir=str(tmp_path / "mirror"), output_dir=str(tmp_path / "o"))
    (broken / "test.jsonl").write_text('{"id": "a", "problem": "p", "expected_answer": ""}\n')
    with pytest.raises(UserError, match="row 1 has no non-empty 'expected_answer'"):
        prepare_data(benchmarks=["gsm8k"], data_dir=str(tmp_path / "mirror"), output_dir=str(tmp_path / "o"))


def run_eval(model: str, data_dir: Path, output: Path, expname: str, **extra) -> list:
    evaluate(ctx=wrap_arguments(FAST), benchmarks="gsm8k,math500:2,arith:2", data_dir=str(data_dir),
             output_dir=str(output), model=model, server_type="hf", max_samples=50, expname=expname, **extra)  # fmt: skip
    store = Store()
    return wait(store.jobs(expname), store, timeout=900, poll=1.0)


def check_results(output: Path) -> None:
    kind, metrics = read_json_artifact(output / "metrics.json")
    assert kind is EVALUATION
    assert metrics["gsm8k"]["greedy"]["num_entries"] == 50
    assert list(metrics["math500"]) == ["pass@1[avg-of-2]", "majority@2", "pass@2"]
    assert metrics["math500"]["pass@1[avg-of-2]"]["num_entries"] == 50
    assert metrics["arith"]["pass@2"]["num_entries"] == 50
    assert any(key.startswith("math500[level=") for key in metrics)  # per-subset breakdown
    assert (output / "pass_at_k.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    graded = read_jsonl(output / "eval-results" / "math500" / "output-rs0.jsonl")
    assert all("symbolic_correct" in row and "predicted_answer" in row for row in graded)


def server_starts(home: Path, expname: str) -> int:
    """Model servers the experiment's jobs started (each writes one ready line to its job's server log)."""
    return sum(path.read_text().count("hf_server: ready:") for path in (home / "logs" / expname).glob("*-server.log"))


def generations(output: Path) -> dict[str, list[str]]:
    results = output / "eval-results"
    return {str(path.relative_to(results)): [row["generation"] for row in read_jsonl(path)]
            for path in sorted(results.glob("*/output*.jsonl"))}  # fmt: skip


def without_timings(metrics: dict) -> dict:
    return {name: value if not isinstance(value, dict) else without_timings(value)
            for name, value in metrics.items() if name != "gen_seconds"}  # fmt: skip


def test_eval_locally_then_summarize_and_rerun(tiny_model, data_dir, tmp_path, isolated_home):
    output = tmp_path / "evals"
    records = run_eval(tiny_model, data_dir, output, "eval-local")
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), run_ns("logs", "eval-local").stdout[
        -4000:
    ]
    # locally the five generation programs share one job and one server by default
    assert sorted(r.name for r in records) == ["arith-grade", "generate", "gsm8k-grade", "math500-grade", "summarize"]
    assert server_starts(isolated_home, "eval-local") == 1
    check_results(output)
    shown = run_ns("summarize_results", str(output), check=True).stdout
    for header in ("evaluation_mode", "num_entries", "avg_tokens", "symbolic_correct", "no_answer"):
        assert header in shown
    assert "pass@1[avg-of-2]" in shown and "majority@2" in shown and "greedy" in shown
    # a rerun resubmits only grading and the summary: every generation is complete
    again = run_eval(tiny_model, data_dir, output, "eval-again")
    assert sorted(r.name for r in again) == ["arith-grade", "gsm8k-grade", "math500-grade", "summarize"]
    assert "already graded" in run_ns("logs", "eval-again", "math500-grade", check=True).stdout
    # one job (and server) per program, as before packing: the same generations and metrics
    apart = tmp_path / "apart"
    records = run_eval(tiny_model, data_dir, apart, "eval-apart", num_jobs=5)
    assert {"gsm8k-generate", "math500-generate-rs1", "arith-generate-rs0"} <= {r.name for r in records}
    assert all(r.state is JobState.SUCCEEDED for r in records) and server_starts(isolated_home, "eval-apart") == 5
    assert generations(apart) == generations(output)
    metrics = [without_timings(read_json_artifact(path / "metrics.json", EVALUATION)[1]) for path in (apart, output)]
    assert metrics[0] == metrics[1]


def fake_program(name: str, script: str) -> Job:
    """A generation job's shape (a background server, a client) with a stand-in client script."""
    server = Command(argv=("bash", "-c", "sleep 60"), name="server", background=True)
    return Job(name=name, commands=(server, Command(argv=("bash", "-c", script), name=CLIENT)))


@pytest.mark.parametrize("at_once", [1, 2])
def test_a_packed_job_runs_every_program_and_fails_if_one_failed(at_once):
    programs = [fake_program("p0", "echo zero"), fake_program("p1", "echo one; exit 3"),
                fake_program("p2", "echo two")]  # fmt: skip
    (job,), renamed = pack_programs(programs, 1, at_once)
    assert job.name == "generate" and renamed == {"p0": "generate", "p1": "generate", "p2": "generate"}
    assert job.commands[0] == programs[0].commands[0]  # the one shared server, as it was
    ran = subprocess.run(job.commands[1].argv, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 1  # p1 failed: the job fails, after running the programs after it
    assert sorted(ran.stdout.split()) == sorted("starting p0 zero starting p1 one starting p2 two".split())
    # programs that would need different servers cannot share a job
    other_server = Command(argv=("bash", "-c", "sleep 30"), name="server", background=True)
    other = dataclasses.replace(programs[2], commands=(other_server, programs[2].commands[1]))
    with pytest.raises(ValueError, match="differ in more than their client command"):
        pack_programs([programs[0], other], 1, at_once)


def eval_graph(cluster: dict | None = None, **values) -> list[Job]:
    """The jobs ns eval compiles, for Slurm unless `cluster` says otherwise (nothing in /ev is done yet)."""
    cluster = parse_cluster_config(cluster or {"executor": "slurm", "job_dir": "/jobs"}, name="c")
    spec = EvalSpec(output_dir="/ev", data_dir="/data", model="/m", **values)
    return compile_eval(spec, [FAST], cluster)


def test_eval_packs_chunks_and_clamps_num_jobs_to_the_programs():
    jobs = {job.name: job for job in eval_graph(benchmarks="arith:2", num_chunks=2, num_jobs=1)}
    assert list(jobs) == ["generate", "arith-merge-rs0", "arith-merge-rs1", "arith-grade", "summarize"]
    client = jobs["generate"].commands[-1].argv[2]
    assert [c.name for c in jobs["generate"].commands] == ["server", CLIENT]
    assert re.findall(r"output-rs(\d)_chunk_(\d)", client) == [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")]
    assert jobs["arith-merge-rs1"].after == ("generate",) and jobs["arith-grade"].after == (
        "arith-merge-rs0", "arith-merge-rs1")  # fmt: skip
    # more jobs than programs: one job each, as ns generate makes them (a rerun may have fewer left)
    spread = eval_graph(benchmarks="arith:2,gsm8k", num_jobs=10)
    assert [job.name for job in spread] == ["arith-generate-rs0", "arith-generate-rs1", "gsm8k-generate",
                                            "arith-grade", "gsm8k-grade", "summarize"]  # fmt: skip
    # with a running server there is no server to share, but the clients can still share jobs
    client = eval_graph(benchmarks="arith:2", server_address="http://127.0.0.1:9/v1", num_jobs=1)[0]
    assert client.name == "generate" and [c.name for c in client.commands] == [CLIENT] and not client.ports
    assert client.commands[0].argv[2].count("++server.base_url=http://127.0.0.1:9/v1") == 2
    # on Slurm the default is one job per program too: separate allocations run side by side
    assert [job.name for job in eval_graph(benchmarks="arith:2,gsm8k")] == [job.name for job in spread]
    # locally, one job per server that fits: 4 GPUs hold two 2-GPU servers
    local = eval_graph({"executor": "none", "gpus": [0, 1, 2, 3]}, benchmarks="arith:5", server_gpus=2)
    assert [(job.name, job.resources.gpus_per_node) for job in local[:2]] == [("generate-0", 2), ("generate-1", 2)]
    assert [job.commands[-1].argv[2].count("skills_cli.inference.generate") for job in local[:2]] == [3, 2]


def test_eval_num_jobs_must_be_positive(tmp_path):
    for flag, value in (("--num_jobs", "0"), ("--programs_at_once", "0")):
        result = run_ns("eval", "--benchmarks", "arith", "--output_dir", str(tmp_path / "o"), "--model", "/m",
                        flag, value, "--expname", "bad")  # fmt: skip
        assert result.returncode == 2 and result.stderr == f"error: {flag}: 0 is out of range: must be >= 1\n", (
            result.stderr
        )
    assert not Store().has_experiment("bad")


@pytest.mark.infra
def test_eval_on_slurm_over_ssh(tiny_model, data_dir, tmp_path, slurm_config):
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    output = tmp_path / "evals"
    records = run_eval(tiny_model, data_dir, output, "eval-slurm", cluster="slurm_local",
                       config_dir=str(slurm_config))  # fmt: skip
    assert all(r.executor == "slurm" for r in records)
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), run_ns("logs", "eval-slurm").stdout[
        -4000:
    ]
    check_results(output)
    # summarize_results fetches the results over SSH in one transfer when given the cluster
    fetched = summarize_results(results_dir=str(output), cluster="slurm_local", config_dir=str(slurm_config))
    assert Path(fetched["metrics_file"]).parent != output
    assert read_json_artifact(fetched["metrics_file"], EVALUATION)[1]["gsm8k"]["greedy"]["num_entries"] == 50


@pytest.mark.parametrize("benchmarks,message", [
    ("gsm8k,nosuch", "unknown benchmark 'nosuch'; known:"),
    ("gsm8k:x", "cannot parse 'gsm8k:x'"),
    ("math500:0", "cannot parse 'math500:0'"),
    ("gsm8k,gsm8k:4", "names a benchmark twice"),
])  # fmt: skip
def test_eval_bad_benchmark_specs(benchmarks, message, tmp_path):
    result = run_ns("eval", "--benchmarks", benchmarks, "--output_dir", str(tmp_path / "o"), "--model", "/m",
                    "--expname", "bad")  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not Store().has_experiment("bad")


def test_eval_without_prepared_data_says_how_to_prepare(tmp_path):
    result = run_ns("eval", "--benchmarks", "aime24:8", "--data_dir", str(tmp_path / "empty"), "--output_dir",
                    str(tmp_path / "o"), "--model", "/m")  # fmt: skip
    assert result.returncode == 2 and "run `ns prepare_data aime24`" in result.stderr


def test_eval_after_an_upstream_that_prepares_the_data_is_accepted(tmp_path):
    data = tmp_path / "later"
    run_ns("run_cmd", "--expname", "make-data", "echo prepared", check=True)
    result = run_ns("eval", "--benchmarks", "arith", "--data_dir", str(data), "--output_dir", str(tmp_path / "o"),
                    "--model", "/m", "--run_after", "make-data", "--dry_run")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"++input_file={data}/arith/test.jsonl" in result.stdout  # the job reads it when it runs


def test_summarize_rejects_mixed_and_corrupt_results(tmp_path):
    mixed = tmp_path / "r" / "gsm8k"
    mixed.mkdir(parents=True)
    row = {
        "id": "1",
        "expected_answer": "1",
        "generation": "\\boxed{1}",
        "symbolic_correct": True,
        "predicted_answer": "1",
    }
    (mixed / "output.jsonl").write_text(json.dumps(row) + "\n")
    (mixed / "output-rs0.jsonl").write_text(json.dumps(row) + "\n")
    result = run_ns("summarize_results", str(tmp_path / "r"))
    assert result.returncode == 2 and "mixes greedy output.jsonl with seeded output-rs*.jsonl" in result.stderr
    (mixed / "output.jsonl").unlink()
    (mixed / "output-rs0.jsonl").write_text(json.dumps(row) + "\n{broken\n")
    result = run_ns("summarize_results", str(tmp_path / "r"))
    assert result.returncode == 2 and "output-rs0.jsonl:2: malformed JSON line" in result.stderr


def test_judge_steps_decide_cheap_cases_and_parse_verdicts(tmp_path, tiny_model):
    from skills_cli.evaluation import judge
    from skills_cli.evaluation.summarize import summarize

    results = tmp_path / "r" / "math500"
    results.mkdir(parents=True)
    rows = [
        {"id": "a", "problem": "p1", "expected_answer": "\\frac{1}{2}", "predicted_answer": "\\frac{1}{2}", "symbolic_correct": True},
        {"id": "b", "problem": "p2", "expected_answer": "3", "predicted_answer": None, "symbolic_correct": False},
        {"id": "c", "problem": "p3", "expected_answer": "0.5", "predicted_answer": "1/2", "symbolic_correct": True},
        {"id": "d", "problem": "p4", "expected_answer": "7", "predicted_answer": "seven", "symbolic_correct": False},
    ]  # fmt: skip
    (results / "output.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert judge.prepare(str(results), str(results / "judge/input.jsonl")).startswith("2 answers need the judge")
    asked = read_jsonl(results / "judge/input.jsonl")
    assert [(r["_index"], r["predicted_answer"]) for r in asked] == [(2, "1/2"), (3, "seven")]
    # the judge's answers (as the generation program writes them): a clear Yes, and one with no verdict
    (results / "judge/output.jsonl").write_text(
        json.dumps({**asked[0], "generation": "Same value.\nJudgement: Yes"})
        + "\n"
        + json.dumps({**asked[1], "generation": "I am not sure."})
        + "\n"
    )
    assert (
        judge.apply(str(results), str(results / "judge/output.jsonl"))
        == "2 answers judged by the model (1 without a verdict)"
    )
    judged = read_jsonl(results / "output.jsonl")
    assert [r["judge_correct"] for r in judged] == [True, False, True, False]
    assert judged[3]["judge_error"] == "no verdict from the judge"
    (result,), _ = summarize(tmp_path / "r", make_plot=False)
    assert result.metrics["greedy"]["judge_correct"] == 50.0 and result.metrics["greedy"]["symbolic_correct"] == 50.0
    assert judge.verdict("**Judgement**: no... wait. Judgement: YES") is True


def test_eval_with_a_judge_runs_the_judge_job(tiny_model, data_dir, tmp_path):
    output = tmp_path / "judged"
    evaluate(ctx=wrap_arguments(FAST), benchmarks="arith", data_dir=str(data_dir), output_dir=str(output),
             model=tiny_model, judge_model=tiny_model, max_samples=5, expname="judged")  # fmt: skip
    store = Store()
    records = wait(store.jobs("judged"), store, timeout=600)
    assert [r.name for r in records] == ["arith-generate", "arith-grade", "arith-judge", "summarize"]
    assert all(r.state is JobState.SUCCEEDED for r in records), run_ns("logs", "judged").stdout[-3000:]
    assert all("judge_correct" in row for row in read_jsonl(output / "eval-results/arith/output.jsonl"))
    assert "judge_correct" in read_json_artifact(output / "metrics.json", EVALUATION)[1]["arith"]["greedy"]


def test_summarize_results_logs_scalars_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("swanlab")
    logs = tmp_path / "tracker"
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(logs), "WANDB_SILENT": "true",
                       "SWANLAB_MODE": "offline", "SWANLAB_LOG_DIR": str(logs)}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    results = tmp_path / "r" / "arith"
    results.mkdir(parents=True)
    for seed in range(2):
        rows = [{"id": str(i), "expected_answer": "1", "predicted_answer": "1" if i + seed < 3 else None,
                 "symbolic_correct": i + seed < 3, "num_generated_tokens": 10} for i in range(4)]  # fmt: skip
        (results / f"output-rs{seed}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = summarize_results(results_dir=str(tmp_path / "r"), wandb_name="after-training-evals",
                                swanlab_project="evals")  # fmt: skip
    metrics = summary["results"][0].metrics
    assert metrics["pass@1[avg-of-2]"]["symbolic_correct"] == 62.5  # (3/4 + 2/4) / 2
    assert metrics["pass@2"]["symbolic_correct"] == 75.0  # problems 0-2 solved by some seed
    assert len(summary["logged"]) == 2
    (run,) = (logs / "wandb").glob("offline-run-*")
    assert list(run.glob("*.wandb"))
    assert list(logs.rglob("*.swanlab"))
