"""A free TCP port for a job's server: `python3 -m skills_cli.common.ports` prints one (standard library only,
so any python3 on a node runs it).

Drawn at random and checked by binding it, not asked of the OS with bind(("", 0)): the OS hands those out in a
predictable order and the probe releases its port at once, so jobs starting together on one node were given the
same port (four array tasks of one evaluation on the local Slurm: "Address already in use" for all but one).
"""

from __future__ import annotations

import random
import socket

PORT_RANGE = (20000, 60999)


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
