"""Pure renderers: a planned job -> the exact argv / scripts an executor runs, and what `--dry_run` prints.

Nothing here touches the network, Docker or Slurm; tests pin these texts (golden files).
"""

from __future__ import annotations

from collections.abc import Mapping

from skills_cli.pipeline.cluster import ClusterConfig, ContainerRuntime
from skills_cli.pipeline.jobs import Command, Mount, Resources, parse_time_limit
from skills_cli.pipeline.plan import Plan, PlannedJob, safe_name
from skills_cli.pipeline.shell import Raw, env_prefix, export_lines, quote, quote_argv

# Slurm variables forwarded into docker/podman containers by name.
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES",
              "SLURM_NTASKS", "SLURM_JOB_NODELIST", "SLURM_SUBMIT_DIR")  # fmt: skip


def job_env(plan: Plan, planned: PlannedJob, code_dir: str) -> dict[str, str]:
    """Environment shared by every command of a job: cluster env, job env, identity, shipped code."""
    env = {
        **plan.env,
        **planned.job.env,
        "SKILLS_CLI_EXPNAME": plan.expname,
        "SKILLS_CLI_JOB_NAME": planned.job.name,
        "SKILLS_CLI_JOB_UID": planned.uid,
        "SKILLS_CLI_CODE_DIR": code_dir,
        "SKILLS_CLI_RUN_DIR": planned.run_dir,
    }
    return env


HEAD_NODE_ENV = "SKILLS_CLI_HEAD_NODE"  # multi-node jobs: the first node's host name


def runtime_env_names(planned: PlannedJob) -> list[str]:
    """Variables the job script computes at run time (free ports, head node), forwarded into containers."""
    return [*planned.job.ports, *([HEAD_NODE_ENV] if planned.job.resources.nodes > 1 else [])]


_SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def hide_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """For printing only (dry runs): values of variables that look like credentials are replaced."""
    return {k: ("<hidden>" if any(w in k.upper() for w in _SECRET_WORDS) else v) for k, v in env.items()}


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


def local_dry_run(plan: Plan, code_dir: str) -> str:
    """The command lines the local supervisors would run, with their waits, in submission order."""
    lines = [f"# experiment {plan.expname!r} on cluster {plan.cluster.name!r} (executor {plan.cluster.executor.value})"]
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
        for command, (_offset, count) in zip(planned.job.commands, planned.job.gpu_slices(), strict=True):
            env = local_command_env(plan, planned, command, code_dir)
            gpus = f"<{count} GPUs>" if count else None
            if count:
                env["CUDA_VISIBLE_DEVICES"] = gpus  # type: ignore[assignment]
            names = sorted(env)
            argv = local_command_argv(plan, planned, command, code_dir, names, gpus)
            role = "background" if command.background else "foreground"
            lines.append(f"# command {command.name!r} ({role})")
            lines.append(env_prefix(hide_secrets(env)) + quote_argv(argv))
    return "\n".join(lines) + "\n"


# -- Slurm ----------------------------------------------------------------------------------------------
def effective_time_limit(cluster: ClusterConfig, resources: Resources) -> str | None:
    """The job's own limit, else the partition's timeout from the cluster config, else the default."""
    return resources.time_limit or cluster.time_limit_for(cluster.partition_for(resources))


def sbatch_header(cluster: ClusterConfig, planned: PlannedJob) -> list[str]:
    resources = planned.job.resources
    partition = cluster.partition_for(resources)
    time_limit = effective_time_limit(cluster, resources)
    lines = [
        "#!/bin/bash",
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
    for option, value in cluster.sbatch_args.items():
        lines.append(f"#SBATCH --{option}={value}" if value != "" else f"#SBATCH --{option}")
    return lines


def slurm_command_line(plan: Plan, planned: PlannedJob, index: int, code_dir: str, env_names: list[str]) -> str:
    """The srun line of one command, with its container runtime and GPU share."""
    cluster, job = plan.cluster, planned.job
    command = job.commands[index]
    offset, count = job.gpu_slices()[index]
    if command.single_task:
        srun = ["srun", "--nodes=1", "--ntasks=1", "--kill-on-bad-exit=1"]
    else:
        srun = ["srun", f"--nodes={job.resources.nodes}", f"--ntasks-per-node={job.resources.tasks_per_node}",
                "--kill-on-bad-exit=1"]  # fmt: skip
    prefix = ""
    if len(job.commands) > 1:
        srun += ["--overlap", f"--output={planned.log_dir}/{planned.file_stem}-%j-{safe_name(command.name)}.log"]
        if job.resources.gpus_per_node:
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


def sbatch_script(plan: Plan, planned: PlannedJob, code_dir: str, for_display: bool = False) -> str:
    """The whole batch script of one job."""
    cluster, job = plan.cluster, planned.job
    env = job_env(plan, planned, code_dir)
    lines = sbatch_header(cluster, planned)
    lines.append(f"# skills-cli: experiment {quote(plan.expname)}, job {quote(job.name)}, uid {planned.uid}")
    lines.append("set -o pipefail")
    lines += export_lines(hide_secrets(env) if for_display else env)
    lines.append(f"export PYTHONPATH={quote(code_dir)}${{PYTHONPATH:+:$PYTHONPATH}}")
    lines.append(f"mkdir -p {quote(planned.run_dir)}")
    for name in job.ports:
        # a free port on this node (common/ports.py: random, bind-checked); $RANDOM only if python3 is missing
        lines.append(f"export {name}=$(python3 -m skills_cli.common.ports 2>/dev/null || echo $(( 20000 + RANDOM % 20000 )))")
    if job.resources.nodes > 1:
        lines.append(f'export {HEAD_NODE_ENV}=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)')
    limit = effective_time_limit(cluster, job.resources)
    if limit:
        # In-job code (trainers) saves a checkpoint before this moment, ahead of the scheduler's kill.
        lines.append(f"export SKILLS_CLI_DEADLINE=$(( $(date +%s) + {parse_time_limit(limit)} ))")
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
    if job.resources.gpus_per_node:
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


def submit_script(plan: Plan) -> str:
    """One shell script, run once over the tunnel, that submits the whole graph in dependency order.

    If any sbatch fails, the jobs it already submitted are cancelled: a half-submitted graph would leave
    dependents that can never run.
    """
    lines = ["set -euo pipefail", "_skills_submitted=''",
             "trap '[ -n \"$_skills_submitted\" ] && scancel $_skills_submitted' ERR"]  # fmt: skip
    dirs = sorted({planned.log_dir for planned in plan.jobs})
    lines.append("mkdir -p " + " ".join(quote(d) for d in dirs))
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
    parts.append(f"# ---- submission (run once on the cluster)\n{submit_script(plan)}")
    return "\n".join(parts)
