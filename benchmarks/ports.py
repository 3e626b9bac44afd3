"""A free TCP port that no Ray node will want: for the benchmarks' services and the test
suite's own (tests may import benchmarks; a benchmark never imports tests)."""

from __future__ import annotations

import socket

RAY_FIXED_PORTS = frozenset({6379, 8265, 10001, 52365})
"""Ports a Ray node takes by default (GCS, dashboard, client server, dashboard agent): a
head started on one of them, or a node started while a test server holds one, fails
("port ... used by other components"); the kernel hands them out like any other."""


def free_port() -> int:
    """A TCP port nobody listens on right now, and none that a Ray node takes by default."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in RAY_FIXED_PORTS:
            return port
