"""The supervisor of one local job: `python -m skills_cli.pipeline.executors.local_runner SPEC.json`.

1. Wait until every dependency is satisfied (afterok: SUCCEEDED; afterany: finished). If an afterok
   upstream failed, record CANCELLED with the upstream's name as the reason and run nothing.
2. Take a job slot (at most `max_parallel_jobs` jobs run at once) and the GPUs the job needs from the
   machine's pools (lock files; waits while they are busy).
3. Start the commands, each in its own process group, logs to files. The job ends when every foreground
   command has ended; background services are then stopped. The time limit is enforced here.
4. Make sure nothing of the job outlives it: each command dies with the supervisor (PR_SET_PDEATHSIG), and
   when the job ends every process that still carries the job's uid in its environment is stopped, whatever
   process group or session it moved to (torchrun's workers live in sessions of their own). So a finished
   job's state is recorded only once none of its processes run.
5. Record SUCCEEDED / FAILED (first non-zero foreground exit code) / TIMEOUT / CANCELLED (SIGTERM).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from skills_cli.common.ports import free_port
from skills_cli.common.process import arm_parent_death_signal, command_line, processes_with_env
from skills_cli.inference.server.auth import api_key_names, new_api_key
from skills_cli.pipeline.executors.local import GPU_PLACEHOLDER, refresh_local_record, supervisor_alive
from skills_cli.pipeline.store import JobState, Store

POLL_SECONDS = 0.25
STOP_GRACE_SECONDS = 10
JOB_UID_ENV = "SKILLS_CLI_JOB_UID"  # every process of a job inherits it (render.job_own_env)
SUPERVISOR_MODULE = b"skills_cli.pipeline.executors.local_runner"


class Cancelled(Exception):
    pass


def _on_signal(signum: int, frame: object) -> None:
    raise Cancelled()


def wait_for_dependencies(spec: dict, store: Store) -> str | None:
    """None when the job may start; otherwise the reason it never will."""
    while True:
        pending = False
        for dependency in spec["dependencies"]:
            upstream = refresh_local_record(store.job(dependency["uid"]), store)
            if dependency["type"] == "afterok" and upstream.state.failed:
                return f"upstream {upstream.expname}/{upstream.name} {upstream.state.value}"
            if dependency["type"] == "afterok" and upstream.state is not JobState.SUCCEEDED:
                pending = True
            elif dependency["type"] == "afterany" and not upstream.state.finished:
                pending = True
        if not pending:
            return None
        time.sleep(POLL_SECONDS)


@contextmanager
def reservation(spec: dict, store: Store, pool_name: str, pool: list[int], needed: int):
    """Reserve `needed` ids of a machine-wide pool (GPUs, job slots), waiting while they are busy.

    The table `<pool_name>.json` maps each busy id to a job uid, under an exclusive lock; reservations of
    jobs whose supervisor is gone are dropped, so a killed job never holds a GPU forever.
    """
    if not needed:
        yield []
        return
    lock_path = Path(spec["store"]).parent / f"{pool_name}.lock"
    table_path = lock_path.with_suffix(".json")
    taken: list[int] = []
    while not taken:
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = json.loads(table_path.read_text()) if table_path.exists() else {}
            table = {key: uid for key, uid in table.items() if supervisor_alive(store.job(uid))}
            free = [item for item in pool if str(item) not in table]
            if len(free) >= needed:
                taken = free[:needed]
                table.update({str(item): spec["uid"] for item in taken})
            table_path.write_text(json.dumps(table))
        if not taken:
            time.sleep(POLL_SECONDS * 4)
    try:
        yield taken
    finally:
        with open(lock_path, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            table = json.loads(table_path.read_text()) if table_path.exists() else {}
            table = {key: uid for key, uid in table.items() if uid != spec["uid"]}
            table_path.write_text(json.dumps(table))


def start_command(command: dict, gpus: list[int], pool: list[int], cwd: str, extra_env: dict) -> subprocess.Popen:
    env = {**os.environ, **command["env"], **extra_env}
    if not command.get("container_name"):  # a bare process: the snapshot + the submitter's path, as we have
        env["PYTHONPATH"] = os.environ.get("PYTHONPATH", env.get("PYTHONPATH", ""))
    visible = ",".join(str(g) for g in gpus[command["gpu_offset"] : command["gpu_offset"] + command["gpu_count"]])
    if pool:  # a command without a GPU share must not see the machine's GPUs
        env["CUDA_VISIBLE_DEVICES"] = visible
    argv = [word.replace(GPU_PLACEHOLDER, visible) for word in command["argv"]]
    Path(command["log"]).parent.mkdir(parents=True, exist_ok=True)
    with open(command["log"], "ab") as log:
        # the supervisor's umask keeps its own files owner-only; the command gets the submitting user's back
        return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                umask=command.get("umask", -1), preexec_fn=arm_parent_death_signal)  # fmt: skip


def stop(processes: list[subprocess.Popen], commands: list[dict]) -> None:
    """SIGTERM each process group, SIGKILL after a grace period, and remove our containers."""
    for process in processes:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + STOP_GRACE_SECONDS
    for process in processes:
        while process.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    for command in commands:
        if command.get("container_name"):
            subprocess.run(["docker", "rm", "-f", command["container_name"]], capture_output=True, timeout=60)


def job_stragglers(uid: str) -> list[int]:
    """Processes of this job still running: they carry its uid. Other jobs' supervisors are left alone: one
    submitted from inside this job inherited the uid, but it is a job of its own (its commands have their
    own uid)."""
    return [pid for pid in processes_with_env(JOB_UID_ENV, uid, exclude=(os.getpid(),))
            if SUPERVISOR_MODULE not in command_line(pid)]  # fmt: skip


def stop_stragglers(uid: str, grace: float = STOP_GRACE_SECONDS) -> list[int]:
    """SIGTERM every straggler of the job, SIGKILL those left after `grace`; returns the ones found."""
    found = job_stragglers(uid)
    signum, deadline = signal.SIGTERM, time.time() + grace
    stragglers = found
    while stragglers and time.time() < deadline + STOP_GRACE_SECONDS:  # bounded: one stuck in the kernel stays
        for pid in stragglers:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        if time.time() > deadline:
            signum = signal.SIGKILL
        time.sleep(0.1)
        stragglers = job_stragglers(uid)  # also catches children they started meanwhile
        found += [pid for pid in stragglers if pid not in found]
    if found:
        print(f"stopped {len(found)} process(es) of the job that outlived its commands: {found}", flush=True)
    return found


def wait_for_foreground(spec: dict, processes: list[subprocess.Popen]) -> tuple[JobState, int | None, str]:
    foreground = [p for p, c in zip(processes, spec["commands"], strict=True) if not c["background"]]
    deadline = time.time() + spec["time_limit"] if spec["time_limit"] else None
    while any(p.poll() is None for p in foreground):
        if deadline and time.time() > deadline:
            return JobState.TIMEOUT, None, f"time limit of {spec['time_limit']} s reached"
        time.sleep(POLL_SECONDS)
    failed = next((p.returncode for p in foreground if p.returncode != 0), 0)
    if failed:
        return JobState.FAILED, failed, f"exit code {failed}"
    return JobState.SUCCEEDED, 0, ""


def run_commands(spec: dict, gpus: list[int]) -> tuple[JobState, int | None, str]:
    commands = spec["commands"]
    runtime_env = {name: str(free_port()) for name in spec.get("ports", [])}
    # a job hosting a server gets its API key now, in its environment only (never in spec.json)
    runtime_env |= {name: new_api_key() for name in api_key_names(runtime_env)}
    runtime_env[JOB_UID_ENV] = spec["uid"]  # how stop_stragglers finds the job's processes
    processes = []
    try:
        for command in commands:
            processes.append(start_command(command, gpus, spec["gpu_pool"], spec["cwd"], runtime_env))
        return wait_for_foreground(spec, processes)
    finally:  # ended, timed out, cancelled or a supervisor error: the job's outcome is recorded after this
        stop(processes, commands)  # background services, and what is left of the foreground
        stop_stragglers(spec["uid"])


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    store, uid = Store(Path(spec["store"])), spec["uid"]
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        blocked = wait_for_dependencies(spec, store)
        if blocked:
            store.update_job(uid, state=JobState.CANCELLED, reason=blocked, ended_at=time.time())
            return 0
        slots = list(range(spec.get("max_parallel_jobs") or 0))
        with reservation(spec, store, "job_slots", slots, 1 if slots else 0), \
                reservation(spec, store, "gpus", spec["gpu_pool"], spec["gpus_needed"]) as gpus:  # fmt: skip
            store.update_job(uid, state=JobState.RUNNING, started_at=time.time())
            state, code, reason = run_commands(spec, gpus)
        store.update_job(uid, state=state, exit_code=code, reason=reason, ended_at=time.time())
    except Cancelled:
        store.update_job(uid, state=JobState.CANCELLED, reason="cancelled", ended_at=time.time())
    except Exception as error:  # record why, so `ns status` can tell; then fail loudly in the supervisor log
        store.update_job(uid, state=JobState.FAILED, reason=f"supervisor error: {error}", ended_at=time.time())
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
