"""Tool-integrated reasoning (`++code_execution=true`, inference/code_execution.py): the generation program's
turn loop measured against a scripted OpenAI-compatible server (tests/scripted_openai_server.py: fixed texts,
every request recorded) with the real sandbox service, and the protocol on the real embedded hf server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from skills_cli.common.ports import free_port
from skills_cli.inference import generate, resume
from skills_cli.inference.config import CodeExecutionConfig, GenerateConfig
from skills_cli.prompts.chat_templates import CHATML, render
from tests.scripted_openai_server import ScriptedServer

BLOCK, END = "```python\n", "```\n"


def output(text: str) -> str:
    return f"```output\n{text}```\n"


def run_generate(tmp_path: Path, name: str, problems: list[str], settings: dict) -> tuple[int, list[dict]]:
    """The generation program on one row per problem, its settings given as a --config file (so markers and
    stop strings need no quoting); its exit status and output rows."""
    data, out = tmp_path / f"{name}.jsonl", tmp_path / f"{name}-out.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": p}) + "\n" for i, p in enumerate(problems)))
    config = {"input_file": str(data), "output_file": str(out), "prompt_config": "generic/math-tir",
              "progress": False, "max_retries": 0, "code_execution": True, **settings}  # fmt: skip
    config_file = tmp_path / f"{name}.yaml"
    config_file.write_text(yaml.safe_dump(config))
    status = generate.main(["--config", str(config_file)])
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return status, rows


def scripted_settings(server: ScriptedServer, sandbox_url: str, **execution) -> dict:
    return {"prompt_template": "chatml", "server": {"base_url": server.url},
            "code_execution_config": {"sandbox_url": sandbox_url, **execution}}  # fmt: skip


def text_prompt(problem: str) -> str:
    """The rendered prompt the program sends for `problem` (generic/math-tir through the chatml template)."""
    from skills_cli.prompts import load_prompt_config

    return render(CHATML, load_prompt_config("generic/math-tir").messages({"problem": problem}, 1, None))


SCRIPTS = {
    "state": [f"First.\n{BLOCK}x = 6 * 7\nprint(x)\n{END}never sent", f"So 42.\n{BLOCK}print(x + 1)\n{END}",
              "Done: \\boxed{43}"],
    "traceback": [f"{BLOCK}print('before')\n1 / 0\n{END}", "It failed."],
    "flood": [f"{BLOCK}print('y' * 5000)\n{END}", "Too long."],
    "spin": [f"{BLOCK}while True:\n    pass\n{END}", f"{BLOCK}print('fresh')\n{END}", "ok"],
    "user-stop": [f"{BLOCK}print('never run')<END> more", "unused"],
}  # fmt: skip


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, sandbox_service):
    """One run over the SCRIPTS samples (the server leaves stop strings out of the text and names them)."""
    from skills_cli.sandbox.client import SANDBOX_KEY_ENV

    tmp_path = tmp_path_factory.mktemp("tir")
    os.environ[SANDBOX_KEY_ENV] = sandbox_service.api_key
    try:
        with ScriptedServer(SCRIPTS) as server:
            settings = {**scripted_settings(server, sandbox_service.url, timeout=2),
                        "inference": {"stop": ["<END>"], "tokens_to_generate": 1000}}  # fmt: skip
            status, rows = run_generate(tmp_path, "first", list(SCRIPTS), settings)
            assert status == 0
            requests_before_rerun = len(server.requests)
            assert run_generate(tmp_path, "first", list(SCRIPTS), settings)[0] == 0
            assert len(server.requests) == requests_before_rerun, "a finished output is not generated again"
            yield {row["problem"]: row for row in rows}, server
    finally:
        os.environ.pop(SANDBOX_KEY_ENV, None)


def test_output_is_fed_back_and_state_persists_across_blocks(first_run):
    rows, server = first_run
    row = rows["state"]
    first = f"First.\n{BLOCK}x = 6 * 7\nprint(x)\n{END}" + output("42\n")
    assert row["generation"] == f"{first}So 42.\n{BLOCK}print(x + 1)\n{END}" + output("43\n") + "Done: \\boxed{43}"
    assert (row["num_code_executions"], row["code_execution_errors"], row["finish_reason"]) == (2, 0, "stop")
    bodies = server.bodies("state")
    prompt = text_prompt("state")
    so_far = row["generation"].removesuffix("Done: \\boxed{43}")
    assert [body["prompt"] for body in bodies] == [prompt, prompt + first, prompt + so_far]
    assert all(body["stop"] == ["<END>", END] for body in bodies)
    used = [len("First.\n" + BLOCK + "x = 6 * 7\nprint(x)\n"), len(f"So 42.\n{BLOCK}print(x + 1)\n")]
    assert [body["max_tokens"] for body in bodies] == [1000, 1000 - used[0], 1000 - used[0] - used[1]]
    assert row["num_generated_tokens"] == sum(used) + len("Done: \\boxed{43}")


def test_an_exception_is_shown_to_the_model_as_its_traceback(first_run):
    row = first_run[0]["traceback"]
    shown = row["generation"].split(END, 1)[1]
    assert shown.startswith("```output\nbefore\nTraceback (most recent call last):")
    assert "ZeroDivisionError: division by zero\n```\nIt failed." in shown
    assert (row["num_code_executions"], row["code_execution_errors"]) == (1, 1)


def test_long_output_is_cut_with_a_marker(first_run):
    row = first_run[0]["flood"]
    assert output("y" * 1000 + "\n[output truncated after 1000 characters]\n") + "Too long." in row["generation"]


def test_a_timeout_is_reported_and_the_next_block_gets_a_fresh_interpreter(first_run):
    row = first_run[0]["spin"]
    first, second = row["generation"].split("```output\n")[1:]
    assert "timed out after 2 s" in first
    assert second == "fresh\n```\nok"
    assert (row["num_code_executions"], row["code_execution_errors"]) == (2, 1)
    assert 2 <= row["code_execution_time"] < 30


def test_a_block_ended_by_the_users_stop_string_is_not_run(first_run):
    rows, server = first_run
    row = rows["user-stop"]
    assert row["generation"] == f"{BLOCK}print('never run')" and row["num_code_executions"] == 0
    assert len(server.bodies("user-stop")) == 1


def test_stop_included_in_the_text_limit_on_executions_and_token_budget(tmp_path, sandbox_url):
    """A server that keeps the stop string and does not name it (both handled); after max_code_executions the
    model gets one last turn whose block is closed and never run; tokens_to_generate spans all turns; a
    continuation the server refuses (HTTP 400) ends that sample only."""
    scripts = {"limit": [f"{BLOCK}print(1)\n{END}", f"{BLOCK}print(2)\n{END}tail", "unused"],
               "budget": [f"{BLOCK}print('hi')\n{END}", "z" * 100], "refused": [f"{BLOCK}print(3)\n{END}"]}  # fmt: skip
    with ScriptedServer(scripts, include_stop=True, name_stop_reason=False) as server:
        settings = {**scripted_settings(server, sandbox_url, max_code_executions=1),
                    "inference": {"tokens_to_generate": 60}}  # fmt: skip
        status, rows = run_generate(tmp_path, "limits", list(scripts), settings)
    assert status == 0
    limit, budget, refused = rows
    assert limit["generation"] == f"{BLOCK}print(1)\n{END}" + output("1\n") + f"{BLOCK}print(2)\n{END}"
    assert (limit["num_code_executions"], limit["finish_reason"], len(server.bodies("limit"))) == (1, "stop", 2)
    first = len(f"{BLOCK}print('hi')\n{END}")
    assert [body["max_tokens"] for body in server.bodies("budget")] == [60, 60 - first]
    assert budget["generation"].endswith(output("hi\n") + "z" * (60 - first))
    assert (budget["finish_reason"], budget["num_generated_tokens"]) == ("length", 60)
    assert refused["generation"] == f"{BLOCK}print(3)\n{END}" + output("3\n") and refused["finish_reason"] == "length"
    assert "HTTP 400" in refused["generation_error"] and "has only 1 turns" in refused["generation_error"]


def test_chat_endpoint_continues_the_assistant_message(tmp_path, sandbox_url):
    turns = [f"Let me check.\n{BLOCK}print(2 ** 10)\n{END}", "\\boxed{1024}"]
    with ScriptedServer({"powers": turns}) as server:
        settings = {"server": {"base_url": server.url, "server_type": "vllm"},
                    "code_execution_config": {"sandbox_url": sandbox_url}}  # fmt: skip
        status, rows = run_generate(tmp_path, "chat", ["powers"], settings)
    assert status == 0
    so_far = f"Let me check.\n{BLOCK}print(2 ** 10)\n{END}" + output("1024\n")
    assert rows[0]["generation"] == so_far + "\\boxed{1024}"
    first, second = server.bodies("powers")
    assert "continue_final_message" not in first and first["messages"][-1]["role"] == "user"
    assert second["messages"] == [*first["messages"], {"role": "assistant", "content": so_far}]
    assert (second["continue_final_message"], second["add_generation_prompt"]) == (True, False)


def test_samples_queue_for_the_sandboxs_sessions(tmp_path, monkeypatch):
    """A service with one session slot and three samples at once, each keeping state across two blocks: they
    take turns (no refusal reaches a sample, though one would fail it after session_wait)."""
    from conftest import start_sandbox, stop_sandbox

    from skills_cli.sandbox.client import SANDBOX_KEY_ENV

    sandbox = start_sandbox(tmp_path / "sandbox.log", "--workers", "1", "--max_sessions", "1")
    monkeypatch.setenv(SANDBOX_KEY_ENV, sandbox.api_key)
    first = f"{BLOCK}import time\ntime.sleep(1)\nv = {{}}\n{END}"  # each sample holds its session for 1 s
    scripts = {f"s{i}": [first.format(i), f"{BLOCK}print(v * 10)\n{END}", "end"] for i in range(3)}
    try:
        with ScriptedServer(scripts) as server:
            settings = scripted_settings(server, sandbox.url, session_wait=0.5)
            status, rows = run_generate(tmp_path, "queue", list(scripts), settings)
    finally:
        stop_sandbox(sandbox)
    assert status == 0
    for i, row in enumerate(rows):
        assert row["generation"].endswith(output(f"{i * 10}\n") + "end") and row["code_execution_errors"] == 0


def test_chat_endpoint_on_a_server_that_cannot_continue_is_refused(tmp_path, capsys):
    server = {"base_url": "http://127.0.0.1:9/v1", "server_type": "trtllm"}
    status, rows = run_generate(tmp_path, "trtllm-chat", ["p"], {"server": server})
    assert status == 2 and rows == []
    assert "error: ++code_execution=true on the chat endpoint needs a server that continues" in capsys.readouterr().err


def test_an_unreachable_sandbox_fails_after_a_bounded_wait(tmp_path, capsys):
    address = f"http://127.0.0.1:{free_port()}"
    with ScriptedServer({"p": ["unused"]}) as server:
        settings = scripted_settings(server, address, sandbox_startup_timeout=1)
        status, rows = run_generate(tmp_path, "nosandbox", ["p"], settings)
    assert status == 2 and rows == [] and server.requests == []
    assert f"sandbox at {address} did not answer within 1 s" in capsys.readouterr().err


def test_code_execution_settings_are_part_of_the_resume_keys():
    base = {"input_file": "in", "output_file": "out", "prompt_config": "generic/math-tir"}

    def keys(**changes) -> list[str]:
        config = GenerateConfig(**{**base, **changes})
        return resume.sample_keys([{"id": 1}], ["prompt"], resume.generation_settings(config))

    plain, on = keys(), keys(code_execution=True)
    fewer = keys(code_execution=True, code_execution_config=CodeExecutionConfig(max_code_executions=2))
    elsewhere = keys(code_execution=True, code_execution_config=CodeExecutionConfig(sandbox_url="http://other:1"))
    assert len({plain[0], on[0], fewer[0]}) == 3 and elsewhere == on


# ---- the real embedded hf server (a tiny model with random weights: the protocol, not the content) ----------


@pytest.fixture(scope="module")
def hf_server(tmp_path_factory):
    pytest.importorskip("torch")
    from skills_cli.inference.tiny_model import build_tiny_model
    from tests.test_hf_server import server_env, wait_for_health

    model = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", arch="llama")
    port, log = free_port(), tmp_path_factory.mktemp("hf") / "server.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "skills_cli.inference.server.hf_server", "--model",
                                    str(model), "--port", str(port), "--served_model_name", "model"],
                                   stderr=stderr, env=server_env())  # fmt: skip
    try:
        wait_for_health(process, f"http://127.0.0.1:{port}", log, 120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=30)


def markers_in(text: str) -> tuple[str, str, int]:
    """A block start (the text's first 3 characters) and a block end (3 characters first found at k, after
    the start): with them as markers, the same seeded sampling must stop at k and hand text[3:k] to the
    sandbox."""
    begin = text[:3]
    for k in range(6, len(text) - 3):
        end = text[k : k + 3]
        if text.find(end) == k and end not in begin and end.strip():
            return begin, end, k
    raise AssertionError(f"the tiny model's text {text!r} has no usable markers")


def test_hf_server_stops_at_the_block_end_and_continues_after_the_output(tmp_path, hf_server, sandbox_url):
    common = {"prompt_template": "chatml", "server": {"base_url": hf_server},
              "inference": {"tokens_to_generate": 32, "temperature": 1.0, "top_p": 1.0, "random_seed": 7}}  # fmt: skip
    status, plain = run_generate(tmp_path, "plain", ["What is 2 + 2?"], {**common, "code_execution": False})
    assert status == 0
    begin, end, k = markers_in(plain[0]["generation"])
    execution = {"code_begin": begin, "code_end": end, "output_begin": "<out>", "output_end": "</out>",
                 "sandbox_url": sandbox_url, "max_code_executions": 1}  # fmt: skip
    status, rows = run_generate(tmp_path, "tir", ["What is 2 + 2?"], {**common, "code_execution_config": execution})
    assert status == 0
    row = rows[0]
    assert row["generation"].startswith(plain[0]["generation"][:k] + end + "<out>")
    assert "</out>" in row["generation"] and row["num_code_executions"] == 1
    assert 0 < row["num_generated_tokens"] <= 32


def test_hf_server_continues_the_assistant_message_on_the_chat_endpoint(tmp_path, hf_server, sandbox_url):
    """The chat endpoint (continue_final_message) gives what the text endpoint gives: the same prompt text, the
    same seeded tokens, the same block handed to the sandbox."""
    sampling = {"tokens_to_generate": 32, "temperature": 1.0, "top_p": 1.0, "random_seed": 7}
    text = {"prompt_template": "chatml", "server": {"base_url": hf_server}, "inference": sampling}
    status, plain = run_generate(tmp_path, "plain", ["What is 2 + 2?"], {**text, "code_execution": False})
    assert status == 0
    begin, end, _ = markers_in(plain[0]["generation"])
    execution = {"code_begin": begin, "code_end": end, "output_begin": "<out>", "output_end": "</out>",
                 "sandbox_url": sandbox_url, "max_code_executions": 1}  # fmt: skip
    chat = {"server": {"base_url": hf_server}, "inference": sampling, "code_execution_config": execution}
    status, by_chat = run_generate(tmp_path, "chat", ["What is 2 + 2?"], chat)
    assert status == 0
    status, by_text = run_generate(tmp_path, "text", ["What is 2 + 2?"], {**text, "code_execution_config": execution})
    assert status == 0
    assert by_chat[0]["num_code_executions"] == 1 and "<out>" in by_chat[0]["generation"]
    assert by_chat[0]["generation"] == by_text[0]["generation"]


@pytest.mark.parametrize("code_execution", [False, True])
def test_a_prompt_longer_than_the_context_is_that_samples_error(tmp_path, hf_server, sandbox_url, code_execution):
    """The server refuses a prompt that cannot fit (HTTP 400): that sample gets no answer and the reason, the
    other samples are generated, and the run succeeds (one over-long problem does not sink a benchmark)."""
    settings = {"prompt_template": "chatml", "server": {"base_url": hf_server}, "code_execution": code_execution,
                "inference": {"tokens_to_generate": 4}, "code_execution_config": {"sandbox_url": sandbox_url}}  # fmt: skip
    status, rows = run_generate(tmp_path, "long", ["What is 2 + 2?", "word " * 3000], settings)
    assert status == 0
    short, long = rows
    assert short["num_generated_tokens"] > 0 and "generation_error" not in short
    assert long["generation"] == "" and long["finish_reason"] == "length"
    assert "maximum context length" in long["generation_error"]
