"""In-process transport: a hub connecting several nodes' drivers in one event loop.

``InMemoryHub`` hands out one ``InMemoryTransport`` per node and decides which
links work: ``isolate``/``partition``/``cut`` drop frames (and report the peer
as disconnected on both ends), ``heal`` restores everything. Delivery is
asynchronous (``loop.call_soon``), in order per link, so a sender is never
re-entered by its own send. For tests and benchmarks only: no sockets, no
authentication, no back-pressure beyond dropping when a peer is down.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from fastpaca.raft.transport import FrameHandler, PeerStateHandler

__all__ = ["InMemoryHub", "InMemoryTransport"]

_log = logging.getLogger(__name__)


class InMemoryHub:
    def __init__(self) -> None:
        self._transports: dict[str, InMemoryTransport] = {}
        self._cut: set[tuple[str, str]] = set()
        """Directed links (sender, receiver) that lose every frame."""

    def transport(self, node_id: str) -> InMemoryTransport:
        """The node's transport: the same object while it runs, a fresh one
        (no old subscribers) once the previous one stopped (a restart)."""
        current = self._transports.get(node_id)
        if current is None or current.was_stopped:
            current = InMemoryTransport(self, node_id)
            self._transports[node_id] = current
        return current

    def link_works(self, sender: str, receiver: str) -> bool:
        target = self._transports.get(receiver)
        source = self._transports.get(sender)
        return (
            target is not None
            and source is not None
            and target.is_running
            and source.is_running
            and (sender, receiver) not in self._cut
        )

    def cut(self, sender: str, receiver: str) -> None:
        """Drop frames from ``sender`` to ``receiver`` (one direction)."""
        self._change({(sender, receiver)}, cut=True)

    def isolate(self, node_id: str) -> None:
        """Cut every link to and from ``node_id``."""
        others = [n for n in self._transports if n != node_id]
        pairs = {(node_id, n) for n in others} | {(n, node_id) for n in others}
        self._change(pairs, cut=True)

    def partition(self, *sides: set[str]) -> None:
        """Only nodes on the same side can talk."""
        pairs = {
            (a, b)
            for i, side in enumerate(sides)
            for j, other in enumerate(sides)
            if i != j
            for a in side
            for b in other
        }
        self._change(pairs, cut=True)

    def heal(self) -> None:
        self._change(set(self._cut), cut=False)

    def _change(self, pairs: set[tuple[str, str]], *, cut: bool) -> None:
        before = {pair: self.link_works(*pair) for pair in pairs}
        if cut:
            self._cut |= pairs
        else:
            self._cut -= pairs
        for (sender, receiver), worked in sorted(before.items()):
            if worked != self.link_works(sender, receiver):
                self._transports[sender].notify_peer(receiver, not worked)
                self._transports[receiver].notify_peer(sender, not worked)

    def _node_started(self, node_id: str, started: bool) -> None:
        for other_id, other in sorted(self._transports.items()):
            if other_id == node_id or not other.is_running:
                continue
            if not started or (
                self.link_works(node_id, other_id) and self.link_works(other_id, node_id)
            ):
                other.notify_peer(node_id, started)
                self._transports[node_id].notify_peer(other_id, started)


class InMemoryTransport:
    def __init__(self, hub: InMemoryHub, node_id: str) -> None:
        self._hub = hub
        self._node_id = node_id
        self._handlers: dict[int, FrameHandler] = {}
        self._peer_handlers: list[PeerStateHandler] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.is_running = False
        self.was_stopped = False
        self.frames_sent: Counter[str] = Counter()
        self.frames_dropped: Counter[str] = Counter()
        self.handler_errors = 0

    @property
    def node_id(self) -> str:
        return self._node_id

    def send(self, peer: str, channel: int, payload: bytes) -> bool:
        if self._loop is None or not self._hub.link_works(self._node_id, peer):
            self.frames_dropped[peer] += 1
            return False
        target = self._hub._transports[peer]
        self._loop.call_soon(target._deliver, self._node_id, channel, payload)
        self.frames_sent[peer] += 1
        return True

    def subscribe(self, channel: int, handler: FrameHandler) -> None:
        self._handlers[channel] = handler

    def on_peer_state(self, handler: PeerStateHandler) -> None:
        self._peer_handlers.append(handler)

    def connected_peers(self) -> frozenset[str]:
        return frozenset(
            peer
            for peer in self._hub._transports
            if peer != self._node_id
            and self._hub.link_works(self._node_id, peer)
            and self._hub.link_works(peer, self._node_id)
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.is_running = True
        self._hub._node_started(self._node_id, True)

    async def stop(self) -> None:
        if self.is_running:
            self._hub._node_started(self._node_id, False)
        self.is_running = False
        self.was_stopped = True
        self._loop = None

    def notify_peer(self, peer: str, connected: bool) -> None:
        for handler in self._peer_handlers:
            handler(peer, connected)

    def _deliver(self, sender: str, channel: int, payload: bytes) -> None:
        # Re-check: the link may have been cut while the frame was "in flight".
        handler = self._handlers.get(channel)
        if (
            handler is None
            or not self.is_running
            or not self._hub.link_works(sender, self._node_id)
        ):
            self.frames_dropped[sender] += 1
            return
        try:
            handler(sender, payload)
        except Exception:  # like a real transport: a bad frame closes a link, not the node
            self.handler_errors += 1
            _log.warning("in-memory transport: handler failed on a frame from %s", sender)
