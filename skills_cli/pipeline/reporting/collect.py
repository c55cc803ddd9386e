"""Collecting a report: the experiment, every experiment it ran after, their jobs and their output files.

Local jobs are refreshed first; jobs of a remote executor are shown as the store last saw them, without
contacting the cluster, and their output directories are named (host:path), not fetched. JSON outputs are
read through `common.artifacts` (which knows each file's kind); `metrics.jsonl` rows and plots directly.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from skills_cli.common.artifacts import EVALUATION, TRAINING_SERIES, TRAINING_SUMMARY, read_json_artifact
from skills_cli.common.errors import UserError
from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.executors import runs_remotely
from skills_cli.pipeline.experiment import cluster_of, direct_upstreams, refresh, upstream_chain
from skills_cli.pipeline.reporting.model import Artifact, ExperimentSection, OutputDir, Report, is_number
from skills_cli.pipeline.store import JobRecord, Store

RECOGNISED = ("metrics.json", "metrics.jsonl", "summary.json", "pass_at_k.png")
SKIPPED_DIRS = {"checkpoints", "final_hf", "tensorboard", "wandb", "swanlog", "__pycache__"}
MAX_DEPTH = 4  # below an output directory
MAX_ENTRIES = 20_000  # directory entries looked at per output directory
MAX_IMAGE_BYTES = 8 * 2**20
LOG_TAIL_LINES = 20


def load_cluster(name: str, store: Store) -> ClusterConfig | None:
    try:
        return cluster_of(name, store)
    except UserError:
        return None


def fresh_records(records: list[JobRecord], store: Store) -> list[JobRecord]:
    """Local jobs refreshed (cheap, no network); jobs of remote executors as stored."""
    local = [r for r in records if not runs_remotely(r.executor)]
    try:
        updated = {r.uid: r for r in refresh(local, store, {})}
    except UserError:
        updated = {}
    return [updated.get(r.uid, r) for r in records]


def host_path(path: str, cluster: ClusterConfig | None) -> str:
    """A path inside a local container job, as this machine sees it (through the cluster's mounts)."""
    if cluster is None or not cluster.uses_containers or cluster.runs_remotely:
        return path
    for mount in sorted(cluster.mount_list(), key=lambda m: len(m.target), reverse=True):
        if path == mount.target or path.startswith(mount.target.rstrip("/") + "/"):
            return mount.source.rstrip("/") + path[len(mount.target.rstrip("/")) :]
    return path


def collect(expname: str, store: Store | None = None) -> Report:
    store = store or Store()
    if not store.has_experiment(expname):
        known = ", ".join(store.experiment_names()[-20:]) or "none yet"
        raise UserError(f"no experiment named {expname!r} (known: {known})")
    sections = [collect_section(name, store) for name in upstream_chain(expname, store)]
    return Report(expname=expname, sections=sections, generated_at=time.time())


def collect_section(expname: str, store: Store) -> ExperimentSection:
    records = fresh_records(store.jobs(expname), store)
    submissions = store.submissions(expname)
    cluster_name = submissions[-1].cluster if submissions else (records[-1].cluster if records else "")
    executor = records[-1].executor if records else ""
    cluster = load_cluster(cluster_name, store) if cluster_name else None
    remote_host = None
    if runs_remotely(executor):
        remote_host = cluster.ssh_tunnel.host if cluster and cluster.ssh_tunnel else None
        if cluster is None:
            remote_host = f"cluster {cluster_name}"  # its config is gone: the name is all we know
    run_after = list(dict.fromkeys(name for s in submissions for name in s.run_after))
    declared = list(dict.fromkeys(path for s in submissions for path in s.outputs))
    outputs = [output_dir(path, cluster, remote_host) for path in declared]
    tails = {}
    if remote_host is None:
        from skills_cli.pipeline.executors.local import read_log_files
        from skills_cli.pipeline.secrets import Masker

        mask = Masker.for_env(cluster.job_env(strict=False) if cluster else {})  # a job may print its secrets
        for record in records:
            if record.state.failed and record.log_path:
                tails[record.uid] = mask(read_log_files(record.log_path, LOG_TAIL_LINES))
    return ExperimentSection(expname=expname, cluster=cluster_name, executor=executor,
                             run_after=run_after or direct_upstreams(expname, store), records=records,
                             outputs=outputs, remote_host=remote_host, log_tails=tails)  # fmt: skip


def output_dir(declared: str, cluster: ClusterConfig | None, remote_host: str | None) -> OutputDir:
    if remote_host is not None:
        return OutputDir(declared, f"{remote_host}:{declared}", None,
                         note=f"on the cluster ({remote_host}), not fetched; for evaluation results "
                              f"`ns summarize_results --cluster {cluster.name if cluster else 'NAME'} {declared}` "
                              "fetches and summarizes them")  # fmt: skip
    local = Path(host_path(declared, cluster))
    out = OutputDir(declared, str(local), local)
    if not local.exists():
        out.note = "does not exist (yet)"
        return out
    out.artifacts = scan(local)
    if not out.artifacts:
        out.note = "no metrics files or plots found"
    return out


def find_files(root: Path) -> list[Path]:
    """Recognised files under root (bounded depth and effort; checkpoints and tracker folders skipped)."""
    if root.is_file():
        return [root] if root.name in RECOGNISED else []
    found: list[Path] = []
    entries = 0
    for directory, subdirs, files in os.walk(root):
        depth = len(Path(directory).relative_to(root).parts)
        subdirs[:] = sorted(d for d in subdirs if d not in SKIPPED_DIRS and not d.startswith(".")
                            and depth < MAX_DEPTH)  # fmt: skip
        entries += len(files) + len(subdirs)
        found += [Path(directory) / name for name in sorted(files) if name in RECOGNISED]
        if entries > MAX_ENTRIES:
            break
    return found


def scan(root: Path) -> list[Artifact]:
    artifacts = []
    files = find_files(root)
    for path in files:
        try:
            artifact = read_artifact(path, has_rows=(path.parent / "metrics.jsonl") in files)
        except (OSError, UnicodeDecodeError) as error:
            artifact = Artifact("other", path, f"unreadable: {error}")
        if artifact is not None:
            artifacts.append(artifact)
    order = ("eval", "curves", "summary", "plot", "other")
    return sorted(artifacts, key=lambda a: order.index(a.kind))  # stable: files stay in path order per kind


def read_artifact(path: Path, has_rows: bool) -> Artifact | None:
    if path.suffix == ".png":
        size = path.stat().st_size
        data = path.read_bytes() if size <= MAX_IMAGE_BYTES else None
        return Artifact("plot", path, data)
    if path.suffix == ".jsonl":
        return Artifact("curves", path, series_from_rows(path))
    try:
        kind, payload = read_json_artifact(path)
    except UserError as error:
        return Artifact("other", path, str(error).removeprefix(f"{path}: "))
    if kind is EVALUATION and all(isinstance(modes, dict) and modes for modes in payload.values()):
        return Artifact("eval", path, payload)
    if kind is TRAINING_SERIES and (points := series_points(payload)) is not None:
        return None if has_rows else Artifact("curves", path, points)  # has_rows: the metrics.jsonl next to it
    if kind is TRAINING_SUMMARY and all(not isinstance(value, (dict, list)) for value in payload.values()):
        return Artifact("summary", path, payload)
    return Artifact("other", path, "unrecognised layout")


def series_points(payload: dict) -> dict[str, list[tuple[int, float]]] | None:
    """{metric: [(step, value)]} from {metric: {step: value}}; None when a step is not an integer."""
    if not all(str(step).lstrip("-").isdigit() for series in payload.values() for step in series):
        return None
    return {metric: sorted((int(step), value) for step, value in series.items() if is_number(value))
            for metric, series in payload.items()}  # fmt: skip


def series_from_rows(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value)]} from one JSON row per step (lines that are not JSON objects are skipped)."""
    series: dict[str, list[tuple[int, float]]] = {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        for index, line in enumerate(handle):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(row, dict):
                continue
            step = row.get("step", index + 1)
            step = int(step) if is_number(step) else index + 1
            for key, value in row.items():
                if key != "step" and is_number(value):
                    series.setdefault(key, []).append((step, float(value)))
    return series
