"""Registries: one per extension point (benchmarks, graders, server kinds, executors, training algorithms).

An entry registers itself where it is defined (`BENCHMARKS.register(...)` at the bottom of its module), and
each registry finds its package's entries by importing every module of one folder, so adding an entry is
adding a file. Entries from outside the package (a lab's private benchmark, a test's toy server kind) come
from plugins: modules named in `$SKILLS_CLI_PLUGINS` (comma-separated, importable from `sys.path`) or
published under the `skills_cli.plugins` entry-point group. The variable is inherited by the jobs a local
executor starts, so a plugin is seen by `ns` and by the in-job programs alike.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Generic, TypeVar

from skills_cli.common.errors import UserError

PLUGINS_ENV = "SKILLS_CLI_PLUGINS"
PLUGIN_GROUP = "skills_cli.plugins"

T = TypeVar("T")
_loaded_plugins: set[str] = set()


@lru_cache(maxsize=1)
def _entry_point_modules() -> tuple[str, ...]:
    """Installed plugins, read once per process (scanning the installed distributions takes tens of ms)."""
    from importlib.metadata import entry_points

    return tuple(entry.value.split(":")[0] for entry in entry_points(group=PLUGIN_GROUP))


def plugin_modules() -> list[str]:
    """The plugin modules named by `$SKILLS_CLI_PLUGINS` (read on every call: tests and embedding programs may
    set it late) and the `skills_cli.plugins` entry points."""
    named = [name.strip() for name in os.environ.get(PLUGINS_ENV, "").split(",") if name.strip()]
    return named + list(_entry_point_modules())


def load_plugins() -> None:
    """Import every plugin module once; a plugin that fails to import is one clear error."""
    for name in plugin_modules():
        if name in _loaded_plugins:
            continue
        _loaded_plugins.add(name)
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise UserError(f"plugin {name!r} (from ${PLUGINS_ENV} or the {PLUGIN_GROUP} entry points) "
                            f"cannot be imported: {error}") from None  # fmt: skip


class Registry(Generic[T]):
    """Named entries of one kind. `package` is the folder whose modules are imported to find built-in entries."""

    def __init__(self, what: str, package: str | None = None, key: Callable[[T], str] = lambda entry: entry.name,
                 more: Callable[[], None] | None = None):  # fmt: skip
        self.what = what  # "benchmark", "server kind", ... (for messages)
        self.package = package
        self._key = key
        # called at every lookup after the built-in entries are found: registers entries from places that may
        # be named late (a folder given by an option or an environment variable); must be cheap when repeated
        self._more = more
        self._entries: dict[str, T] = {}
        self._discovered = False

    def register(self, entry: T, replace: bool = False) -> T:
        """Add an entry; a second entry under a taken name is an error unless `replace`."""
        name = self._key(entry)
        if not replace and name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _discover(self) -> None:
        if not self._discovered:
            self._discovered = True
            if self.package is not None:
                package = importlib.import_module(self.package)
                for module in pkgutil.iter_modules(package.__path__):
                    if not module.name.startswith("_"):
                        importlib.import_module(f"{self.package}.{module.name}")
        load_plugins()
        if self._more is not None:
            self._more()

    def names(self) -> tuple[str, ...]:
        self._discover()
        return tuple(sorted(self._entries))

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            hint = difflib.get_close_matches(name, self._entries, n=1)
            raise UserError(f"unknown {self.what} {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                            + f"; known: {', '.join(sorted(self._entries))}")  # fmt: skip
        return self._entries[name]

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[T]:
        self._discover()
        return iter([self._entries[name] for name in sorted(self._entries)])
