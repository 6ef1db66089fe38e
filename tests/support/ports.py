"""Free loopback ports for throwaway servers started by tests.

Ports come from below the kernel's ephemeral range. A port the kernel hands
out for ``bind(("127.0.0.1", 0))`` is an ephemeral one, and so is the source
port of every outgoing connection: a node that dials a peer not started yet
could take the very port the peer was given, as its own source port, and the
peer then fails with "Address already in use" (seen in a CI run of a 3-node
test). Below that range only a listener can hold a port, and a bind checks
that none does.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10_000
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    ceiling = _ephemeral_low()
    if ceiling - _LOWEST >= 1_000:
        for _ in range(200):
            port = _rng.randrange(_LOWEST, ceiling)
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket(socket.AF_INET, kind) as sock:  # no range known: any free port
        sock.bind(("127.0.0.1", 0))
        port_any: int = sock.getsockname()[1]
        return port_any
