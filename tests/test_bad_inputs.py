"""Bad inputs: each gives one clear line (`error: ...`, exit status 2, no traceback) and submits nothing.

Every test runs the real `ns` entry point in a subprocess and then checks the metadata store (the same
`$SKILLS_CLI_HOME` the subprocess used) to prove that no experiment was recorded.
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import run_ns, write_config

from skills_cli.common.errors import UserError
from skills_cli.pipeline import run_cmd, wrap_arguments
from skills_cli.pipeline.store import Store

NASTY_JOB = """my job "q" it's $(touch PWNED_BY_NAME) `touch PWNED_BY_TICKS`"""
NASTY_EXP = "nasty exp 'x' $(touch PWNED_BY_EXP)"
NASTY_CMD = """printf '%s|' '$(touch PWNED_BY_CMD)' "a  b" 'it'"'"'s'; echo"""
NASTY_CMD_OUTPUT = "$(touch PWNED_BY_CMD)|a  b|it's|"


# -- helpers ------------------------------------------------------------------------------------------
def experiments() -> list[str]:
    return Store().experiment_names()


def assert_clean_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, no traceback, and the cause as one `error: ...` line (the last line of stderr; progress logs
    such as the SSH connection may come before it). Returns that line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    context = f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, context
    assert "Traceback" not in result.stderr, context
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, f"expected exactly one `error: ...` line, got {len(errors)}\n{context}"
    line = errors[0]
    assert lines[-1] == line, f"the error line must be the last thing on stderr\n{context}"
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in {line!r}"
    return line


def assert_nothing_submitted(before: list[str] | None = None, via_cli: bool = False) -> None:
    """The store holds no new experiment; with `via_cli`, `ns status` agrees."""
    assert experiments() == (before or []), f"something was recorded: {experiments()}"
    if via_cli:
        listing = run_ns("status", check=True)
        if before:
            assert all(f"experiment {name}" in listing.stdout for name in before), listing.stdout
        else:
            assert "no experiments yet" in listing.stdout, listing.stdout


SLURM_BASE = """executor: slurm
ssh_tunnel:
  host: 127.0.0.1
  port: {port}
  user: nobody
  job_dir: /tmp/skills_never_used
{extra}"""


# -- cluster configs ----------------------------------------------------------------------------------
def test_malformed_yaml_names_file_and_line(config_dir):
    path = write_config(config_dir, "broken", "executor: none\nmounts:\n  - /a:/b\n  bad: [unclosed\n")
    result = run_ns("run_cmd", "--cluster", "broken", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    line = assert_clean_error(result, "malformed YAML", str(path))
    assert "line 4" in line or "line 3" in line, line
    assert_nothing_submitted(via_cli=True)


def test_unknown_top_level_key_lists_valid_keys(config_dir):
    write_config(config_dir, "typo", "executor: none\npartiton: batch\n")
    result = run_ns("run_cmd", "--cluster", "typo", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    line = assert_clean_error(result, "unknown key 'partiton'", "valid keys")
    for key in ("executor", "partition", "ssh_tunnel", "mounts", "containers"):
        assert key in line.split("valid keys")[1], line
    assert_nothing_submitted()


def test_unknown_nested_ssh_tunnel_key_lists_its_valid_keys(config_dir):
    write_config(config_dir, "nested", SLURM_BASE.format(port=22, extra="") + "  timeout: 3\n")
    result = run_ns("run_cmd", "--cluster", "nested", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    line = assert_clean_error(result, "ssh_tunnel", "unknown key 'timeout'", "valid keys")
    valid = line.split("valid keys")[1]
    for key in ("host", "port", "user", "identity", "job_dir", "connect_timeout"):
        assert key in valid, line
    assert "executor" not in valid, "the nested error must list ssh_tunnel's keys, not the top level's"
    assert_nothing_submitted()


@pytest.mark.parametrize(
    "text, needles",
    [
        ("executor: none\ngpus: yes\n", ["gpus", "expected a list"]),
        ("executor: none\ngpus: [0, true]\n", ["gpus[1]", "expected int"]),
        (SLURM_BASE.format(port="abc", extra=""), ["ssh_tunnel.port", "'abc'"]),
        (SLURM_BASE.format(port=22, extra="  connect_timeout: soon\n"), ["connect_timeout", "'soon'"]),
        ("executor: sometimes\n", ["executor", "'sometimes'", "known: local, none, slurm"]),
        ("executor: none\nmounts: /a:/b\n", ["mounts", "expected a list"]),
    ],
    ids=["gpus-yes", "gpus-bool-item", "port-abc", "timeout-word", "executor-enum", "mounts-not-list"],
)
def test_wrong_type_in_config(config_dir, text, needles):
    write_config(config_dir, "wrong", text)
    result = run_ns("run_cmd", "--cluster", "wrong", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    assert_clean_error(result, *needles)
    assert_nothing_submitted()


@pytest.mark.parametrize("port", ["--22", "²"], ids=["double-minus", "superscript-digit"])
def test_non_integer_port_string_is_a_clean_error(config_dir, port):
    """Strings that pass `lstrip('-').isdigit()` but are not integers must not escape as a traceback."""
    write_config(config_dir, "port", SLURM_BASE.format(port=f'"{port}"', extra=""))
    result = run_ns("run_cmd", "--cluster", "port", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    assert_clean_error(result, "ssh_tunnel.port")
    assert_nothing_submitted()


def test_invalid_env_var_name_in_config_is_a_clean_error(config_dir):
    """`env_vars: ["A-B=x"]` cannot be exported by a script: it is bad input, in a dry run too."""
    write_config(config_dir, "badenv", 'executor: none\nenv_vars:\n  - "A-B=x"\n')
    dry = run_ns(
        "run_cmd",
        "--cluster",
        "badenv",
        "--config_dir",
        str(config_dir),
        "--expname",
        "e",
        "--dry_run",
        "echo hi",
    )
    assert_clean_error(dry, "A-B")
    real = run_ns("run_cmd", "--cluster", "badenv", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    assert_clean_error(real, "A-B")
    assert_nothing_submitted()


def test_unknown_cluster_lists_known_ones(config_dir):
    write_config(config_dir, "alpha", "executor: none\n")
    write_config(config_dir, "beta", "executor: none\n")
    result = run_ns("run_cmd", "--cluster", "gamma", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    line = assert_clean_error(result, "unknown cluster 'gamma'", "known clusters")
    known = line.split("known clusters")[1]
    for name in ("alpha", "beta", "local"):
        assert name in known, line
    assert_nothing_submitted()


# -- SSH ----------------------------------------------------------------------------------------------
class SilentServer:
    """A TCP server that accepts connections and never says a word (no SSH banner)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_missing_identity_file_fails_before_connecting(config_dir, tmp_path):
    with SilentServer() as server:
        write_config(
            config_dir,
            "noid",
            SLURM_BASE.format(port=server.port, extra=f"  identity: {tmp_path}/no_such_key\n  connect_timeout: 20\n"),
        )
        start = time.monotonic()
        result = run_ns("run_cmd", "--cluster", "noid", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
        elapsed = time.monotonic() - start
        assert_clean_error(result, "identity", "no_such_key")
        assert server.accepted == [], "ns connected although the identity file is missing"
    assert elapsed < 15, f"took {elapsed:.1f} s: it must fail before connecting"
    assert_nothing_submitted()


def test_unreachable_ssh_host_times_out_after_connect_timeout(config_dir):
    with SilentServer() as server:
        write_config(config_dir, "silent", SLURM_BASE.format(port=server.port, extra="  connect_timeout: 2\n"))
        start = time.monotonic()
        try:
            result = run_ns(
                "run_cmd",
                "--cluster",
                "silent",
                "--config_dir",
                str(config_dir),
                "--expname",
                "e",
                "echo hi",
                timeout=30,
            )
        except subprocess.TimeoutExpired:
            pytest.fail("ns hung on an SSH server that never answers (connect_timeout: 2)")
        elapsed = time.monotonic() - start
        assert server.accepted, "ns never even connected to the server"
    assert elapsed >= 2, f"failed after {elapsed:.1f} s, before the 2 s connect_timeout could pass"
    line = assert_clean_error(result, f"127.0.0.1:{server.port}")
    assert any(word in line.lower() for word in ("no answer", "timed out", "timeout")), (
        f"the error should say the host did not answer in time: {line!r}"
    )
    assert_nothing_submitted(via_cli=True)


# -- dependencies -------------------------------------------------------------------------------------
def test_unknown_run_after_is_an_error_not_a_warning():
    result = run_ns("run_cmd", "--expname", "e", "--run_after", "never_ran", "echo hi")
    assert_clean_error(result, "--run_after 'never_ran'", "no experiment")
    assert_nothing_submitted(via_cli=True)


def test_unknown_run_after_among_known_ones_is_an_error():
    run_ns("run_cmd", "--expname", "first", "true", check=True)
    result = run_ns("run_cmd", "--expname", "e", "--run_after", "first", "--run_after", "second", "echo hi")
    assert_clean_error(result, "'second'", "no experiment", "first")  # the known ones are listed
    assert experiments() == ["first"]


def test_run_after_a_failed_job_says_which_job_failed():
    failed = run_ns("run_cmd", "--expname", "upstream", "--job_name", "the breaker", "exit 3")
    assert failed.returncode == 1, failed.stderr
    for extra in ([], ["--dry_run"]):
        result = run_ns("run_cmd", "--expname", "downstream", "--run_after", "upstream", *extra, "echo hi")
        assert_clean_error(result, "'upstream'", "job 'the breaker'", "FAILED", "exit code 3", "nothing was submitted")
    assert_nothing_submitted(["upstream"], via_cli=True)
    assert [r.name for r in Store().jobs("upstream")] == ["the breaker"]


# -- mounts -------------------------------------------------------------------------------------------
@pytest.mark.infra
@pytest.mark.docker
def test_missing_mount_source_on_docker_executor(infra, config_dir, tmp_path):
    write_config(
        config_dir,
        "dock",
        f"""executor: local
containers:
  main: {infra["SKILLS_INFRA_IMAGE"]}
mounts:
  - {tmp_path}/nonexistent/x:/x
""",
    )
    result = run_ns("run_cmd", "--cluster", "dock", "--config_dir", str(config_dir), "--expname", "e", "echo hi")
    assert_clean_error(result, "mount source", f"{tmp_path}/nonexistent/x", "does not exist")
    assert_nothing_submitted()
    # a job's own --mounts is checked the same way
    write_config(config_dir, "dock2", f"executor: local\ncontainers:\n  main: {infra['SKILLS_INFRA_IMAGE']}\n")
    result = run_ns(
        "run_cmd",
        "--cluster",
        "dock2",
        "--config_dir",
        str(config_dir),
        "--expname",
        "e",
        "--mounts",
        f"{tmp_path}/nonexistent/y:/y",
        "echo hi",
    )
    assert_clean_error(result, "mount source", f"{tmp_path}/nonexistent/y", "does not exist")
    assert_nothing_submitted()


@pytest.mark.infra
def test_missing_mount_source_on_slurm(slurm_config):
    """The fixture's Slurm config that runs jobs in containers (mounts mean something there)."""
    name = next(
        n
        for n in ("slurm_docker", "slurm_local")
        if "container_runtime" in (slurm_config / f"{n}.yaml").read_text(errors="replace")
        if (slurm_config / f"{n}.yaml").exists()
    )
    path = slurm_config / f"{name}.yaml"
    path.write_text(path.read_text() + "mounts:\n  - /nonexistent/x:/x\n")
    result = run_ns(
        "run_cmd",
        "--cluster",
        name,
        "--config_dir",
        str(slurm_config),
        "--expname",
        "e",
        "echo hi",
        timeout=120,
    )
    assert_clean_error(result, "mount source", "/nonexistent/x", name)
    assert_nothing_submitted()
    # a job's own --mounts is checked the same way
    path.write_text(path.read_text().replace("mounts:\n  - /nonexistent/x:/x\n", ""))
    result = run_ns(
        "run_cmd",
        "--cluster",
        name,
        "--config_dir",
        str(slurm_config),
        "--expname",
        "e",
        "--mounts",
        "/nonexistent/y:/y",
        "echo hi",
        timeout=120,
    )
    assert_clean_error(result, "mount source", "/nonexistent/y", name)
    assert_nothing_submitted(via_cli=True)


# -- hostile names and commands -----------------------------------------------------------------------
def _pwned(root: Path) -> list[Path]:
    return [
        p
        for p in root.rglob("PWNED_BY_*")
        if p.name in {"PWNED_BY_NAME", "PWNED_BY_TICKS", "PWNED_BY_EXP", "PWNED_BY_CMD"}
    ]


def test_dry_run_quotes_hostile_names_and_commands(tmp_path):
    result = run_ns("run_cmd", "--expname", NASTY_EXP, "--job_name", NASTY_JOB, "--dry_run", NASTY_CMD, check=True)
    command_line = result.stdout.rstrip("\n").splitlines()[-1]
    words = shlex.split(command_line)
    assert f"SKILLS_CLI_JOB_NAME={NASTY_JOB}" in words, command_line
    assert f"SKILLS_CLI_EXPNAME={NASTY_EXP}" in words, command_line
    assert words[-3:] == ["bash", "-c", NASTY_CMD], command_line
    # Running the printed line in a shell runs exactly the command and evaluates none of the names.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    ran = subprocess.run(["bash", "-c", command_line], cwd=scratch, capture_output=True, text=True, timeout=30)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == NASTY_CMD_OUTPUT + "\n"
    assert _pwned(tmp_path) == []
    assert experiments() == []


def test_dry_run_on_slurm_quotes_hostile_names(config_dir, tmp_path):
    write_config(
        config_dir,
        "remote",
        SLURM_BASE.format(port=22, extra="") + "container_runtime: docker\ncontainers:\n  main: img:1\n",
    )
    result = run_ns(
        "run_cmd",
        "--cluster",
        "remote",
        "--config_dir",
        str(config_dir),
        "--expname",
        NASTY_EXP,
        "--job_name",
        NASTY_JOB,
        "--dry_run",
        NASTY_CMD,
        check=True,
    )
    lines = result.stdout.splitlines()
    exports = [shlex.split(line) for line in lines if line.startswith("export SKILLS_CLI_JOB_NAME=")]
    assert exports == [["export", f"SKILLS_CLI_JOB_NAME={NASTY_JOB}"]], result.stdout
    srun = next(line for line in lines if line.startswith("srun "))
    assert shlex.split(srun)[-3:] == ["bash", "-c", NASTY_CMD], srun
    sbatch = next(line for line in lines if "sbatch --parsable" in line)
    job_name_option = next(w for w in shlex.split(sbatch.split("=$(", 1)[1]) if w.startswith("--job-name="))
    assert "$" not in job_name_option and "`" not in job_name_option and " " not in job_name_option, sbatch
    assert experiments() == []
    assert _pwned(tmp_path) == []


def test_real_run_keeps_hostile_names_and_commands_literal(tmp_path):
    result = run_ns("run_cmd", "--expname", NASTY_EXP, "--job_name", NASTY_JOB, NASTY_CMD, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _pwned(tmp_path) == [], "a name or the command text was evaluated by a shell"
    assert experiments() == [NASTY_EXP]
    records = Store().latest_jobs(NASTY_EXP)
    assert [r.name for r in records] == [NASTY_JOB]
    assert records[0].state.value == "SUCCEEDED"
    logs = run_ns("logs", NASTY_EXP, NASTY_JOB, check=True)
    assert NASTY_CMD_OUTPUT in logs.stdout.splitlines(), logs.stdout


# -- options ------------------------------------------------------------------------------------------
def test_mistyped_cli_option_suggests_the_right_one():
    result = run_ns("run_cmd", "--expnme", "x", "echo hi")
    assert_clean_error(result, "--expnme", "--expname")
    assert_nothing_submitted(via_cli=True)


def test_unknown_python_api_keyword_is_a_user_error():
    with pytest.raises(UserError, match=r"unknown argument 'expnme'.*did you mean 'expname'"):
        run_cmd(ctx=wrap_arguments("echo hi"), expnme="x")
    assert experiments() == []


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--time", "abc"], ["invalid time limit 'abc'"]),
        (["--time", "1:2:3:4"], ["invalid time limit"]),
        (["--num_gpus", "-1"], ["gpus", "-1"]),
        (["--num_nodes", "0"], ["nodes", "0"]),
        (["--dependent_jobs", "-1"], ["dependent_jobs", "-1"]),
        (["--dependency_type", "sometimes"], ["--dependency_type", "'sometimes'", "afterok", "afterany"]),
        (["--mounts", "relative"], ["invalid mount 'relative'"]),
        (["--log_dir", "relative/logs"], ["--log_dir", "absolute"]),
        (["--num_gpus", "4096"], ["4096 GPUs", "offers"]),
    ],
    ids=[
        "time-abc",
        "time-4-fields",
        "gpus-negative",
        "nodes-zero",
        "dependent-negative",
        "dependency-type",
        "mount",
        "log-dir",
        "too-many-gpus",
    ],
)
def test_invalid_option_values(args, needles):
    result = run_ns("run_cmd", "--expname", "e", *args, "echo hi")
    assert_clean_error(result, *needles)
    assert_nothing_submitted()


def test_more_gpus_than_the_configured_pool(config_dir):
    write_config(config_dir, "onegpu", "executor: none\ngpus: [0]\n")
    result = run_ns(
        "run_cmd",
        "--cluster",
        "onegpu",
        "--config_dir",
        str(config_dir),
        "--expname",
        "e",
        "--num_gpus",
        "2",
        "echo hi",
    )
    assert_clean_error(result, "2 GPUs", "offers 1")
    assert_nothing_submitted()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run_cmd", "--expname", "e", "--num_gpus", "abc", "echo hi"], ["--num_gpus", "abc"]),
        (["status", "--bogus"], ["--bogus"]),
    ],
    ids=["int-option-not-a-number", "unknown-option-on-command-without-payload"],
)
def test_command_line_parse_errors_are_one_line_too(args, needles):
    """Errors found by the argument parser itself follow the same one-line `error: ...` format."""
    result = run_ns(*args)
    assert_clean_error(result, *needles)
    assert_nothing_submitted()


def test_python_api_invalid_values_are_user_errors():
    cases = [
        {"num_gpus": "--5"},
        {"num_gpus": True},
        {"time": "abc"},
        {"dependency_type": "sometimes"},
        {"run_after": [None]},
        {"dry_run": "perhaps"},
    ]
    for values in cases:
        with pytest.raises(UserError):
            run_cmd(ctx=wrap_arguments("echo hi"), expname="e", **values)
    assert experiments() == []
