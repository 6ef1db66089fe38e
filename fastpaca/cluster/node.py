"""A clustered node's cluster parts, wired together, with their lifecycle.

Owns which cluster objects exist for one node (membership, discovery, RPC,
status gossip, the coordinator, the router and its leader-side handler), the
order they start and stop in, the readiness rule of a clustered node and the
numbers the metrics layer exports. ``app.py`` builds the driver and the
transport and hands them over; this module holds no Raft, placement or
routing logic of its own.

Readiness: ready once the cluster is bootstrapped, this node is connected to
a majority of the present members, and every group has a known leader (the
ones hosted here by our own Raft view, the others through the peers'
statuses), so every request this node takes can be served.

Departed nodes: every ``REPLICAS_INTERVAL_S`` the nodes holding a replica of
some group (our groups' Raft memberships, plus the memberships the leaders
report in their statuses) go to ``Membership.set_replicas``, which forgets a
node gone from discovery once it is down past the grace period and holds no
replica any more, so the transport stops dialing it (rule in ``membership.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpaca.cancellation import cancel_and_wait
from fastpaca.cluster.admin import ClusterAdmin, ClusterRecord
from fastpaca.cluster.coordinator import Coordinator, CoordinatorConfig
from fastpaca.cluster.discovery import DnsDiscovery, Member
from fastpaca.cluster.gossip import Gossip
from fastpaca.cluster.membership import Membership
from fastpaca.cluster.routing import (
    ForwardHandler,
    LeaderOnlyEngine,
    RoutedConversations,
    RoutingStats,
)
from fastpaca.cluster.rpc import RpcEndpoint
from fastpaca.cluster.setup import ClusterSettings
from fastpaca.cluster.status import NodeStatus, build_status
from fastpaca.cluster.transport_stats import TransportStats
from fastpaca.cluster.transport_ws import WebSocketTransport
from fastpaca.observability.health import ReadinessReport
from fastpaca.raft.driver import RaftDriver
from fastpaca.store.runtime import ConversationRuntime, RaftEngine

__all__ = ["ClusterNode", "ClusterNumbers"]

_log = logging.getLogger(__name__)

REPLICAS_INTERVAL_S = 1.0
"""How often the membership learns who holds replicas (and forgets departed
nodes): the coordinator's rounds that move replicas take longer than this."""


@dataclass(frozen=True, slots=True)
class ClusterNumbers:
    """What the metrics layer reads at scrape time."""

    peers_connected: int
    peers_known: int
    is_coordinator: bool
    routing: RoutingStats
    transport: TransportStats
    coordinator_actions_done: int
    coordinator_actions_failed: int


class ClusterNode:
    def __init__(
        self,
        config: ClusterSettings,
        *,
        driver: RaftDriver,
        transport: WebSocketTransport,
        data_dir: Path,
        group_count: int,
        request_timeout_s: float,
        make_runtime: Callable[[RaftEngine], ConversationRuntime],
    ) -> None:
        self.node_id = config.me.node_id
        self._config = config
        self._driver = driver
        self.transport = transport
        self._group_count = group_count
        self._record = ClusterRecord(data_dir)
        self.membership = Membership(
            self_member=config.me, grace_ms=config.grace_ms, set_peers=transport.set_peers
        )
        self.rpc = RpcEndpoint(transport)
        self.gossip = Gossip(
            transport=transport,
            driver=driver,
            membership=self.membership,
            build_status=self._status,
        )
        self.admin = ClusterAdmin(driver=driver, record=self._record, group_count=group_count)
        self.admin.register(self.rpc)
        self.coordinator = Coordinator(
            membership=self.membership,
            gossip=self.gossip,
            admin=self.admin,
            rpc=self.rpc,
            config=CoordinatorConfig(
                group_count=group_count,
                required=config.required,
                bootstrap_expect=config.bootstrap_expect,
            ),
        )
        local = make_runtime(LeaderOnlyEngine(driver, self.gossip.leader_of))
        self.conversations = RoutedConversations(
            node_id=self.node_id,
            local=local,
            rpc=self.rpc,
            directory=self.gossip,
            connected_peers=transport.connected_peers,
            group_count=group_count,
            request_timeout_s=request_timeout_s,
        )
        ForwardHandler(local, self.conversations.stats).register(self.rpc)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self.membership.set_discovered(config.static_members)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the loops; call after the driver started, before the transport."""
        self._spawn(self.gossip.run(), "cluster-gossip")
        self._spawn(self.coordinator.run(), "cluster-coordinator")
        self._spawn(self._track_replicas(), "cluster-replicas")
        if self._config.dns_query is not None:
            discovery = DnsDiscovery(
                query=self._config.dns_query,
                basename=self._config.dns_basename,
                port=self._config.me.port,
                poll_interval_ms=self._config.dns_poll_interval_ms,
                on_change=self._on_dns_members,
                nameservers=self._config.dns_nameservers,
                nameserver_port=self._config.dns_nameserver_port,
            )
            self._spawn(discovery.run(), "cluster-dns")

    async def stop_planning(self) -> None:
        """Stop deciding topology (first step of a shutdown)."""
        await self._cancel([t for t in self._tasks if t.get_name() != "cluster-gossip"])

    @property
    def is_stopped(self) -> bool:
        return self._stopped

    async def stop(self) -> None:
        """After the driver stopped: stop telling peers, fail pending calls."""
        self._stopped = True
        self.gossip.broadcast()  # our leaderships are gone: say so at once
        await self._cancel(self._tasks)
        await self.rpc.close()

    # --- readiness and numbers --------------------------------------------------------

    def readiness(self) -> ReadinessReport:
        for node, status in self.gossip.statuses().items():
            if status.group_count != self._group_count:
                return ReadinessReport(
                    False,
                    f"{node} runs FASTPACA_RAFT_GROUPS={status.group_count}, "
                    f"this node {self._group_count}: topology frozen",
                )
        hosted = self._driver.group_ids()
        leaderless_hosted = [g for g in hosted if self._driver.leader_of(g) is None]
        unknown = [g for g in range(self._group_count) if self.gossip.leader_of(g) is None]
        if not hosted and len(unknown) == self._group_count:
            return ReadinessReport(False, "waiting for the cluster bootstrap")
        present = self.membership.present()
        live = self.membership.live() & present
        if len(live) * 2 <= len(present):
            return ReadinessReport(
                False, f"connected to {len(live)} of {len(present)} cluster nodes (no majority)"
            )
        if leaderless_hosted:
            return ReadinessReport(
                False, f"{len(leaderless_hosted)} of {len(hosted)} raft groups have no leader"
            )
        if unknown:
            return ReadinessReport(
                False, f"{len(unknown)} of {self._group_count} raft groups have no known leader"
            )
        return ReadinessReport(True)

    def numbers(self) -> ClusterNumbers:
        return ClusterNumbers(
            peers_connected=len(self.transport.connected_peers()),
            peers_known=len(self.membership.known()) - 1,
            is_coordinator=self.membership.is_coordinator(),
            routing=self.conversations.stats,
            transport=self.transport.stats,
            coordinator_actions_done=self.coordinator.actions_done,
            coordinator_actions_failed=self.coordinator.actions_failed,
        )

    # --- helpers ----------------------------------------------------------------------

    def _status(self) -> NodeStatus:
        return build_status(
            self._driver.host,
            address=(self._config.me.host, self._config.me.port),
            group_count=self._group_count,
            bootstrap_members=self._record.bootstrap_members,
            bootstrap_applied=self._record.bootstrap_applied,
            has_joined=self._record.has_joined,
            members_view=tuple(sorted(self.membership.known())),
        )

    def replica_nodes(self) -> frozenset[str]:
        """Every node that holds a replica (voter or learner) of a group, as
        far as this node can tell: its own groups' memberships and those the
        connected leaders report."""
        nodes: set[str] = set()
        host = self._driver.host
        for group_id in host.group_ids():
            conf = host.core(group_id).conf_state
            nodes.update(conf.voters)
            nodes.update(conf.learners)
        for status in self.gossip.statuses().values():
            for report in status.led.values():
                nodes.update(report.voters)
                nodes.update(report.learners)
        return frozenset(nodes)

    async def _track_replicas(self) -> None:
        while True:
            self.membership.set_replicas(self.replica_nodes())
            await asyncio.sleep(REPLICAS_INTERVAL_S)

    async def _on_dns_members(self, members: list[Member]) -> None:
        _log.info("dns discovery: %d members", len(members), extra={"type": "cluster.discovery"})
        self.membership.set_discovered([*self._config.static_members, *members])

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._tasks.append(asyncio.create_task(work, name=name))

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        await cancel_and_wait(tasks, what="cluster")
        self._tasks = [t for t in self._tasks if t not in tasks]
