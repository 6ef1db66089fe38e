"""Applied effects → stream events on the local bus.

``StreamPublisher`` is an ``EffectHub`` listener: for every message appended
or conversation tombstoned by this node's state machine it builds the
websocket payload once and publishes it to ``LocalBus``. It runs in the Raft
driver's loop once the write holding the apply is done (``EffectHub``), so
it only encodes and hands over; it never awaits.

This is the whole story on a node running alone, where every group applies
here. A clustered node also needs the events of groups it does not host:
the cluster adapter (``FASTPACA_PUBSUB_ADAPTER=cluster``) carries those
between nodes. The payload bytes are spliced, not re-serialized: the stored
message is already a JSON object.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.store.effects import Appended, Effect, Tombstoned

__all__ = ["StreamPublisher", "event_for"]

TOMBSTONE_PAYLOAD = b'{"type":"tombstone"}'


def event_for(effect: Effect) -> StreamEvent:
    """The stream event of one effect."""
    if isinstance(effect, Appended):
        payload = b'{"type":"message","seq":%d,"version":%d,"message":%b}' % (
            effect.seq,
            effect.version,
            effect.message,
        )
        return StreamEvent(
            conversation_id=effect.conversation_id, kind="message", seq=effect.seq, payload=payload
        )
    assert isinstance(effect, Tombstoned)
    return StreamEvent(
        conversation_id=effect.conversation_id,
        kind="tombstone",
        seq=None,
        payload=TOMBSTONE_PAYLOAD,
    )


class StreamPublisher:
    """Publishes the effects of every apply to this node's subscribers.

    ``should_publish(group_id)`` decides per group whether this node's apply
    is the one that publishes (always, when running alone)."""

    def __init__(
        self, bus: LocalBus, *, should_publish: Callable[[int], bool] = lambda group_id: True
    ) -> None:
        self._bus = bus
        self._should_publish = should_publish

    def __call__(self, group_id: int, effects: Sequence[Effect]) -> None:
        bus = self._bus
        if not self._should_publish(group_id):
            return
        for effect in effects:
            # Building a payload for a conversation nobody watches would
            # cost every append; check interest first.
            if bus.has_subscribers(effect.conversation_id):
                bus.publish(event_for(effect))
