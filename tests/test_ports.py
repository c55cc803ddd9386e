"""Free-port choice for jobs' servers (skills_cli/common/ports.py)."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

from skills_cli.common.ports import PORT_RANGE, free_port, port_range


def test_free_ports_are_bindable_in_range_and_spread_out():
    ports = [free_port() for _ in range(40)]
    assert all(PORT_RANGE[0] <= port <= PORT_RANGE[1] for port in ports)
    # bind(("", 0)) probes handed jobs starting together the same port; random draws over 12k ports should not
    assert len(set(ports)) >= 38, ports
    with socket.socket() as server:
        server.bind(("", ports[0]))


def test_a_taken_port_is_never_returned(monkeypatch):
    import skills_cli.common.ports as ports_module

    real_draw = random.SystemRandom()
    drawn = []

    class TakenPortTwiceFirst:
        # the taken port twice, then real draws: a fixed third port could itself be taken on a busy CI host
        def randint(self, low, high):
            drawn.append(busy if len(drawn) < 2 else real_draw.randint(low, high))
            return drawn[-1]

    with socket.socket() as taken:
        taken.bind(("", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        monkeypatch.setattr(ports_module.random, "SystemRandom", TakenPortTwiceFirst)
        port = free_port()
    assert drawn[:2] == [busy, busy] and len(drawn) >= 3
    assert port == drawn[-1] != busy


def test_the_module_prints_a_port_for_batch_scripts():
    out = subprocess.run([sys.executable, "-m", "skills_cli.common.ports"], capture_output=True, text=True, check=True)
    assert PORT_RANGE[0] <= int(out.stdout) <= PORT_RANGE[1]


def test_ports_are_drawn_below_the_kernels_ephemeral_range(tmp_path):
    # outbound connections take local ports from the ephemeral range; a server port drawn there can be lost
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("32768\t60999\n")
    assert port_range(ephemeral) == (20000, 32767)
    ephemeral.write_text("21000 65000\n")  # too little room below: share the range rather than fail
    assert port_range(ephemeral) == (20000, 60999)
    assert port_range(tmp_path / "missing") == (20000, 32767)
    assert PORT_RANGE == port_range()
