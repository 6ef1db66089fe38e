"""Who is in the cluster, who is live, who counts as present, who coordinates.

Owns one node's member table: every node known from ``CLUSTER_NODES``, from
DNS, or from a peer that connected or announced itself, with its address,
whether the transport is connected to it and since when it is not. It answers:

* live: this node and every peer with an open, authenticated connection;
* present: live, or down for less than the grace period
  (``FASTPACA_NODE_DOWN_GRACE_MS``), so a quick restart moves no replica. A
  node never seen since this process started counts as down since then;
* coordinator: the live node with the lowest id.

It pushes member addresses to the transport (``set_peers``) and knows nothing
of Raft groups or placement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fastpaca.cluster.discovery import Member

__all__ = ["Membership"]

PeersSink = Callable[[Mapping[str, tuple[str, int]]], None]


@dataclass(slots=True)
class _Known:
    host: str
    port: int
    down_since_s: float | None
    """None while connected; else when the connection went (or we learned of it)."""
    discovered: bool
    """Listed by configuration or DNS (else learned from a peer)."""


class Membership:
    def __init__(
        self,
        *,
        self_member: Member,
        grace_ms: int,
        set_peers: PeersSink,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node_id = self_member.node_id
        self._self = self_member
        self._grace_s = grace_ms / 1000
        self._set_peers = set_peers
        self._clock_s = clock_s
        self._known: dict[str, _Known] = {}
        self._discovered: tuple[Member, ...] = ()

    # --- inputs ----------------------------------------------------------------------

    def set_discovered(self, members: Iterable[Member]) -> None:
        """The member list from configuration or the latest DNS answer. Nodes
        dropped from it stay known while connected (the peer still talks to us)."""
        members = tuple(sorted(m for m in members if m.node_id != self.node_id))
        self._discovered = members
        for known in self._known.values():
            known.discovered = False
        for member in members:
            self._learn(member.node_id, member.host, member.port, discovered=True)
        self._push()

    def learn(self, node_id: str, host: str, port: int) -> None:
        """A peer told us its address (it connected, or announced itself)."""
        if node_id == self.node_id:
            return
        before = self._known.get(node_id)
        self._learn(node_id, host, port, discovered=False)
        if before is None or (before.host, before.port) != (host, port):
            self._push()

    def on_peer_state(self, peer: str, connected: bool) -> None:
        known = self._known.get(peer)
        if known is None:
            # Authenticated but unknown: its address comes with its first status.
            known = self._known[peer] = _Known("", 0, None, discovered=False)
        known.down_since_s = None if connected else self._clock_s()

    # --- queries ---------------------------------------------------------------------

    def known(self) -> frozenset[str]:
        return frozenset(self._known) | {self.node_id}

    def discovered(self) -> frozenset[str]:
        """Configured / DNS-listed nodes, ourselves included."""
        return frozenset(m.node_id for m in self._discovered) | {self.node_id}

    def live(self) -> frozenset[str]:
        return frozenset(
            node for node, known in self._known.items() if known.down_since_s is None
        ) | {self.node_id}

    def present(self) -> frozenset[str]:
        now = self._clock_s()
        return frozenset(
            node
            for node, known in self._known.items()
            if known.down_since_s is None or now - known.down_since_s < self._grace_s
        ) | {self.node_id}

    def coordinator(self) -> str:
        return min(self.live())

    def is_coordinator(self) -> bool:
        return self.coordinator() == self.node_id

    def addresses(self) -> dict[str, tuple[str, int]]:
        return {node: (known.host, known.port) for node, known in self._known.items() if known.host}

    # --- helpers ---------------------------------------------------------------------

    def _learn(self, node_id: str, host: str, port: int, *, discovered: bool) -> None:
        known = self._known.get(node_id)
        if known is None:
            self._known[node_id] = _Known(host, port, self._clock_s(), discovered)
            return
        known.host, known.port = host, port
        known.discovered = known.discovered or discovered

    def _push(self) -> None:
        self._set_peers(self.addresses())
