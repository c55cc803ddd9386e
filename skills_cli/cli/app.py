"""The `ns` command line: typer commands generated from the pipeline's CommandSpecs, plus printing.

This layer only parses, calls the same function the Python API calls, and prints the result. Errors the
user can fix (UserError) are one line on stderr and exit status 2; a job that failed gives status 1.
"""

from __future__ import annotations

import inspect
import logging
import sys
from typing import Annotated, Any

import typer

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
    choices = f" [{'|'.join(option.choices)}]" if option.choices else ""
    if option.positional:
        info = typer.Argument(help=option.help + choices, show_default=option.default not in (None, ...))
    else:
        info = typer.Option(*option.flags, help=option.help + choices, rich_help_panel=option.panel,
                            show_default=option.default not in (None, [], False))  # fmt: skip
    default = None if option.is_list else option.default
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[option.type, info])  # fmt: skip


def _register(spec: CommandSpec) -> None:
    def command(ctx: typer.Context, **values: Any) -> None:
        values = {k: ([] if v is None and spec.option(k).is_list else v) for k, v in values.items()}
        try:
            result = spec.call(WrappedArguments(list(ctx.args)), values)
        except UserError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None
        raise typer.Exit(show(spec.name, result))

    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    parameters += [_parameter(option) for option in spec.options]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = spec.help
    settings = {"allow_extra_args": True, "ignore_unknown_options": True} if spec.extra_args else {}
    app.command(spec.name, help=spec.help, context_settings=settings)(command)


def show(name: str, result: Any) -> int:
    """Print a command's result; return the exit status."""
    from skills_cli.cli import output

    return output.show(name, result)


for _spec in COMMANDS:
    _register(_spec)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    app()


if __name__ == "__main__":
    main()
