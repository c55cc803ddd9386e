"""Which isolation layers this machine allows, found once at start by trying them, and the uids runs execute as.

Root: each run gets its own unprivileged uid from a pool (RLIMIT_NPROC is not enforced for uid 0, and other
jobs' owner-only files must be unreadable), plus new network, PID and mount namespaces. Not root: a new user
namespace makes the other namespaces possible where the kernel allows unprivileged user namespaces; the code
runs as the service's own uid. A layer that fails is left out, logged once and reported by GET /health; without
a network namespace a Python audit hook refuses sockets (bypassable: see docs/sandbox.md).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import random
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from skills_cli.sandbox.spec import JailSpec, setup_errors

log = logging.getLogger("skills_cli.sandbox")

NAMESPACES = ("net", "pid", "mount")
LAYER_SWITCHES = ("uid", "net", "pid", "mount", "user")
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
PROBE_TIMEOUT = 30.0
HIGH_UIDS = (1_000_000, 2_000_000_000)
FALLBACK_UID_BASE = 61000

# Prepended to the program when there is no network namespace: refuses every socket operation that reaches
# another endpoint. A last resort only: ctypes, a child process or another interpreter bypasses it.
AUDIT_HOOK_GUARD = """
import sys
def _skills_sandbox_no_network(event, args):
    if event in ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo"):
        raise PermissionError("network access is disabled in the sandbox")
sys.addaudithook(_skills_sandbox_no_network)
del _skills_sandbox_no_network
"""


@dataclass(frozen=True)
class Isolation:
    """The layers in force; every run's JailSpec is built from these."""

    python: str  # the interpreter untrusted code runs with
    namespaces: dict[str, bool] = field(default_factory=dict)  # net, pid, mount, user
    uid_base: int | None = None  # runs use uid_base + k; None: the service's own uid

    @property
    def audit_hook(self) -> bool:
        return not self.namespaces.get("net")

    def report(self) -> dict:
        """What GET /health says about isolation."""
        return {
            "resource_limits": True,
            "clean_environment": True,
            "private_workdir": True,
            "unprivileged_uid": self.uid_base is not None,
            "process_limit": self.uid_base is not None or os.geteuid() != 0,  # RLIMIT_NPROC ignores uid 0
            "network_namespace": bool(self.namespaces.get("net")),
            "pid_namespace": bool(self.namespaces.get("pid")),
            "private_proc": bool(self.namespaces.get("mount") and self.namespaces.get("pid")),
            "private_tmp": bool(self.namespaces.get("mount")),
            "user_namespace": bool(self.namespaces.get("user")),
            "audit_hook_network_guard": self.audit_hook,
        }


# The directory skills_cli is imported from: the warden runs with -S (no site-packages, no editable-install
# finder: a third of its start-up time) and finds skills_cli through PYTHONPATH instead.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def warden_env() -> dict[str, str]:
    """The warden's whole environment: nothing of the service's (its secrets) reaches the jail, not even
    through /proc/1/environ of the namespace."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": PACKAGE_ROOT}


def probe(python: str, namespaces: dict[str, bool], uid: int | None) -> str | None:
    """Run `pass` in a jail with these layers; None when it worked, else why not."""
    read_end, write_end = os.pipe()
    spec = JailSpec(argv=[python, "-c", "pass"], workdir="/", env={}, status_fd=write_end, memory_mb=1024,
                    max_processes=16, cpu_seconds=10, file_mb=1, uid=uid, namespaces=namespaces)  # fmt: skip
    try:
        result = subprocess.run(spec.to_argv(sys.executable), env=warden_env(), pass_fds=(write_end,),
                                capture_output=True, text=True, timeout=PROBE_TIMEOUT)  # fmt: skip
    except subprocess.TimeoutExpired:
        return "the probe did not finish"
    finally:
        os.close(write_end)
    errors = setup_errors(read_end)
    if errors or result.returncode != 0:
        return errors or f"exit {result.returncode}: {result.stderr.strip()[-300:]}"
    return None


def usable_namespaces(python: str, uid: int | None, disabled: frozenset[str]) -> dict[str, bool]:
    """All of net/pid/mount at once when possible, else each one that works alone (logged once each)."""
    wanted = {name: name not in disabled for name in NAMESPACES}
    wanted["user"] = os.geteuid() != 0 and "user" not in disabled
    if probe(python, wanted, uid) is None:
        return wanted
    found = {"user": wanted["user"]}
    for name in (name for name in NAMESPACES if wanted[name]):
        alone = {"user": found["user"], name: True}
        why = probe(python, alone, uid)
        found[name] = why is None
        if why:
            log.warning("sandbox: no %s namespace (%s); see docs/sandbox.md for what that weakens", name, why)
    return found


def runnable_python(python: str, uid_base: int) -> str | None:
    """`python`, or a system interpreter, that uid_base can execute (an interpreter under a private home, such
    as a pyenv in /root, is not reachable once the uid is dropped); None when none can."""
    fallbacks = [path for path in SYSTEM_PYTHONS if os.path.realpath(path) != os.path.realpath(python)]
    for candidate in [python, *fallbacks]:
        why = probe(candidate, {}, uid_base)
        if why is None:
            if candidate != python:
                log.warning("sandbox: uid %d cannot run %s; code runs with %s instead", uid_base, python, candidate)
            return candidate
        log.warning("sandbox: uid %d cannot run %s (%s)", uid_base, candidate, why)
    return None


def uid_bases(requested: int | None) -> list[int]:
    """Where the run uids may start: `requested`, else a random block of high uids (two services on one node,
    two jobs, then never share a uid: neither can read the other's files, nor kill the other's processes in the
    fallback sweep), else FALLBACK_UID_BASE for user namespaces that map only the low 65536 uids."""
    if requested is not None:
        return [requested]
    return [random.SystemRandom().randrange(*HIGH_UIDS), FALLBACK_UID_BASE]


def unprivileged(python: str, bases: list[int]) -> tuple[str, int] | None:
    """The first (interpreter, uid base) that works, trying each base in turn."""
    for base in bases:
        runnable = runnable_python(python, base)
        if runnable is not None:
            return runnable, base
    return None


def detect(python: str, uid_base: int | None, disabled: frozenset[str] = frozenset()) -> Isolation:
    """Try the layers on this machine (an unprivileged uid as root, then namespaces), except those `disabled`
    (names of LAYER_SWITCHES: an operator's choice, and how the tests exercise the fallbacks)."""
    for name in sorted(disabled):
        log.warning("sandbox: layer %s disabled by --disable_layers", name)
    uid: int | None = None
    if os.geteuid() == 0 and "uid" not in disabled:
        found = unprivileged(python, uid_bases(uid_base))
        if found is None:
            log.warning("sandbox: code runs as root, without a process limit (no usable uid)")
        else:
            python, uid = found
    namespaces = usable_namespaces(python, uid, disabled)
    if not any(namespaces.get(name) for name in NAMESPACES) and namespaces.get("user"):
        namespaces["user"] = False
    isolation = Isolation(python=python, namespaces=namespaces, uid_base=uid)
    log.info("sandbox isolation: %s (code runs with %s, uids from %s)", json.dumps(isolation.report()), python, uid)
    return isolation


class UidPool:
    """uids handed out one per running program, so concurrent runs neither share files nor a process limit.
    Taking one blocks while all are out: the pool is also the service's limit on concurrent runs."""

    def __init__(self, first: int | None, size: int):
        self._free: queue.Queue = queue.Queue()
        for offset in range(size):
            self._free.put(None if first is None else first + offset)

    def take(self, timeout: float | None = None) -> int | None:
        return self._free.get(timeout=timeout)

    def give_back(self, uid: int | None) -> None:
        self._free.put(uid)
