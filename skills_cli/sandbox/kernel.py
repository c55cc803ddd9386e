"""The Linux calls the jail needs that Python 3.11's os module lacks (unshare, mount, prctl), through libc.

Each raises OSError with the kernel's errno, so a caller can fall back and say why.
"""

from __future__ import annotations

import ctypes
import os

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's own libc (find_library would run ldconfig)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def text(value: str | None):
        return None if value is None else value.encode()

    result = _libc.mount(text(source), text(target), text(fstype), ctypes.c_ulong(flags), text(data))
    _check(result, f"mount {target}")


def set_parent_death_signal(signal_number: int) -> None:
    """The kernel sends `signal_number` to this process when the thread that forked it exits."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(signal_number), 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def map_own_ids_in_user_namespace(uid: int, gid: int) -> None:
    """After unshare(CLONE_NEWUSER) without privileges: keep our own uid/gid inside the new namespace (the only
    mapping an unprivileged process may write; setgroups must be denied first)."""
    with open("/proc/self/setgroups", "w") as handle:
        handle.write("deny")
    with open("/proc/self/uid_map", "w") as handle:
        handle.write(f"{uid} {uid} 1")
    with open("/proc/self/gid_map", "w") as handle:
        handle.write(f"{gid} {gid} 1")
