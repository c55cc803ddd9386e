"""A free TCP port for a job's server: `python3 -m skills_cli.common.ports` prints one (standard library only,
so any python3 on a node runs it).

Drawn at random and checked by binding it, not asked of the OS with bind(("", 0)): the OS hands those out in a
predictable order and the probe releases its port at once, so jobs starting together on one node were given the
same port (four array tasks of one evaluation on the local Slurm: "Address already in use" for all but one).

Drawn below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 on Linux by default): every
outbound connection on the node takes a local port from that range, so a port drawn there can be taken between
the probe and the server's bind (CI: a vLLM server in a Slurm job lost port 53280 that way while other tests ran).
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

LOWEST_PORT = 20000
DEFAULT_EPHEMERAL_LOW = 32768  # Linux's default start of net.ipv4.ip_local_port_range
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def port_range(ephemeral_file: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """LOWEST_PORT up to just below the ephemeral range; the whole range up to 60999 where that leaves too few."""
    try:
        ephemeral_low = int(ephemeral_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = DEFAULT_EPHEMERAL_LOW
    if ephemeral_low - LOWEST_PORT < 4000:  # a node that lends almost every port out: share them
        return LOWEST_PORT, 60999
    return LOWEST_PORT, ephemeral_low - 1


PORT_RANGE = port_range()


def free_port(attempts: int = 500) -> int:
    """A random port in PORT_RANGE that nothing is bound to right now (the job's server binds it next)."""
    draw = random.SystemRandom()
    for _ in range(attempts):
        port = draw.randint(*PORT_RANGE)
        with socket.socket() as probe:
            try:
                probe.bind(("", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port found in {attempts} random tries in {PORT_RANGE}")


if __name__ == "__main__":
    print(free_port())
