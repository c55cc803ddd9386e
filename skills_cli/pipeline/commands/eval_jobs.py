"""One model server per eval job: `ns eval --num_jobs N` packs the generation programs into N jobs.

A generation program is one (benchmark, seed, chunk) run of `python -m skills_cli.inference.generate`; ns
generate's compiler makes one job per program, each starting its own model server. Here the programs still to
run (finished outputs were already skipped) are split, in order, into N near-equal contiguous groups, as
NeMo-Skills' `ns eval --num_jobs` does; each group becomes one job whose single server serves every program
of the group. Inside the job the programs run in `programs_at_once` lanes: each lane runs its programs one
after another, the lanes run side by side. A failed program does not stop the others (their outputs are
kept); the job then fails, and a rerun regenerates only what is missing.

Output paths, resume and every downstream job (merge, grading, judge, summary) are unchanged: a downstream
job that waited for a program now waits for the job that holds it. A group of one program keeps its job
as ns generate made it, so `--num_jobs` equal to the number of programs is the old graph exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from skills_cli.pipeline.cluster import ClusterConfig
from skills_cli.pipeline.commands.generate import CLIENT, ServerOptions
from skills_cli.pipeline.jobs import Job
from skills_cli.pipeline.shell import quote_argv

PACKED_NAME = "generate"  # a job of several programs: `generate`, or `generate-<i>` when there are several


def default_num_jobs(server: ServerOptions, cluster: ClusterConfig, programs: int) -> int:
    """One job per program where the jobs get their own machines (a scheduler places them on separate
    allocations, so they run side by side) or start no server at all (--server_address). On this machine,
    as many jobs as servers fit at once: one per `server_gpus` of its GPUs, one for a CPU server (more
    servers would only compete for the same cores)."""
    if cluster.runs_remotely or server.server_address:
        return programs
    if server.server_gpus == 0:
        return 1
    from skills_cli.pipeline.executors.local import detect_gpus

    return max(1, len(detect_gpus(cluster)) // server.server_gpus)


def is_program(job: Job) -> bool:
    """A job that runs a generation program (ns generate's generation jobs; not its merge jobs)."""
    return any(command.name == CLIENT for command in job.commands)


def split_evenly(programs: list[Job], parts: int) -> list[list[Job]]:
    """`parts` contiguous groups whose sizes differ by at most one, the larger first (order kept)."""
    size, larger = divmod(len(programs), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (1 if index < larger else 0)
        groups.append(programs[start:end])
        start = end
    return groups


def client_script(program: Job) -> str:
    """The shell text of a program's client command (`bash -c SCRIPT`, quoted once by quote_argv already)."""
    (client,) = [command for command in program.commands if command.name == CLIENT]
    return client.argv[2]


def lane_script(programs: list[Job]) -> str:
    """Programs one after another; each is announced in the log, and a failure is remembered, not fatal."""
    steps = [f"{quote_argv(['echo', 'starting', program.name])}; ( {client_script(program)} ) || _failed=1"
             for program in programs]  # fmt: skip
    return "; ".join(["_failed=0", *steps, 'exit "$_failed"'])


def lanes_script(lanes: list[list[Job]]) -> str:
    """One lane as it is; several lanes in the background, the job failing if any lane failed."""
    if len(lanes) == 1:
        return lane_script(lanes[0])
    started = [f"( {lane_script(lane)} ) & _lane{index}=$!" for index, lane in enumerate(lanes)]
    waited = [f'wait "$_lane{index}" || _failed=1' for index in range(len(lanes))]
    return "; ".join([*started, "_failed=0", *waited, 'exit "$_failed"'])


def shared_part(program: Job) -> Job:
    """What the programs of one job must have in common: all but their names and client scripts."""
    commands = tuple(dataclasses.replace(command, argv=(CLIENT,)) if command.name == CLIENT else command
                     for command in program.commands)  # fmt: skip
    return dataclasses.replace(program, name=PACKED_NAME, commands=commands)


def packed_job(programs: list[Job], name: str, at_once: int) -> Job:
    """The programs' shared server (and resources) with one client command that runs them all."""
    first = programs[0]
    if any(shared_part(program) != shared_part(first) for program in programs):
        raise ValueError(f"programs packed into {name} differ in more than their client command")
    lanes = [lane for lane in (programs[index::at_once] for index in range(at_once)) if lane]
    commands = tuple(dataclasses.replace(command, argv=("bash", "-c", lanes_script(lanes)))
                     if command.name == CLIENT else command for command in first.commands)  # fmt: skip
    return dataclasses.replace(first, name=name, commands=commands)


def pack_programs(programs: list[Job], num_jobs: int, at_once: int) -> tuple[list[Job], dict[str, str]]:
    """The programs in min(num_jobs, len(programs)) jobs, and each program's new job name.

    More jobs than programs is not an error: after a rerun skipped the finished outputs, fewer programs are
    left than the user counted; each then gets its own job."""
    groups = split_evenly(programs, min(num_jobs, len(programs))) if programs else []
    jobs, renamed = [], {}
    for index, group in enumerate(groups):
        if len(group) == 1:
            job = group[0]
        else:
            name = PACKED_NAME if len(groups) == 1 else f"{PACKED_NAME}-{index}"
            job = packed_job(group, name, at_once)
        jobs.append(job)
        renamed.update({program.name: job.name for program in group})
    return jobs, renamed


def redirected(job: Job, renamed: Mapping[str, str]) -> Job:
    """`job` waiting for the jobs that now hold the programs it waited for (each once)."""
    after = tuple(dict.fromkeys(renamed.get(name, name) for name in job.after))
    after_any = tuple(dict.fromkeys(renamed.get(name, name) for name in job.after_any))
    return dataclasses.replace(job, after=after, after_any=after_any)
