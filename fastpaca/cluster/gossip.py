"""Status exchange: every node tells every connected peer what it hosts and leads.

Owns the ``Channel.STATUS`` traffic: our status goes to each peer when it
connects, every ``interval_s``, and within ``check_s`` after the groups we
host or lead change (so routers learn a new leader fast). It keeps the
latest status of every connected peer, learns peers' addresses into the
membership, and maintains the group → leader directory the router uses. It
plans nothing (``planner.py``) and forwards no request (``routing.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastpaca.cluster.membership import Membership
from fastpaca.cluster.status import NodeStatus, decode_status, encode_status
from fastpaca.raft.driver import RaftDriver
from fastpaca.raft.transport import Channel, Transport

__all__ = ["Gossip"]

_log = logging.getLogger(__name__)


class Gossip:
    def __init__(
        self,
        *,
        transport: Transport,
        driver: RaftDriver,
        membership: Membership,
        build_status: Callable[[], NodeStatus],
        interval_s: float = 1.0,
        check_s: float = 0.05,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transport = transport
        self._driver = driver
        self._membership = membership
        self._build_status = build_status
        self._interval_s = interval_s
        self._check_s = check_s
        self._clock_s = clock_s
        self._peers: dict[str, tuple[NodeStatus, float]] = {}
        self._payloads: dict[str, bytes] = {}
        """The bytes each peer's status in ``_peers`` was decoded from."""
        self._leaders: dict[int, tuple[int, str]] = {}
        """Group → (term, node) claimed by peers' statuses."""
        self._own: NodeStatus | None = None
        self.statuses_received = 0
        transport.subscribe(Channel.STATUS, self._on_status)
        transport.on_peer_state(self._on_peer_state)

    # --- queries ---------------------------------------------------------------------

    def own_status(self) -> NodeStatus:
        if self._own is None:
            self._own = self._build_status()
        return self._own

    def statuses(self) -> dict[str, NodeStatus]:
        """Ours (fresh) and the latest of every connected peer."""
        statuses = {node: status for node, (status, _) in self._peers.items()}
        self._own = self._build_status()
        statuses[self._own.node_id] = self._own
        return statuses

    def status_age_s(self, node: str) -> float | None:
        entry = self._peers.get(node)
        return None if entry is None else self._clock_s() - entry[1]

    def leader_of(self, group_id: int) -> str | None:
        """This node's view if it hosts the group and knows a leader, else the
        peer that most recently claimed it with the highest term."""
        local = self._driver.leader_of(group_id)
        if local is not None:
            return local
        claim = self._leaders.get(group_id)
        return None if claim is None else claim[1]

    def hosts_of(self, group_id: int) -> list[str]:
        """Connected peers that host a replica of ``group_id``."""
        return sorted(n for n, (s, _) in self._peers.items() if group_id in s.hosted)

    def forget_leader(self, group_id: int, node: str) -> None:
        """``node`` said it does not lead ``group_id`` (any more)."""
        claim = self._leaders.get(group_id)
        if claim is not None and claim[1] == node:
            del self._leaders[group_id]

    # --- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Broadcast every ``interval_s``, and within ``check_s`` of a change in
        the groups we host or lead: the coordinator must not plan from a
        status that predates a replica it just created."""
        last_sent = 0.0
        last_shape: tuple[list[int], frozenset[int]] = ([], frozenset())
        while True:
            await asyncio.sleep(self._check_s)
            # Not is_leader per group: this runs 20 times a second, and a
            # pass over 256 groups was 1-2% of a loaded node's samples in py-spy.
            shape = (self._driver.group_ids(), self._driver.led_group_ids())
            now = self._clock_s()
            if shape != last_shape or now - last_sent >= self._interval_s:
                self.broadcast()
                last_shape, last_sent = shape, now

    def broadcast(self) -> None:
        self._own = self._build_status()
        payload = encode_status(self._own)
        for peer in self._transport.connected_peers():
            self._transport.send(peer, Channel.STATUS, payload)

    # --- transport callbacks ------------------------------------------------------------

    def _on_status(self, peer: str, payload: bytes) -> None:
        self.statuses_received += 1
        known = self._peers.get(peer)
        if known is not None and self._payloads.get(peer) == payload:
            # The same bytes as last time (an idle cluster's statuses do not
            # change): only its freshness did. Decoding a status of a few
            # hundred groups was a tenth of an idle node's CPU.
            status = known[0]
            self._peers[peer] = (status, self._clock_s())
            self._membership.learn(peer, status.host, status.port)
            return
        status = decode_status(payload)  # ValueError: the transport closes the link
        if status.node_id != peer:
            raise ValueError(f"{peer} sent the status of {status.node_id}")
        self._peers[peer] = (status, self._clock_s())
        self._payloads[peer] = payload
        self._membership.learn(peer, status.host, status.port)
        self._rebuild_leaders()

    def _on_peer_state(self, peer: str, connected: bool) -> None:
        self._membership.on_peer_state(peer, connected)
        if connected:
            payload = encode_status(self.own_status())
            self._transport.send(peer, Channel.STATUS, payload)
        elif self._peers.pop(peer, None) is not None:
            self._payloads.pop(peer, None)
            self._rebuild_leaders()

    def _rebuild_leaders(self) -> None:
        leaders: dict[int, tuple[int, str]] = {}
        for node, (status, _) in self._peers.items():
            for group_id, report in status.led.items():
                claim = leaders.get(group_id)
                if claim is None or report.term > claim[0]:
                    leaders[group_id] = (report.term, node)
        self._leaders = leaders
