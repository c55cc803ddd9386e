"""The `ns` command line: typer commands generated from the pipeline's CommandSpecs, plus printing.

This layer only parses, calls the same function the Python API calls, and prints the result. Errors the
user can fix (UserError) are one line on stderr and exit status 2; a job that failed gives status 1.
"""

from __future__ import annotations

import errno
import inspect
import logging
import sys
from typing import Annotated, Any

import typer

try:  # recent typer vendors click as typer._click; older ones use click itself
    from typer import _click as click
except ImportError:  # pragma: no cover
    import click

from skills_cli.cli import INTERRUPTED, abort
from skills_cli.common import interrupts
from skills_cli.common.errors import UserError
from skills_cli.pipeline.commands import COMMANDS
from skills_cli.pipeline.options import CommandSpec, Option, WrappedArguments

app = typer.Typer(
    name="ns",
    help="skills-cli: synthetic data, training and evaluation of LLMs as dependent jobs, "
    "on this machine, in Docker, or on Slurm over SSH.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: typer's rich help formatter alone costs ~0.2 s of imports on every `--help`.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _parameter(option: Option) -> inspect.Parameter:
    """Scalars reach our own validation as text, so the CLI and the Python API give the same messages."""
    choices = f" [{'|'.join(option.choices)}]" if option.choices else ""
    default_shown = option.default not in (None, ..., [], False)
    help_text = option.help + choices + (f" [default: {option.default}]" if default_shown else "")
    if option.positional:
        info = typer.Argument(help=help_text, show_default=False)
    else:
        info = typer.Option(*option.flags, help=help_text, show_default=False, metavar=_metavar(option))
    if option.type is bool:
        annotation, default = bool, option.default
    elif option.is_list:
        annotation, default = list[str], None
    else:
        annotation, default = (
            (str if option.default is ... else str | None),
            option.default if option.default is ... else None,
        )
    return inspect.Parameter(
        option.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, info]
    )


def _metavar(option: Option) -> str | None:
    if option.type is bool:
        return None
    name = getattr(option.type, "__name__", None) or str(option.type)
    for word in ("int", "float", "str"):
        if word in name:
            return {"int": "INT", "float": "NUMBER", "str": "TEXT"}[word]
    return "TEXT"


def _register(spec: CommandSpec) -> None:
    def command(ctx: typer.Context, **values: Any) -> None:
        # None means "not given on the command line": the spec's default applies
        values = {k: v for k, v in values.items() if v is not None and not (spec.option(k).is_list and v == [])}
        result = spec.call(WrappedArguments(list(ctx.args)), values)
        raise _Finished(show(spec.name, result))

    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    parameters += [_parameter(option) for option in spec.options]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = spec.help
    settings = {"allow_extra_args": True, "ignore_unknown_options": True} if spec.extra_args else {}
    for parent in [_group(name) for name in spec.groups] or [app]:
        parent.command(spec.name, help=spec.help, context_settings=settings)(command)


_GROUPS: dict[str, typer.Typer] = {}
_GROUP_HELP = {"train": "Train a model: supervised fine-tuning (sft) or reinforcement learning with GRPO (grpo).",
               "nemo_rl": "The same commands as `ns train`, under the name NeMo-Skills uses (`ns nemo_rl sft`)."}  # fmt: skip


def _group(name: str) -> typer.Typer:
    if name not in _GROUPS:
        _GROUPS[name] = typer.Typer(name=name, help=_GROUP_HELP.get(name), no_args_is_help=True, rich_markup_mode=None)
        app.add_typer(_GROUPS[name], name=name)
    return _GROUPS[name]


class _Finished(Exception):
    """Carries a command's exit status past click to `main` (click's own Exit is swallowed in some modes)."""

    def __init__(self, status: int):
        self.status = status


def show(name: str, result: Any) -> int:
    """Print a command's result; return the exit status."""
    from skills_cli.cli import output

    return output.show(name, result)


for _spec in COMMANDS:
    _register(_spec)


def main() -> None:
    # Our own logger only: configuring the root logger would print paramiko's and nemo-run's chatter.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("skills_cli")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        status = app(standalone_mode=False)
    except _Finished as finished:
        sys.exit(finished.status)
    except UserError as error:
        from skills_cli.pipeline.secrets import mask_known  # a message may quote a cluster env value

        typer.echo(f"error: {mask_known(str(error))}", err=True)
        sys.exit(2)
    except click.exceptions.NoArgsIsHelpError as error:  # bare `ns`: show the help
        typer.echo(error.format_message())
        sys.exit(0)
    except click.exceptions.UsageError as error:  # unknown option, bad type, missing argument
        typer.echo(f"error: {error.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        abort()
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" while writing {error.filename}" if error.filename else ""
        typer.echo(f"error: disk full{where} ({error.strerror}); free space and rerun", err=True)
        sys.exit(1)
    # typer turns a Ctrl-C inside a command into the return value 130; a swallowed one is remembered
    if status == INTERRUPTED or interrupts.interrupted():
        abort()
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
