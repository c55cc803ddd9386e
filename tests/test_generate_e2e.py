"""`ns generate` end to end with the embedded hf server and a tiny local model: outputs, resume after
SIGKILL, chunks + merge, the seed-003 SDG flow (problem extraction with postprocess, then solutions,
chained with run_after), and failures that must be fast and explained."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import run_ns

from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import generate, run_cmd, wrap_arguments
from skills_cli.pipeline.experiment import wait
from skills_cli.pipeline.store import JobState, Store

FAST = "++prompt_config=generic/math ++inference.tokens_to_generate=12 ++inference.temperature=0.0"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from skills_cli.inference.tiny_model import build_tiny_model

    return str(build_tiny_model(tmp_path_factory.mktemp("model") / "tiny"))


def problems(path: Path, count: int) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + {i + 1}?"}) + "\n" for i in range(count)))
    return path


def kill_processes_with(words: list[str]) -> list[int]:
    """SIGKILL every process whose command line contains all `words`."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if all(any(word in arg for arg in argv) for word in words) and int(entry.name) != os.getpid():
            os.kill(int(entry.name), 9)
            killed.append(int(entry.name))
    return killed


def finish(expname: str, timeout: float = 300) -> list:
    store = Store()
    return wait(store.jobs(expname), store, timeout=timeout)


def test_generate_writes_ordered_complete_output_and_skips_when_done(tiny_model, tmp_path):
    data = problems(tmp_path / "in.jsonl", 12)
    out = tmp_path / "out"
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(out), model=tiny_model,
                          server_type="hf", expname="gen")  # fmt: skip
    assert submission.succeeded, run_ns("logs", "gen").stdout
    rows = read_jsonl(out / "output.jsonl")
    assert [r["id"] for r in rows] == list(range(12))
    for row in rows:
        assert isinstance(row["generation"], str) and row["finish_reason"] in ("stop", "length")
        assert 0 < row["num_generated_tokens"] <= 12 and row["generation_time"] >= 0
    assert (out / "output.jsonl.done").exists() and not (out / "output.jsonl-async").exists()
    again = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(out), model=tiny_model,
                     server_type="hf", expname="gen-again")  # fmt: skip
    assert again.records == []  # complete: nothing submitted


def test_sigkill_then_rerun_loses_and_duplicates_nothing(tiny_model, tmp_path):
    data = problems(tmp_path / "in.jsonl", 80)
    out = tmp_path / "out"
    args = ["generate", "--input_file", str(data), "--output_dir", str(out), "--model", tiny_model, "--expname", "kill",
            "++prompt_config=generic/math", "++inference.tokens_to_generate=24", "++inference.temperature=0.7",
            "++max_concurrent_requests=4"]  # fmt: skip
    first = subprocess.Popen(
        [sys.executable, "-m", "skills_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    side = out / "output.jsonl-async"
    deadline = time.time() + 180
    while time.time() < deadline and (not side.exists() or len(side.read_text().splitlines()) < 15):
        time.sleep(0.2)
    assert side.exists(), "generation never started"
    # kill the running generation program itself, mid-flight
    killed = kill_processes_with(["skills_cli.inference.generate", f"++output_file={out}/output.jsonl"])
    assert killed, "found no generation process to kill"
    first.wait(timeout=120)
    partial = len(side.read_text().splitlines())
    assert 15 <= partial < 80 and not (out / "output.jsonl").exists()
    result = run_ns(*args, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    ids = [row["id"] for row in read_jsonl(out / "output.jsonl")]
    assert ids == list(range(80))  # each input exactly once, in input order


def test_chunks_are_merged_in_input_order(tiny_model, tmp_path):
    data = problems(tmp_path / "in.jsonl", 9)
    out = tmp_path / "out"
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(out), model=tiny_model,
                          num_chunks=3, expname="chunked")  # fmt: skip
    assert [r.name for r in submission.records] == ["generate-chunk0", "generate-chunk1", "generate-chunk2", "merge"]
    assert submission.succeeded, run_ns("logs", "chunked").stdout
    assert [r["id"] for r in read_jsonl(out / "output.jsonl")] == list(range(9))


def test_random_seeds_write_one_file_each(tiny_model, tmp_path):
    data = problems(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out"
    submission = generate(ctx=wrap_arguments("++prompt_config=generic/math ++inference.tokens_to_generate=8"),
                          input_file=str(data), output_dir=str(out), model=tiny_model, num_random_seeds=2,
                          expname="seeds")  # fmt: skip
    assert submission.succeeded
    first, second = (read_jsonl(out / f"output-rs{seed}.jsonl") for seed in (0, 1))
    assert len(first) == len(second) == 4
    assert [r["generation"] for r in first] != [r["generation"] for r in second]  # different seeds sample differently


POSTPROCESS = textwrap.dedent("""
    import json, sys
    rows = [json.loads(line) for line in open(sys.argv[1])]
    with open(sys.argv[2], "w") as out:
        for row in rows:
            text = row["generation"]
            problem = text.split("Problem:", 1)[1].strip() if "Problem:" in text else row["forum_post"]
            out.write(json.dumps({"problem": problem, "source_id": row["id"]}) + "\\n")
""")


def sdg_flow(tmp_path: Path, model: str, cluster: str | None = None, config_dir: str | None = None) -> Path:
    """Seed 003's SDG steps with our Python API: prepare data, extract problems (+ postprocess), solve them."""
    work = tmp_path / "workspace"
    work.mkdir()
    (work / "postprocess_problem_extraction.py").write_text(POSTPROCESS)
    common = {"cluster": cluster, "config_dir": config_dir}
    posts = "\\n".join(json.dumps({"id": i, "forum_post": f"Find {i} + {2 * i}. Thanks!"}) for i in range(6))
    run_cmd(ctx=wrap_arguments(f"cd {work} && printf '{posts}\\n' > data.jsonl"), expname="prepare-data",
            log_dir=str(work / "prepare-data"), detach=True, **common)  # fmt: skip
    generate(
        ctx=wrap_arguments("++prompt_config=generic/extract-problems ++prompt_template=qwen-instruct "
                           "++inference.tokens_to_generate=16"),
        input_file=f"{work}/data.jsonl", output_dir=f"{work}/sdg/problems",
        postprocess_cmd=(f"python3 {work}/postprocess_problem_extraction.py {work}/sdg/problems/output.jsonl "
                         f"{work}/sdg/extracted-problems.jsonl"),
        expname="problem-extraction", run_after=["prepare-data"], model=model, server_type="hf", detach=True,
        **common,
    )  # fmt: skip
    generate(
        ctx=wrap_arguments("++prompt_config=generic/math ++inference.temperature=0.6 "
                           "++inference.tokens_to_generate=16 ++prompt_template=qwen-instruct"),
        input_file=f"{work}/sdg/extracted-problems.jsonl", output_dir=f"{work}/sdg/solutions",
        expname="solution-generation", run_after=["problem-extraction"], model=model, server_type="hf",
        detach=True, **common,
    )  # fmt: skip
    return work


def check_sdg_outputs(work: Path) -> None:
    extracted = read_jsonl(work / "sdg/extracted-problems.jsonl")
    assert [r["source_id"] for r in extracted] == list(range(6))
    solutions = read_jsonl(work / "sdg/solutions/output.jsonl")
    assert [r["source_id"] for r in solutions] == list(range(6))
    assert all("generation" in r and "problem" in r for r in solutions)


def test_seed003_sdg_flow_locally(tiny_model, tmp_path):
    work = sdg_flow(tmp_path, tiny_model)
    for expname in ("prepare-data", "problem-extraction", "solution-generation"):
        (record,) = finish(expname)
        assert record.state is JobState.SUCCEEDED, run_ns("logs", expname).stdout[-3000:]
    check_sdg_outputs(work)
    (extraction,) = Store().jobs("problem-extraction")
    (solutions,) = Store().jobs("solution-generation")
    assert extraction.ended_at <= solutions.started_at


@pytest.mark.infra
def test_seed003_sdg_flow_on_slurm_over_ssh(tiny_model, tmp_path, slurm_config):
    config = slurm_config / "slurm_local.yaml"
    config.write_text(config.read_text() + f"python: {sys.executable}\n")
    work = sdg_flow(tmp_path, tiny_model, cluster="slurm_local", config_dir=str(slurm_config))
    for expname in ("prepare-data", "problem-extraction", "solution-generation"):
        (record,) = finish(expname, timeout=600)
        assert record.state is JobState.SUCCEEDED, run_ns("logs", expname).stdout[-3000:]
        assert record.executor == "slurm"
    check_sdg_outputs(work)


def test_bad_model_path_fails_fast_and_logs_say_why(tmp_path):
    data = problems(tmp_path / "in.jsonl", 2)
    started = time.time()
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(tmp_path / "out"),
                          model=str(tmp_path / "no-such-model"), expname="badmodel")  # fmt: skip
    assert time.time() - started < 120
    (record,) = submission.records
    assert record.state is JobState.FAILED
    logs = run_ns("logs", "badmodel", check=True).stdout
    assert "cannot load model" in logs and "no-such-model" in logs
    assert "exited with code 1 before it was ready" in logs


def test_unreachable_server_address_is_refused_before_submission(tmp_path):
    data = problems(tmp_path / "in.jsonl", 2)
    result = run_ns("generate", "--input_file", str(data), "--output_dir", str(tmp_path / "o"), "--expname", "unreach",
                    "--server_address", "http://127.0.0.1:9/v1", "--server_type", "openai", "++prompt_config=generic/math")  # fmt: skip
    assert result.returncode == 2 and "not reachable" in result.stderr
    assert not Store().has_experiment("unreach")


@pytest.mark.parametrize("problem_args,message", [
    (["--num_chunks", "5"], "larger than the 2 rows"),
    (["++inference.temprature=1"], "did you mean 'temperature'"),
    (["++input_file=x.jsonl"], "input_file is set by the launcher"),
    ([], "++prompt_config=NAME_OR_PATH is required"),
])  # fmt: skip
def test_generate_bad_inputs_fail_before_submission(tmp_path, problem_args, message):
    data = problems(tmp_path / "in.jsonl", 2)
    prompt = [] if message.startswith("++prompt_config") else ["++prompt_config=generic/math"]
    result = run_ns("generate", "--input_file", str(data), "--output_dir", str(tmp_path / "o"), "--model", "/m",
                    "--expname", "bad", *problem_args, *prompt)  # fmt: skip
    assert result.returncode == 2 and message in result.stderr, result.stderr
    missing = run_ns("generate", "--input_file", str(tmp_path / "nope.jsonl"), "--output_dir", str(tmp_path / "o"),
                     "--model", "/m", "--expname", "bad", "++prompt_config=generic/math")  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not Store().has_experiment("bad")


def test_in_job_validation_names_field_and_row(tiny_model, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text(json.dumps({"problem": "1+1?"}) + "\n" + json.dumps({"question": "2+2?"}) + "\n")
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(tmp_path / "o"),
                          model=tiny_model, expname="fieldless")  # fmt: skip
    assert submission.records[0].state is JobState.FAILED
    assert "row 2 has no field 'problem'" in run_ns("logs", "fieldless").stdout
    malformed = tmp_path / "bad.jsonl"
    malformed.write_text('{"problem": "1"}\n{"problem": \n')
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(malformed), output_dir=str(tmp_path / "o2"),
                          model=tiny_model, expname="malformed")  # fmt: skip
    assert submission.records[0].state is JobState.FAILED
    assert "bad.jsonl:2: malformed JSON line" in run_ns("logs", "malformed").stdout


def test_env_points_generation_at_the_job_port(tiny_model, tmp_path):
    """The server and the client of one job agree on its free port without any fixed number."""
    data = problems(tmp_path / "in.jsonl", 1)
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(tmp_path / "o"),
                          model=tiny_model, expname="port")  # fmt: skip
    (record,) = submission.records
    server_log = Path(record.work_dir) / "server.log"
    assert submission.succeeded and server_log.exists()
    assert os.environ.get("SKILLS_SERVER_PORT") is None  # nothing leaked into the submitting process


def test_start_server_prints_an_address_that_answers(tiny_model):
    import re
    import urllib.error
    import urllib.request

    result = run_ns("start_server", "--model", tiny_model, "--expname", "served", timeout=300, check=True)
    address = result.stdout.strip().splitlines()[-1]
    assert address.startswith("http://127.0.0.1:") and address.endswith("/v1")
    body = json.dumps(
        {"model": tiny_model, "messages": [{"role": "user", "content": "1+1?"}], "max_tokens": 4}
    ).encode()
    # the key is in an owner-only file whose path is printed, never the key itself
    (key_file,) = re.findall(r"export OPENAI_API_KEY=\$\(cat (\S+)\)", result.stderr)
    assert oct(os.stat(key_file).st_mode & 0o777) == "0o600"
    key = Path(key_file).read_text().strip()
    assert key not in result.stdout + result.stderr
    headers = {"Content-Type": "application/json"}
    with pytest.raises(urllib.error.HTTPError, match="401"):  # no key, no answer
        urllib.request.urlopen(urllib.request.Request(f"{address}/chat/completions", data=body, headers=headers))
    request = urllib.request.Request(
        f"{address}/chat/completions", data=body, headers={**headers, "Authorization": f"Bearer {key}"}
    )
    answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    run_ns("cancel", "served", check=True)
    (record,) = Store().jobs("served")
    assert record.state is JobState.CANCELLED


@pytest.mark.parametrize("backend", ["wandb", "swanlab"])
def test_log_samples_offline(tiny_model, tmp_path, monkeypatch, backend):
    pytest.importorskip(backend)
    logs = tmp_path / "tracker"
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(logs))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("SWANLAB_MODE", "offline")
    monkeypatch.setenv("SWANLAB_LOG_DIR", str(logs))
    data = problems(tmp_path / "in.jsonl", 3)
    submission = generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(tmp_path / "o"),
                          model=tiny_model, expname=f"samples-{backend}", log_samples=True, samples_backend=backend,
                          wandb_group="sdg")  # fmt: skip
    assert submission.succeeded, run_ns("logs", f"samples-{backend}").stdout[-3000:]
    assert f"logged 3 samples of {tmp_path}/o/output.jsonl to {backend}" in run_ns("logs", f"samples-{backend}").stdout
    if backend == "wandb":
        (run_dir,) = (logs / "wandb").glob("offline-run-*")
        tables = list(run_dir.rglob("samples_*.table.json"))
        assert tables and len(json.loads(tables[0].read_text())["data"]) == 3
    else:
        assert list(logs.rglob("*.swanlab")), list(logs.rglob("*"))


def start_hf_server(model: str, port: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "skills_cli.inference.server.hf_server", "--model", model,
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def wait_answering(port: int, timeout: float = 120) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server never answered")


def test_client_retries_through_a_server_restart(tiny_model, tmp_path):
    """Connection errors are retried with backoff: a server killed and restarted mid-run loses no sample."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = start_hf_server(tiny_model, port)
    wait_answering(port)
    data = problems(tmp_path / "in.jsonl", 60)
    out = tmp_path / "out.jsonl"
    client = subprocess.Popen([sys.executable, "-m", "skills_cli.inference.generate", f"++input_file={data}",
                               f"++output_file={out}", "++prompt_config=generic/math", f"++server.port={port}",
                               f"++server.model={tiny_model}", "++inference.tokens_to_generate=24",
                               "++max_concurrent_requests=2", "++max_retries=10"],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    side = Path(f"{out}-async")
    while not side.exists() or len(side.read_text().splitlines()) < 5:
        time.sleep(0.1)
    server.kill()
    server.wait()
    time.sleep(1.0)
    server = start_hf_server(tiny_model, port)  # same port: the client's retries find it again
    try:
        _, stderr = client.communicate(timeout=300)
    finally:
        server.kill()
    assert client.returncode == 0, stderr[-2000:]
    assert [r["id"] for r in read_jsonl(out)] == list(range(60))


def test_text_endpoint_with_the_model_tokenizer_template(tiny_model, tmp_path):
    data = problems(tmp_path / "in.jsonl", 3)
    config = tmp_path / "base.yaml"
    config.write_text("prompt_config: generic/math\ninference:\n  endpoint_type: text\n  tokens_to_generate: 8\n"
                      f"  stop: ['</think>', '<|im_end|>']\nserver:\n  tokenizer: {tiny_model}\n")  # fmt: skip
    submission = generate(config=str(config), input_file=str(data),
                          output_dir=str(tmp_path / "o"), model=tiny_model, expname="text")  # fmt: skip
    assert submission.succeeded, run_ns("logs", "text").stdout[-3000:]
    assert len(read_jsonl(tmp_path / "o/output.jsonl")) == 3


# -- ns eval composes ns generate's specs -------------------------------------------------------------------
SLURM_DRY = "executor: slurm\nssh_tunnel:\n  host: h\n  user: u\n  job_dir: /jobs\ncontainers:\n  main: /img.sqsh\n"


def test_eval_takes_every_generation_option_with_the_same_declaration():
    from skills_cli.pipeline.commands.evaluate import EVAL
    from skills_cli.pipeline.commands.generate import GENERATE

    eval_options = {option.name: option for option in EVAL.options}
    not_applicable = {"input_file"}  # --benchmarks and --data_dir choose the inputs
    redeclared = {"output_dir"}  # the root of every benchmark's results folder
    for option in GENERATE.options:
        if option.name in not_applicable:
            assert option.name not in eval_options
            continue
        assert option.name in eval_options, f"ns eval lacks ns generate's --{option.name}"
        if option.name not in redeclared:
            assert eval_options[option.name] == option, f"--{option.name} differs between ns eval and ns generate"


def eval_dry_run(config_dir: Path, overrides: str = "", **values) -> str:
    from skills_cli.pipeline import eval as evaluate

    (config_dir / "sl.yaml").write_text(SLURM_DRY)
    return evaluate(ctx=wrap_arguments(overrides), cluster="sl", config_dir=str(config_dir), output_dir="/ev", model="/m", expname="ev",
                    data_dir="/data", dry_run=True, **values).dry_run_text  # fmt: skip


def test_eval_generation_takes_seeds_and_sample_logging(config_dir):
    explicit = eval_dry_run(config_dir, benchmarks="gsm8k", random_seeds=[7, 8], log_samples=True, wandb_group="g")
    for seed in (7, 8):
        assert f"++output_file=/ev/eval-results/gsm8k/output-rs{seed}.jsonl" in explicit
        assert f"++inference.random_seed={seed}" in explicit
        assert f"--name ev-gsm8k-rs{seed} --group g" in explicit  # one --log_samples run per benchmark and seed
    assert "random_seed=0" not in explicit
    counted = eval_dry_run(config_dir, benchmarks="arith:2", starting_seed=5)
    assert "output-rs5.jsonl" in counted and "output-rs6.jsonl" in counted and "output-rs0" not in counted
    assert "log_samples" not in counted
    default = eval_dry_run(config_dir, benchmarks="gsm8k", num_random_seeds=2, starting_seed=3)
    assert "output-rs3.jsonl" in default and "output-rs4.jsonl" in default


def test_eval_refuses_two_choices_of_seeds(config_dir):
    from skills_cli.common.errors import UserError

    with pytest.raises(UserError, match=r"--random_seeds and --benchmarks arith:2 both choose the seeds of arith"):
        eval_dry_run(config_dir, benchmarks="gsm8k,arith:2", random_seeds=[1])


def test_eval_generation_is_generate_on_the_benchmark_data(config_dir):
    """A benchmark's generation job is exactly what ns generate compiles for its data file and results folder."""
    (config_dir / "sl.yaml").write_text(SLURM_DRY)
    common = dict(cluster="sl", config_dir=str(config_dir), model="/m", server_type="hf", num_chunks=2,
                  starting_seed=4, num_random_seeds=1, dry_run=True)  # fmt: skip
    overrides = "++prompt_config=generic/math ++inference.tokens_to_generate=9"
    evaluated = eval_dry_run(config_dir, overrides, benchmarks="gsm8k", num_chunks=2, starting_seed=4,
                             num_random_seeds=1, server_type="hf")  # fmt: skip
    generated = generate(ctx=wrap_arguments(overrides), input_file="/data/gsm8k/test.jsonl",
                         output_dir="/ev/eval-results/gsm8k", expname="ev", **common).dry_run_text  # fmt: skip
    client = re.compile(r"-m skills_cli\.inference\.generate [^'&]*")
    assert len(client.findall(generated)) == 2  # one per chunk
    assert client.findall(evaluated) == client.findall(generated)
