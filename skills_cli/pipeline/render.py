"""Pure renderers: a planned job -> the exact argv / scripts an executor runs, and what `--dry_run` prints.

Nothing here touches the network, Docker or Slurm; tests pin these texts (golden files).
"""

from __future__ import annotations

from collections.abc import Mapping

from skills_cli.common.ports import DEFAULT_EPHEMERAL_LOW, LOWEST_PORT
from skills_cli.inference.server.auth import api_key_names
from skills_cli.pipeline import secrets
from skills_cli.pipeline.cluster import ClusterConfig, ContainerRuntime
from skills_cli.pipeline.jobs import Command, Job, Mount, Resources, parse_time_limit
from skills_cli.pipeline.plan import Plan, PlannedJob, safe_name
from skills_cli.pipeline.shell import Raw, check_env_name, env_prefix, export_lines, quote, quote_argv

# Slurm variables forwarded into docker/podman containers by name.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES",
              "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_SUBMIT_DIR",
              "SLURMD_NODENAME", "SLURM_STEP_ID")  # fmt: skip  # the last two: common/node_rendezvous.py


def job_own_env(plan: Plan, planned: PlannedJob, code_dir: str) -> dict[str, str]:
    """The job's env and identity (no secrets: these values are written into scripts and specs)."""
    return {
        **planned.job.env,
        "SKILLS_CLI_EXPNAME": plan.expname,
        "SKILLS_CLI_JOB_NAME": planned.job.name,
        "SKILLS_CLI_JOB_UID": planned.uid,
        "SKILLS_CLI_CODE_DIR": code_dir,
        "SKILLS_CLI_RUN_DIR": planned.run_dir,
    }


def job_env(plan: Plan, planned: PlannedJob, code_dir: str) -> dict[str, str]:
    """Environment shared by every command of a job: cluster env, job env, identity, shipped code."""
    return {**plan.env, **job_own_env(plan, planned, code_dir)}


def cluster_env_names(plan: Plan, planned: PlannedJob, code_dir: str) -> list[str]:
    """The cluster's env_vars this job gets (those its own env does not override). Their values are secrets:
    they travel from the submitting process into the job's environment and are never written to a file."""
    own = job_own_env(plan, planned, code_dir)
    return [name for name in plan.env if name not in own]


HEAD_NODE_ENV = "SKILLS_CLI_HEAD_NODE"  # multi-node and heterogeneous jobs: the first node's host name


def has_head_node(job: Job) -> bool:
    """Jobs whose commands meet across nodes name a head node: the first node of component 0, where the batch
    script runs (rendezvous, Ray, and the model server a heterogeneous job's client connects to)."""
    return job.resources.nodes > 1 or job.is_heterogeneous


def head_node_line(job: Job) -> str:
    # in a heterogeneous job's batch script the job's node list is component 0's: named explicitly all the same
    nodes = "SLURM_JOB_NODELIST_HET_GROUP_0" if job.is_heterogeneous else "SLURM_JOB_NODELIST"
    return f'export {HEAD_NODE_ENV}=$(scontrol show hostnames "${nodes}" | head -n1)'


def slurm_deadline_line(limit_seconds: int, heterogeneous: bool = False) -> str:
    """In-job code (trainers) saves a checkpoint before $SKILLS_CLI_DEADLINE, ahead of the scheduler's kill: the
    job's end time as Slurm has it (`squeue %e`: a limit changed with `scontrol update` or a reservation's end
    counts), else, when squeue cannot tell, the script's start plus the time limit. An empty answer must not reach
    `date -d`, which reads "" as today's midnight. squeue prints one line per component of a heterogeneous job:
    the earliest end counts (ISO times sort as text)."""
    earliest = " | sort | head -n1" if heterogeneous else ""
    return (f'_skills_end=$(squeue -h -j "$SLURM_JOB_ID" -o %e 2>/dev/null{earliest})\n'
            'export SKILLS_CLI_DEADLINE=$({ [ -n "$_skills_end" ] && date -d "$_skills_end" +%s; } 2>/dev/null '
            f"|| echo $(( $(date +%s) + {limit_seconds} )))")  # fmt: skip


def runtime_env_names(planned: PlannedJob) -> list[str]:
    """Variables the job script computes at run time (free ports, server API key, head node), forwarded into
    containers."""
    job = planned.job
    return [*job.ports, *api_key_names(job.ports), *([HEAD_NODE_ENV] if has_head_node(job) else [])]


def all_mounts(cluster: ClusterConfig, planned: PlannedJob, code_dir: str) -> list[Mount]:
    """Cluster mounts, job mounts, the shipped code and the run dir, at the same paths inside as outside."""
    own = [Mount(code_dir, code_dir, read_only=True), Mount(planned.run_dir, planned.run_dir)]
    return [*cluster.mount_list(), *planned.job.mounts, *own]


# -- containers -----------------------------------------------------------------------------------------
def engine_run_argv(
    engine: str,
    image: str,
    command: Command,
    mounts: list[Mount],
    env_names: list[str],
    name: str | None,
    labels: Mapping[str, str],
    gpu_devices: str | None,
) -> list[str]:
    """`docker run` / `podman run` argv. Env values come from the client's environment (`-e NAME`), so
    secrets never appear on a command line."""
    # docker's --init (tini) reaps zombies and forwards signals; podman's needs catatonit, often absent.
    argv = [engine, "run", "--rm", *(["--init"] if engine == "docker" else []), "--network=host", "--ipc=host"]
    if name:
        argv += ["--name", name]
    for key, value in labels.items():
        label = f"{key}={value}"
        argv += ["--label", Raw(label) if isinstance(value, Raw) else label]
    for mount in mounts:
        argv += ["-v", str(mount)]
    for env_name in env_names:
        argv += ["-e", env_name]
    if gpu_devices is not None:
        argv += ["--gpus", gpu_devices]
    # The project image may set an entrypoint; jobs give the full command themselves.
    return argv + ["--entrypoint", "", image, *command.argv]


def apptainer_argv(image: str, command: Command, mounts: list[Mount], with_gpus: bool) -> list[str]:
    argv = ["apptainer", "exec"]
    if with_gpus:
        argv.append("--nv")
    for mount in mounts:
        argv += ["--bind", str(mount)]
    return argv + [image, *command.argv]


# -- local executors ------------------------------------------------------------------------------------
def local_container_name(planned: PlannedJob, command: Command) -> str:
    return f"skills-{planned.uid}-{safe_name(command.name)}".lower()


def local_command_argv(
    plan: Plan, planned: PlannedJob, command: Command, code_dir: str, env_names: list[str], gpu_devices: str | None
) -> list[str]:
    """What the local supervisor execs for one command: the argv itself, or a `docker run` around it."""
    if not plan.cluster.uses_containers:
        return list(command.argv)
    image = plan.cluster.container_image(command.container)
    return engine_run_argv(
        "docker", image, command, all_mounts(plan.cluster, planned, code_dir), env_names,
        name=local_container_name(planned, command),
        labels={"skills-cli.job-uid": planned.uid},
        gpu_devices=None if gpu_devices is None else f'"device={gpu_devices}"',
    )  # fmt: skip


def local_command_env(plan: Plan, planned: PlannedJob, command: Command, code_dir: str) -> dict[str, str]:
    env = {**job_env(plan, planned, code_dir), **command.env}
    env["PYTHONPATH"] = code_dir
    return env


def supervisor_env_names(plan: Plan, planned: PlannedJob, command: Command, code_dir: str) -> list[str]:
    """The cluster's env_vars a local command takes from its supervisor's process environment: the spec
    stores their names only."""
    own = {*command.env, "PYTHONPATH"}
    return [name for name in cluster_env_names(plan, planned, code_dir) if name not in own]


def local_dry_run(plan: Plan, code_dir: str) -> str:
    """The command lines the local supervisors would run, with their waits, in submission order."""
    lines = [f"# experiment {plan.expname!r} on cluster {plan.cluster.name!r} (executor {plan.cluster.executor})"]
    for planned in plan.jobs:
        lines.append(f"\n# job {planned.job.name!r} (uid {planned.uid}), logs in {planned.log_dir}")
        for upstream, kind in planned.internal:
            lines.append(f"# waits for job {upstream!r} ({kind.value})")
        for external in planned.external:
            lines.append(
                f"# waits for {external.record.expname}/{external.record.name} ({external.dependency_type.value})"
            )
        limit = planned.job.resources.time_limit
        if limit:
            lines.append(f"# time limit {limit}")
        for name in planned.job.ports:
            lines.append(f"# {name} is set to a free TCP port when the job starts")
        for name in api_key_names(planned.job.ports):
            lines.append(f"# {name} is set to a new random key when the job starts (never printed)")
        for command, (_offset, count) in zip(planned.job.commands, planned.job.gpu_slices(), strict=True):
            env = local_command_env(plan, planned, command, code_dir)
            gpus = f"<{count} GPUs>" if count else None
            if count:
                env["CUDA_VISIBLE_DEVICES"] = gpus  # type: ignore[assignment]
            names = sorted(env)
            argv = local_command_argv(plan, planned, command, code_dir, names, gpus)
            role = "background" if command.background else "foreground"
            lines.append(f"# command {command.name!r} ({role})")
            shown = secrets.hide_assignments(env, supervisor_env_names(plan, planned, command, code_dir))
            lines.append(env_prefix(shown) + quote_argv(argv))
    return secrets.Masker.for_env(plan.env)("\n".join(lines) + "\n")


# -- Slurm ----------------------------------------------------------------------------------------------
def effective_time_limit(cluster: ClusterConfig, resources: Resources) -> str | None:
    """The job's own limit, else the partition's timeout from the cluster config, else the default."""
    return resources.time_limit or cluster.time_limit_for(cluster.partition_for(resources))


def sbatch_header(cluster: ClusterConfig, planned: PlannedJob) -> list[str]:
    """The #SBATCH lines: one block per component of a heterogeneous job, `#SBATCH hetjob` between blocks."""
    lines = ["#!/bin/bash"]
    for group, resources in enumerate(planned.job.group_resources):
        if group:
            lines.append("#SBATCH hetjob")
        lines += component_header(cluster, resources)
    return lines


def component_header(cluster: ClusterConfig, resources: Resources) -> list[str]:
    """The #SBATCH lines of one allocation (a heterogeneous job's component gets every line: Slurm carries
    only some options over from the previous component)."""
    partition = cluster.partition_for(resources)
    time_limit = effective_time_limit(cluster, resources)
    lines = [
        f"#SBATCH --nodes={resources.nodes}",
        f"#SBATCH --ntasks-per-node={resources.tasks_per_node}",
    ]
    if resources.gpus_per_node:
        lines.append(f"#SBATCH --gpus-per-node={resources.gpus_per_node}")
    if resources.cpus_per_task:
        lines.append(f"#SBATCH --cpus-per-task={resources.cpus_per_task}")
    if resources.memory:
        lines.append(f"#SBATCH --mem={resources.memory}")
    if time_limit:
        lines.append(f"#SBATCH --time={time_limit}")
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if cluster.account:
        lines.append(f"#SBATCH --account={cluster.account}")
    if resources.gpus_per_node == 0 and cluster.cpu_partition and partition == cluster.cpu_partition:
        lines.append("#SBATCH --exclusive")
    if "requeue" not in cluster.sbatch_args:
        # Slurm requeues a job whose node failed and reruns it from the start, silently, with its dependents
        # still waiting: a node failure must fail the job (`ns status` says so, afterok dependents are cancelled).
        # `--dependent_jobs` copies are how our jobs continue; sbatch_args `requeue: ""` restores Slurm's way.
        lines.append("#SBATCH --no-requeue")
    for option, value in cluster.sbatch_args.items():
        lines.append(f"#SBATCH --{option}={value}" if value != "" else f"#SBATCH --{option}")
    return lines


def slurm_command_line(plan: Plan, planned: PlannedJob, index: int, code_dir: str, env_names: list[str]) -> str:
    """The srun line of one command, with its container runtime and GPU share."""
    cluster, job = plan.cluster, planned.job
    command = job.commands[index]
    offset, count = job.gpu_slices()[index]
    resources = job.group_resources[command.group]
    srun = ["srun", *([f"--het-group={command.group}"] if job.is_heterogeneous else [])]
    if command.single_task:
        srun += ["--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1"]
    else:
        srun += [f"--nodes={resources.nodes}", f"--ntasks-per-node={resources.tasks_per_node}", "--kill-on-bad-exit=1"]
    prefix = ""
    if len(job.commands) > 1:
        srun += ["--overlap", step_log_option(planned, command)]
        if resources.gpus_per_node and len(job.commands_of(command.group)) > 1:
            prefix = (
                f"CUDA_VISIBLE_DEVICES=$(_skills_gpu_slice {offset} {count}) " if count else "CUDA_VISIBLE_DEVICES= "
            )
    runtime = cluster.container_runtime
    mounts = all_mounts(cluster, planned, code_dir)
    argv: list[str] = list(command.argv)
    if runtime is ContainerRuntime.PYXIS:
        image = cluster.container_image(command.container)
        srun += [f"--container-image={image}", "--no-container-mount-home",
                 "--container-mounts=" + ",".join(str(m) for m in mounts)]  # fmt: skip
    elif runtime is ContainerRuntime.APPTAINER:
        argv = apptainer_argv(cluster.container_image(command.container), command, mounts, with_gpus=count > 0)
    elif runtime in (ContainerRuntime.DOCKER, ContainerRuntime.PODMAN):
        gpus = Raw('"\\"device=${CUDA_VISIBLE_DEVICES}\\""') if count else None
        argv = engine_run_argv(
            runtime.value, cluster.container_image(command.container), command, mounts,
            env_names + (["CUDA_VISIBLE_DEVICES"] if count else []) + list(SLURM_VARS),
            name=None, labels={"skills-cli.slurm-job": Raw("${SLURM_JOB_ID}")}, gpu_devices=gpus,
        )  # fmt: skip
    env_words = env_prefix(command.env) if command.env else ""
    return prefix + env_words + quote_argv(srun) + " " + quote_argv(argv)


def step_log_option(planned: PlannedJob, command: Command) -> str:
    """srun's `--output` of one command of a job with several: `<stem>-<job id>-<command>.log`, beside the batch
    log, where `ns logs` finds it. srun's %j is a heterogeneous job's component id (another number in every
    component), so there the batch shell's $SLURM_JOB_ID, the job's own id, is written instead."""
    before, after = f"{planned.log_dir}/{planned.file_stem}-", f"-{safe_name(command.name)}.log"
    if not planned.job.is_heterogeneous:
        return f"--output={before}%j{after}"
    return Raw(f'--output={quote(before)}"$SLURM_JOB_ID"{quote(after)}')


def binding_group(job: Job, port: str) -> int:
    """The component whose node binds `port`: that of the command declaring it (`Command.binds`: the server,
    the sandbox); else component 0, whose first node runs the batch script. A command that only calls a port
    (a client) reads it from its environment."""
    return next((command.group for command in job.commands if port in command.binds), 0)


# Where python3 is missing (a bare node under a container runtime): a random port of common/ports.py's range for
# Linux's default ephemeral ports (the node's own setting is not known here), skipping those something listens on
# (bash's /dev/tcp connects only there). Runs where the port binds.
SHELL_PORT_DRAW = (
    f"for _ in 1 2 3 4 5 6 7 8; do p=$(( {LOWEST_PORT} + RANDOM % {DEFAULT_EPHEMERAL_LOW - LOWEST_PORT} )); "
    "(: </dev/tcp/127.0.0.1/$p) 2>/dev/null || break; done; echo $p"
)


def free_port_lines(job: Job, port: str) -> list[str]:
    """`export PORT=<a free port>` (common/ports.py: random, bind-checked; SHELL_PORT_DRAW if python3 is missing),
    drawn on the node that binds it: there is no telling from one node what is free on another. For a service
    in another component of a heterogeneous job, a one-task step there draws it, fallback included, and the
    batch script exports it to every command, its clients included. A step that cannot start there leaves the
    port empty: the job ends at once, saying so, rather than start its server on no port."""
    group = binding_group(job, port)
    draw = f"python3 -m skills_cli.common.ports 2>/dev/null || {{ {SHELL_PORT_DRAW}; }}"
    if group:
        draw = f"srun --het-group={group} --nodes=1 --ntasks=1 bash -c {quote(draw)}"
    where = f" on the node of component {group}" if group else ""  # no quote mark: bash reads one in ${...}
    return [f"export {port}=$({draw})", f': "${{{port}:?no free port could be drawn{where}}}"']


def sbatch_script(plan: Plan, planned: PlannedJob, code_dir: str, for_display: bool = False) -> str:
    """The whole batch script of one job."""
    cluster, job = plan.cluster, planned.job
    env = job_env(plan, planned, code_dir)
    from_submission = cluster_env_names(plan, planned, code_dir)
    lines = sbatch_header(cluster, planned)
    lines.append(f"# skills-cli: experiment {quote(plan.expname)}, job {quote(job.name)}, uid {planned.uid}")
    lines.append("set -o pipefail")
    # The cluster's env_vars come from the submission's environment (sbatch exports it), never from this file.
    for name in from_submission:
        lines.append(f': "${{{check_env_name(name)}?is not in the job environment (was sbatch --export changed?)}}"')
    own = {name: value for name, value in env.items() if name not in from_submission}
    lines += export_lines(secrets.hide_assignments(own) if for_display else own)
    lines.append(f"export PYTHONPATH={quote(code_dir)}${{PYTHONPATH:+:$PYTHONPATH}}")
    lines.append(f"(umask 077 && mkdir -p {quote(planned.run_dir)})  # our folders are owner-only")
    lines += [line for name in job.ports for line in free_port_lines(job, name)]
    for name in api_key_names(job.ports):
        # the server's API key: made here, at run time, so it is in no file (inference/server/auth.py)
        lines.append(f"export {name}=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \\n')")
    if has_head_node(job):
        lines.append(head_node_line(job))
    limit = effective_time_limit(cluster, job.resources)
    if limit:
        lines.append(slurm_deadline_line(parse_time_limit(limit), job.is_heterogeneous))
    engine = cluster.container_runtime.value
    if cluster.container_runtime in (ContainerRuntime.DOCKER, ContainerRuntime.PODMAN):
        # scancel kills the client, not always the container: remove ours when the script ends.
        lines.append(
            f"trap '{engine} rm -f $({engine} ps -q --filter label=skills-cli.slurm-job=$SLURM_JOB_ID) "
            ">/dev/null 2>&1' EXIT"
        )
    env_names = sorted([*env, "PYTHONPATH", *(["SKILLS_CLI_DEADLINE"] if limit else []), *runtime_env_names(planned)])
    if len(job.commands) == 1:
        lines.append(slurm_command_line(plan, planned, 0, code_dir, env_names))
        return "\n".join(lines) + "\n"
    if job.resources.gpus_per_node and len(job.commands_of(0)) > 1:
        lines.append('_skills_gpu_slice() { echo "$CUDA_VISIBLE_DEVICES" | cut -d, -f$(( $1 + 1 ))-$(( $1 + $2 )); }')
    background, foreground = [], []
    for index, command in enumerate(job.commands):
        lines.append(f"# command {quote(command.name)}")
        lines.append(slurm_command_line(plan, planned, index, code_dir, env_names) + " &")
        (background if command.background else foreground).append(f"_skills_pid_{index}")
        lines.append(f"_skills_pid_{index}=$!")
    lines.append("_skills_rc=0")
    for pid in foreground:
        lines.append(f'wait "${pid}" || {{ _rc=$?; [ "$_skills_rc" = 0 ] && _skills_rc=$_rc; }}')
    for pid in background:
        lines.append(f'kill "${pid}" 2>/dev/null; wait "${pid}" 2>/dev/null')
    lines.append('exit "$_skills_rc"')
    return "\n".join(lines) + "\n"


def script_path(plan: Plan, planned: PlannedJob) -> str:
    return f"{plan.cluster.remote_job_dir}/{safe_name(plan.expname)}/{planned.file_stem}-{planned.uid}.sbatch"


def staging_dir(plan: Plan) -> str:
    """The submission's folder, relative to job_dir: the submission script and the env file."""
    return f".staging/{safe_name(plan.expname)}-{plan.jobs[0].uid}"


def env_file(plan: Plan) -> str:
    """The cluster's env_vars with their values, relative to job_dir: uploaded owner-only, sourced by the
    submission script and removed right after."""
    return f"{staging_dir(plan)}/env.sh"


def env_file_text(plan: Plan, for_display: bool = False) -> str:
    env = secrets.hide_assignments(plan.env, plan.env) if for_display else plan.env
    return "\n".join(export_lines(env)) + "\n"


def submit_script(plan: Plan) -> str:
    """One shell script, run once over the tunnel, that submits the whole graph in dependency order.

    If any sbatch fails, the jobs it already submitted are cancelled: a half-submitted graph would leave
    dependents that can never run.
    """
    lines = ["set -euo pipefail", "_skills_umask=$(umask)",
             "umask 077  # the folders made here are owner-only", "_skills_submitted=''",
             "trap '[ -n \"$_skills_submitted\" ] && scancel $_skills_submitted' ERR"]  # fmt: skip
    dirs = sorted({planned.log_dir for planned in plan.jobs})
    lines.append("mkdir -p " + " ".join(quote(d) for d in dirs))
    if plan.env:
        # sbatch's default --export=ALL carries these values into the jobs (and Slurm's own spool)
        lines.append(f". {quote(env_file(plan))}; rm -f {quote(env_file(plan))}")
    lines.append('umask "$_skills_umask"  # jobs write their outputs with the usual umask')
    variable = {planned.job.name: f"_skills_job_{i}" for i, planned in enumerate(plan.jobs)}
    for planned in plan.jobs:
        argv: list[str] = ["sbatch", "--parsable", f"--job-name={plan.cluster.job_name_prefix}{planned.file_stem}",
                           f"--output={planned.log_dir}/{planned.file_stem}-%j.log"]  # fmt: skip
        dependency = dependency_option(planned, variable)
        if dependency:
            argv += [Raw(dependency), "--kill-on-invalid-dep=yes"]
        argv.append(script_path(plan, planned))
        var = variable[planned.job.name]
        lines.append(f"{var}=$({quote_argv(argv)} | cut -d';' -f1)")
        lines.append(f'_skills_submitted="$_skills_submitted ${var}"')
        lines.append(f'echo "SKILLS_SUBMITTED {planned.uid} ${var}"')
    return "\n".join(lines) + "\n"


def dependency_option(planned: PlannedJob, variable: Mapping[str, str]) -> str:
    """`--dependency=afterok:$J1:123,afterany:$J2`: in-graph ids are shell variables set at submission."""
    groups: dict[str, list[str]] = {}
    for upstream, kind in planned.internal:
        groups.setdefault(kind.value, []).append(f"${variable[upstream]}")
    for external in planned.external:
        groups.setdefault(external.dependency_type.value, []).append(str(external.record.external_id))
    if not groups:
        return ""
    return "--dependency=" + ",".join(f"{kind}:{':'.join(ids)}" for kind, ids in groups.items())


def slurm_dry_run(plan: Plan, code_dir: str) -> str:
    parts = [f"# experiment {plan.expname!r} on cluster {plan.cluster.name!r} (executor slurm, "
             f"container runtime {plan.cluster.container_runtime.value})"]  # fmt: skip
    for planned in plan.jobs:
        parts.append(
            f"\n# ---- {script_path(plan, planned)}\n{sbatch_script(plan, planned, code_dir, for_display=True)}"
        )
    if plan.env:
        parts.append(f"# ---- {plan.cluster.remote_job_dir}/{env_file(plan)} (owner-only, removed once sourced)\n"
                     f"{env_file_text(plan, for_display=True)}")  # fmt: skip
    parts.append(f"# ---- submission (run once on the cluster)\n{submit_script(plan)}")
    return secrets.Masker.for_env(plan.env)("\n".join(parts))
