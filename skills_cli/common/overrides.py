"""`++key.sub=value` overrides (the NeMo-Skills / Hydra spelling) applied to a typed config.

Values are parsed as YAML scalars or flow collections (`3`, `0.6`, `true`, `null`, `[a, b]`, `{k: v}`), so
`++inference.stop=['</think>']` works without shell gymnastics. Unknown keys fail with the closest valid
names, through the same typed loader as every other config.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skills_cli.common.errors import UserError
from skills_cli.common.typed_config import from_dict


def parse_value(text: str) -> Any:
    import yaml

    if not text.strip():
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not YAML: keep the literal text (e.g. a prompt with braces)
    # `a: b` is text, not a mapping, unless written in flow style: {a: b}
    if isinstance(value, (dict, list)) and not text.lstrip().startswith(("{", "[")):
        return text
    return value


def overrides_to_dict(args: Iterable[str]) -> dict:
    """['++a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'} (leading `+`/`++` optional)."""
    tree: dict = {}
    for arg in args:
        body = arg.lstrip("+")
        key, sep, value = body.partition("=")
        if not sep or not key or not all(part.isidentifier() for part in key.split(".")):
            raise UserError(f"cannot parse override {arg!r}: use ++key=value or ++section.key=value")
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {arg!r}: {part!r} was already given a value")
            node = child
        node[parts[-1]] = parse_value(value)
    return tree


def merge(base: dict, extra: dict) -> dict:
    """Deep merge; `extra` wins."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(cls: type, args: Iterable[str], base: dict | None = None, where: str = "config") -> Any:
    """A typed config from a base mapping plus `++key=value` overrides."""
    return from_dict(cls, merge(base or {}, overrides_to_dict(args)), where)


def load_config_from_argv(cls: type, argv: list[str], where: str) -> Any:
    """`[--config FILE.yaml] ++key=value ...`, the command line of every in-job program: the YAML file is the
    base (handy for values that are painful to quote, like stop strings) and the overrides win."""
    base: dict = {}
    if argv[:1] == ["--config"]:
        if len(argv) < 2:
            raise UserError("--config needs a YAML file")
        from pathlib import Path

        from skills_cli.common.yaml_files import read_yaml_file

        # a missing, binary or folder path, malformed YAML or a key given twice: one line naming the file
        base = read_yaml_file(Path(argv[1]), "--config") or {}
        argv = argv[2:]
    return load_config(cls, argv, base, where=where)
