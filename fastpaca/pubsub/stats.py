"""Counters of a pub/sub adapter (plain values; the metrics layer exports them)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PubSubStats"]


@dataclass(slots=True)
class PubSubStats:
    """Every counter only grows, except the two gauges at the end."""

    events_published: int = 0
    """Events this node, as the group's leader, handed to its own subscribers."""
    events_forwarded: int = 0
    """Event copies sent to other nodes (or to Redis) for their subscribers."""
    events_received: int = 0
    """Events received from other nodes (or Redis) and handed to the local bus."""
    events_dropped: int = 0
    """Event copies that could not be sent (peer link down or full, Redis down)."""
    frames_sent: int = 0
    frames_received: int = 0
    interest_frames_sent: int = 0
    interest_frames_received: int = 0
    malformed_frames: int = 0
    loss_signals: int = 0
    """Conversations whose subscribers were told events may have been lost
    (Redis: re-subscribed after the subscriber connection was lost; cluster:
    the link to the group's leader dropped, or the leader changed)."""
    remote_interests: int = 0
    """Gauge: (conversation, node) pairs this node would send events to."""
    local_interests: int = 0
    """Gauge: conversations with a subscriber on this node."""
