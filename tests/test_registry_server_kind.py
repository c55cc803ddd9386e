"""Server kinds are one registry: `--server_type` offers its names, each kind's module holds its argv and
rules. A plugin (a module outside the package, named in $SKILLS_CLI_PLUGINS) adds a kind that `ns generate`
renders, runs and lists, without any change to the package."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_ns
from test_generate_e2e import FAST, problems, tiny_model  # noqa: F401 (tiny_model: a fixture)

from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig, ContainerRuntime
from skills_cli.pipeline.servers import SERVER_KINDS, ServerKind, ServerSpec, server_command, server_kind_choices

# our embedded server under another kind's name; its batch size of 3 tells its argv from the built-in hf one
PLUGIN = """
from skills_cli.pipeline.servers import PORT, SERVER_KINDS, ServerKind


def toy_argv(spec, python):
    return [python, "-m", "skills_cli.inference.server.hf_server", "--model", spec.model, "--host", spec.bind_host,
            "--port", PORT, "--device", "cpu", "--max_batch_size", "3", *spec.args]


SERVER_KINDS.register(ServerKind("toyhf", toy_argv, min_gpus=0, own_image=False))
"""


@pytest.fixture
def toy_plugin(tmp_path, monkeypatch) -> None:
    """The toy kind's plugin, seen by every `ns` started by the test (and the jobs those start)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_server_kind.py").write_text(PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SKILLS_CLI_PLUGINS", "toy_server_kind")


def generate_args(tmp_path, model: str, server_type: str, *extra: str) -> list[str]:
    data = problems(tmp_path / "in.jsonl", 5)
    return ["generate", "--input_file", str(data), "--output_dir", str(tmp_path / "out"), "--model", model,
            "--server_type", server_type, "--expname", "toy", *extra, *FAST.split()]  # fmt: skip


def test_a_plugin_kind_is_rendered_with_its_own_argv(toy_plugin, tmp_path):
    text = run_ns(*generate_args(tmp_path, "/w/model", "toyhf", "--dry_run"), check=True).stdout
    assert "-m skills_cli.inference.server.hf_server --model /w/model --host 127.0.0.1" in text
    assert '--device cpu --max_batch_size 3 2>&1 | tee -a "$SKILLS_CLI_RUN_DIR/server.log"' in text
    assert "++server.server_type=toyhf" in text


def test_a_plugin_kind_serves_a_real_generation(toy_plugin, tiny_model, tmp_path):  # noqa: F811
    run_ns(*generate_args(tmp_path, tiny_model, "toyhf"), check=True)
    rows = [json.loads(line) for line in (tmp_path / "out" / "output.jsonl").read_text().splitlines()]
    assert [row["id"] for row in rows] == list(range(5)) and all(isinstance(r["generation"], str) for r in rows)
    logs = run_ns("logs", "toy", check=True).stdout
    assert "max_batch_size 3" in logs  # the toy kind's server answered, not the built-in hf one


def test_an_unknown_kind_is_one_error_line_naming_every_kind(toy_plugin, tmp_path):
    result = run_ns(*generate_args(tmp_path, "/w/model", "nope", "--dry_run"))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "'nope'" in line and all(name in line for name in ("hf", "openai", "sglang", "toyhf", "trtllm", "vllm"))


# -- the rules each kind carries (in process: a kind registered for the test) ---------------------------------


@pytest.fixture
def kind(request) -> ServerKind:
    """A kind registered for one test: `request.param` are its ServerKind settings."""
    entry = SERVER_KINDS.register(
        ServerKind("toy", lambda spec, python: [python, "serve", spec.model], **request.param)
    )
    yield entry
    SERVER_KINDS.unregister(entry.name)


def containers_cluster(**containers: str) -> ClusterConfig:
    return ClusterConfig(name="c", executor="slurm", container_runtime=ContainerRuntime.PYXIS,
                         containers={"main": "main.sqsh", **containers}, job_dir="/j")  # fmt: skip


def test_built_in_kinds_and_the_external_api():
    assert set(server_kind_choices()) >= {"hf", "openai", "sglang", "trtllm", "vllm"}
    assert not SERVER_KINDS.get("openai").self_hosted
    with pytest.raises(UserError, match=r"cannot host server_type 'openai'; self-hosted types: hf, sglang, trtllm"):
        ServerSpec("openai", "m")
    with pytest.raises(UserError, match="cannot host server_type 'nope'"):
        ServerSpec("nope", "m")


@pytest.mark.parametrize("kind", [{"min_gpus": 2}], indirect=True)
def test_a_kinds_gpu_and_node_rules(kind):
    with pytest.raises(UserError, match="server_type toy needs --server_gpus >= 2"):
        ServerSpec("toy", "m", gpus=1)
    with pytest.raises(UserError, match="server_type toy runs on one node; use sglang or vllm for --server_nodes > 1"):
        ServerSpec("toy", "m", gpus=2, nodes=2)
    assert ServerSpec("toy", "m", gpus=2).tensor_parallel == 2


@pytest.mark.parametrize("kind", [{"own_image": True}], indirect=True)
def test_a_kind_with_its_own_image_needs_its_container_role(kind):
    spec = ServerSpec("toy", "m")
    with pytest.raises(UserError, match=r"has no container for server_type 'toy' \(add containers.toy"):
        server_command(spec, containers_cluster())
    command = server_command(spec, containers_cluster(toy="toy.sqsh"))
    assert command.container == "toy" and "python3 serve m" in command.argv[2]  # the image's own python


@pytest.mark.parametrize("kind", [{"own_image": False}], indirect=True)
def test_a_kind_in_our_image_runs_in_main_with_the_clusters_python(kind):
    command = server_command(ServerSpec("toy", "m"), containers_cluster())
    assert command.container == "main" and command.background
    assert command.argv[2].startswith(f'mkdir -p "$SKILLS_CLI_RUN_DIR"; {containers_cluster().python_executable} ')


@pytest.mark.parametrize(
    "kind", [{"multi_node": True, "multi_node_bootstrap": lambda argv, nodes: f"boot {nodes}: {' '.join(argv)}"}],
    indirect=True,
)  # fmt: skip
def test_a_multi_node_kind_starts_through_its_bootstrap(kind):
    assert (
        server_command(ServerSpec("toy", "m", nodes=3), containers_cluster(toy="t")).argv[2]
        == "boot 3: python3 serve m"
    )
    assert "tee -a" in server_command(ServerSpec("toy", "m"), containers_cluster(toy="t")).argv[2]  # one node: logged


@pytest.mark.parametrize("kind", [{"loopback_only": "it has no API key option"}], indirect=True)
def test_a_loopback_only_kind_refuses_other_interfaces(kind):
    assert ServerSpec("toy", "m").bind_host == "127.0.0.1"
    with pytest.raises(UserError, match="server_type toy cannot listen on 0.0.0.0: it has no API key option"):
        ServerSpec("toy", "m", host="0.0.0.0")
