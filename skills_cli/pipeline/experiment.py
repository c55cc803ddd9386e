"""Submitting job graphs as named experiments, and following them: status, logs, cancel.

`submit_jobs` is what every stage command ends with: jobs + cluster + shared options -> validated plan ->
dry-run text or a real submission recorded in the store.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from skills_cli.common import interrupts
from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import (
    ClusterConfig,
    DependencyType,
    load_cluster_config,
    load_cluster_file,
)
from skills_cli.pipeline.executors import executor_for
from skills_cli.pipeline.executors.base import Executor
from skills_cli.pipeline.jobs import Job, JobGraph, check_name, with_dependent_jobs
from skills_cli.pipeline.options import SubmitSpec
from skills_cli.pipeline.packaging import snapshot
from skills_cli.pipeline.plan import ExternalDependency, Plan, PlannedJob, internal_edges, roots, safe_name
from skills_cli.pipeline.progress import Progress
from skills_cli.pipeline.store import JobRecord, JobState, Store, SubmissionRecord, home_dir, new_uid

log = logging.getLogger("skills_cli")


@dataclass(frozen=True)
class SubmitOptions:
    """The shared submission options (options.SubmitSpec), validated."""

    expname: str
    run_after: tuple[str, ...] = ()
    dependency_type: DependencyType | None = None
    dependent_jobs: int = 0
    dry_run: bool = False
    log_dir: str | None = None
    detach: bool = False
    outputs: tuple[str, ...] = ()  # where the jobs write results (recorded for `ns report`)


@dataclass
class Submission:
    """What a command returns from the Python API (the CLI prints it)."""

    expname: str
    cluster: str
    records: list[JobRecord] = field(default_factory=list)
    dry_run_text: str | None = None

    @property
    def succeeded(self) -> bool:
        return all(r.state is JobState.SUCCEEDED for r in self.records)


def submit_options(spec: SubmitSpec, default_expname: str) -> SubmitOptions:
    """The experiment-level settings of a stage spec, checked (its `output_dir`, when it has one, is recorded)."""
    given = spec.expname
    if given is not None and not given.strip():  # `--expname ''` must not quietly become the default name
        raise UserError(f"--expname {given!r} is empty: give a name, or leave --expname out for {default_expname!r}")
    expname = given or default_expname
    check_name("experiment", expname)
    for name in spec.run_after:
        check_name("run_after experiment", name)
    output_dir = getattr(spec, "output_dir", None)
    return SubmitOptions(
        expname=expname, run_after=tuple(spec.run_after),
        dependency_type=DependencyType(spec.dependency_type) if spec.dependency_type else None,
        dependent_jobs=spec.dependent_jobs, dry_run=spec.dry_run, log_dir=spec.log_dir, detach=spec.detach,
        outputs=(output_dir,) if isinstance(output_dir, str) else (),
    )  # fmt: skip


def run_dir_for(cluster: ClusterConfig, expname: str, job_name: str, uid: str) -> str:
    if cluster.runs_remotely:  # job files live on the cluster, under its job_dir
        return f"{cluster.remote_job_dir}/{safe_name(expname)}/run/{safe_name(job_name)}-{uid}"
    return str(home_dir() / "jobs" / uid)


def default_log_dir(cluster: ClusterConfig, expname: str) -> str:
    if cluster.runs_remotely:
        return f"{cluster.remote_job_dir}/{safe_name(expname)}/logs"
    return str(home_dir() / "logs" / safe_name(expname))


def refresh(records: list[JobRecord], store: Store, clusters: dict[str, ClusterConfig]) -> list[JobRecord]:
    """Update stored states through each record's own executor (grouped by cluster)."""
    by_cluster: dict[str, list[JobRecord]] = {}
    for record in records:
        by_cluster.setdefault(record.cluster, []).append(record)
    fresh: dict[str, JobRecord] = {}
    for name, group in by_cluster.items():
        if all(r.state.finished for r in group):
            fresh.update((r.uid, r) for r in group)
            continue
        cluster = clusters.get(name) or cluster_of(name, store)
        for record in executor_for(cluster).refresh(group, store):
            fresh[record.uid] = record
    return [explain(fresh[r.uid], store) for r in records]


def cluster_of(name: str, store: Store) -> ClusterConfig:
    """The config a job was submitted with: the remembered file if it still exists, else a lookup by name."""
    source = store.cluster_source(name)
    if source and Path(source).is_file():
        return load_cluster_file(Path(source))
    return load_cluster_config(name)


def explain(record: JobRecord, store: Store) -> JobRecord:
    """A job that will never run because an afterok upstream failed says which upstream."""
    if record.state not in (JobState.PENDING, JobState.CANCELLED) or record.reason.startswith("upstream "):
        return record
    for uid, kind in zip(record.depends_on, record.dependency_types, strict=True):
        upstream = store.job(uid)
        if kind == DependencyType.AFTEROK.value and upstream.state.failed:
            reason = f"upstream {upstream.expname}/{upstream.name} {upstream.state.value}"
            store.update_job(record.uid, reason=reason)
            record.reason = reason
            break
    return record


def resolve_run_after(
    options: SubmitOptions, cluster: ClusterConfig, store: Store, kind: DependencyType
) -> list[ExternalDependency]:
    """Upstream jobs still to wait for. Succeeded ones are satisfied; failed ones stop the submission."""
    records = store.resolve_run_after(list(options.run_after))
    if not options.dry_run:  # a dry run must not need the cluster; it uses the stored states
        records = refresh(records, store, {cluster.name: cluster})
    pending = []
    for record in records:
        where = f"--run_after {record.expname!r}: job {record.name!r}"
        if record.state is JobState.SUCCEEDED or (record.state.finished and kind is DependencyType.AFTERANY):
            continue
        if record.state.failed:
            detail = f" ({record.reason})" if record.reason else ""
            raise UserError(
                f"{where} {record.state.value}{detail}; nothing was submitted (rerun it, or use --dependency_type afterany)"
            )
        if record.cluster != cluster.name:
            raise UserError(
                f"{where} is {record.state.value} on cluster {record.cluster!r}; jobs on {cluster.name!r} cannot wait for it"
            )
        pending.append(ExternalDependency(record, kind))
    return pending


def build_plan(jobs: list[Job], cluster: ClusterConfig, options: SubmitOptions, store: Store) -> Plan:
    graph = with_dependent_jobs(JobGraph(jobs), options.dependent_jobs)
    kind = options.dependency_type or cluster.dependency_type
    external = tuple(resolve_run_after(options, cluster, store, kind))
    start = roots(graph)
    log_dir = options.log_dir or default_log_dir(cluster, options.expname)
    planned = []
    for job in graph:
        uid = new_uid()
        planned.append(PlannedJob(
            job=job, uid=uid, log_dir=job.log_dir or log_dir, run_dir=run_dir_for(cluster, options.expname, job.name, uid),
            internal=internal_edges(job, kind), external=external if job.name in start else (),
        ))  # fmt: skip
    return Plan(expname=options.expname, cluster=cluster, jobs=tuple(planned), code=snapshot(), env=cluster.job_env())


def submit_jobs(jobs: list[Job], cluster: ClusterConfig, options: SubmitOptions) -> Submission:
    """Validate, then print (dry run) or submit; for executors on this machine wait unless detached, showing
    the jobs' progress (progress.py)."""
    store = Store()
    if not cluster.uses_containers and (cluster.mounts or any(job.mounts for job in jobs)):
        log.warning("cluster %r starts no containers: its mounts are not used", cluster.name)
    plan = build_plan(jobs, cluster, options, store)
    executor = executor_for(cluster)
    submission = Submission(expname=options.expname, cluster=cluster.name)
    if options.dry_run:
        submission.dry_run_text = executor.dry_run(plan)
        return submission
    executor.preflight(plan)
    if cluster.source:
        store.remember_cluster(cluster.name, cluster.source)
    try:
        with interrupts.deferred("the submission"):
            submission.records = executor.submit(plan, store)
            # recorded only once something was submitted: a failed submission leaves no empty experiment behind
            store.add_experiment(options.expname, cluster.name, cluster.executor)
            store.add_submission(SubmissionRecord(options.expname, time.time(), cluster.name, list(options.run_after),
                                                  list(options.outputs), [r.uid for r in submission.records]))  # fmt: skip
    except BaseException:  # Ctrl-C or a failure half way: what was already queued must not run on its own
        cancel_submitted(plan, executor, store, "the submission did not complete")
        raise
    if not cluster.runs_remotely and not options.detach:  # a scheduler's queue outlives `ns`; ours waits
        try:
            with Progress.on() as progress:
                submission.records = wait(submission.records, store, progress=progress)
        except KeyboardInterrupt:  # the command that waits owns its jobs; --detach leaves them running
            cancel_submitted(plan, executor, store, "interrupted while waiting (--detach leaves jobs running)")
            raise
    return submission


def cancel_submitted(plan: Plan, executor: Executor, store: Store, why: str) -> None:
    """Cancel the jobs of `plan` that reached the store (and are not finished), ignoring further Ctrl-Cs."""
    records = []
    for planned in plan.jobs:
        try:
            records.append(store.job(planned.uid))
        except KeyError:  # never submitted
            continue
    records = [r for r in records if not r.state.finished]
    if not records:
        return
    with interrupts.ignored():
        executor.cancel(records, store)
    log.warning("%s: cancelled %d job(s) of experiment %r", why, len(records), plan.expname)


def wait(records: list[JobRecord], store: Store, timeout: float | None = None,
         clusters: dict[str, ClusterConfig] | None = None, poll: float = 0.5,
         progress: Progress | None = None) -> list[JobRecord]:  # fmt: skip
    """Poll until every job has finished (or `timeout` seconds pass: then UserError), showing each poll's
    states on `progress` when given."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        records = refresh(records, store, clusters or {})
        if progress is not None:
            progress.update(records)
        if all(r.state.finished for r in records):
            return records
        if deadline and time.time() > deadline:
            raise UserError(f"jobs still unfinished after {timeout:g} s: "
                            + ", ".join(f"{r.name} {r.state.value}" for r in records if not r.state.finished))  # fmt: skip
        time.sleep(poll)


def experiment_records(expname: str, store: Store) -> list[JobRecord]:
    if not store.has_experiment(expname):
        known = ", ".join(store.experiment_names()[-20:]) or "none yet"
        raise UserError(f"no experiment named {expname!r} (known: {known})")
    return store.jobs(expname)


def status(expname: str) -> list[JobRecord]:
    store = Store()
    return refresh(experiment_records(expname, store), store, {})


def upstream_chain(expname: str, store: Store) -> list[str]:
    """The experiment and everything it ran after, transitively, upstream first."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or not store.has_experiment(name):
            return
        seen.add(name)
        for upstream in direct_upstreams(name, store):
            visit(upstream)
        order.append(name)

    visit(expname)
    return order


def direct_upstreams(expname: str, store: Store) -> list[str]:
    names: list[str] = []
    for submission in store.submissions(expname):
        names += submission.run_after
    for record in store.jobs(expname):  # experiments stored before submissions were recorded
        for uid in record.depends_on:
            try:
                names.append(store.job(uid).expname)
            except KeyError:
                continue
    return [n for n in dict.fromkeys(names) if n != expname]


def watch(expname: str, progress: Progress, poll: float = 2.0) -> dict[str, list[JobRecord]]:
    """Wait until every job of the experiment and of what it ran after has ended; their final states."""
    store = Store()
    experiment_records(expname, store)  # an unknown name is an error before anything is shown
    names = upstream_chain(expname, store)
    with progress:
        records = wait([r for name in names for r in store.jobs(name)], store, poll=poll, progress=progress)
    return {name: [r for r in records if r.expname == name] for name in names}


def cancel(expname: str) -> list[JobRecord]:
    store = Store()
    records = [r for r in status(expname) if not r.state.finished]
    by_cluster: dict[str, list[JobRecord]] = {}
    for record in records:
        by_cluster.setdefault(record.cluster, []).append(record)
    for name, group in by_cluster.items():
        executor_for(cluster_of(name, store)).cancel(group, store)
    return status(expname)


def logs(expname: str, job: str | None, tail: int | None) -> list[tuple[JobRecord, str]]:
    store = Store()
    records = store.latest_jobs(expname) if store.has_experiment(expname) else experiment_records(expname, store)
    if job is not None:
        records = [r for r in records if r.name == job]
        if not records:
            names = ", ".join(r.name for r in store.latest_jobs(expname))
            raise UserError(f"experiment {expname!r} has no job {job!r} (jobs: {names})")
    return [(r, executor_for(cluster_of(r.cluster, store)).logs(r, tail)) for r in records]


def ensure_log_dir_is_absolute(path: str | None) -> None:
    if path is not None and not Path(path).is_absolute():
        raise UserError(f"--log_dir must be an absolute path, got {path!r}")
