"""The local bus: stream events of conversations → this node's subscribers.

The seam between the two halves of streaming:

- *publishers* (``pubsub/publisher.py`` and the cluster/Redis adapters) turn
  applied effects into ``StreamEvent``s and call ``LocalBus.publish`` on every
  node that has subscribers for the conversation;
- *subscribers* (``web/socket.py``'s channels) call ``LocalBus.subscribe`` and
  receive each event through a callback.

Delivery is at-least-once and best effort: an event may arrive twice (a
leader change, two adapters) or not at all (a peer link drop). Subscribers
therefore track the next ``seq`` they expect, drop duplicates and report a
hole as a ``gap`` so the client replays. The bus never blocks and never
raises into a publisher: a subscriber callback that fails is logged and the
others still get the event.

Adapters learn which conversations this node wants through the interest
callbacks: ``on_interest`` fires when the first subscriber of a conversation
arrives (True) and when its last one leaves (False).

Two more hooks let an adapter whose subscription to a conversation's events
is itself asynchronous (Redis) keep the stream's no-hole promise:

- ``wait_ready(conversation_id, timeout_s)``: a subscriber that is about to
  read the conversation's ``last_seq`` first waits until events published
  from now on are certain to reach this node (the adapter's gate, set with
  ``set_ready_gate``). Without a gate (node alone, cluster adapter) it is
  ready at once.
- ``signal_loss(conversation_id)``: the adapter tells the conversation's
  subscribers that events may have been lost (its link was down) although
  no hole may ever show in the seqs they receive; each subscriber re-checks
  the store and reports a ``gap`` if the conversation moved meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal

__all__ = ["InterestHandler", "LocalBus", "ReadyGate", "StreamEvent", "Subscription"]

_log = logging.getLogger(__name__)


@dataclass(slots=True, kw_only=True)
class StreamEvent:
    """One event of a conversation's stream (immutable by convention).

    ``payload`` is the JSON object the websocket pushes, encoded once by the
    publisher so fanning out to many sockets never re-encodes it:
    ``{"type":"message","seq":..,"version":..,"message":{...}}`` or
    ``{"type":"tombstone"}``. ``seq`` is the message's seq, or None for a
    tombstone.
    """

    conversation_id: str
    kind: Literal["message", "tombstone"]
    seq: int | None
    payload: bytes


Deliver = Callable[[StreamEvent], None]
InterestHandler = Callable[[str, bool], None]
"""Called with (conversation id, interested) when local interest starts/ends."""
ReadyGate = Callable[[str, float], Awaitable[bool]]
"""(conversation id, timeout in s) -> whether its events now reach this node."""


class Subscription:
    """A handle on one subscriber's registration; ``close`` is idempotent."""

    __slots__ = ("_bus", "_closed", "conversation_id", "deliver", "on_loss")

    def __init__(
        self,
        bus: LocalBus,
        conversation_id: str,
        deliver: Deliver,
        on_loss: Callable[[], None] | None = None,
    ) -> None:
        self._bus = bus
        self._closed = False
        self.conversation_id = conversation_id
        self.deliver = deliver
        self.on_loss = on_loss

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._remove(self)


class LocalBus:
    """This node's subscribers by conversation id."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscription]] = {}
        self._interest_handlers: list[InterestHandler] = []
        self._ready_gate: ReadyGate | None = None

    def subscribe(
        self,
        conversation_id: str,
        deliver: Deliver,
        *,
        on_loss: Callable[[], None] | None = None,
    ) -> Subscription:
        """Register ``deliver`` for the conversation's events from now on.
        It is called synchronously from ``publish``; it must not block.
        ``on_loss`` is called (synchronously, from ``signal_loss``) when
        events may have been lost without a hole showing."""
        subscription = Subscription(self, conversation_id, deliver, on_loss)
        subscribers = self._subscribers.get(conversation_id)
        if subscribers is None:
            self._subscribers[conversation_id] = [subscription]
            self._notify_interest(conversation_id, True)
        else:
            subscribers.append(subscription)
        return subscription

    def publish(self, event: StreamEvent) -> int:
        """Deliver ``event`` to this node's subscribers of its conversation;
        returns how many got it."""
        subscribers = self._subscribers.get(event.conversation_id)
        if not subscribers:
            return 0
        delivered = 0
        for subscription in tuple(subscribers):  # a callback may unsubscribe
            try:
                subscription.deliver(event)
                delivered += 1
            except Exception:
                _log.exception(
                    "stream subscriber failed",
                    extra={
                        "type": "pubsub.subscriber_error",
                        "conversation_id": event.conversation_id,
                    },
                )
        return delivered

    def set_ready_gate(self, gate: ReadyGate) -> None:
        """Install the adapter's readiness check (one per bus)."""
        self._ready_gate = gate

    async def wait_ready(self, conversation_id: str, timeout_s: float) -> bool:
        """Whether events of the conversation published from now on reach
        this node's subscribers; waits at most ``timeout_s`` for it. Call it
        after ``subscribe`` and before reading the conversation's state."""
        gate = self._ready_gate
        if gate is None:
            return True
        return await gate(conversation_id, timeout_s)

    def signal_loss(self, conversation_id: str) -> int:
        """Tell the conversation's subscribers that events may have been
        lost; returns how many were told."""
        told = 0
        for subscription in tuple(self._subscribers.get(conversation_id, ())):
            if subscription.on_loss is None:
                continue
            try:
                subscription.on_loss()
                told += 1
            except Exception:
                _log.exception(
                    "stream subscriber failed on a loss signal",
                    extra={"type": "pubsub.subscriber_error", "conversation_id": conversation_id},
                )
        return told

    def has_subscribers(self, conversation_id: str) -> bool:
        return conversation_id in self._subscribers

    def has_any_subscribers(self) -> bool:
        """Whether any conversation has a subscriber here (a per-apply fast path)."""
        return bool(self._subscribers)

    def interests(self) -> Iterator[str]:
        """The conversations with at least one local subscriber."""
        return iter(tuple(self._subscribers))

    def subscriber_count(self) -> int:
        return sum(len(subscribers) for subscribers in self._subscribers.values())

    def on_interest(self, handler: InterestHandler) -> None:
        self._interest_handlers.append(handler)

    def _remove(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.conversation_id)
        if subscribers is None:
            return
        try:
            subscribers.remove(subscription)
        except ValueError:
            return
        if not subscribers:
            del self._subscribers[subscription.conversation_id]
            self._notify_interest(subscription.conversation_id, False)

    def _notify_interest(self, conversation_id: str, interested: bool) -> None:
        for handler in self._interest_handlers:
            try:
                handler(conversation_id, interested)
            except Exception:
                _log.exception(
                    "pubsub interest handler failed", extra={"type": "pubsub.interest_error"}
                )
