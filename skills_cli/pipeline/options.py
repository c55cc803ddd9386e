"""Options declared once, serving both the `ns` command line and the Python API.

A command is a `CommandSpec`: a name, its `Option`s and an implementation. The CLI layer turns a spec into
a typer command; `spec.python_api` is the same command as a Python function, with the same names,
defaults and validation: `run_cmd(ctx=wrap_arguments("echo hi"), cluster="slurm", run_after=["a"])`.
This module has no typer import, so in-job code and the Python API never load the CLI stack.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import shlex
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_origin

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import FINITE, Bounds, ConfigError, convert

T = TypeVar("T")


class RegistryNames(Sequence[str]):
    """The choices of an option that come from a registry: asked for each time they are read, so plugin
    entries count, and readable like a tuple (`in`, iteration, `'|'.join`) by every user of `Option.choices`."""

    def __init__(self, names: Callable[[], Sequence[str]]) -> None:
        self.names = names

    def __getitem__(self, index: Any) -> Any:
        return tuple(self.names())[index]

    def __len__(self) -> int:
        return len(tuple(self.names()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegistryNames) and other.names == self.names

    def __hash__(self) -> int:
        return hash(self.names)

    def __repr__(self) -> str:
        return f"RegistryNames({getattr(self.names, '__name__', self.names)})"


@dataclass(frozen=True)
class Option:
    name: str
    type: Any
    default: Any
    help: str
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None  # a callable: names from a registry
    panel: str = "Options"
    positional: bool = False
    bounds: Bounds = FINITE  # the range of a number option (of each item of a list of numbers)

    def __post_init__(self) -> None:
        if callable(self.choices):
            object.__setattr__(self, "choices", RegistryNames(self.choices))

    @property
    def is_list(self) -> bool:
        return get_origin(self.type) is list

    @property
    def flags(self) -> tuple[str, ...]:
        """`--run_after` as NeMo-Skills users type it, and `--run-after` as typer users expect."""
        dashed = self.name.replace("_", "-")
        return (f"--{self.name}",) if dashed == self.name else (f"--{self.name}", f"--{dashed}")

    def validate(self, value: Any) -> Any:
        if value is ...:
            raise UserError(f"missing required argument {self.name.upper() if self.positional else '--' + self.name}")
        if self.is_list and isinstance(value, str):
            value = [value]
        if self.is_list and isinstance(value, tuple):
            value = list(value)
        try:
            value = convert(self.type, value, f"--{self.name}")
            self.bounds.check(value, f"--{self.name}")
        except ConfigError as error:
            raise UserError(str(error)) from None
        if self.choices and value is not None and value not in self.choices:
            raise UserError(f"--{self.name}: {value!r} is not one of {', '.join(self.choices)}")
        return value


# -- typed stage specs: a command's options declared once, as the fields of a frozen dataclass ---------------
def option(default: Any, help: str, *, choices: Any = None, panel: str = "Options", positional: bool = False,
           bounds: Bounds = FINITE) -> Any:  # fmt: skip
    """A spec field that is also a command option (`...` as default: required). Mutable defaults are copied."""
    meta = {"option": {"help": help, "choices": choices, "panel": panel, "positional": positional, "bounds": bounds}}
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _option_fields(spec_type: type) -> list[dataclasses.Field]:
    """The spec's own fields first, then each base's, nearest first: a command's options lead its help.
    An inherited option redeclared as a plain field (`field(default=True, init=False)`) is no option of the
    subclass: its value is fixed there."""
    ordered, seen = [], set()
    for klass in spec_type.__mro__:
        own = klass.__dict__.get("__annotations__", {})
        for item in dataclasses.fields(spec_type):
            if item.name in own and item.name not in seen and "option" in item.metadata:
                ordered.append(item)
                seen.add(item.name)
    return ordered


@functools.cache
def options_of(spec_type: type) -> tuple[Option, ...]:
    """The `Option`s of a spec dataclass, from its fields: the CLI, the Python API and the spec share them."""
    hints = typing.get_type_hints(spec_type)
    options = []
    for item in _option_fields(spec_type):
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        options.append(Option(item.name, hints[item.name], default, **item.metadata["option"]))
    return tuple(options)


def spec_from(spec_type: type[T], source: object, **changes: Any) -> T:
    """A `spec_type` made of `source`'s values for the fields both have, then `changes`: how a command builds
    another command's spec (`ns eval` builds `ns generate` specs) without listing the shared fields."""
    shared = {item.name: getattr(source, item.name) for item in dataclasses.fields(spec_type)
              if item.init and hasattr(source, item.name)}  # fmt: skip
    return spec_type(**{**shared, **changes})


@dataclass(frozen=True, kw_only=True)
class ClusterSpec:
    """The options of every command that talks to a cluster."""

    cluster: str | None = option(None, "Cluster config name (a YAML in --config_dir, $SKILLS_CLI_CONFIG_DIR, "
                                 "./cluster_configs or the packaged examples). Default: local.", panel="Cluster")  # fmt: skip
    config_dir: str | None = option(None, "Directory searched first for cluster configs.", panel="Cluster")


@dataclass(frozen=True, kw_only=True)
class SubmitSpec(ClusterSpec):
    """The options every submitting command takes (cluster, experiment); stage specs extend it."""

    expname: str | None = option(None, "Experiment name; other commands can --run_after it.", panel="Experiment")
    run_after: list[str] = option([], "Wait for every job of this experiment (repeatable). Unknown names are an "
                                  "error.", panel="Experiment")  # fmt: skip
    dependency_type: str | None = option(None, "afterok (default: run only if upstream succeeded) or afterany.",
                                         choices=("afterok", "afterany"), panel="Experiment")  # fmt: skip
    dependent_jobs: int = option(0, "Chain N more copies of each job, each waiting for the previous one (for work "
                                 "longer than the time limit).", panel="Experiment", bounds=Bounds(ge=0))  # fmt: skip
    dry_run: bool = option(False, "Print exactly what would run (scripts, command lines) and submit nothing.",
                           panel="Experiment")  # fmt: skip
    log_dir: str | None = option(None, "Where job logs go (a path on the machine that runs the jobs).",
                                 panel="Experiment")  # fmt: skip
    detach: bool = option(False, "Local executors: return once the jobs are started instead of waiting for them "
                          "(Slurm submissions always return once queued).", panel="Experiment")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class QueuedSpec(SubmitSpec):
    """A submitting command that also picks the partition and the time limit."""

    partition: str | None = option(None, "Slurm partition (default: the cluster config's).", panel="Resources")
    time: str | None = option(None, "Time limit, e.g. 4:00:00 or 1-00:00:00 (default: the cluster config's timeout "
                              "for the partition).", panel="Resources")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ResourcedSpec(QueuedSpec):
    """A submitting command that takes every resource option (GPUs, nodes, tasks, container, mounts too)."""

    num_gpus: int = option(0, "GPUs per node.", panel="Resources", bounds=Bounds(ge=0))
    num_nodes: int = option(1, "Number of nodes.", panel="Resources", bounds=Bounds(ge=1))
    num_tasks: int = option(1, "Tasks (processes) per node.", panel="Resources", bounds=Bounds(ge=1))
    container: str = option("main", "Container role (a key of `containers` in the cluster config) or, on container "
                            "executors, an image name.", panel="Resources")  # fmt: skip
    mounts: list[str] = option([], "Extra mount /src:/dst[:ro] for this job (repeatable).", panel="Resources")


@dataclass
class WrappedArguments:
    """The extra arguments of a command, as the CLI collects them.

    `text` keeps the string given to `wrap_arguments`, so a Python caller's shell snippet
    (`wrap_arguments("cd /x && python y.py")`) reaches `run_cmd` exactly as written.
    """

    args: list[str] = field(default_factory=list)
    text: str | None = None


def wrap_arguments(text: str | Sequence[str] = "") -> WrappedArguments:
    """Turn `"++a=1 ++b='x y'"` into the extra arguments of a command (shell-like splitting)."""
    if isinstance(text, str):
        try:
            return WrappedArguments(shlex.split(text), text=text)
        except ValueError as error:
            raise UserError(f"wrap_arguments: cannot split {text!r}: {error}") from None
    return WrappedArguments([str(word) for word in text])


@dataclass(frozen=True)
class CommandSpec:
    """A command: a frozen stage-spec dataclass whose `option` fields are its options, and the implementation
    that receives the validated spec, `impl(extra, spec)`."""

    name: str
    help: str
    spec_type: type
    impl: Callable[[WrappedArguments, Any], Any]
    extra_args: str | None = None  # how the command uses extra arguments (None: it takes none)
    groups: tuple[str, ...] = ()  # sub-command groups it lives under, e.g. ("train", "nemo_rl") for `ns train sft`
    panel_order: tuple[str, ...] = ("Options", "Cluster", "Experiment", "Resources")

    @property
    def options(self) -> tuple[Option, ...]:
        return options_of(self.spec_type)

    @property
    def api_name(self) -> str:
        """The Python API's function name: `train_sft` for `ns train sft`."""
        return f"{self.groups[0]}_{self.name}" if self.groups else self.name

    def option(self, name: str) -> Option:
        return next(option for option in self.options if option.name == name)

    def call(self, extra: WrappedArguments, values: dict[str, Any]) -> Any:
        """Validate every value (CLI and Python API alike), fill defaults, run the implementation."""
        known = {option.name: option for option in self.options}
        unknown = sorted(set(values) - set(known))
        if unknown:
            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise UserError(
                f"{self.name}: unknown argument {unknown[0]!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
                + f"; valid: {', '.join(sorted(known))}"
            )
        checked = {name: option.validate(values.get(name, option.default)) for name, option in known.items()}
        check_extra_args(self, extra.args)
        return self.impl(extra, self.spec_type(**checked))

    @property
    def python_api(self) -> Callable[..., Any]:
        spec = self

        def api(ctx: WrappedArguments | None = None, **values: Any) -> Any:
            return spec.call(ctx if ctx is not None else WrappedArguments(), values)

        api.__name__ = api.__qualname__ = self.api_name
        api.__doc__ = f"{self.help}\n\nArguments: " + ", ".join(o.name for o in self.options) + ", ctx."
        return api


def check_extra_args(spec: CommandSpec, extra: list[str]) -> None:
    """Extra arguments are the command's payload; a `--word` before the payload is a mistyped option."""
    if not extra:
        return
    if spec.extra_args is None:
        raise UserError(f"{spec.name}: unexpected arguments {' '.join(extra)!r}")
    for word in extra:
        if not word.startswith("--"):
            break  # the payload starts; its own options are its business
        if word == "--":
            break
        name = word[2:].split("=", 1)[0].replace("-", "_")
        hint = difflib.get_close_matches(name, [o.name for o in spec.options], n=1)
        raise UserError(f"{spec.name}: unknown option {word.split('=', 1)[0]!r}"
                        + (f" (did you mean --{hint[0]}?)" if hint else ""))  # fmt: skip
