"""How a node's frames reach its peers: the Transport protocol.

A transport moves opaque frames between named nodes. It knows nothing of Raft:
``driver.py`` encodes one frame per peer per iteration (``codec.py``) and hands
it over; other subsystems (request forwarding, pub/sub) use their own
channels on the same connection. Delivery is best effort and in order per
peer while a connection lasts: Raft tolerates loss, so a frame for a peer that
is down is dropped (and counted), never queued without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

__all__ = ["Channel", "FrameHandler", "PeerStateHandler", "Transport"]


class Channel:
    """Frame channels multiplexed on one peer connection."""

    RAFT = 1
    RPC = 2
    PUBSUB = 3
    STATUS = 4
    """Each node's periodic status (groups hosted and led): ``cluster/gossip.py``."""


FrameHandler = Callable[[str, bytes], None]
"""Called with (peer node id, frame payload) for every frame received on a channel."""

PeerStateHandler = Callable[[str, bool], None]
"""Called with (peer node id, connected) whenever a peer connection comes up or goes down."""


class Transport(Protocol):
    @property
    def node_id(self) -> str: ...

    def send(self, peer: str, channel: int, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer`` without blocking. Returns False (and
        counts a drop) when the peer is not connected or its queue is full."""
        ...

    def subscribe(self, channel: int, handler: FrameHandler) -> None:
        """Route inbound frames of ``channel`` to ``handler`` (one per channel)."""
        ...

    def on_peer_state(self, handler: PeerStateHandler) -> None: ...

    def connected_peers(self) -> frozenset[str]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
