"""Ports for child services: never one an outgoing connection can take first.

A node binds its port only after loading its model (seconds). A port from ``bind(0)`` lies in
the kernel's ephemeral range, where any process's outgoing connection may take it as its source
port in that window; CI once lost a reliability run to exactly that ("node-0 exited with 3").
"""

from __future__ import annotations

import socket

from supernet.sdk.devnet import processes
from supernet.sdk.devnet.processes import free_port


def test_ports_lie_below_the_ephemeral_range_and_are_bindable() -> None:
    low, _ = processes._ephemeral_range()
    ports = [free_port() for _ in range(50)]
    assert all(p < low for p in ports)
    assert len(set(ports)) == len(ports)  # never the same port twice in one process
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))


def test_a_port_taken_meanwhile_is_not_handed_out() -> None:
    held = []
    try:
        for _ in range(20):
            s = socket.socket()
            s.bind(("127.0.0.1", free_port()))
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & {free_port() for _ in range(50)}
    finally:
        for s in held:
            s.close()
