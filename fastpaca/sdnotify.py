"""systemd readiness notification (``Type=notify``) without libsystemd.

Sends ``READY=1`` / ``STOPPING=1`` / ``STATUS=...`` datagrams to the socket
named by ``$NOTIFY_SOCKET``. Outside systemd the variable is unset and every
call is a no-op, so callers never need to know how they were started.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify"]


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``); returns whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
