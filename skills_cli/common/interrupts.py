"""Ctrl-C: one handler for the whole `ns` process, and a way to hold it while a submission must not be cut.

Python raises KeyboardInterrupt wherever the main thread happens to be; when that is inside a finalizer or
callback the exception is "ignored" and the Ctrl-C is lost. The handler therefore also records that it ran,
so the places that matter (before anything is submitted, and at exit) can still see the interrupt.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("skills_cli")
_seen: list[int] = []


def _raise(signum: int, frame: object) -> None:
    _seen.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Make Ctrl-C raise KeyboardInterrupt and be remembered (main thread only, as signals require).

    A process started with SIGINT ignored (`nohup`, `cmd &` in a script) keeps ignoring it, as Python does."""
    if _main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _raise)


def interrupted() -> bool:
    """Has a Ctrl-C arrived since `install`, even one whose KeyboardInterrupt was swallowed?"""
    return bool(_seen)


@contextmanager
def deferred(what: str) -> Iterator[None]:
    """Hold a Ctrl-C that lands inside the block until the block ends, then raise it.

    A submission cut half way leaves jobs queued that nobody knows of; letting it finish means every queued
    job is recorded and can be cancelled. A second Ctrl-C interrupts at once (a hung connection must not
    trap the user); the caller then cancels whatever was recorded. An interrupt seen before the block
    (possibly swallowed) stops it from starting.
    """
    if interrupted():
        raise KeyboardInterrupt
    if not _main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        _seen.append(signum)
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)
        log.warning("interrupted: finishing %s, then cancelling it (Ctrl-C again to stop at once)", what)

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pending:
        raise KeyboardInterrupt


@contextmanager
def ignored() -> Iterator[None]:
    """Ignore Ctrl-C inside the block (cleanup that must finish, such as cancelling jobs)."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
