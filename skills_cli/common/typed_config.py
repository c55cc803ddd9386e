"""Build frozen dataclasses from plain dicts (YAML, JSON, keyword arguments) with strict checking.

Every config in the project (cluster configs now, stage configs and `++key=value` overrides later) goes
through `from_dict`, so an unknown key or a wrong type fails the same way everywhere: one line naming the
place, the offending value and, for unknown keys, the valid ones. Number fields are range-checked here too:
every float must be finite unless its field opts in, and `bounded(default, ge=.., gt=.., le=..)` fields carry
their range in the field metadata, so every config class (and every `++key=value` override, which goes
through `from_dict`) gets the same rules without a check per key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import enum
import math
import re
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from skills_cli.common.errors import UserError

_INT = re.compile(r"^\s*-?[0-9]+\s*$")  # ASCII digits only: "²".isdigit() is True but int("²") fails


class ConfigError(UserError, ValueError):
    """A config value or key is invalid; the message is meant for the user as is."""


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The range a number field accepts, checked by `from_dict` for every config class (and by CLI options).

    Every float is finite unless `nonfinite` opts in: `nan` compares false with everything, so an unchecked
    `temperature=nan` passes `temperature < 0` and fails only in the job. `also` lists special values allowed
    outside the range (e.g. -1 meaning "all"); `why` explains a limit in the error message. For a list of
    numbers the rule applies to each item.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    also: tuple = ()
    why: str = ""
    nonfinite: bool = False

    def describe(self) -> str:
        parts = [f">= {self.ge}" if self.ge is not None else "", f"> {self.gt}" if self.gt is not None else "",
                 f"<= {self.le}" if self.le is not None else ""]  # fmt: skip
        rule = " and ".join(part for part in parts if part)
        if self.ge is not None and self.le is not None and self.gt is None:
            rule = f"between {self.ge} and {self.le}"
        return rule + "".join(f" or {value!r}" for value in self.also)

    def check(self, value: Any, where: str) -> None:
        if isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                self.check(item, f"{where}[{i}]")
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return  # None (an optional field left unset) and non-numbers have nothing to bound
        if isinstance(value, float) and not math.isfinite(value) and not self.nonfinite:
            raise ConfigError(f"{where}: {value!r} is not a finite number")
        if value in self.also:
            return
        low_ok = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        if not (low_ok and (self.le is None or value <= self.le)):
            why = f" ({self.why})" if self.why else ""
            raise ConfigError(f"{where}: {value!r} is out of range: must be {self.describe()}{why}")


FINITE = Bounds()  # what a number field without its own bounds gets


def bounded(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            ge: float | None = None, gt: float | None = None, le: float | None = None, also: tuple = (),
            why: str = "", nonfinite: bool = False) -> Any:  # fmt: skip
    """A dataclass field with a range: `port: int = bounded(22, ge=1, le=65535)`."""
    bounds = Bounds(ge=ge, gt=gt, le=le, also=also, why=why, nonfinite=nonfinite)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"bounds": bounds})


def bounds_of(field: dataclasses.Field) -> Bounds:
    return field.metadata.get("bounds", FINITE)


def from_dict(cls: type, data: Any, where: str = "config", defaults: Any = None) -> Any:
    """Return `cls(**data)` after checking keys and converting values to the annotated types. Keys left out take
    `defaults`' values (an instance of `cls`) or else the field defaults; a nested config given in part keeps
    the rest of its field's default instance (a `default_factory` that sets some of its keys keeps them)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        close = difflib.get_close_matches(unknown[0], fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}{hint}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    hints = get_type_hints(cls)
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            annotation, value = hints[name], data[name]
            if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
                kwargs[name] = from_dict(annotation, value, f"{where}.{name}", _default_of(field, defaults))
            else:
                kwargs[name] = convert(annotation, value, f"{where}.{name}")
            bounds_of(field).check(kwargs[name], f"{where}.{name}")
        elif defaults is not None:
            kwargs[name] = getattr(defaults, name)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{where}: {error}") from None


def _default_of(field: dataclasses.Field, defaults: Any) -> Any:
    """The value a nested config field starts from: the enclosing default instance's, else its own default."""
    if defaults is not None:
        return getattr(defaults, field.name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def convert(annotation: Any, value: Any, where: str) -> Any:
    """Convert `value` to `annotation` or raise ConfigError; no silent coercion of lossy kinds."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        return _convert_union(annotation, value, where)
    if origin is Literal:
        # `True == 1` in Python: compare types too, so a YAML boolean never matches a number choice.
        if not any(type(value) is type(choice) and value == choice for choice in get_args(annotation)):
            choices = ", ".join(map(repr, get_args(annotation)))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple, collections.abc.Sequence):
        return _convert_sequence(annotation, value, where)
    if origin is dict:
        return _convert_mapping(annotation, value, where)
    if dataclasses.is_dataclass(annotation):
        return value if isinstance(value, annotation) else from_dict(annotation, value, where)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return _convert_enum(annotation, value, where)
    return _convert_scalar(annotation, value, where)


def _convert_union(annotation: Any, value: Any, where: str) -> Any:
    options = get_args(annotation)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: a value is required, got null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return convert(option, value, where)
        except ConfigError as error:
            errors.append(str(error))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {annotation}")


def _convert_sequence(annotation: Any, value: Any, where: str) -> tuple | list:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
    args = get_args(annotation) or (Any,)
    item_type = args[0]
    items = [convert(item_type, item, f"{where}[{i}]") for i, item in enumerate(value)]
    return tuple(items) if get_origin(annotation) is tuple else items


def _convert_mapping(annotation: Any, value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
    key_type, value_type = get_args(annotation) or (Any, Any)
    return {convert(key_type, k, f"{where} key"): convert(value_type, v, f"{where}.{k}") for k, v in value.items()}


def _convert_enum(annotation: type[enum.Enum], value: Any, where: str) -> enum.Enum:
    if isinstance(value, annotation):
        return value
    if isinstance(value, bool) and not any(isinstance(member.value, bool) for member in annotation):
        value = object()  # a boolean is never an int-valued member
    try:
        return annotation(value)
    except ValueError:
        choices = ", ".join(repr(member.value) for member in annotation)
        raise ConfigError(f"{where}: {value!r} is not one of {choices}") from None


def _convert_scalar(annotation: Any, value: Any, where: str) -> Any:
    # bool is an int subclass in Python: `num_gpus: true` must not become 1.
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT.match(value):
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
        # YAML turns `4:00:00`-like or numeric names into numbers; a number is a fine string.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def to_dict(instance: Any) -> dict:
    """The inverse of `from_dict` for writing configs back out (enums as their values)."""

    def plain(value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(instance)
