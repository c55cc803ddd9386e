"""Local executors: bare processes (`executor: none`) and Docker containers (`executor: local`).

Each job gets a detached supervisor process (`local_runner`) that waits for its dependencies through the
store, takes GPUs from the machine's pool, runs the job's commands, enforces the time limit and records
the outcome. Because the waiting happens in the supervisor, `--run_after` works across separate `ns`
invocations exactly as on Slurm, and a detached submission keeps running after `ns` returns.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from skills_cli.common.errors import UserError
from skills_cli.pipeline import render, secrets
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.executors.base import EXECUTORS, ExecutorEntry
from skills_cli.pipeline.packaging import materialize
from skills_cli.pipeline.plan import Plan, PlannedJob, safe_name
from skills_cli.pipeline.store import JobRecord, JobState, Store, home_dir, private_files

GPU_PLACEHOLDER = "@@SKILLS_CLI_GPUS@@"


def detect_gpus(cluster: ClusterConfig) -> list[int]:
    """GPU ids this machine offers: the config's `gpus`, else what nvidia-smi lists, else none."""
    if cluster.gpus is not None:
        return list(cluster.gpus)
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout  # fmt: skip
    except (subprocess.SubprocessError, OSError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def with_submitter_path(code_dir: str) -> str:
    """The snapshot first, then the submitting shell's PYTHONPATH: plugins ($SKILLS_CLI_PLUGINS) importable
    where `ns` runs stay importable in the supervisor and in its bare-process commands."""
    return os.pathsep.join([code_dir, *filter(None, [os.environ.get("PYTHONPATH")])])


def supervisor_alive(record: JobRecord) -> bool:
    """Is the job's supervisor still running? (The uid in its command line guards against PID reuse.)"""
    if not record.pid:
        return False
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes()
    except OSError:
        return False
    return record.uid.encode() in cmdline


def refresh_local_record(record: JobRecord, store: Store) -> JobRecord:
    """A supervisor that vanished without recording an outcome (killed, machine rebooted) failed."""
    if record.state.finished or supervisor_alive(record):
        return record
    record = store.job(record.uid)  # it may have just finished
    if record.state.finished:
        return record
    store.update_job(record.uid, state=JobState.FAILED, reason="supervisor process died", ended_at=time.time())
    return store.job(record.uid)


class LocalExecutor:
    def __init__(self, cluster: ClusterConfig):
        self.cluster = cluster
        self.root = home_dir()

    def code_dir(self, plan: Plan) -> str:
        return str(self.root / plan.code.dirname)

    # -- checks ------------------------------------------------------------------------------------
    def preflight(self, plan: Plan) -> None:
        available = detect_gpus(self.cluster)
        for planned in plan.jobs:
            resources = planned.job.resources
            if planned.job.is_heterogeneous:  # the CLI refuses --client_partition here; API users may build one
                raise UserError(f"job {planned.job.name!r} is a heterogeneous job (components on separate nodes); "
                                "local executors run on one machine")  # fmt: skip
            if resources.nodes > 1:
                raise UserError(
                    f"job {planned.job.name!r} asks for {resources.nodes} nodes; local executors run on one"
                )
            if resources.gpus_per_node > len(available):
                raise UserError(
                    f"job {planned.job.name!r} asks for {resources.gpus_per_node} GPUs; this machine offers "
                    f"{len(available)} (set `gpus:` in the cluster config to choose them)"
                )
        if self.cluster.uses_containers:
            self._check_docker(plan)

    def _check_docker(self, plan: Plan) -> None:
        import docker

        try:
            client = docker.from_env(timeout=10)
            client.ping()
        except Exception as error:
            raise UserError(
                f"cluster {self.cluster.name!r} needs Docker, but the daemon does not answer: {error}"
            ) from None
        images = {self.cluster.container_image(c.container) for p in plan.jobs for c in p.job.commands}
        for image in sorted(images):
            try:
                client.images.get(image)
            except docker.errors.ImageNotFound:
                raise UserError(f"container image {image!r} is not present locally (build or load it first)") from None
        for planned in plan.jobs:
            for mount in [*self.cluster.mount_list(), *planned.job.mounts]:
                if not os.path.exists(mount.source):
                    raise UserError(f"mount source {mount.source!r} does not exist on this machine")

    # -- rendering ---------------------------------------------------------------------------------
    def dry_run(self, plan: Plan) -> str:
        return render.local_dry_run(plan, self.code_dir(plan))

    def spec(self, plan: Plan, planned: PlannedJob, code_dir: str, upstream_uids: dict[str, str]) -> dict:
        """Everything the supervisor needs, as JSON (it never re-reads cluster configs).

        The cluster's env_vars are not in it: the supervisor has their values in its own environment (see
        `_spawn_supervisor`) and its commands inherit them; `env` holds the job's own variables only.
        """
        commands = []
        slices = planned.job.gpu_slices()
        for command, (offset, count) in zip(planned.job.commands, slices, strict=True):
            env = render.local_command_env(plan, planned, command, code_dir)
            names = sorted([*env, *render.runtime_env_names(planned), *(["CUDA_VISIBLE_DEVICES"] if count else [])])
            argv = render.local_command_argv(
                plan, planned, command, code_dir, names, GPU_PLACEHOLDER if count else None
            )
            inherited = render.supervisor_env_names(plan, planned, command, code_dir)
            suffix = "" if len(slices) == 1 else f"-{safe_name(command.name)}"
            commands.append({
                "name": command.name, "argv": argv, "background": command.background,
                "env": {name: value for name, value in env.items() if name not in inherited},
                "gpu_offset": offset, "gpu_count": count,
                "log": f"{planned.log_dir}/{planned.file_stem}-{planned.uid}{suffix}.log",
                "container_name": render.local_container_name(planned, command) if self.cluster.uses_containers else None,
            })  # fmt: skip
        dependencies = [{"uid": upstream_uids[name], "type": kind.value} for name, kind in planned.internal]
        dependencies += [{"uid": e.record.uid, "type": e.dependency_type.value} for e in planned.external]
        return {
            "uid": planned.uid, "store": "", "cwd": os.getcwd(), "commands": commands, "ports": list(planned.job.ports),
            "dependencies": dependencies, "gpus_needed": planned.job.resources.gpus_per_node,
            "gpu_pool": detect_gpus(self.cluster), "time_limit": planned.job.resources.time_limit_seconds,
            "max_parallel_jobs": self.cluster.max_parallel_jobs or os.cpu_count(),
        }  # fmt: skip

    # -- submission --------------------------------------------------------------------------------
    def submit(self, plan: Plan, store: Store) -> list[JobRecord]:
        with private_files() as user_umask:  # code, specs, logs: owner-only
            return self._submit(plan, store, user_umask)

    def _submit(self, plan: Plan, store: Store, user_umask: int) -> list[JobRecord]:
        code_dir = str(materialize(plan.code, self.root))
        uids = {planned.job.name: planned.uid for planned in plan.jobs}
        records = []
        for planned in plan.jobs:
            spec = self.spec(plan, planned, code_dir, uids)
            spec["store"] = str(store.path)
            for command in spec["commands"]:
                command["umask"] = user_umask  # the job's own outputs keep the user's usual permissions
            job_dir = Path(planned.run_dir)
            job_dir.mkdir(parents=True, exist_ok=True)
            Path(planned.log_dir).mkdir(parents=True, exist_ok=True)
            spec_path = job_dir / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=1))
            record = JobRecord(
                uid=planned.uid, expname=plan.expname, name=planned.job.name, cluster=plan.cluster.name,
                executor=plan.cluster.executor, work_dir=str(job_dir),
                log_path=f"{planned.log_dir}/{planned.file_stem}-{planned.uid}.log",  # + -<command>.log siblings
                depends_on=[d["uid"] for d in spec["dependencies"]],
                dependency_types=[d["type"] for d in spec["dependencies"]], submitted_at=time.time(),
            )  # fmt: skip
            store.add_job(record)
            record.pid = self._spawn_supervisor(spec_path, job_dir, code_dir, plan.env)
            record.external_id = str(record.pid)
            store.update_job(record.uid, pid=record.pid, external_id=record.external_id)
            records.append(record)
        return records

    @staticmethod
    def _spawn_supervisor(spec_path: Path, job_dir: Path, code_dir: str, cluster_env: dict[str, str]) -> int:
        """The supervisor itself runs from the shipped snapshot, so later edits cannot change a queued job.

        The cluster's env values reach it through its process environment, which only this user (and root)
        can read (/proc/PID/environ is 0400), never through a file; its commands, and `docker run -e NAME`,
        inherit them. Its umask makes what it writes (logs, GPU tables) owner-only.
        """
        with open(job_dir / "supervisor.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "skills_cli.pipeline.executors.local_runner", str(spec_path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **cluster_env, "PYTHONPATH": with_submitter_path(code_dir)}, umask=0o077,
            )  # fmt: skip
        return process.pid

    # -- follow-up ---------------------------------------------------------------------------------
    def refresh(self, records: list[JobRecord], store: Store) -> list[JobRecord]:
        fresh = [refresh_local_record(store.job(record.uid), store) for record in records]
        mask = self._masker()
        for record in fresh:  # a supervisor error may quote a value the job got
            record.reason = mask(record.reason)
        return fresh

    def _masker(self) -> secrets.Masker:
        return secrets.Masker.for_env(self.cluster.job_env(strict=False))

    def cancel(self, records: list[JobRecord], store: Store) -> None:
        for record in self.refresh(records, store):
            if record.state.finished:
                continue
            if supervisor_alive(record):
                os.kill(record.pid, signal.SIGTERM)  # the supervisor stops its commands and records CANCELLED
            else:
                store.update_job(record.uid, state=JobState.CANCELLED, reason="cancelled", ended_at=time.time())
        deadline = time.time() + 30
        while time.time() < deadline and any(supervisor_alive(store.job(r.uid)) for r in records):
            time.sleep(0.2)
        for record in records:  # a supervisor stopped before it could record anything was still cancelled
            current = store.job(record.uid)
            if not current.state.finished and not supervisor_alive(current):
                store.update_job(record.uid, state=JobState.CANCELLED, reason="cancelled", ended_at=time.time())

    def logs(self, record: JobRecord, tail: int | None) -> str:
        return self._masker()(read_log_files(record.log_path, tail))  # a job may print what it was given


def log_files(main_log: str | None) -> list[Path]:
    """The job's main log and, for multi-command jobs, one log per command (same stem)."""
    if not main_log:
        return []
    main = Path(main_log)
    stem = main.name[: -len(".log")] if main.name.endswith(".log") else main.name
    return sorted(p for p in main.parent.glob(f"{stem}*.log") if p.is_file()) if main.parent.is_dir() else []


def read_log_files(main_log: str | None, tail: int | None) -> str:
    chunks = []
    for path in log_files(main_log):
        lines = path.read_text(errors="replace").splitlines()
        if tail:
            lines = lines[-tail:]
        chunks.append(f"==> {path} <==\n" + "\n".join(lines))
    return "\n".join(chunks) if chunks else f"(no log yet at {main_log})"


_LOCAL_CHECKS = ("no job asks for more than one node", "no job asks for more GPUs than this machine offers")
EXECUTORS.register(ExecutorEntry(
    "none", LocalExecutor, "bare processes on this machine, no containers", jobs_see_local_paths=True,
    preflight_checks=_LOCAL_CHECKS,
))  # fmt: skip
EXECUTORS.register(ExecutorEntry(
    "local", LocalExecutor, "Docker containers on this machine", uses_containers=True,
    preflight_checks=(*_LOCAL_CHECKS, "the Docker daemon answers", "every container image is present locally",
                      "every mount source exists"),
))  # fmt: skip
