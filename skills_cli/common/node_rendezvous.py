"""A bounded rendezvous of a multi-node job's nodes before its real program starts, with one line that names the
node that is missing (standard library only, so any python3 on a node runs it):

    python -m skills_cli.common.node_rendezvous --shared_dir OUTPUT_DIR -- \\
        python -m torch.distributed.run ... --rdzv_endpoint={rendezvous_host}:{rendezvous_port} \\
        --local_addr={rendezvous_node} ...

srun starts it once per node. The head (the job's first node, as `scontrol show hostnames` orders them) writes
`<shared_dir>/.rendezvous-<job>` with the port it listens on and a nonce; every other node reads that file and
joins over TCP. Once every node of the job has joined, the head picks a free port on itself and tells every node;
each one replaces the placeholders in the command (the head's name, that port, its own name) and execs it, so the
program (torchrun) is what srun watches. When a node is missing the job fails within `--timeout` seconds (or
`$SKILLS_CLI_RENDEZVOUS_TIMEOUT`, which a cluster config's `env_vars` sets) with one `error:` line:

- on the head, naming the nodes that never joined (torchrun alone would wait 600 s and name none);
- on a node that does not see the head's file: the shared folder is not shared with it;
- on a node that sees the file but cannot open a connection to the head, with the reason.

The head's file doubles as a check that every node sees the shared folder (the trainer's checkpoints must be
written once and read everywhere), and the port it names changes with every job, so two multi-node jobs whose
head is the same node no longer collide on a fixed port.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from skills_cli.common.errors import UserError, exits_on_user_error
from skills_cli.common.hostlist import expand_hostlist
from skills_cli.common.ports import free_port

TIMEOUT_ENV = "SKILLS_CLI_RENDEZVOUS_TIMEOUT"
# Nodes of one job start within seconds of each other, but each may first start a container (an image to pull
# or unpack per node); five minutes covers that skew and is still half of torchrun's own join timeout.
DEFAULT_TIMEOUT_S = 300.0
# replaced in every word of the command: the head's name, the port it picked, and this node's own name (which the
# other nodes resolve, unlike what the node may think its own name is: torchrun advertises socket.getfqdn(), which
# is "localhost" on a host whose /etc/hosts maps its name to 127.0.0.1 or Debian's 127.0.1.1)
HOST_PLACEHOLDER, PORT_PLACEHOLDER, NODE_PLACEHOLDER = "{rendezvous_host}", "{rendezvous_port}", "{rendezvous_node}"
POLL_S = 0.5
HELLO_TIMEOUT_S = 10.0  # a joining node sends its one line at once; a connection that sends nothing is dropped


# -- which nodes -----------------------------------------------------------------------------------------------
def this_node(nodes: list[str]) -> str:
    """The name Slurm knows this node by; the host name (or its first label) where slurmd's variable is not
    passed in (a container started by docker, which gets the Slurm variables we name only)."""
    for name in (os.environ.get("SLURMD_NODENAME"), socket.gethostname(), socket.gethostname().split(".")[0]):
        if name and name in nodes:
            return name
    raise UserError(f"node_rendezvous: this node ({socket.gethostname()}) is not one of the job's nodes "
                    f"{', '.join(nodes)}; pass --node")  # fmt: skip


@dataclass(frozen=True)
class Rendezvous:
    nodes: tuple[str, ...]  # every node of the job, the head first
    me: str
    shared_dir: Path
    job: str  # the job id, with the step id where there is one: two steps of a job meet apart
    timeout_s: float

    @property
    def head(self) -> str:
        return self.nodes[0]

    @property
    def file(self) -> Path:
        return self.shared_dir / f".rendezvous-{self.job}"

    @property
    def node_wait_s(self) -> float:
        """A node gives up on the head's file a little before the head gives up on it, so that the more precise
        line (which folder it does not see) comes first and srun's --kill-on-bad-exit ends the rest."""
        return self.timeout_s - min(10.0, self.timeout_s / 4)


# -- the head ------------------------------------------------------------------------------------------------
def lead(rendezvous: Rendezvous) -> int:
    """Wait for every node; return the port the program's own rendezvous uses, which every node was told."""
    started = time.monotonic()
    with listening_socket() as server:  # held while we wait, so the OS's own choice of port cannot be raced
        port = server.getsockname()[1]
        nonce = secrets.token_hex(16)
        write_invitation(rendezvous, port, nonce)
        try:
            joined = gather(server, rendezvous, nonce, started + rendezvous.timeout_s)
            if len(joined) < len(rendezvous.nodes):
                message = never_joined(rendezvous, port, joined)
                answer_all(joined, {"error": message})
                raise UserError(message)
            program_port = free_port()
            answer_all(joined, {"port": program_port})
        finally:
            rendezvous.file.unlink(missing_ok=True)
    print(f"rendezvous: {len(rendezvous.nodes)} nodes joined at {rendezvous.head}:{port} in "
          f"{time.monotonic() - started:.1f} s; the program meets at {rendezvous.head}:{program_port}", file=sys.stderr)  # fmt: skip
    return program_port


def listening_socket() -> socket.socket:
    """On every interface, IPv6 too where the node has it (a head name may resolve to either)."""
    if socket.has_dualstack_ipv6():
        return socket.create_server(("", 0), family=socket.AF_INET6, dualstack_ipv6=True)
    return socket.create_server(("", 0))


def never_joined(rendezvous: Rendezvous, port: int, joined: dict[str, list]) -> str:
    missing = [node for node in rendezvous.nodes if node not in joined]
    present = [node for node in rendezvous.nodes if node in joined]
    return (f"rendezvous at {rendezvous.head}:{port}: node(s) {', '.join(missing)} never joined within "
            f"{rendezvous.timeout_s:g} s (joined: {', '.join(present)})")  # fmt: skip


def write_invitation(rendezvous: Rendezvous, port: int, nonce: str) -> None:
    """The file the other nodes look for, written whole (a reader never sees half of it) and owner-only: the
    nonce in it is what lets a connection join, and the job's user is the same on every node."""
    try:
        rendezvous.shared_dir.mkdir(parents=True, exist_ok=True)
        partial = rendezvous.file.with_name(rendezvous.file.name + ".partial")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({"head": rendezvous.head, "port": port, "nonce": nonce}, out)
        os.replace(partial, rendezvous.file)
    except OSError as error:
        raise UserError(f"head {rendezvous.head} cannot write {rendezvous.file}: {error}") from None


def gather(server: socket.socket, rendezvous: Rendezvous, nonce: str, deadline: float) -> dict[str, list]:
    """The connections of the nodes that joined by the deadline, by node (the head joins without one)."""
    joined: dict[str, list] = {rendezvous.head: []}
    while len(joined) < len(rendezvous.nodes) and time.monotonic() < deadline:
        server.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            connection, _ = server.accept()
        except TimeoutError:
            break
        node = greeting(connection, nonce, rendezvous.nodes)
        if node is None:
            connection.close()
        else:
            joined.setdefault(node, []).append(connection)
    return joined


def greeting(connection: socket.socket, nonce: str, nodes: tuple[str, ...]) -> str | None:
    """The node that connected, when it read this run's file and is one of the job's; else it is told to read
    the file again (an earlier run of the same job id left one) and None."""
    connection.settimeout(HELLO_TIMEOUT_S)
    try:
        hello = json.loads(connection.makefile("r").readline() or "{}")
    except (OSError, ValueError):
        return None
    if hello.get("nonce") == nonce and hello.get("node") in nodes:
        return hello["node"]
    send(connection, {"again": True})
    return None


def answer_all(joined: dict[str, list], answer: dict) -> None:
    for connections in joined.values():
        for connection in connections:
            send(connection, answer)
            connection.close()


def send(connection: socket.socket, message: dict) -> None:
    try:
        connection.sendall((json.dumps(message) + "\n").encode())
    except OSError:
        pass  # that node is gone; srun's --kill-on-bad-exit reports it


# -- the other nodes ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    port: int | None = None  # where the program meets; None: the head gave up and printed why, this node stays quiet
    again: bool = False  # the file was an earlier run's: read it again


def join(rendezvous: Rendezvous) -> int | None:
    """The port the program meets at, or None when the head gave up (it says why)."""
    started = time.monotonic()
    deadline = started + rendezvous.node_wait_s
    reason = ""
    while time.monotonic() < deadline:
        invitation = read_invitation(rendezvous.file)
        if invitation is None:
            time.sleep(POLL_S)
            continue
        try:
            answer = ask_head(rendezvous, invitation, started + rendezvous.timeout_s + HELLO_TIMEOUT_S)
        except (OSError, ValueError) as error:  # ValueError: something else answers at that port
            reason = str(error) or type(error).__name__
            time.sleep(POLL_S)
            continue
        if not answer.again:
            return answer.port
    if reason:
        raise UserError(f"node {rendezvous.me} cannot reach head {rendezvous.head}:{invitation['port']}: {reason}")
    raise UserError(f"node {rendezvous.me} does not see {rendezvous.file} written by head {rendezvous.head} within "
                    f"{rendezvous.node_wait_s:g} s (is {rendezvous.shared_dir} on a filesystem every node shares, "
                    "and did the head start?)")  # fmt: skip


def read_invitation(file: Path) -> dict | None:
    try:
        invitation = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return invitation if isinstance(invitation, dict) and {"port", "nonce"} <= invitation.keys() else None


def ask_head(rendezvous: Rendezvous, invitation: dict, deadline: float) -> Answer:
    """Join at the head's port and wait for its answer: after every node joined, or when it gave up."""
    address = (rendezvous.head, int(invitation["port"]))
    with socket.create_connection(address, timeout=HELLO_TIMEOUT_S) as connection:
        connection.sendall((json.dumps({"node": rendezvous.me, "nonce": invitation["nonce"]}) + "\n").encode())
        connection.settimeout(max(deadline - time.monotonic(), 1.0))
        line = connection.makefile("r").readline()
    if not line:
        raise ConnectionError("the head closed the connection without an answer")
    reply = json.loads(line)
    return Answer(port=reply.get("port"), again=bool(reply.get("again")))


# -- the command ----------------------------------------------------------------------------------------------
def with_endpoint(command: list[str], rendezvous: Rendezvous, port: int) -> list[str]:
    values = {HOST_PLACEHOLDER: rendezvous.head, PORT_PLACEHOLDER: str(port), NODE_PLACEHOLDER: rendezvous.me}
    filled = []
    for word in command:
        for placeholder, value in values.items():
            word = word.replace(placeholder, value)
        filled.append(word)
    return filled


def parse_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="python -m skills_cli.common.node_rendezvous", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--shared_dir", required=True, help="a folder every node must see (created by the head)")
    # a string default goes through type=float like a given value, so a bad $SKILLS_CLI_RENDEZVOUS_TIMEOUT is a usage error
    parser.add_argument("--timeout", type=float, default=os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S)),
                        help=f"seconds the head waits for every node (default ${TIMEOUT_ENV} or {DEFAULT_TIMEOUT_S:g})")  # fmt: skip
    parser.add_argument("--nodes", help="the job's nodes, comma-separated, head first (default: $SLURM_JOB_NODELIST)")
    parser.add_argument("--node", help="this node's name (default: $SLURMD_NODENAME, else the host name)")
    parser.add_argument("--job_id", help="default: $SLURM_JOB_ID[.$SLURM_STEP_ID]")
    arguments = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("give the command to run after --")
    return arguments, command


def rendezvous_of(arguments: argparse.Namespace) -> Rendezvous:
    nodes = arguments.nodes.split(",") if arguments.nodes else expand_hostlist(os.environ.get("SLURM_JOB_NODELIST", ""))
    job = arguments.job_id or ".".join(filter(None, (os.environ.get("SLURM_JOB_ID"), os.environ.get("SLURM_STEP_ID"))))
    if not nodes or not job:
        raise UserError(
            "node_rendezvous: no job (SLURM_JOB_NODELIST and SLURM_JOB_ID unset); pass --nodes and --job_id"
        )
    if arguments.timeout <= 0:
        raise UserError(f"node_rendezvous: the timeout must be positive, not {arguments.timeout:g}")
    me = arguments.node or this_node(nodes)
    return Rendezvous(tuple(nodes), me, Path(arguments.shared_dir), job, arguments.timeout)


@exits_on_user_error
def main(argv: list[str] | None = None) -> int:
    arguments, command = parse_arguments(sys.argv[1:] if argv is None else argv)
    rendezvous = rendezvous_of(arguments)
    port = lead(rendezvous) if rendezvous.me == rendezvous.head else join(rendezvous)
    if port is None:
        return 2
    sys.stderr.flush()
    os.execvp(command[0], with_endpoint(command, rendezvous, port))
    return 0  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
