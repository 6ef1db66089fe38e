"""Who is in the cluster, who is live, who counts as present, who coordinates.

Owns one node's member table: every node known from ``CLUSTER_NODES``, from
DNS, or from a peer that connected or announced itself, with its address,
whether the transport is connected to it and since when it is not. It answers:

* live: this node and every peer with an open, authenticated connection;
* present: live, or down for less than the grace period
  (``FASTPACA_NODE_DOWN_GRACE_MS``), so a quick restart moves no replica. A
  node never seen since this process started counts as down since then;
* coordinator: the live node with the lowest id.

It pushes member addresses to the transport (``set_peers``): the transport
dials exactly the members in the table. It knows nothing of Raft groups or
placement; ``node.py`` tells it which nodes hold a replica (``set_replicas``).

Departed nodes are forgotten. A peer stays in the table while any of these
holds, and is dropped (no longer dialed, no longer known) once none does:

* it is discovered: listed by ``CLUSTER_NODES`` or the latest DNS answer;
* it is connected: it talks to us, so it is live and placement counts it
  (closing our side would only make it dial us again);
* it has been down for less than the grace period, so it is still present
  and a quick restart keeps its place (the rule that decides placement);
* it is a replica (voter or learner) of some group, as last reported by
  ``set_replicas``: Raft still needs to reach it, and the coordinator only
  removes its replicas once it is down past the grace period.

So a node removed from ``CLUSTER_NODES`` (on a restart) or gone from DNS
stops being dialed once its replicas have been moved away, which the
coordinator does after ``FASTPACA_NODE_DOWN_GRACE_MS``; a forgotten node
that is discovered again, or connects, is simply learned anew. Until the
first ``set_replicas`` nobody is forgotten (the replicas are not known yet).
Forgetting never changes ``live`` or ``present``: a forgotten node was
neither.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from fastpaca.cluster.discovery import Member

__all__ = ["Membership"]

_log = logging.getLogger(__name__)

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
        self._replicas: frozenset[str] | None = None
        """Nodes holding a replica of some group; None until first reported."""
        self._pushed: dict[str, tuple[str, int]] | None = None

    # --- inputs ----------------------------------------------------------------------

    def set_discovered(self, members: Iterable[Member]) -> None:
        """The member list from configuration or the latest DNS answer. Nodes
        dropped from it stay known while another rule keeps them (connected,
        within the grace period, or a replica: see the module docstring)."""
        members = tuple(sorted(m for m in members if m.node_id != self.node_id))
        self._discovered = members
        for known in self._known.values():
            known.discovered = False
        for member in members:
            self._learn(member.node_id, member.host, member.port, discovered=True)
        self._forget_departed()
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

    def set_replicas(self, nodes: Iterable[str]) -> None:
        """The nodes that hold a replica of some group (this node's Raft
        memberships and the leaders' reports). Called periodically: it is
        also when peers down past the grace period are forgotten."""
        self._replicas = frozenset(nodes)
        self._forget_departed()
        self._push()

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

    def _forget_departed(self) -> None:
        """Drop the peers no rule of the module docstring keeps."""
        if self._replicas is None:
            return
        now = self._clock_s()
        departed = [
            node
            for node, known in self._known.items()
            if not known.discovered
            and known.down_since_s is not None
            and now - known.down_since_s >= self._grace_s
            and node not in self._replicas
        ]
        for node in departed:
            del self._known[node]
            _log.info("cluster: forgot departed node %s", node, extra={"type": "cluster.members"})

    def _push(self) -> None:
        addresses = self.addresses()
        if addresses != self._pushed:
            self._pushed = addresses
            self._set_peers(addresses)
