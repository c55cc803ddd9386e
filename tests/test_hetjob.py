"""Heterogeneous Slurm jobs: a self-hosted server on its own nodes, its client (and sandbox) on a node of
`--client_partition` (or the cluster config's `client_partition`), as NeMo-Skills places a server on GPU
nodes and the client on a CPU node.

The job model (`Command.group`, `Job.het_resources`) and its batch script (one #SBATCH block per component,
`srun --het-group=i`, the client reaching the server at component 0's first node, which listens on all
interfaces with the job's API key) are checked as text; then one `ns generate` really runs on the local
cluster's `multi` partition with the server and the client on different nodes (sacct's <id>+0 and <id>+1),
and writes what the same generation writes on this machine. The sandbox's port is drawn on the sandbox's node:
a job whose two nodes each hold the other's half of the port range still runs it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_ns, write_config
from multinode_support import REPO, write_multi_cluster
from test_golden_dry_run import check_golden, normalise, sbatch_scripts
from test_slurm import finish

from skills_cli.common.errors import UserError
from skills_cli.common.jsonl import read_jsonl
from skills_cli.pipeline import eval as evaluate
from skills_cli.pipeline import generate, wrap_arguments
from skills_cli.pipeline.cluster import parse_cluster_config
from skills_cli.pipeline.experiment import SubmitOptions, submit_jobs
from skills_cli.pipeline.jobs import Command, Job, Resources
from skills_cli.pipeline.render import SHELL_PORT_DRAW, free_port_lines
from skills_cli.pipeline.store import JobState, Store

HET_SLURM = """
executor: slurm
ssh_tunnel: {host: login.example.com, user: me, job_dir: /lustre/me/jobs}
partition: gpu
cpu_partition: cpu
container_runtime: pyxis
containers: {main: /lustre/images/skills.sqsh, vllm: vllm/vllm-openai:v0.10.1.1, sandbox: /lustre/images/skills.sqsh}
mounts: ["/lustre/me/workspace:/workspace"]
"""
FAST = "++prompt_config=generic/math ++inference.tokens_to_generate=12 ++inference.temperature=0.0"


def het_job(**changes) -> Job:
    """A GPU server in component 0, a client and a sandbox sharing a CPU node in component 1."""
    values = {
        "name": "generate",
        "commands": (Command(argv=("serve",), name="server", gpus=4, background=True),
                     Command(argv=("sandbox",), name="sandbox", background=True, single_task=True, group=1),
                     Command(argv=("client", "it's"), name="client", single_task=True, group=1)),
        "resources": Resources(nodes=2, gpus_per_node=4, time_limit="1:00:00", partition="gpu"),
        "het_resources": (Resources(partition="cpu"),),
        "ports": ("SKILLS_SERVER_PORT",),
        **changes,
    }  # fmt: skip
    return Job(**values)


def dry_run(jobs: list[Job], cluster_yaml: str = HET_SLURM) -> str:
    import yaml

    cluster = parse_cluster_config(yaml.safe_load(cluster_yaml), name="cluster")
    return submit_jobs(jobs, cluster, SubmitOptions(expname="het", dry_run=True)).dry_run_text


# -- the job model ----------------------------------------------------------------------------------------
def test_gpu_shares_are_per_component():
    job = het_job()
    assert job.is_heterogeneous and [c.name for c in job.commands_of(1)] == ["sandbox", "client"]
    assert job.gpu_slices() == [(0, 4), (0, 0), (0, 0)]  # the server alone in its component: all 4 GPUs


@pytest.mark.parametrize("changes,message", [
    ({"het_resources": ()}, r"command 'sandbox' names a group the job does not have"),
    ({"het_resources": (Resources(), Resources())}, r"group 2 of job 'generate' runs no command"),
    ({"resources": Resources(gpus_per_node=2)}, r"group 0 of job 'generate': its commands ask for 4 GPUs"),
    ({"het_resources": (Resources(gpus_per_node=1),),
      "commands": (Command(argv=("serve",), name="server", background=True),
                   Command(argv=("a",), name="a", gpus=1, group=1), Command(argv=("b",), name="b", group=1))},
     r"only group 0 may share its GPUs among several commands"),
])  # fmt: skip
def test_bad_component_layouts_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        het_job(**changes)


def test_local_executors_refuse_a_heterogeneous_job_built_through_the_api(isolated_home):
    import yaml

    cluster = parse_cluster_config(yaml.safe_load("executor: none"), name="local")
    with pytest.raises(UserError, match=r"job 'generate' is a heterogeneous job .*local executors run on one machine"):
        submit_jobs([het_job(resources=Resources(gpus_per_node=0), commands=(
            Command(argv=("serve",), name="server", background=True), Command(argv=("c",), name="client", group=1)))],
            cluster, SubmitOptions(expname="het-local"))  # fmt: skip
    assert not Store().has_experiment("het-local")


def test_the_sinfo_size_check_covers_every_component():
    import yaml

    from skills_cli.pipeline.executors.slurm import SlurmExecutor, partition_sizes

    executor = SlurmExecutor(parse_cluster_config(yaml.safe_load(HET_SLURM), name="cluster"))
    offered = partition_sizes(["SINFO gpu*|gpu:8|4", "SINFO cpu|(null)|2"])
    fits, too_wide = het_job(), het_job(het_resources=(Resources(partition="cpu", nodes=3),))
    executor._check_sizes(SimpleNamespace(jobs=[SimpleNamespace(job=fits)]), offered)
    with pytest.raises(UserError, match=r"job 'generate' asks for 3 nodes; partition 'cpu' of cluster 'cluster' has 2"):
        executor._check_sizes(SimpleNamespace(jobs=[SimpleNamespace(job=too_wide)]), offered)


# -- the batch script -------------------------------------------------------------------------------------
def test_batch_script_has_one_block_per_component_and_steps_in_their_component(isolated_home):
    (script,) = sbatch_scripts(normalise(dry_run([het_job()]), isolated_home)).values()
    header = script.split("# skills-cli:")[0].strip().splitlines()
    hetjob = header.index("#SBATCH hetjob")
    assert header[1:hetjob] == ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=4",
                                "#SBATCH --time=1:00:00", "#SBATCH --partition=gpu", "#SBATCH --no-requeue"]  # fmt: skip
    assert header[hetjob + 1 :] == ["#SBATCH --nodes=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --partition=cpu",
                                    "#SBATCH --exclusive", "#SBATCH --no-requeue"]  # fmt: skip
    # each step logs beside the batch log under the job's own id (srun's %j would be the component's)
    log = '--output=/lustre/me/jobs/het/logs/generate-"$SLURM_JOB_ID"-{}.log '
    found = [
        [line for line in script.splitlines() if log.format(name) in line] for name in ("server", "sandbox", "client")
    ]
    (server,), (sandbox,), (client,) = found  # one step each
    assert server.startswith("srun --het-group=0 --nodes=2 --ntasks-per-node=1 ")
    assert sandbox.startswith("srun --het-group=1 --nodes=1 --ntasks=1 ")
    assert client.startswith("srun --het-group=1 --nodes=1 --ntasks=1 ") and "'it'\"'\"'s'" in client
    assert "CUDA_VISIBLE_DEVICES" not in script  # each GPU command is alone in its component: all of its GPUs
    # the client finds the server at component 0's first node; the key is made at run time, in no file
    assert (
        'export SKILLS_CLI_HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST_HET_GROUP_0" | head -n1)' in script
    )
    assert "export SKILLS_SERVER_API_KEY=$(od -An -tx1 -N32 /dev/urandom" in script
    # squeue prints one end time per component: the earliest is the deadline
    assert '_skills_end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null | sort | head -n1)' in script


def test_containers_of_other_engines_get_the_head_node(isolated_home):
    docker = HET_SLURM.replace("container_runtime: pyxis", "container_runtime: docker")
    (script,) = sbatch_scripts(normalise(dry_run([het_job()], docker), isolated_home)).values()
    client = next(line for line in script.splitlines() if "-client.log" in line)
    assert "-e SKILLS_CLI_HEAD_NODE" in client and "-e SKILLS_SERVER_API_KEY" in client


# -- ns eval / ns generate: the option ------------------------------------------------------------------
def het_eval(config_dir, overrides="++code_execution=true", **extra):
    values = {"benchmarks": "gsm8k", "data_dir": "/workspace/data", "output_dir": "/workspace/evals",
              "model": "/workspace/model", "server_type": "vllm", "server_gpus": 8, "server_nodes": 2,
              "client_partition": "cpu", **extra}  # fmt: skip
    return evaluate(ctx=wrap_arguments(f"++inference.tokens_to_generate=1024 {overrides}"),
                    cluster="cluster", config_dir=str(config_dir), expname="het", dry_run=True, **values)  # fmt: skip


def test_eval_with_a_client_partition_golden(config_dir, isolated_home):
    write_config(config_dir, "cluster", HET_SLURM)
    text = normalise(het_eval(config_dir).dry_run_text, isolated_home)
    check_golden("eval_hetjob.txt", text)
    scripts = sbatch_scripts(text)
    assert list(scripts) == ["gsm8k-generate", "gsm8k-grade", "summarize"]
    script = scripts["gsm8k-generate"]
    assert script.count("#SBATCH hetjob") == 1 and "#SBATCH --partition=cpu\n#SBATCH --exclusive" in script
    # the server listens beyond loopback and requires the job's key, as any server other nodes reach
    assert "--host 0.0.0.0" in script and 'VLLM_API_KEY="${SKILLS_SERVER_API_KEY:?' in script
    steps = {name: line for line in script.splitlines() for name in ("server", "sandbox", "client")
             if line.startswith("srun ") and f"-{name}.log" in line}  # fmt: skip
    assert "--het-group=0 --nodes=2" in steps["server"]  # Ray over the server's two nodes
    assert "--het-group=1 --nodes=1" in steps["client"] and "--het-group=1 --nodes=1" in steps["sandbox"]
    assert "hetjob" not in scripts["gsm8k-grade"] + scripts["summarize"]  # no server there: one allocation


def test_each_port_is_drawn_on_the_node_that_binds_it(config_dir, isolated_home):
    """The server binds on component 0's first node, where the batch script runs; the sandbox on component 1's
    node, so a one-task step there draws its port, the fallback without python3 included. Without a client
    partition both are drawn in the script. An empty draw (the step could not start) ends the job there."""
    write_config(config_dir, "cluster", HET_SLURM)
    draws, checks = {}, {}
    for apart in ("cpu", None):
        script = sbatch_scripts(normalise(het_eval(config_dir, client_partition=apart).dry_run_text, isolated_home))
        lines = script["gsm8k-generate"].splitlines()
        draws[apart] = {line.split("=")[0].removeprefix("export "): line[line.index("=$(") + 3 : -1]
                        for line in lines if line.startswith("export SKILLS_") and "_PORT=" in line}  # fmt: skip
        checks[apart] = [line for line in lines if line.startswith(': "${SKILLS_') and "_PORT:?" in line]
    here = f"python3 -m skills_cli.common.ports 2>/dev/null || {{ {SHELL_PORT_DRAW}; }}"
    # the 2-node server's own rendezvous port (Ray's head) binds on its head node too
    server = {"SKILLS_SERVER_PORT": here, "SKILLS_SERVER_DIST_PORT": here}
    there = f"srun --het-group=1 --nodes=1 --ntasks=1 bash -c '{here}'"
    assert draws["cpu"] == {**server, "SKILLS_SANDBOX_PORT": there}
    assert draws[None] == {**server, "SKILLS_SANDBOX_PORT": here}
    assert checks["cpu"][-1] == ': "${SKILLS_SANDBOX_PORT:?no free port could be drawn on the node of component 1}"'
    assert len(checks["cpu"]) == len(checks[None]) == 3


def test_without_python3_the_port_drawn_is_one_nothing_listens_on(tmp_path):
    """SHELL_PORT_DRAW, run by bash with no python3 on PATH: bash's generator seeded, its first port made busy
    (a listening socket), so the draw has to pass it over."""
    bash = shutil.which("bash")
    seeded = "RANDOM=7; "
    first = int(subprocess.run([bash, "-c", seeded + "echo $(( 20000 + RANDOM % 12768 ))"], capture_output=True,
                               text=True, check=True).stdout)  # fmt: skip
    line = next(line for line in free_port_lines(Job(name="j", commands=(Command(argv=("x",)),)), "P")
                if line.startswith("export "))  # fmt: skip
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", first))
        busy.listen(1)
        drawn = subprocess.run([bash, "-c", f"{seeded}{line}; echo $P"], env={"PATH": str(tmp_path)},
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert 20000 <= int(drawn) < 32000 and int(drawn) != first


def test_a_port_step_that_cannot_start_ends_the_job_saying_so(tmp_path):
    """The draw on component 1's node, with no srun to start it (PATH empty): the script stops at the check."""
    job = Job(name="j", commands=(Command(argv=("x",)), Command(argv=("y",), name="s", group=1, binds=("P",))),
              het_resources=(Resources(),))  # fmt: skip
    lines = free_port_lines(job, "P")
    ran = subprocess.run([shutil.which("bash"), "-c", "\n".join([*lines, "echo started"])],
                         env={"PATH": str(tmp_path)}, capture_output=True, text=True)  # fmt: skip
    assert ran.returncode != 0 and "started" not in ran.stdout
    assert "P: no free port could be drawn on the node of component 1" in ran.stderr


def test_the_cluster_configs_client_partition_is_the_default(config_dir, isolated_home):
    write_config(config_dir, "cluster", HET_SLURM + "client_partition: cpu\n")
    scripts = sbatch_scripts(normalise(het_eval(config_dir, client_partition=None).dry_run_text, isolated_home))
    assert scripts["gsm8k-generate"].count("#SBATCH hetjob") == 1


@pytest.mark.parametrize("extra,message", [
    ({"server_address": "http://h:1/v1", "model": None, "server_gpus": 0, "server_nodes": 1},
     "--client_partition places the client apart from a hosted server; --server_address uses a running one"),
    ({"server_type": "trtllm"}, "server_type trtllm cannot listen on 0.0.0.0"),
    ({"client_partition": "a b"}, "invalid partition name 'a b'"),
])  # fmt: skip
def test_bad_client_partitions_fail_before_submission(config_dir, isolated_home, extra, message):
    write_config(config_dir, "cluster", HET_SLURM.replace("sandbox:", "trtllm: t, sandbox:"))
    with pytest.raises(UserError, match=message):
        het_eval(config_dir, overrides="", **extra)
    assert not Store().has_experiment("het")


def test_a_client_partition_off_slurm_is_one_error_line(tmp_path, config_dir):
    data = tmp_path / "in.jsonl"
    data.write_text('{"problem": "1+1?"}\n')
    result = run_ns("generate", "--input_file", str(data), "--output_dir", str(tmp_path / "o"), "--model", str(tmp_path),
                    "--client_partition", "cpu", "--expname", "bad", "++prompt_config=generic/math")  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: --client_partition runs a heterogeneous job, which needs executor: "
                                     "slurm (cluster 'local' has executor: none)")  # fmt: skip
    assert not Store().has_experiment("bad")
    write_config(config_dir, "local_het", "executor: none\nclient_partition: cpu\n")
    config = run_ns("generate", "--cluster", "local_het", "--config_dir", str(config_dir), "--input_file", str(data),
                    "--output_dir", str(tmp_path / "o"), "--model", str(tmp_path), "++prompt_config=generic/math")  # fmt: skip
    assert config.returncode == 2 and "client_partition only applies to executor: slurm" in config.stderr


# -- for real, on the local cluster ---------------------------------------------------------------------
def sacct_components(job_id: str) -> dict[str, tuple[str, str, str, str]]:
    """{`<id>+<component>`: (node list, state, start, end)} of a heterogeneous job."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "--format=JobID,NodeList,State,Start,End"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return {fields[0]: tuple(fields[1:5]) for fields in (line.split("|") for line in out.strip().splitlines())}


def generations(folder: Path) -> dict[int, str]:
    return {row["id"]: row["generation"] for row in read_jsonl(folder / "output.jsonl")}


@pytest.mark.infra
def test_generate_with_the_client_on_another_node_of_the_cluster(infra, tmp_path_factory, tmp_path):
    """The cluster config's client_partition: the hf server in component 0, the client in component 1, on
    different nodes; the client reaches the server by its node's name with the job's key and writes what the
    same generation writes on this machine."""
    from skills_cli.inference.tiny_model import build_tiny_model

    shared = tmp_path_factory.mktemp("hetjob")  # under /tmp: every node of the cluster sees it
    model = str(build_tiny_model(shared / "tiny"))
    data = shared / "in.jsonl"
    data.write_text("".join(json.dumps({"id": i, "problem": f"What is {i} + {i + 1}?"}) + "\n" for i in range(4)))
    configs = write_multi_cluster(infra, shared, shared / "jobs", extra="client_partition: multi\n")
    generate(ctx=wrap_arguments(FAST), cluster="slurm_multi", config_dir=str(configs), input_file=str(data),
             output_dir=str(shared / "het"), model=model, expname="het", time="00:10:00")  # fmt: skip
    generate(ctx=wrap_arguments(FAST), input_file=str(data), output_dir=str(tmp_path / "here"), model=model,
             expname="here")  # fmt: skip
    (record,) = finish("het", timeout=300)
    components = sacct_components(record.external_id)
    print("sacct:", components)
    assert record.state is JobState.SUCCEEDED, (record, components)
    assert set(components) == {f"{record.external_id}+0", f"{record.external_id}+1"}, components
    server, client = components[f"{record.external_id}+0"], components[f"{record.external_id}+1"]
    assert server[0] != client[0] and server[1] == client[1] == "COMPLETED", components
    (here,) = finish("here", timeout=300)
    assert here.state is JobState.SUCCEEDED, here
    assert generations(shared / "het") == generations(tmp_path / "here") and len(generations(shared / "het")) == 4
    # each step's log sits beside the batch log under the job's own id, where `ns logs` reads it
    client_log = Path(record.log_path[: -len(".log")] + "-client.log")
    assert client_log.is_file(), sorted(p.name for p in client_log.parent.iterdir())
    assert f"server http://{server[0]}:" in client_log.read_text()  # by the server node's name, not 127.0.0.1


@pytest.mark.infra
def test_eval_with_the_client_partition_option_grades_on_another_node(infra, tmp_path_factory):
    """`ns eval --client_partition`: the server in component 0, the client (generation and grading) in component
    1 on another node; the graded results and metrics are written as by any eval."""
    from skills_cli.inference.tiny_model import build_tiny_model
    from skills_cli.pipeline import prepare_data

    shared = tmp_path_factory.mktemp("hetjob_eval")  # under /tmp: every node of the cluster sees it
    model = str(build_tiny_model(shared / "tiny"))
    prepare_data(benchmarks=["arith"], output_dir=str(shared / "data"))
    configs = write_multi_cluster(infra, shared, shared / "jobs")
    evaluate(ctx=wrap_arguments("++inference.tokens_to_generate=8"), cluster="slurm_multi", config_dir=str(configs),
             benchmarks="arith", data_dir=str(shared / "data"), output_dir=str(shared / "evals"), model=model,
             server_type="hf", max_samples=6, client_partition=infra["SKILLS_INFRA_MULTI_PARTITION"],
             expname="het-eval", time="00:10:00")  # fmt: skip
    records = finish("het-eval", timeout=300)
    assert [r.state for r in records] == [JobState.SUCCEEDED] * len(records), run_ns("logs", "het-eval").stdout[-3000:]
    hosting = [r for r in records if len(sacct_components(r.external_id)) == 2]
    assert hosting, [sacct_components(r.external_id) for r in records]
    for record in hosting:
        components = sacct_components(record.external_id)
        server, client = components[f"{record.external_id}+0"], components[f"{record.external_id}+1"]
        assert server[0] != client[0] and server[1] == client[1] == "COMPLETED", components
    graded = read_jsonl(shared / "evals" / "eval-results" / "arith" / "output.jsonl")
    assert len(graded) == 6 and all("predicted_answer" in row for row in graded)
    metrics = json.loads((shared / "evals" / "metrics.json").read_text())
    assert metrics["arith"]["greedy"]["num_entries"] == 6


# -- ports: drawn on the node that binds them ------------------------------------------------------------
NODES_STATE = Path("/tmp/skills-cli-infra/nodes")  # tests/infra/nodes.sh: <node>.cid per container node
# holds every port of the job port range on a node except [free_low, free_high), until its stdin closes
HOLD_PORTS = """
import resource, socket, sys
from skills_cli.common.ports import PORT_RANGE
free_low, free_high = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
held = []
for port in [*range(PORT_RANGE[0], free_low), *range(free_high, PORT_RANGE[1] + 1)]:
    probe = socket.socket()
    try:
        probe.bind(("", port))
        probe.listen(1)
        held.append(probe)
    except OSError:
        probe.close()
print("holding", len(held), flush=True)
sys.stdin.read()
"""
# the client: the sandbox beside it answers at the port the job told it, and runs code
CALL_SANDBOX = """
import os, socket
from skills_cli.sandbox.client import SandboxClient
client = SandboxClient()
client.wait_until_ready(timeout=30)
result = client.run("print(6 * 7)")
print("SANDBOX", socket.gethostname(), os.environ["SKILLS_SANDBOX_PORT"], result.status, result.stdout.strip())
"""


def hold_ports(node: str, free: range) -> subprocess.Popen:
    """Bind (and listen on) every job port of a container node outside `free`; released when stdin closes."""
    cid = (NODES_STATE / f"{node}.cid").read_text().strip()
    holder = subprocess.Popen(["docker", "exec", "-i", "-e", f"PYTHONPATH={REPO}", cid, "python3", "-c", HOLD_PORTS,
                               str(free.start), str(free.stop)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().startswith("holding "), f"could not hold the ports of {node}"
    return holder


def sandbox_het_job(cluster) -> Job:
    """Component 0 only names its node; component 1 runs the sandbox and a client calling it (as ns generate
    --client_partition with ++code_execution places them), on another node."""
    from skills_cli.pipeline.sandbox import with_sandbox

    client = Command(argv=(cluster.python_executable, "-c", CALL_SANDBOX), name="client", single_task=True, group=1)
    job = with_sandbox(Job(name="sandbox-apart", commands=(Command(argv=("hostname",), name="head"), client),
                           resources=Resources(time_limit="00:05:00"), het_resources=(Resources(),)),
                       cluster, "the test")  # fmt: skip
    return dataclasses.replace(job, commands=tuple(dataclasses.replace(command, group=1) if command.name == "sandbox"
                                                   else command for command in job.commands))  # fmt: skip


@pytest.mark.infra
def test_the_sandbox_port_is_drawn_on_the_sandboxs_node(infra, tmp_path_factory):
    """Each container node holds every job port but its own half of the range, so a port drawn free on one node
    is busy on the other: drawn on component 0's node (where the batch script runs), the sandbox on component
    1's node could not bind it. Drawn there, it binds, and the client beside it gets the port."""
    from skills_cli.common.ports import PORT_RANGE
    from skills_cli.pipeline.cluster import load_cluster_config

    nodes = sorted(path.stem for path in NODES_STATE.glob("*.cid"))
    assert len(nodes) == 2, nodes
    middle = (PORT_RANGE[0] + PORT_RANGE[1] + 1) // 2
    free = {nodes[0]: range(PORT_RANGE[0], middle), nodes[1]: range(middle, PORT_RANGE[1] + 1)}
    others = [node for node in infra["SKILLS_INFRA_MULTI_NODES"].replace("\\", "").split(",") if node not in free]
    shared = tmp_path_factory.mktemp("hetjob_ports")  # under /tmp: every node of the cluster sees it
    exclude = f"sbatch_args: {{exclude: '{','.join(others)}'}}\n" if others else ""
    configs = write_multi_cluster(infra, shared, shared / "jobs", extra=exclude + "client_partition: multi\n")
    cluster = load_cluster_config("slurm_multi", str(configs))
    holders = [hold_ports(node, ports) for node, ports in free.items()]
    try:
        submit_jobs([sandbox_het_job(cluster)], cluster, SubmitOptions(expname="het-ports"))
        (record,) = finish("het-ports", timeout=180)
    finally:
        for holder in holders:
            holder.communicate("")
    components = sacct_components(record.external_id)
    print("sacct:", components)
    client_log = Path(record.log_path[: -len(".log")] + "-client.log")
    said = client_log.read_text() if client_log.is_file() else "(no client log)"
    assert record.state is JobState.SUCCEEDED, (components, said[-2000:])
    node = components[f"{record.external_id}+1"][0]
    assert node != components[f"{record.external_id}+0"][0], components
    (line,) = [line.split() for line in said.splitlines() if line.startswith("SANDBOX ")]
    assert line[1] == node and int(line[2]) in free[node] and line[3:] == ["ok", "42"], line
