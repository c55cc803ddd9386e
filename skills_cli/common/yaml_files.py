"""The one YAML loader for files users give us (cluster configs, `--config` files, prompt configs).

PyYAML's `safe_load` lets a repeated key win silently (`executor` given twice, a second `env_vars` list that
drops the first), and a binary file escapes as a UnicodeDecodeError traceback. Here both are one line naming
the file: "duplicate key 'executor' in x.yaml at lines 2 and 5", "x.yaml is not a text file".
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from skills_cli.common.errors import UserError


@functools.cache
def _unique_key_loader() -> type:
    import yaml  # imported here: `ns --help` must stay fast

    class UniqueKeySafeLoader(yaml.SafeLoader):
        """A SafeLoader whose mappings refuse a key given twice (the second one would win silently)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            first_line: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key == "<<":  # a merge key (`<<: *base`) may legitimately repeat
                    continue
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise DuplicateKeyError(key, seen, line)
                first_line[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeySafeLoader


class DuplicateKeyError(Exception):
    def __init__(self, key: Any, first: int, second: int):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML text; a duplicate key or malformed YAML is a UserError naming `where` and the line(s)."""
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506  (a SafeLoader subclass)
    except DuplicateKeyError as error:
        raise UserError(f"duplicate key {error.key!r} in {where} at lines {error.first} and {error.second}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise UserError(f"malformed YAML in {where}{line}: {problem}") from None


def read_text_file(path: Path, what: str) -> str:
    """A user's text file as str; a directory, an unreadable or a binary file is one line naming it."""
    if path.is_dir():
        raise UserError(f"{what} {path} is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if b"\0" in data:
        raise UserError(f"{what} {path} is not a text file (it holds NUL bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{what} {path} is not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})"
        ) from None


def read_yaml_file(path: Path, what: str = "YAML file") -> Any:
    """Read and parse a user's YAML file: every failure is one line naming the file."""
    return load_yaml_text(read_text_file(path, what), str(path))
