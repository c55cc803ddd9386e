"""The code sandbox, against the real service (`python -m skills_cli.sandbox.server`): normal runs, escape attempts
(each must end with a clear status and leave the service able to serve the next run), sessions, concurrency,
authentication, the bounded health wait and a clean SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from conftest import start_sandbox, stop_sandbox

from skills_cli.common.ports import free_port
from skills_cli.sandbox.client import Limits, SandboxClient, SandboxError, SandboxUnavailable

SHORT = Limits(timeout=3.0, memory_mb=512)


def assert_still_serving(client: SandboxClient) -> None:
    """After an escape attempt: /health answers and an ordinary run works."""
    assert client.health()["status"] == "ok"
    after = client.run("print(6 * 7)", SHORT)
    assert (after.status, after.stdout) == ("ok", "42\n"), after


def processes_under(directory: str) -> list[int]:
    """pids whose working directory is `directory` or below (a run's directory is removed afterwards)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cwd = os.readlink(entry / "cwd").removesuffix(" (deleted)") if entry.name.isdigit() else ""
        except OSError:
            continue
        if cwd == directory or cwd.startswith(directory + "/"):
            found.append(int(entry.name))
    return found


def test_a_run_sees_only_its_own_directory_and_a_clean_environment(sandbox_client, sandbox_service):
    code = "import os, json; print(json.dumps([os.getcwd(), oct(os.stat('.').st_mode & 0o777), dict(os.environ)]))"
    result = sandbox_client.run(code, SHORT)
    assert result.status == "ok" and result.exit_code == 0 and result.message is None, result
    workdir, mode, env = __import__("json").loads(result.stdout)
    assert mode == "0o700"
    assert set(env) == {"PATH", "HOME", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING"}
    assert env["HOME"] == workdir
    assert not Path(workdir).exists()  # removed after the run
    assert sandbox_client.run("print(input()[::-1])", SHORT, stdin="abc\n").stdout == "cba\n"


def test_a_failing_program_is_an_error_with_its_exception(sandbox_client):
    result = sandbox_client.run("assert 1 + 1 == 3, 'arithmetic'", SHORT)
    assert (result.status, result.exit_code) == ("error", 1)
    assert result.message == "AssertionError: arithmetic"
    syntax = sandbox_client.run("def broken(:\n", SHORT)
    assert syntax.status == "error" and syntax.message.startswith("SyntaxError")


FORK_BOMB = """import os, sys
print(os.getcwd(), flush=True)
while True:
    try:
        if os.fork() == 0:
            os.setsid()  # leave the process group: only a PID namespace (or the uid sweep) still catches it
    except OSError:
        pass
"""


def test_fork_bomb_ends_with_every_process_killed(sandbox_client):
    result = sandbox_client.run(FORK_BOMB, Limits(timeout=2.0, max_processes=16))
    assert result.status == "timeout" and result.message == "timed out after 2 s", result
    health = sandbox_client.health()["isolation"]
    assert health["pid_namespace"] or health["process_limit"]
    time.sleep(0.3)
    assert processes_under(result.stdout.split()[0]) == []
    assert_still_serving(sandbox_client)


@pytest.mark.parametrize(
    "code", ["x = bytearray(8 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))"]
)
def test_memory_bomb_is_a_memory_status(sandbox_client, code):
    result = sandbox_client.run(code, Limits(timeout=10.0, memory_mb=256))
    assert result.status == "memory" and result.message == "ran out of memory (limit 256 MB)", result
    assert_still_serving(sandbox_client)


def test_infinite_loop_times_out(sandbox_client):
    result = sandbox_client.run("while True:\n    pass", Limits(timeout=1.0))
    assert (result.status, result.message, result.exit_code) == ("timeout", "timed out after 1 s", None)
    assert result.duration < 3
    assert_still_serving(sandbox_client)


def test_no_network_even_to_a_local_listener(sandbox_client):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')"
        result = sandbox_client.run(code, SHORT)
        assert result.status == "error" and result.message.startswith(("OSError", "ConnectionRefused", "Permission"))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert_still_serving(sandbox_client)


@pytest.fixture
def other_jobs_files(tmp_path):
    """Owner-only files (0600 in a 0700 directory) of 'another job' owned by the test's user: one under /tmp
    (which the jail replaces with its own, where it has a mount namespace) and one under /var/tmp (which it
    does not: there only the unprivileged uid protects it)."""
    roots = [tmp_path] + ([Path(tempfile.mkdtemp(dir="/var/tmp"))] if os.path.isdir("/var/tmp") else [])
    files = []
    for root in roots:
        private = root / "other_job"
        private.mkdir(mode=0o700)
        (private / "secret.txt").write_text("the other job's data")
        (private / "secret.txt").chmod(0o600)
        os.chmod(root, 0o755)
        files.append(private / "secret.txt")
    yield files
    for root in roots[1:]:
        shutil.rmtree(root)


def test_another_jobs_private_file_is_unreadable(sandbox_client, other_jobs_files):
    isolation = sandbox_client.health()["isolation"]
    if os.geteuid() == 0 and not isolation["unprivileged_uid"]:
        pytest.skip("the service runs code as root (no unprivileged uid here): owner-only files are readable")
    for path in other_jobs_files:
        result = sandbox_client.run(f"print(open({str(path)!r}).read())", SHORT)
        assert "the other job's data" not in result.stdout + result.stderr
        hidden = isolation["private_tmp"] and str(path).startswith("/tmp/")
        expected = "FileNotFoundError" if hidden else "PermissionError"
        assert result.status == "error" and result.message.startswith(expected), result
    assert_still_serving(sandbox_client)


def test_the_services_environment_is_invisible(sandbox_client, sandbox_service):
    code = f"""import os
seen = [repr(dict(os.environ))]
for pid in ["1", str(os.getppid()), "{sandbox_service.process.pid}", *os.listdir("/proc")]:
    try:
        seen.append(open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace"))
    except OSError as error:
        seen.append(type(error).__name__)
print("\\n".join(seen))
"""
    result = sandbox_client.run(code, SHORT)
    assert result.status == "ok", result
    assert sandbox_service.secret not in result.stdout + result.stderr
    assert sandbox_service.api_key not in result.stdout + result.stderr
    assert_still_serving(sandbox_client)


def test_huge_print_is_cut_and_stopped(sandbox_client):
    limits = Limits(timeout=10.0, max_output_bytes=1000)
    result = sandbox_client.run("while True:\n    print('x' * 10000)", limits)
    assert result.status == "output_limit" and result.truncated and len(result.stdout) == 1000, result
    assert "output far over the limit of 1000 bytes" in result.message
    modest = sandbox_client.run("print('y' * 1500)", limits)  # over the cap but finished: kept, cut, marked
    assert (modest.status, modest.truncated, modest.stdout) == ("ok", True, "y" * 1000)
    assert_still_serving(sandbox_client)


def test_session_keeps_state_and_ends_on_timeout(sandbox_client):
    session = sandbox_client.open_session(Limits(timeout=5.0))
    assert sandbox_client.run_in_session(session, "total = 40\ndef add(x):\n    return total + x").status == "ok"
    assert sandbox_client.run_in_session(session, "add(2)").stdout == "42\n"  # a final expression is shown
    failed = sandbox_client.run_in_session(session, "1 / 0")
    assert failed.status == "error" and failed.message == "ZeroDivisionError: division by zero"
    assert sandbox_client.run_in_session(session, "print(total)").stdout == "40\n"  # an error keeps the session
    assert sandbox_client.run_in_session(session, "waste = bytearray(8 * 1024**3)").status == "memory"
    stuck = sandbox_client.run_in_session(session, "while True:\n    pass", timeout=1.0)
    assert stuck.status == "timeout" and "the session has ended" in stuck.message
    after = sandbox_client.run_in_session(session, "print(total)")
    assert after.status == "error" and "has ended: timed out after 1 s" in after.message
    with pytest.raises(SandboxError, match="404"):  # already ended
        sandbox_client.close_session(session)


def test_session_interpreter_crash_ends_it(sandbox_client):
    session = sandbox_client.open_session(SHORT)
    crashed = sandbox_client.run_in_session(session, "import os\nos._exit(3)")
    assert crashed.status == "error" and "interpreter died" in crashed.message
    assert "has ended" in sandbox_client.run_in_session(session, "1").message


def test_runs_proceed_in_parallel(sandbox_client):
    results = []

    def sleep_once():
        results.append(sandbox_client.run("import time\ntime.sleep(1.5)", SHORT))

    start = time.monotonic()
    threads = [threading.Thread(target=sleep_once) for _ in range(4)]  # the fixture's service has 4 workers
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    assert [r.status for r in results] == ["ok"] * 4
    assert elapsed < 4.0, f"4 runs of 1.5 s on 4 workers took {elapsed:.1f} s (serial: 6 s)"


@pytest.fixture(scope="module")
def strict_sandbox(tmp_path_factory):
    """A second service: one worker, one session slot, sessions expire after 1 s idle."""
    log = tmp_path_factory.mktemp("strict_sandbox") / "sandbox.log"
    sandbox = start_sandbox(log, "--workers", "1", "--max_sessions", "1", "--session_idle_timeout", "1")
    yield sandbox
    stop_sandbox(sandbox)


def test_wrong_or_missing_key_is_refused(strict_sandbox):
    for key in ("wrong", ""):
        with pytest.raises(SandboxError, match="401"):
            SandboxClient(strict_sandbox.url, key).run("print(1)")
    assert SandboxClient(strict_sandbox.url, "wrong").health()["status"] == "ok"  # health tells nothing secret


def test_session_cap_and_idle_expiry(strict_sandbox):
    client = SandboxClient(strict_sandbox.url, strict_sandbox.api_key)
    first = client.open_session(SHORT)
    with pytest.raises(SandboxError, match="429"):
        client.open_session(SHORT)
    time.sleep(3.5)  # idle longer than --session_idle_timeout 1 (checked every 0.5 s)
    expired = client.run_in_session(first, "1")
    assert expired.status == "error" and "idle" in expired.message
    second = client.open_session(SHORT)  # the slot is free again
    assert client.run_in_session(second, "print('again')").stdout == "again\n"
    client.close_session(second)


def test_bad_request_is_refused_with_its_reason(strict_sandbox):
    client = SandboxClient(strict_sandbox.url, strict_sandbox.api_key)
    with pytest.raises(SandboxError, match="limits.timeout"):
        client.run("print(1)", Limits(timeout=-1))


def test_bounded_wait_fails_fast_with_the_log_tail(tmp_path):
    log = tmp_path / "sandbox.log"
    log.write_text("starting\nTraceback: something broke at start\n")
    client = SandboxClient(f"http://127.0.0.1:{free_port()}", "key")
    start = time.monotonic()
    with pytest.raises(SandboxUnavailable) as raised:
        client.wait_until_ready(timeout=1.0, log_file=str(log))
    assert time.monotonic() - start < 5
    assert client.url in str(raised.value) and "something broke at start" in str(raised.value)


@pytest.fixture
def own_sandbox(tmp_path):
    """Start a service of the test's own (stopped at teardown whatever happens): start(*server_args)."""
    started = []

    def start(*args: str):
        started.append(start_sandbox(tmp_path / f"sandbox{len(started)}.log", *args))
        return started[-1]

    yield start
    for sandbox in started:
        stop_sandbox(sandbox)


def sleeping_run(sandbox) -> tuple[str, list]:
    """Start a 60 s run in a background thread and wait until its process exists; the service's work root
    (its runs' directories are below) and the list the run's result will be appended to."""
    work_root = re.search(r"working directories under ([^\s)]+)", sandbox.log_file.read_text()).group(1)
    client, results = SandboxClient(sandbox.url, sandbox.api_key), []
    code = "import time\ntime.sleep(60)"
    threading.Thread(target=lambda: results.append(client.run(code, Limits(60))), daemon=True).start()
    deadline = time.monotonic() + 20
    while not processes_under(work_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(work_root), "the run never started"
    return work_root, results


def test_sigterm_stops_the_service_and_its_running_code(own_sandbox):
    sandbox = own_sandbox("--workers", "1")
    work_root, results = sleeping_run(sandbox)
    assert stop_sandbox(sandbox, timeout=15) == 0
    deadline = time.monotonic() + 15
    while not results and time.monotonic() < deadline:
        time.sleep(0.1)
    assert results and results[0].status == "sandbox_error"
    assert processes_under(work_root) == [] and not Path(work_root).exists()


def test_a_killed_service_takes_its_running_code_along(own_sandbox):
    """SIGKILL (the OOM killer, a node's cleanup) gives the service no chance to kill anything: the wardens
    notice it is gone and end their runs themselves."""
    sandbox = own_sandbox("--workers", "1")
    work_root, _ = sleeping_run(sandbox)
    sandbox.process.kill()
    sandbox.process.wait()
    deadline = time.monotonic() + 10
    while processes_under(work_root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_under(work_root) == []
    shutil.rmtree(work_root, ignore_errors=True)


def test_fallbacks_without_namespaces(own_sandbox):
    """Where namespaces are unavailable (a container without CAP_SYS_ADMIN): the audit hook refuses sockets, and
    the run's own uid is swept, so a fork bomb that left the process group still dies."""
    sandbox = own_sandbox("--workers", "1", "--disable_layers", "net,pid,mount,user")
    client = SandboxClient(sandbox.url, sandbox.api_key)
    isolation = client.health()["isolation"]
    assert isolation["audit_hook_network_guard"] and not isolation["network_namespace"]
    if not isolation["unprivileged_uid"]:
        pytest.skip("no unprivileged uid to sweep here")
    connect = client.run("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", SHORT)
    assert connect.status == "error" and "network access is disabled" in connect.message, connect
    bomb = client.run(FORK_BOMB, Limits(timeout=2.0, max_processes=16))
    assert bomb.status == "timeout", bomb
    time.sleep(0.3)
    assert processes_under(bomb.stdout.split()[0]) == []
    leak = client.run(f"print(open('/proc/{sandbox.process.pid}/environ').read())", SHORT)
    assert leak.status == "error" and sandbox.secret not in leak.stdout
    assert_still_serving(client)
