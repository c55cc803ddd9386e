"""Functions named on a command line as `MODULE::FUNCTION`: an importable module (`my_lab.judges::strict`) or a
Python file (`/path/to/judges.py::strict`). Used where users plug their own code into a step (a judge's verdict)."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path

from skills_cli.common.errors import UserError

_REFERENCE = re.compile(r"^(?P<module>[^:]+)::(?P<function>[A-Za-z_][A-Za-z0-9_]*)$")


def parse_reference(text: str, option: str) -> tuple[str, str]:
    """(module or file, function name) of `MODULE::FUNCTION`; anything else is one error line."""
    match = _REFERENCE.match(text.strip())
    if not match:
        raise UserError(f"{option} {text!r}: use MODULE::FUNCTION, e.g. my_lab.judges::strict_verdict "
                        "or /path/to/judges.py::strict_verdict")  # fmt: skip
    return match["module"], match["function"]


def is_file_reference(module: str) -> bool:
    return module.endswith(".py") or "/" in module


def load_function(text: str, option: str) -> Callable:
    """The callable `text` names; an unimportable module or a missing function is one error line."""
    module_name, function_name = parse_reference(text, option)
    try:
        module = (
            _import_file(Path(module_name)) if is_file_reference(module_name) else importlib.import_module(module_name)
        )
    except (ImportError, OSError) as error:
        raise UserError(f"{option} {text!r}: cannot import {module_name}: {error}") from None
    function = getattr(module, function_name, None)
    if not callable(function):
        raise UserError(f"{option} {text!r}: {module_name} has no function {function_name}")
    return function


def import_file(path: Path, name: str):
    """The module in the Python file `path`, imported under `name` (a plug-in outside any package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_file(path: Path):
    if not path.is_file():
        raise OSError(f"no such file {path}")
    return import_file(path, f"skills_cli_user_functions.{path.stem}")
