"""The warden: one fresh process per run or session that builds the jail and runs the untrusted program in it.

    python -S -s -m skills_cli.sandbox.jail <JailSpec, marshalled, hex>

The service starts it with a clean environment and its output pipes; it never runs untrusted code itself:

    warden (service's namespaces)  unshare(NEWNET|NEWPID|NEWNS [|NEWUSER]) -> fork
      init (pid 1 of the new PID namespace; dies with the warden: PR_SET_PDEATHSIG)
           private /proc, fresh /tmp and /dev/shm (tmpfs), the workdir bound back -> fork
        program: rlimits, umask 077, cwd = workdir, setgroups([]), setgid/setuid(the run's uid) -> execve

When init exits (the program ended, or the warden was killed on a timeout), the kernel kills every process left
in the namespace, so a fork bomb that calls setsid() dies with it. Without a PID namespace the warden starts a
new session and the service kills its process group, then every process of the run's uid (docs/sandbox.md).
Setup failures go to the status pipe as one line, which the service reports as a sandbox_error; the program
never holds that pipe (close-on-exec).

It starts once per run, so it imports little: the spec arrives marshalled (no json), as a SimpleNamespace (no
dataclasses), and the service runs it with -S (no site-packages).
"""

from __future__ import annotations

import marshal
import os
import resource
import select
import signal
import sys
from types import SimpleNamespace

from skills_cli.sandbox import kernel

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (the warden starts once per run)
if TYPE_CHECKING:  # at run time the spec is a SimpleNamespace of the same fields (no dataclasses import)
    from skills_cli.sandbox.spec import JailSpec

SETUP_FAILED = 125
PRIVATE_TMPFS = ("/tmp", "/dev/shm")
CORE_RLIMITS = {resource.RLIMIT_CORE: 0, resource.RLIMIT_NOFILE: 256}


def report(spec: JailSpec, message: str) -> None:
    try:
        os.write(spec.status_fd, (" ".join(message.split()) + "\n").encode())
    except OSError:
        pass


def namespace_flags(spec: JailSpec) -> int:
    wanted = spec.namespaces
    flags = kernel.CLONE_NEWNET if wanted.get("net") else 0
    flags |= kernel.CLONE_NEWPID if wanted.get("pid") else 0
    flags |= kernel.CLONE_NEWNS if wanted.get("mount") else 0
    return flags | (kernel.CLONE_NEWUSER if wanted.get("user") and flags else 0)


def enter_namespaces(spec: JailSpec) -> None:
    flags = namespace_flags(spec)
    if not flags:
        return
    uid, gid = os.getuid(), os.getgid()
    kernel.unshare(flags)
    if flags & kernel.CLONE_NEWUSER:
        kernel.map_own_ids_in_user_namespace(uid, gid)


def exit_code_of(wait_status: int) -> int:
    """The program's exit status as a shell reports it: the code, or 128 + the signal that killed it."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def apply_limits(spec: JailSpec) -> None:
    limits = {
        **CORE_RLIMITS,
        resource.RLIMIT_AS: spec.memory_mb * 1024 * 1024,
        resource.RLIMIT_FSIZE: spec.file_mb * 1024 * 1024,
        resource.RLIMIT_NPROC: spec.max_processes,
    }
    for which, value in limits.items():
        hard = resource.getrlimit(which)[1]
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)  # only root may raise a hard limit
        resource.setrlimit(which, (value, value))
    # the soft limit sends SIGXCPU (the program ends with a clear signal); the hard one a second later SIGKILL
    resource.setrlimit(resource.RLIMIT_CPU, (spec.cpu_seconds, spec.cpu_seconds + 1))


def become_program(spec: JailSpec) -> None:
    """In the program's process: limits, private files, the unprivileged uid, then exec. Never returns."""
    try:
        if spec.namespaces.get("pid"):
            os.setsid()  # no controlling terminal; without a PID namespace the warden's group must stay intact
        os.umask(0o077)  # files it leaves in shared places (/tmp) are its own only
        os.chdir(spec.workdir)
        if spec.uid is not None:
            os.setgroups([])
            os.setgid(spec.uid)
            os.setuid(spec.uid)
        apply_limits(spec)  # after setuid: RLIMIT_NPROC counts the processes of the uid we run as
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        os.execve(spec.argv[0], spec.argv, spec.env)
    except OSError as error:
        report(spec, f"cannot start the program: {error}")
    os._exit(SETUP_FAILED)


def mount_private_filesystems(spec: JailSpec) -> None:
    """In the new mount namespace: a /proc that shows only this namespace's processes (no other job's pids or
    command lines), and fresh size-limited /tmp and /dev/shm (nothing left there by earlier runs or other jobs,
    and no filling the node's disk), with the run's working directory bound back at its own path."""
    kernel.mount(None, "/", None, kernel.MS_REC | kernel.MS_PRIVATE)  # nothing below propagates to the host
    if spec.namespaces.get("pid"):
        kernel.mount("proc", "/proc", "proc", kernel.MS_NOSUID | kernel.MS_NODEV | kernel.MS_NOEXEC)
    workdir = os.open(spec.workdir, os.O_PATH | os.O_DIRECTORY)
    for shared in PRIVATE_TMPFS:
        if os.path.isdir(shared):
            options = f"size={spec.file_mb}m,mode=1777"
            kernel.mount("tmpfs", shared, "tmpfs", kernel.MS_NOSUID | kernel.MS_NODEV, options)
    if not os.path.isdir(spec.workdir):  # it was under one of them
        os.makedirs(spec.workdir)
        kernel.mount(f"/proc/self/fd/{workdir}", spec.workdir, None, kernel.MS_BIND)
    os.close(workdir)


def service_gone_first(pid: int, spec: JailSpec) -> bool:
    """Wait until process `pid` ends or the service dies; True when the service went first. The service holds
    the only write end of `service_fd`, so its exit, even by SIGKILL, ends the pipe: no run outlives it."""
    if spec.service_fd is None:
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # a kernel before 5.3: the service's own kill on timeout is all there is
        return False
    try:
        return pidfd not in select.select([pidfd, spec.service_fd], [], [])[0]
    finally:
        os.close(pidfd)


def supervise(spec: JailSpec, watch_service: bool = False) -> int:
    """Fork the program and reap every process until it ends (as a PID namespace's init must); its exit code."""
    program = os.fork()
    if program == 0:
        become_program(spec)
    if watch_service and service_gone_first(program, spec):
        os.killpg(0, signal.SIGKILL)  # the program's group and this warden with it
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return SETUP_FAILED
        if pid == program:
            return exit_code_of(status)


def run_init(spec: JailSpec, warden_alive: int) -> None:
    """pid 1 of the new namespace. Never returns: its exit takes the whole namespace down."""
    try:
        kernel.set_parent_death_signal(signal.SIGKILL)
        if select.select([warden_alive], [], [], 0)[0]:  # EOF already: the warden died before we armed the signal
            os._exit(SETUP_FAILED)
        if spec.namespaces.get("mount"):
            mount_private_filesystems(spec)
        os._exit(supervise(spec))
    except OSError as error:
        report(spec, f"cannot set up the jail's init: {error}")
    os._exit(SETUP_FAILED)


def run_warden(spec: JailSpec) -> int:
    for inherited in (spec.status_fd, spec.service_fd):
        if inherited is not None:
            os.set_inheritable(inherited, False)  # the program never holds either (close-on-exec)
    try:
        enter_namespaces(spec)
    except OSError as error:
        report(spec, f"cannot enter the jail's namespaces: {error}")
        return SETUP_FAILED
    if not spec.namespaces.get("pid"):
        os.setsid()  # the service kills this process group when the run ends
        try:
            if spec.namespaces.get("mount"):
                mount_private_filesystems(spec)
        except OSError as error:
            report(spec, f"cannot mount the jail's private filesystems: {error}")
            return SETUP_FAILED
        return supervise(spec, watch_service=True)
    alive_read, alive_write = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(alive_write)
        run_init(spec, alive_read)
    os.close(alive_read)
    if service_gone_first(init, spec):
        os.kill(init, signal.SIGKILL)  # init's death kills the whole namespace
    return exit_code_of(os.waitpid(init, 0)[1])


def main(argv: list[str]) -> int:
    return run_warden(SimpleNamespace(**marshal.loads(bytes.fromhex(argv[0]))))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
