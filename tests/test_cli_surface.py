"""The command surface: `ns --help`, every command's options in its help, the Python API taking exactly the
same names with the same results, and `ns setup` (flags and interactive) writing configs that load."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_ns

from skills_cli.common.errors import UserError
from skills_cli.pipeline import (
    cancel,
    convert,
    generate,
    logs,
    prepare_data,
    report,
    run_cmd,
    setup,
    start_server,
    status,
    summarize_results,
    train_distill,
    train_dpo,
    train_grpo,
    train_ppo,
    train_rm,
    train_sft,
    wrap_arguments,
)
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline.cluster import ContainerRuntime, load_cluster_config
from skills_cli.pipeline.commands import COMMANDS
from skills_cli.pipeline.store import Store

EXPECTED_COMMANDS = ("run_cmd", "generate", "start_server", "prepare_data", "eval", "summarize_results", "sft",
                     "grpo", "ppo", "dpo", "rm", "distill", "convert", "setup", "status", "logs", "cancel", "report")  # fmt: skip
API = {"run_cmd": run_cmd, "generate": generate, "start_server": start_server, "prepare_data": prepare_data,
       "eval": evaluate, "summarize_results": summarize_results, "sft": train_sft, "grpo": train_grpo, "ppo": train_ppo, "dpo": train_dpo, "rm": train_rm,
       "distill": train_distill, "setup": setup, "status": status, "logs": logs,
       "cancel": cancel, "report": report, "convert": convert}  # fmt: skip
TRAINERS = ("sft", "grpo", "ppo", "dpo", "rm", "distill")
TOP_LEVEL = (*(c for c in EXPECTED_COMMANDS if c not in TRAINERS), "train", "nemo_rl")  # `ns train <trainer>`
UID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{8}")
CODE = re.compile(r"code/[0-9a-f]{16}")


def normalise(text: str) -> str:
    """Generated uids differ per call; the code digest may change if the source is edited between calls."""
    return CODE.sub("code/DIGEST", UID.sub("UID", text))


def help_sections(text: str) -> dict[str, list[str]]:
    """`Options:` / `Arguments:` / `Commands:` blocks of a click help page, as their lines."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        header = re.match(r"^([A-Z][\w ]*):\s*$", line)
        if header:
            current = header.group(1)
            sections[current] = []
        elif current and line.strip():
            sections[current].append(line)
    return sections


def help_flags(text: str) -> set[str]:
    """Every `--flag` declared in the option column (not the ones mentioned in descriptions)."""
    flags = set()
    for block in help_sections(text).values():
        for line in block:
            if re.match(r"^\s{2}-", line):  # an option row starts with its flags
                column = re.split(r"\s{2,}", line.strip())[0]
                flags.update(re.findall(r"--[\w-]+", column))
    return flags


def help_arguments(text: str) -> set[str]:
    block = help_sections(text).get("Arguments", [])
    return {line.split()[0].rstrip(".") for line in block if re.match(r"^\s{2}\w", line)}


def test_top_level_help_lists_every_command():
    result = run_ns("--help", check=True)
    listed = {
        line.split()[0] for line in help_sections(result.stdout).get("Commands", []) if re.match(r"^\s{2}\w", line)
    }
    assert set(TOP_LEVEL) <= listed, result.stdout
    assert {spec.name for spec in COMMANDS if not spec.groups} | {g for spec in COMMANDS for g in spec.groups} == listed
    short = run_ns("-h", check=True)
    assert short.stdout == result.stdout


def test_no_arguments_shows_help():
    result = run_ns()
    assert "Usage:" in result.stdout + result.stderr
    for name in TOP_LEVEL:
        assert name in result.stdout + result.stderr


def test_commands_match_the_python_api():
    assert [spec.name for spec in COMMANDS] == list(EXPECTED_COMMANDS)
    for spec in COMMANDS:
        assert API[spec.name].__name__ == spec.api_name


@pytest.mark.parametrize("spec", COMMANDS, ids=[spec.name for spec in COMMANDS])
def test_command_help_declares_exactly_its_options(spec):
    result = run_ns(*spec.groups[:1], spec.name, "--help", check=True)
    flags = help_flags(result.stdout)
    arguments = help_arguments(result.stdout)
    expected_flags = {"--help"}
    for option in spec.options:
        if option.positional:
            assert option.name in arguments, f"{spec.name}: argument {option.name} not in help\n{result.stdout}"
        else:
            for flag in option.flags:
                assert flag in flags, f"{spec.name}: {flag} not in help\n{result.stdout}"
            expected_flags.update(option.flags)
        assert option.help.split(".")[0].split("(")[0][:25] in " ".join(result.stdout.split()), option.name
    assert flags == expected_flags, f"{spec.name}: help declares {sorted(flags ^ expected_flags)} unexpectedly"
    assert arguments == {o.name for o in spec.options if o.positional}


@pytest.mark.parametrize("spec", COMMANDS, ids=[spec.name for spec in COMMANDS])
def test_python_api_accepts_exactly_the_cli_option_names(spec):
    api = API[spec.name]
    text = run_ns(*spec.groups[:1], spec.name, "--help", check=True).stdout
    cli_names = {flag[2:].replace("-", "_") for flag in help_flags(text)} | help_arguments(text)
    cli_names.discard("help")
    # unknown -> error listing the valid names, which are the CLI's
    with pytest.raises(UserError) as info:
        api(no_such_option=1)
    message = str(info.value)
    assert f"{spec.name}: unknown argument 'no_such_option'" in message
    assert set(message.split("valid: ")[1].split(", ")) == cli_names
    # every CLI name is a known keyword: a wrong value is reported for that option, never as unknown
    required = {o.name: o.choices[0] if o.choices else "x" for o in spec.options if o.default is ...}
    for name in sorted(cli_names):
        with pytest.raises(UserError) as info:
            api(**{**required, name: object()})
        assert f"--{name}:" in str(info.value), f"{spec.name}({name}=...): {info.value}"
    assert Store().experiment_names() == []


def test_python_api_dry_run_text_equals_the_cli():
    cli = run_ns("run_cmd", "--expname", "a", "--dry_run", "echo hi", check=True).stdout
    submission = run_cmd(ctx=wrap_arguments("echo hi"), expname="a", dry_run=True)
    assert submission.records == []
    assert UID.search(cli), cli
    assert normalise(submission.dry_run_text) == normalise(cli)
    assert "bash -c 'echo hi'" in cli
    assert Store().experiment_names() == []


def test_python_api_and_cli_agree_on_options_and_dashed_aliases(config_dir):
    config_dir.joinpath("sl.yaml").write_text(
        "executor: slurm\nssh_tunnel:\n  host: h\n  user: u\n  job_dir: /jobs\npartition: batch\n"
        "timeouts:\n  batch: '2:00:00'\ncontainer_runtime: pyxis\ncontainers:\n  main: /img.sqsh\n"
    )
    args = [
        "--cluster",
        "sl",
        "--config_dir",
        str(config_dir),
        "--expname",
        "e x",
        "--job_name",
        "j k",
        "--num_gpus",
        "2",
        "--num_nodes",
        "3",
        "--num_tasks",
        "2",
        "--time",
        "1:00:00",
        "--mounts",
        "/a:/b",
        "--mounts",
        "/c:/d:ro",
        "--dependent_jobs",
        "1",
        "--dependency_type",
        "afterany",
        "--log_dir",
        "/logs",
    ]
    cli = run_ns("run_cmd", *args, "--dry_run", "python -c 'print(1)'", check=True).stdout
    dashed = [a.replace("_", "-") if a.startswith("--") else a for a in args]
    cli_dashed = run_ns("run_cmd", *dashed, "--dry-run", "python -c 'print(1)'", check=True).stdout
    api = run_cmd(
        ctx=wrap_arguments("python -c 'print(1)'"),
        cluster="sl",
        config_dir=str(config_dir),
        expname="e x",
        job_name="j k",
        num_gpus=2,
        num_nodes=3,
        num_tasks=2,
        time="1:00:00",
        mounts=["/a:/b", "/c:/d:ro"],
        dependent_jobs=1,
        dependency_type="afterany",
        log_dir="/logs",
        dry_run=True,
    ).dry_run_text
    assert normalise(cli) == normalise(cli_dashed) == normalise(api)
    for expected in (
        "#SBATCH --nodes=3",
        "#SBATCH --gpus-per-node=2",
        "#SBATCH --time=1:00:00",
        "/a:/b,/c:/d:ro",
        "j_k-cont1",
        "--dependency=afterany:",
    ):
        assert expected in cli, expected


# -- setup ----------------------------------------------------------------------------------------------
def test_setup_from_flags_writes_a_loadable_config(tmp_path):
    directory = tmp_path / "written"
    result = run_ns(
        "setup",
        "--name",
        "x",
        "--executor",
        "slurm",
        "--ssh_host",
        "h",
        "--ssh_user",
        "u",
        "--job_dir",
        "/j",
        "--config_dir",
        str(directory),
        check=True,
    )
    assert f"{directory}/x.yaml" in " ".join(result.stdout.split())
    config = load_cluster_config("x", str(directory))
    assert config.executor == "slurm"
    assert config.name == "x"
    tunnel = config.ssh_tunnel
    assert (tunnel.host, tunnel.user, tunnel.job_dir, tunnel.port) == ("h", "u", "/j", 22)
    # the same call through the Python API writes the same file
    path = setup(name="y", executor="slurm", ssh_host="h", ssh_user="u", job_dir="/j", config_dir=str(directory))
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("#")]  # noqa: E731
    assert strip(Path(path).read_text()) == strip((directory / "x.yaml").read_text())
    # no silent overwrite
    again = run_ns("setup", "--name", "x", "--executor", "none", "--config_dir", str(directory))
    assert again.returncode == 2 and "--force" in again.stderr, again.stderr
    assert load_cluster_config("x", str(directory)).executor == "slurm"
    run_ns("setup", "--name", "x", "--executor", "none", "--config_dir", str(directory), "--force", check=True)
    assert load_cluster_config("x", str(directory)).executor == "none"


def test_setup_rejects_an_invalid_config_and_writes_nothing(tmp_path):
    directory = tmp_path / "written"
    result = run_ns(
        "setup",
        "--name",
        "x",
        "--executor",
        "slurm",
        "--ssh_host",
        "h",
        "--job_dir",
        "relative",
        "--config_dir",
        str(directory),
    )
    assert result.returncode == 2 and result.stderr.startswith("error: "), result.stderr
    assert not (directory / "x.yaml").exists()
    result = run_ns("setup", "--name", "x", "--executor", "local", "--config_dir", str(directory))
    assert result.returncode == 2 and "containers.main" in result.stderr, result.stderr
    assert not (directory / "x.yaml").exists()


def interactive(directory: Path, answers: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skills_cli", "setup", "--interactive", "--config_dir", str(directory)],
        input="\n".join(answers) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_setup_interactive_local_config(tmp_path):
    directory = tmp_path / "asked"
    # an invalid executor choice is asked again
    result = interactive(directory, ["docker-ish", "local", "mine", "img:1", "/a:/b, /c:/d:ro"])
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_cluster_config("mine", str(directory))
    assert config.executor == "local"
    assert config.containers == {"main": "img:1"}
    assert config.mounts == ["/a:/b", "/c:/d:ro"]


def test_setup_interactive_slurm_config_asks_every_question(tmp_path):
    directory = tmp_path / "asked"
    answers = {
        "Executor": "slurm",
        "Name": "sl",
        "Ssh host": "login.example",
        "Ssh user": "me",
        "Ssh identity": "",
        "Job dir": "/jobs",
        "Account": "acct",
        "Partition": "batch",
        "Container runtime": "docker",
        "Main container": "img:1",
        "Mounts": "/a:/b",
    }
    result = interactive(directory, list(answers.values()))
    for question in answers:
        assert question in result.stdout, f"never asked {question!r}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_cluster_config("sl", str(directory))
    assert config.executor == "slurm"
    assert (config.ssh_tunnel.host, config.ssh_tunnel.user, config.ssh_tunnel.job_dir) == (
        "login.example",
        "me",
        "/jobs",
    )
    assert config.ssh_tunnel.identity is None
    assert (config.account, config.partition) == ("acct", "batch")
    assert config.container_runtime is ContainerRuntime.DOCKER
    assert config.containers == {"main": "img:1"}
    assert config.mounts == ["/a:/b"]


def test_setup_interactive_keeps_values_given_as_flags(tmp_path):
    directory = tmp_path / "asked"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "skills_cli",
            "setup",
            "--interactive",
            "--executor",
            "local",
            "--name",
            "flagged",
            "--config_dir",
            str(directory),
        ],
        input="img:2\n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Name" not in result.stdout and "Executor" not in result.stdout
    config = load_cluster_config("flagged", str(directory))
    assert config.containers == {"main": "img:2"} and config.mounts == []
