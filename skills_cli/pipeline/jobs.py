"""The job model: what every stage compiles to and every executor consumes.

A `Job` is one scheduler allocation (one Slurm job, one local supervisor). It holds one or more `Command`s
that share its nodes: for example a model server (background, some GPUs, its own container), a client (the
foreground command) and a sandbox. Commands are argv tuples; only `shell.py` turns them into shell text.
On Slurm a job may also be heterogeneous: components with resources of their own (e.g. the server on GPU
nodes, the client and its sandbox on a CPU node), each command running in the component its `group` names.

A `JobGraph` is the set of jobs of one submission with their internal dependencies; it checks names,
dangling edges and cycles once, so executors can trust it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from skills_cli.common.errors import UserError
from skills_cli.pipeline.shell import check_env_name

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")


def parse_time_limit(text: str) -> int:
    """Seconds in a Slurm-style time (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`)."""
    match = _TIME.match(text.strip())
    if not match:
        raise UserError(f"invalid time limit {text!r}: use HH:MM:SS, D-HH:MM:SS or minutes")
    seconds = _time_limit_seconds(*match.groups())
    if seconds == 0:  # Slurm reads a zero limit as "no limit at all": never what a typed 0 meant
        raise UserError(f"invalid time limit {text!r}: it must be longer than 0 seconds "
                        "(leave the time limit out for the partition's default)")  # fmt: skip
    return seconds


def _time_limit_seconds(days: str | None, first: str, second: str | None, third: str | None) -> int:
    numbers = [int(x) for x in (first, second, third) if x is not None]
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        return int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    if len(numbers) == 1:  # MM
        return numbers[0] * 60
    if len(numbers) == 2:  # MM:SS
        return numbers[0] * 60 + numbers[1]
    return numbers[0] * 3600 + numbers[1] * 60 + numbers[2]


@dataclass(frozen=True)
class Resources:
    """What a job asks the scheduler for. `gpus_per_node` is shared among the job's commands."""

    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int = 1
    cpus_per_task: int | None = None
    memory: str | None = None
    time_limit: str | None = None
    partition: str | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "tasks_per_node"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise UserError(f"gpus_per_node must be >= 0, got {self.gpus_per_node}")
        if self.cpus_per_task is not None and self.cpus_per_task < 1:
            raise UserError(f"cpus_per_task must be >= 1, got {self.cpus_per_task}")
        if self.memory is not None and not re.match(r"^\d+[KMGT]?$", self.memory):
            raise UserError(f"invalid memory {self.memory!r}: use a number with an optional K/M/G/T suffix")
        if self.time_limit is not None:
            parse_time_limit(self.time_limit)
        if self.partition is not None and not re.match(r"^[\w.\-]+$", self.partition):
            raise UserError(f"invalid partition name {self.partition!r}")

    @property
    def time_limit_seconds(self) -> int | None:
        return None if self.time_limit is None else parse_time_limit(self.time_limit)


@dataclass(frozen=True)
class Mount:
    """A bind mount `source:target[:ro]`; sources are paths on the machine where the job runs."""

    source: str
    target: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Mount:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(parts[:2]) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
            raise UserError(f"invalid mount {text!r}: use /source/path:/target/path[:ro]")
        if not parts[0].startswith("/") or not parts[1].startswith("/"):
            # a relative source would silently become a named Docker volume
            raise UserError(f"invalid mount {text!r}: source and target must be absolute paths")
        return cls(parts[0], parts[1], len(parts) == 3 and parts[2] == "ro")

    def __str__(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


@dataclass(frozen=True)
class Command:
    """One program of a job: its argv, the container role it runs in and its share of the job's GPUs.

    Background commands are services (model server, sandbox): the job ends when every foreground command
    has ended, and background ones are then stopped.
    """

    argv: tuple[str, ...]
    name: str = "main"
    container: str = "main"
    gpus: int = 0
    env: Mapping[str, str] = field(default_factory=dict)
    background: bool = False
    single_task: bool = False  # run once (first node, one task) even in a multi-node job: e.g. a client
    group: int = 0  # the component of a heterogeneous job it runs in (0: the first, `Job.resources`)
    binds: tuple[str, ...] = ()  # the job's port variables this service listens on (drawn on its node)

    def __post_init__(self) -> None:
        if not self.argv or not all(isinstance(word, str) for word in self.argv):
            raise UserError(f"command {self.name!r}: argv must be a non-empty list of strings")
        if self.group < 0:
            raise UserError(f"command {self.name!r}: group must be >= 0")
        object.__setattr__(self, "argv", tuple(self.argv))
        object.__setattr__(self, "binds", tuple(self.binds))
        object.__setattr__(self, "env", dict(self.env))
        for key in self.env:
            check_env_name(key)
        if self.gpus < 0:
            raise UserError(f"command {self.name!r}: gpus must be >= 0")


def check_name(kind: str, name: str) -> str:
    """Names are free text (quoted wherever used), but must be printable and on one line."""
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{kind} name must be a non-empty string, got {name!r}")
    if any(ch in name for ch in "\n\r\0\t") or "/" in name:
        raise UserError(f"{kind} name {name!r} must not contain '/', tabs, newlines or NUL")
    return name


@dataclass(frozen=True)
class Job:
    """A scheduler allocation holding one or more commands, with dependencies on jobs of the same graph.

    `after` edges use the submission's dependency type (afterok by default); `after_any` edges always wait
    for the upstream to end however it ended (used to chain the copies of `--dependent_jobs`).

    `het_resources` makes it a heterogeneous job (Slurm only): the resources of components 1, 2, ...
    (component 0 has `resources`, and its first node runs the batch script and is the job's head node).
    """

    name: str
    commands: tuple[Command, ...]
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    after: tuple[str, ...] = ()
    after_any: tuple[str, ...] = ()
    log_dir: str | None = None
    ports: tuple[str, ...] = ()  # env vars set to free TCP ports before the commands start
    het_resources: tuple[Resources, ...] = ()

    def __post_init__(self) -> None:
        check_name("job", self.name)
        object.__setattr__(self, "ports", tuple(self.ports))
        for name in self.ports:
            check_env_name(name)
        object.__setattr__(self, "commands", tuple(self.commands))
        object.__setattr__(self, "mounts", tuple(self.mounts))
        object.__setattr__(self, "after", tuple(self.after))
        object.__setattr__(self, "after_any", tuple(self.after_any))
        object.__setattr__(self, "het_resources", tuple(self.het_resources))
        object.__setattr__(self, "env", dict(self.env))
        for key in self.env:
            check_env_name(key)
        if not self.commands:
            raise UserError(f"job {self.name!r} has no commands")
        if all(command.background for command in self.commands):
            raise UserError(f"job {self.name!r} needs at least one foreground command")
        names = [command.name for command in self.commands]
        if len(set(names)) != len(names):
            raise UserError(f"job {self.name!r}: command names must be unique, got {names}")
        self._check_groups()

    def _check_groups(self) -> None:
        """Every component runs a command, and no component's commands ask for more GPUs than it has."""
        stray = [command.name for command in self.commands if command.group >= len(self.group_resources)]
        if stray:
            raise UserError(f"job {self.name!r}: command {stray[0]!r} names a group the job does not have")
        for group, resources in enumerate(self.group_resources):
            commands = self.commands_of(group)
            where = f"group {group} of job {self.name!r}" if self.is_heterogeneous else f"job {self.name!r}"
            if not commands:
                raise UserError(f"{where} runs no command")
            shared = sum(command.gpus for command in commands)
            if shared > resources.gpus_per_node:
                raise UserError(f"{where}: its commands ask for {shared} GPUs but the job has "
                                f"{resources.gpus_per_node} per node")  # fmt: skip
            # the batch script, where GPU shares are cut, runs in component 0 and sees only its GPUs
            if group and shared and len(commands) > 1:
                raise UserError(f"{where}: only group 0 may share its GPUs among several commands")

    @property
    def dependencies(self) -> tuple[str, ...]:
        return self.after + tuple(name for name in self.after_any if name not in self.after)

    @property
    def is_heterogeneous(self) -> bool:
        return bool(self.het_resources)

    @property
    def group_resources(self) -> tuple[Resources, ...]:
        """The resources of each component: `resources`, then `het_resources`."""
        return (self.resources, *self.het_resources)

    def commands_of(self, group: int) -> list[Command]:
        return [command for command in self.commands if command.group == group]

    def gpu_slices(self) -> list[tuple[int, int]]:
        """(offset, count) of each command's GPUs among its component's GPUs.

        A command alone in its component gets all of them; otherwise each command gets the GPUs it asked for,
        in order.
        """
        slices, offsets = [], [0] * len(self.group_resources)
        for command in self.commands:
            if len(self.commands_of(command.group)) == 1:
                slices.append((0, self.group_resources[command.group].gpus_per_node))
                continue
            slices.append((offsets[command.group], command.gpus))
            offsets[command.group] += command.gpus
        return slices


class JobGraph:
    """The jobs of one submission: unique names, known dependencies, no cycles, topological order."""

    def __init__(self, jobs: Iterable[Job]):
        self.jobs: dict[str, Job] = {}
        for job in jobs:
            if job.name in self.jobs:
                raise UserError(f"two jobs are named {job.name!r}")
            self.jobs[job.name] = job
        for job in self.jobs.values():
            for upstream in job.dependencies:
                if upstream not in self.jobs:
                    raise UserError(f"job {job.name!r} depends on unknown job {upstream!r}")
        self.order = self._topological_order()

    def _topological_order(self) -> list[str]:
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                cycle = path[path.index(name) :] + [name]
                raise UserError(f"dependency cycle: {' -> '.join(cycle)}")
            state[name] = 1
            for upstream in self.jobs[name].dependencies:
                visit(upstream, path + [name])
            state[name] = 2
            order.append(name)

        for name in self.jobs:
            visit(name, [])
        return order

    def __iter__(self):
        return (self.jobs[name] for name in self.order)

    def __len__(self) -> int:
        return len(self.jobs)


def continuation_name(name: str, index: int) -> str:
    return name if index == 0 else f"{name}-cont{index}"


def with_dependent_jobs(graph: JobGraph, dependent_jobs: int) -> JobGraph:
    """Chain `dependent_jobs` extra copies after every job, for work longer than one wall-time limit.

    Copy i waits for copy i-1 to end however it ended (a copy killed at the time limit must not block the
    next one); the copies resume from the previous one's outputs. Downstream jobs wait for the last copy.
    """
    if dependent_jobs < 0:
        raise UserError(f"dependent_jobs must be >= 0, got {dependent_jobs}")
    if dependent_jobs == 0:
        return graph
    last = {name: continuation_name(name, dependent_jobs) for name in graph.jobs}
    jobs = []
    for job in graph:
        base = dataclasses.replace(
            job, after=tuple(last[n] for n in job.after), after_any=tuple(last[n] for n in job.after_any)
        )
        jobs.append(base)
        for index in range(1, dependent_jobs + 1):
            previous = continuation_name(job.name, index - 1)
            jobs.append(
                dataclasses.replace(job, name=continuation_name(job.name, index), after=(), after_any=(previous,))
            )
    return JobGraph(jobs)
