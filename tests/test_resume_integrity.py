"""Resume integrity of the generation program: a rerun reuses an earlier generation only for the sample it was
made for (input row, prompt and generation settings), whatever edits the input or the settings went through;
`.done` counts only for the input and settings it was made with; an empty, binary or JSON-array input is one
error line; a full disk is one line that keeps what was generated; outputs get the usual file modes.

The model server is a scripted OpenAI-compatible fixture that echoes each prompt (with the temperature, the
seed and a request counter), so a generation handed to the wrong problem is visible. Generation runs through
the real in-job program (`generate.main`); a run "killed" after N samples is the real failure path: the
fixture answers N requests, then refuses the next (HTTP 400, no retry), and the program exits keeping them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import fill_disk

from skills_cli.common.jsonl import DiskFull, DurableAppender, read_jsonl, touch_atomic, write_jsonl_atomic
from skills_cli.inference import generate
from skills_cli.inference.merge_chunks import chunk_file, merge

ECHO = re.compile(r"^<<(.*)>> t=(\S+) seed=(\S+) #(\d+)", re.S)


class EchoServer(ThreadingHTTPServer):
    """Answers `budget` completions (None: any number), each echoing its prompt; then HTTP 400."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.lock = threading.Lock()
        self.answered = 0
        self.budget: int | None = None
        self.padding = 0  # extra characters per generation (to fill a disk quickly)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def take_turn(self) -> int | None:
        with self.lock:
            if self.budget is not None and self.answered >= self.budget:
                return None
            self.answered += 1
            return self.answered


class EchoHandler(BaseHTTPRequestHandler):
    server: EchoServer

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.reply(200, {"object": "list", "data": [{"id": "echo", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        turn = self.server.take_turn()
        if turn is None:
            self.reply(400, {"error": {"message": "the scripted server's budget is spent"}})
            return
        prompt = body["messages"][-1]["content"]
        text = f"<<{prompt}>> t={body['temperature']} seed={body.get('seed')} #{turn}" + "x" * self.server.padding
        self.reply(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}], "usage": {"completion_tokens": 3}})  # fmt: skip


@pytest.fixture
def echo_server():
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def problem(i: int) -> dict:
    return {"problem": f"Problem number {i}: what is {i} + {i}?"}


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_generate(server: EchoServer, data: Path, output: Path, *overrides: str, budget: int | None = None) -> int:
    """The real in-job program against the echo server; with a budget it fails after `budget` samples."""
    server.budget = None if budget is None else server.answered + budget
    return generate.main([f"++input_file={data}", f"++output_file={output}", "++prompt_config=generic/math",
                          "++server.server_type=openai", f"++server.base_url={server.url}", "++max_retries=0",
                          "++max_concurrent_requests=1", "++progress=false", *overrides])  # fmt: skip


def echoed(row: dict) -> tuple[str, str, str, int]:
    """(prompt echoed, temperature, seed, request number) of an output row's generation."""
    match = ECHO.match(row["generation"])
    assert match, row["generation"]
    return match[1], match[2], match[3], int(match[4])


def assert_each_generation_is_for_its_own_problem(rows: list[dict]) -> None:
    for row in rows:
        assert echoed(row)[0].endswith(row["problem"]), (row["problem"], row["generation"])


@pytest.fixture
def generate_log(caplog):
    caplog.set_level(logging.INFO, logger="skills_cli.generate")
    return caplog


def test_an_inserted_and_an_edited_row_never_get_another_problems_generation(echo_server, tmp_path, generate_log):
    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(20)])
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out, budget=13) == 1  # "killed" after 13 samples
    assert len(Path(f"{out}-async").read_text().splitlines()) == 13 and not out.exists()
    rows = [problem(100), *(problem(i) for i in range(20))]  # a row inserted at the top ...
    rows[6] = {"problem": "An edited problem: what is 5 + 50?"}  # ... and one already generated edited
    write_rows(data, rows)
    generate_log.clear()
    before = echo_server.answered
    assert run_generate(echo_server, data, out) == 0
    output = read_jsonl(out)
    assert [row["problem"] for row in output] == [row["problem"] for row in rows]
    assert_each_generation_is_for_its_own_problem(output)
    assert echo_server.answered - before == 21 - 12  # the 12 still matching samples were reused, not redone
    assert "resume: 1 of 13 earlier generations no longer match the input or the generation settings; " \
           "regenerating them" in generate_log.messages  # fmt: skip
    assert "21 rows, 12 already generated, 9 to go" in generate_log.messages


def test_identical_rows_each_keep_their_own_generation(echo_server, tmp_path):
    data = write_rows(tmp_path / "in.jsonl", [problem(1), problem(1), problem(2)])
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out, budget=2) == 1  # both copies of problem 1 are generated
    write_rows(data, [problem(3), problem(1), problem(1), problem(2)])
    before = echo_server.answered
    assert run_generate(echo_server, data, out) == 0
    output = read_jsonl(out)
    assert_each_generation_is_for_its_own_problem(output)
    assert sorted(echoed(row)[3] for row in output[1:3]) == [1, 2]  # each copy reused once, none twice
    assert echo_server.answered - before == 2


def test_changed_temperature_regenerates_a_finished_output(echo_server, tmp_path, generate_log):
    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(5)])
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out, "++inference.temperature=0.0") == 0
    assert run_generate(echo_server, data, out, "++inference.temperature=0.0") == 0
    assert any("is complete" in message for message in generate_log.messages)
    generate_log.clear()
    assert run_generate(echo_server, data, out, "++inference.temperature=0.5") == 0
    output = read_jsonl(out)
    assert [echoed(row)[1] for row in output] == ["0.5"] * 5
    assert_each_generation_is_for_its_own_problem(output)
    assert "resume: 5 of 5 earlier generations no longer match the input or the generation settings; " \
           "regenerating them" in generate_log.messages  # fmt: skip


def test_changed_seed_regenerates_the_samples_of_an_interrupted_run(echo_server, tmp_path, generate_log):
    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(6)])
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out, "++inference.random_seed=1", budget=4) == 1
    generate_log.clear()
    assert run_generate(echo_server, data, out, "++inference.random_seed=2") == 0
    assert [echoed(row)[2] for row in read_jsonl(out)] == ["2"] * 6
    assert any(m.startswith("resume: 4 of 4 earlier generations no longer match") for m in generate_log.messages)


def test_done_marker_of_a_changed_input_is_not_complete_and_matching_rows_are_reused(echo_server, tmp_path,
                                                                                     generate_log):  # fmt: skip
    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(5)])
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out) == 0
    first = read_jsonl(out)
    write_rows(data, [problem(i) for i in range(6)])  # one more row after the job finished
    before = echo_server.answered
    generate_log.clear()
    assert run_generate(echo_server, data, out) == 0
    output = read_jsonl(out)
    assert len(output) == 6 and output[:5] == first  # the finished rows are kept as they were
    assert_each_generation_is_for_its_own_problem(output)
    assert echo_server.answered - before == 1
    assert any("was finished for a different input or different generation settings" in m
               for m in generate_log.messages)  # fmt: skip
    generate_log.clear()
    assert run_generate(echo_server, data, out) == 0  # now complete for this input
    assert echo_server.answered - before == 1
    assert any("is complete" in m for m in generate_log.messages)


def test_chunk_resume_matches_by_sample_and_a_regenerated_chunk_unmarks_the_merge(echo_server, tmp_path):
    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(10)])
    merged = tmp_path / "out.jsonl"
    chunks = [Path(chunk_file(str(merged), k)) for k in range(2)]
    assert run_generate(echo_server, data, chunks[0], "++num_chunks=2", "++chunk_id=0", budget=3) == 1
    write_rows(data, [problem(100), *(problem(i) for i in range(10))])  # chunk 0 is now rows 0..4 of 11
    assert run_generate(echo_server, data, chunks[0], "++num_chunks=2", "++chunk_id=0") == 0
    assert run_generate(echo_server, data, chunks[1], "++num_chunks=2", "++chunk_id=1") == 0
    assert merge(str(merged), 2) == 0
    output = read_jsonl(merged)
    assert len(output) == 11
    assert_each_generation_is_for_its_own_problem(output)
    merged_marker = json.loads(Path(f"{merged}.done").read_text())
    assert merged_marker["chunks"] == [json.loads(Path(f"{c}.done").read_text())["fingerprint"] for c in chunks]
    write_rows(data, [problem(i) for i in range(11)])  # the input changes again: chunk 0 must generate again
    assert run_generate(echo_server, data, chunks[0], "++num_chunks=2", "++chunk_id=0") == 0
    assert not Path(f"{merged}.done").exists()  # the merged output no longer claims to be complete
    assert_each_generation_is_for_its_own_problem(read_jsonl(chunks[0]))


@pytest.mark.parametrize("content,message", [
    (b"", "has no rows; nothing to generate"),
    (b"\n\n", "has no rows; nothing to generate"),
    (b"\x1f\x8b\x08\x00\xff\xfe binary", "not a UTF-8 text file"),
    (b'[{"problem": "1 + 1?"}, {"problem": "2 + 2?"}]\n', "expected a JSON object, got list (JSON lines hold"),
    (b'[\n  {"problem": "1 + 1?"}\n]\n', "not a JSON array"),
])  # fmt: skip
def test_unusable_input_is_one_error_line_and_leaves_nothing(echo_server, tmp_path, capfd, content, message):
    job = tmp_path / "job"
    job.mkdir()
    data = job / "in.jsonl"
    data.write_bytes(content)
    assert run_generate(echo_server, data, job / "out.jsonl") == 2
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and str(data) in errors[0], errors
    assert "Traceback" not in err
    assert sorted(p.name for p in job.iterdir()) == ["in.jsonl"]  # no output, no .done, no side file
    assert echo_server.answered == 0


def test_empty_input_refilled_after_an_error_is_generated(echo_server, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("")
    out = tmp_path / "out.jsonl"
    assert run_generate(echo_server, data, out) == 2
    write_rows(data, [problem(1)])
    assert run_generate(echo_server, data, out) == 0 and len(read_jsonl(out)) == 1


def test_full_disk_during_generation_is_one_line_and_a_rerun_continues(echo_server, small_disk, capfd):
    data = write_rows(small_disk.parent / "in.jsonl", [problem(i) for i in range(30)])
    out = small_disk / "out.jsonl"
    echo_server.padding = 6000  # every sample needs new pages of the tmpfs
    assert run_generate(echo_server, data, out, budget=3) == 1
    fill_disk(small_disk)
    capfd.readouterr()
    assert run_generate(echo_server, data, out) == 1
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith(f"error: disk full while writing {out}-async (No space left on device); "
                           "finished samples are kept and a rerun continues from them"), line  # fmt: skip
    (small_disk / ".filler").unlink()
    assert run_generate(echo_server, data, out) == 0
    output = read_jsonl(out)
    assert [row["problem"] for row in output] == [problem(i)["problem"] for i in range(30)]
    assert_each_generation_is_for_its_own_problem(output)


def test_atomic_writes_on_a_full_disk_raise_disk_full_and_keep_the_old_file(small_disk):
    target = small_disk / "out.jsonl"
    write_jsonl_atomic(target, [{"i": 1}])
    touch_atomic(small_disk / "out.jsonl.done", "old")
    fill_disk(small_disk)
    with pytest.raises(DiskFull, match=f"disk full while writing {target}"):
        write_jsonl_atomic(target, ({"i": i, "pad": "x" * 4000} for i in range(100)))
    with pytest.raises(DiskFull, match="disk full while writing .*out.jsonl.done"):
        touch_atomic(small_disk / "out.jsonl.done", "x" * 10000)
    assert read_jsonl(target) == [{"i": 1}] and (small_disk / "out.jsonl.done").read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler", "out.jsonl", "out.jsonl.done"]  # no temps


def test_durable_appender_on_a_full_device_raises_disk_full():
    appender = DurableAppender("/dev/full")
    with pytest.raises(DiskFull, match="disk full while writing /dev/full"):
        appender.append({"i": 1})
    with pytest.raises(DiskFull):  # a second writer stops too, and closing raises nothing new
        appender.append({"i": 2})
    appender.close()


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def test_atomic_writes_honour_the_umask_like_open(tmp_path, umask, echo_server):
    umask(0o027)
    write_jsonl_atomic(tmp_path / "new.jsonl", [{"i": 1}])
    assert oct((tmp_path / "new.jsonl").stat().st_mode & 0o777) == oct(0o640)
    kept = tmp_path / "private.jsonl"
    kept.write_text("")
    kept.chmod(0o600)
    write_jsonl_atomic(kept, [{"i": 1}])  # like open("w"): an existing file keeps its mode
    assert oct(kept.stat().st_mode & 0o777) == oct(0o600)
    umask(0o022)
    data = write_rows(tmp_path / "in.jsonl", [problem(1)])
    assert run_generate(echo_server, data, tmp_path / "out.jsonl") == 0
    modes = {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in ("out.jsonl", "out.jsonl.done")}
    assert modes == {"out.jsonl": oct(0o644), "out.jsonl.done": oct(0o644)}


def test_ns_generate_skips_a_finished_output_only_for_the_same_input_and_settings(echo_server, tmp_path):
    """`ns generate` on this machine skips a finished output at submission only when the finished job had the
    same command line and input file (its launch stamp): an edited input or a changed setting runs the job."""
    from conftest import run_ns

    data = write_rows(tmp_path / "in.jsonl", [problem(i) for i in range(4)])
    out_dir = tmp_path / "gen"

    def submit(expname: str, *overrides: str):
        return run_ns("generate", "--expname", expname, "--server_type", "openai", "--server_address", echo_server.url,
                      "--input_file", str(data), "--output_dir", str(out_dir), "++prompt_config=generic/math",
                      "++max_retries=0", *overrides, timeout=180)  # fmt: skip

    first = submit("stamp-1")
    assert first.returncode == 0, first.stderr
    answered = echo_server.answered
    same = submit("stamp-2")
    assert same.returncode == 0 and "already complete" in same.stderr, same.stderr
    assert echo_server.answered == answered  # nothing ran
    write_rows(data, [problem(i) for i in (9, 0, 1, 2, 3)])  # a row inserted at the top
    edited = submit("stamp-3")
    assert edited.returncode == 0 and "already complete" not in edited.stderr, edited.stderr
    rows = read_jsonl(out_dir / "output.jsonl")
    assert [row["problem"] for row in rows] == [problem(i)["problem"] for i in (9, 0, 1, 2, 3)]
    assert_each_generation_is_for_its_own_problem(rows)
    assert echo_server.answered == answered + 1  # only the new row was generated
    hotter = submit("stamp-4", "++inference.temperature=0.7")
    assert hotter.returncode == 0 and "already complete" not in hotter.stderr, hotter.stderr
    assert {echoed(row)[1] for row in read_jsonl(out_dir / "output.jsonl")} == {"0.7"}
