"""The Slurm executor: sbatch over nemo-run's SSH (or local) tunnel, in three round trips.

1. one command checks the cluster (sbatch present, mount sources exist, this code version uploaded?);
2. one upload carries the batch scripts, the submission script and, if missing, the code snapshot;
3. one command unpacks and submits the whole graph; in-graph dependencies become `--dependency=afterok:`
   on the ids sbatch just returned. If any sbatch fails, the ones already queued are cancelled.
States come from `sacct` (accounting) with `squeue` for jobs accounting has not seen yet, in one round trip that
also asks `sinfo` for sick nodes: a job that ended because a node went down names the node in its reason.
"""

from __future__ import annotations

import io
import re
import tarfile
import time
from dataclasses import dataclass

from skills_cli.common.errors import UserError
from skills_cli.common.hostlist import expand_hostlist
from skills_cli.pipeline import render, secrets
from skills_cli.pipeline.cluster import ClusterConfig, ContainerRuntime
from skills_cli.pipeline.executors.base import EXECUTORS, ExecutorEntry
from skills_cli.pipeline.executors.tunnel import ClusterTunnel, check_identity
from skills_cli.pipeline.packaging import tarball
from skills_cli.pipeline.plan import Plan, safe_name
from skills_cli.pipeline.shell import quote
from skills_cli.pipeline.store import JobRecord, JobState, Store

SACCT_STATES = {
    "PENDING": JobState.PENDING, "REQUEUED": JobState.PENDING, "RESIZING": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "COMPLETED": JobState.SUCCEEDED, "FAILED": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED,
    "NODE_FAIL": JobState.FAILED, "BOOT_FAIL": JobState.FAILED, "DEADLINE": JobState.TIMEOUT,
    "PREEMPTED": JobState.FAILED, "CANCELLED": JobState.CANCELLED, "TIMEOUT": JobState.TIMEOUT,
}  # fmt: skip


SINFO_PREFIX = "SINFO "
_GPU_GRES = re.compile(r"gpu(?::[^:,(]+)?:(\d+)")


@dataclass(frozen=True)
class PartitionSizes:
    """What `sinfo` says about each partition: the most GPUs one node has, how many nodes it has, and which
    partition is the default."""

    gpus_per_node: dict[str, int]
    nodes: dict[str, int]
    default: str | None = None


def partition_sizes(lines: list[str]) -> PartitionSizes:
    """From `SINFO <partition>|<gres>|<nodes>` lines (gres: `gpu:8`, `gpu:a100:4(S:0-1),gpu:v100:2`, `(null)`;
    one line per partition and gres, so a partition's nodes add up over its lines); sinfo marks the default
    partition with `*`."""
    gpus: dict[str, int] = {}
    nodes: dict[str, int] = {}
    default = None
    for line in lines:
        partition, gres, count = (line[len(SINFO_PREFIX) :].split("|") + ["", ""])[:3]
        if partition.endswith("*"):
            partition = default = partition[:-1]
        gpus[partition] = max(gpus.get(partition, 0), sum(int(c) for c in _GPU_GRES.findall(gres)))
        nodes[partition] = nodes.get(partition, 0) + (int(count) if count.isdigit() else 0)
    return PartitionSizes(gpus, nodes, default)


def parse_state(text: str) -> JobState:
    """`CANCELLED by 0` -> CANCELLED; unknown words -> UNKNOWN."""
    word = text.split()[0] if text.strip() else ""
    return SACCT_STATES.get(word, JobState.UNKNOWN)


SECTION = "--"
# nodes that cannot run jobs: down (a node that stopped answering, e.g. a killed machine), drained or failing
SICK_NODE_STATES = "down,drain,fail,no_respond"


def refresh_command(job_ids: list[str]) -> str:
    """One round trip for the state of `job_ids`: sacct (accounting), squeue (jobs accounting has not recorded
    yet, and why pending ones wait), each with the nodes a job was given, then, only when a job failed, the nodes
    sinfo calls sick (to name the node a job lost; a large cluster has many drained nodes), as sections separated
    by `--` lines."""
    ids = ",".join(job_ids)
    return (f"a=$(sacct -X -n -P -j {ids} --format=JobIDRaw,State,ExitCode,NodeList 2>/dev/null); "
            f"q=$(squeue -h -t all -j {ids} -o '%i|%T|%r|%N' 2>/dev/null); "
            f"printf '%s\\n{SECTION}\\n%s\\n{SECTION}\\n' \"$a\" \"$q\"; "
            f"case \"$a$q\" in *FAIL*) sinfo -h -N -t {SICK_NODE_STATES} -o '%N|%T|%E' 2>/dev/null;; esac; true")  # fmt: skip


def job_updates(output: str) -> dict[str, dict]:
    """The store fields to update per Slurm job id, from refresh_command's output: accounting's state and exit
    code win over squeue's; squeue's reason says why a job waits; a job that ended for a node says which."""
    accounted, queued, sick = _sections(output, 3)
    down = sick_nodes(sick)
    updates: dict[str, dict] = {}
    for line in queued:
        job_id, state, reason, nodes = (line.split("|") + ["", "", ""])[:4]
        reason = node_failure(state, nodes, down) or ("" if reason in ("None", "(null)") else reason)
        updates[job_id] = {"state": parse_state(state), "reason": reason}
    for line in accounted:
        job_id, state, exit_code, nodes = (line.split("|") + ["", "", ""])[:4]
        if parse_state(state) is JobState.UNKNOWN:
            continue
        update: dict = {"state": parse_state(state)}
        if update["state"].finished:
            code = exit_code.split(":")[0]
            update["exit_code"] = int(code) if code.isdigit() else None
        if reason := node_failure(state, nodes, down):
            update["reason"] = reason
        updates[job_id] = {**updates.get(job_id, {}), **update}
    return {job: {k: v for k, v in update.items() if v is not JobState.UNKNOWN} for job, update in updates.items()}


def _sections(output: str, count: int) -> list[list[str]]:
    parts: list[list[str]] = [[]]
    for line in (line.strip() for line in output.splitlines()):
        if line == SECTION:
            parts.append([])
        elif line:
            parts[-1].append(line)
    return (parts + [[] for _ in range(count)])[:count]


def sick_nodes(lines: list[str]) -> dict[str, str]:
    """`skills-n2|down*|Not responding` lines (sinfo -N: one per node and partition) -> {node: 'down: Not
    responding'}; sinfo's `*` (not responding) and other state flags are dropped, the reason says it."""
    sick = {}
    for line in lines:
        node, state, reason = (line.split("|", 2) + ["", ""])[:3]
        state = state.rstrip("*~#!%$@^-+")
        sick[node] = f"{state}: {reason}" if reason and reason != "none" else state
    return sick


def node_failure(state: str, nodes: str, sick: dict[str, str]) -> str:
    """Why a job ended, when a node is the cause: Slurm ends a job NODE_FAIL when a node of its allocation goes
    down (not saying which: sinfo's sick nodes among the job's do); a FAILED job that holds a sick node failed
    for it too (its srun saw the node go first). '' for other jobs."""
    word = state.split()[0] if state.strip() else ""
    if word not in ("NODE_FAIL", "FAILED"):
        return ""
    lost = [node for node in expand_hostlist(nodes) if node in sick]
    if not lost:
        return f"node failure: one of {nodes} ({word})" if word == "NODE_FAIL" else ""
    why = "; ".join(dict.fromkeys(sick[node] for node in lost))
    return f"node failure: {','.join(lost)} ({word}; {why})"


class SlurmExecutor:
    def __init__(self, cluster: ClusterConfig):
        self.cluster = cluster

    def code_dir(self, plan: Plan) -> str:
        return f"{self.cluster.remote_job_dir}/{plan.code.dirname}"

    def preflight(self, plan: Plan) -> None:
        """What can be checked without connecting (the rest happens in the first round trip)."""
        if self.cluster.ssh_tunnel is not None:
            check_identity(self.cluster.ssh_tunnel)

    def dry_run(self, plan: Plan) -> str:
        return render.slurm_dry_run(plan, self.code_dir(plan))

    # -- submission --------------------------------------------------------------------------------
    def _mount_sources(self, plan: Plan) -> list[str]:
        if self.cluster.container_runtime is ContainerRuntime.NONE:
            return []  # no containers: mounts have no meaning
        sources = {m.source for m in self.cluster.mount_list()}
        sources |= {m.source for planned in plan.jobs for m in planned.job.mounts}
        return sorted(sources)

    def _check_cluster(self, tunnel: ClusterTunnel, plan: Plan) -> bool:
        """One round trip; returns whether the code snapshot must be uploaded."""
        checks = ["command -v sbatch >/dev/null || echo 'MISSING_SBATCH'"]
        checks += [f"test -e {quote(s)} || echo MISSING_MOUNT {quote(s)}" for s in self._mount_sources(plan)]
        checks.append(f"test -d {quote(self.code_dir(plan))} || echo NEED_CODE")
        if any(r.gpus_per_node or r.nodes > 1 for planned in plan.jobs for r in planned.job.group_resources):
            checks.append(f"sinfo -h -o {quote(SINFO_PREFIX + '%P|%G|%D')} 2>/dev/null; true")
        checks.append(self._private_folders(plan))
        result = tunnel.run("; ".join(checks))
        lines = result.stdout.splitlines()
        if "MISSING_SBATCH" in lines:
            raise UserError(f"{tunnel.target}: sbatch is not on PATH (is this a Slurm login node?)")
        missing = [line.split(" ", 1)[1] for line in lines if line.startswith("MISSING_MOUNT ")]
        if missing:
            raise UserError(f"mount source does not exist on cluster {self.cluster.name!r}: {', '.join(missing)}")
        self._check_sizes(plan, partition_sizes([line for line in lines if line.startswith(SINFO_PREFIX)]))
        return "NEED_CODE" in lines

    def _check_sizes(self, plan: Plan, offered: PartitionSizes) -> None:
        """Refuse a job that asks for more GPUs per node, or more nodes, than its partition has (as `sinfo` lists
        them): Slurm would queue it forever (PartitionNodeLimit). A partition sinfo does not list is left to
        sbatch."""
        for planned in plan.jobs:
            for resources in planned.job.group_resources:  # each component of a heterogeneous job on its own
                self._check_size(planned.job.name, resources, offered)

    def _check_size(self, job: str, resources, offered: PartitionSizes) -> None:
        partition = self.cluster.partition_for(resources) or offered.default or ""
        where = f"partition {partition!r} of cluster {self.cluster.name!r}"
        most = offered.gpus_per_node.get(partition)
        if resources.gpus_per_node and most is not None and resources.gpus_per_node > most:
            raise UserError(f"job {job!r} asks for {resources.gpus_per_node} GPUs per node; {where} "
                            f"has at most {most} per node (sinfo)")  # fmt: skip
        nodes = offered.nodes.get(partition)
        if resources.nodes > 1 and nodes is not None and resources.nodes > nodes:
            raise UserError(f"job {job!r} asks for {resources.nodes} nodes; {where} has {nodes} (sinfo)")

    def _private_folders(self, plan: Plan) -> str:
        """Shell text that creates job_dir's folders owner-only and makes existing ones so (older versions
        left them open to other users): what we write there is nobody else's to read."""
        job_dir = self.cluster.remote_job_dir
        ours = " ".join(quote(name) for name in (".staging", "code", safe_name(plan.expname)))
        return (f"(umask 077 && mkdir -p {quote(job_dir + '/.staging')} && cd {quote(job_dir)} && "
                f"chmod -f go-rwx {ours} 2>/dev/null; true)")  # fmt: skip

    def _bundle(self, plan: Plan) -> bytes:
        """The batch scripts (at their final paths under job_dir), the submission script and the env file
        (the cluster's env_vars with their values, removed once sourced), as one owner-only tar.gz."""
        buffer = io.BytesIO()
        job_dir = self.cluster.remote_job_dir
        files = {render.script_path(plan, p)[len(job_dir) + 1 :]: (render.sbatch_script(plan, p, self.code_dir(plan)), 0o700)
                 for p in plan.jobs}  # fmt: skip
        files[f"{render.staging_dir(plan)}/submit.sh"] = (render.submit_script(plan), 0o700)
        if plan.env:
            files[render.env_file(plan)] = (render.env_file_text(plan), 0o600)
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            for name, (text, mode) in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(data), mode
                archive.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    def _masker(self, plan: Plan | None = None) -> secrets.Masker:
        """Hides the cluster's env values in text we print (logs, errors)."""
        return secrets.Masker.for_env(plan.env if plan else self.cluster.job_env(strict=False))

    def submit(self, plan: Plan, store: Store) -> list[JobRecord]:
        job_dir = self.cluster.remote_job_dir
        staging = render.staging_dir(plan)
        with ClusterTunnel(self.cluster) as tunnel:
            need_code = self._check_cluster(tunnel, plan)
            # uploaded files keep the local temporary file's mode (0600); no value is ever on a command line
            tunnel.put_bytes(self._bundle(plan), f"{job_dir}/{staging}.tar.gz")
            unpack = f"tar -xzf {quote(staging + '.tar.gz')}"
            if need_code:
                tunnel.put_bytes(tarball(plan.code, prefix=plan.code.dirname), f"{job_dir}/{staging}-code.tar.gz")
                # unpack next to the final place, then rename: a concurrent submission never sees half a tree
                unpack += (f" && mkdir -p code && tmp=$(mktemp -d code/.tmp-XXXXXX) && tar -xzf {quote(staging + '-code.tar.gz')}"
                           f" -C \"$tmp\" && chmod -R go-rwx \"$tmp\""
                           f" && (mv \"$tmp/{plan.code.dirname}\" {quote(plan.code.dirname)} 2>/dev/null || true)"
                           " && rm -rf \"$tmp\"")  # fmt: skip
            # the bundle and the env file hold the env values: removed however the submission ends
            cleanup = f"rm -f {quote(staging + '.tar.gz')} {quote(render.env_file(plan))}"
            result = tunnel.run(f"cd {quote(job_dir)} && (trap {quote(cleanup)} EXIT; (umask 077 && {unpack})"
                                f" && bash {quote(staging + '/submit.sh')})", timeout=300)  # fmt: skip
        ids = dict(line.split()[1:3] for line in result.stdout.splitlines() if line.startswith("SKILLS_SUBMITTED "))
        if result.returncode != 0 or len(ids) != len(plan.jobs):
            detail = self._masker(plan)(result.stderr or result.stdout).strip().splitlines()[-3:]
            raise UserError(
                f"submission to {self.cluster.name!r} failed ({' | '.join(detail)}); "
                f"{len(ids)} job(s) that were queued before the failure were cancelled"
            )
        records = []
        for planned in plan.jobs:
            job_id = ids[planned.uid]
            upstream = {p.job.name: p.uid for p in plan.jobs}
            depends = [upstream[name] for name, _ in planned.internal] + [e.record.uid for e in planned.external]
            kinds = [kind.value for _, kind in planned.internal] + [e.dependency_type.value for e in planned.external]
            record = JobRecord(
                uid=planned.uid, expname=plan.expname, name=planned.job.name, cluster=self.cluster.name,
                executor="slurm", external_id=job_id, log_path=f"{planned.log_dir}/{planned.file_stem}-{job_id}.log",
                work_dir=render.script_path(plan, planned), depends_on=depends, dependency_types=kinds,
                submitted_at=time.time(),
            )  # fmt: skip
            store.add_job(record)
            records.append(record)
        return records

    # -- follow-up ---------------------------------------------------------------------------------
    def refresh(self, records: list[JobRecord], store: Store) -> list[JobRecord]:
        open_records = [r for r in records if not r.state.finished and r.external_id]
        if not open_records:
            return [store.job(r.uid) for r in records]
        with ClusterTunnel(self.cluster) as tunnel:
            output = tunnel.run(refresh_command([r.external_id for r in open_records])).stdout  # type: ignore[misc]
        updates = job_updates(output)
        for record in open_records:
            update = updates.get(record.external_id or "")
            if update:
                store.update_job(record.uid, **update)
        return [store.job(r.uid) for r in records]

    def cancel(self, records: list[JobRecord], store: Store) -> None:
        ids = [r.external_id for r in records if r.external_id and not r.state.finished]
        if ids:
            with ClusterTunnel(self.cluster) as tunnel:
                tunnel.run("scancel " + " ".join(quote(i) for i in ids))

    def logs(self, record: JobRecord, tail: int | None) -> str:
        if not record.log_path:
            return "(no log recorded)"
        stem = record.log_path[: -len(".log")]
        reader = f'tail -n {int(tail)} "$f"' if tail else 'cat "$f"'
        command = f'for f in {quote(stem)}*.log; do [ -f "$f" ] || continue; echo "==> $f <=="; {reader}; done'
        with ClusterTunnel(self.cluster) as tunnel:
            output = tunnel.run(command).stdout
        return self._masker()(output.rstrip()) or f"(no log yet at {record.log_path})"


EXECUTORS.register(ExecutorEntry(
    "slurm", SlurmExecutor, "sbatch on a Slurm cluster, over SSH or on its login node", runs_remotely=True,
    preflight_checks=("the SSH identity file exists", "sbatch is on the cluster's PATH (first round trip)",
                      "every mount source exists on the cluster when jobs run in containers (first round trip)",
                      "no job asks for more GPUs per node than its partition's nodes have, per sinfo (first round trip)"),
))  # fmt: skip
