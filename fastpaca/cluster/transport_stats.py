"""Settings and counters of the websocket peer transport.

Plain values only: ``transport_ws.py`` fills them in, and the metrics layer
reads them (it exports the per-peer counters as Prometheus series). Nothing
here does IO or knows about websockets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PeerStats", "TransportConfig", "TransportStats"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportConfig:
    send_queue_messages_max: int = 8192
    """Per-peer queue bound in payloads; a send beyond it is dropped and counted."""
    send_queue_bytes_max: int = 64 * 1024 * 1024
    """Per-peer queue bound in payload bytes (snapshot chunks are large)."""
    frame_bytes_max: int = 1024 * 1024
    """The writer packs queued payloads into one websocket message up to this size."""
    message_bytes_max: int = 64 * 1024 * 1024
    """Largest inbound websocket message accepted (one oversized payload goes alone)."""
    handshake_timeout_s: float = 5.0
    """A connection that has not finished the handshake by then is closed."""
    connect_timeout_s: float = 3.0
    dial_backoff_initial_s: float = 0.1
    dial_backoff_max_s: float = 5.0
    heartbeat_s: float | None = 10.0
    """Websocket ping interval; a peer that misses the pong is disconnected, so a
    half-open TCP connection (host gone without a FIN) does not look connected."""
    close_timeout_s: float = 1.0
    duplicate_window_s: float = 2.0
    """How long a fresh connection dialed by the lower node id is protected from
    being replaced by a simultaneous dial in the other direction (see
    ``transport_ws`` on duplicate connections)."""


@dataclass(slots=True)
class PeerStats:
    """Counters for one peer; they only ever grow."""

    connects: int = 0
    disconnects: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    frames_sent: int = 0
    messages_received: int = 0
    bytes_received: int = 0
    frames_received: int = 0
    drops: int = 0
    """Payloads not sent: peer not connected, queue full, or lost in a closing link."""
    auth_failures: int = 0
    malformed_frames: int = 0


@dataclass(slots=True)
class TransportStats:
    """Every counter of one transport. ``peers`` holds the per-peer counters of
    every peer we know of or have authenticated; the totals below also count
    connections whose peer never proved who it is."""

    peers: dict[str, PeerStats] = field(default_factory=dict)
    auth_failures: int = 0
    handshake_timeouts: int = 0
    rejected_requests: int = 0
    """Plain HTTP requests (no websocket upgrade) on the cluster path."""
    unroutable_messages: int = 0
    """Payloads on a channel nobody subscribed to."""
    handler_errors: int = 0
    """Payloads a channel handler rejected by raising; each closed its link."""

    def peer(self, peer_id: str) -> PeerStats:
        stats = self.peers.get(peer_id)
        if stats is None:
            stats = self.peers[peer_id] = PeerStats()
        return stats
