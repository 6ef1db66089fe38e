"""Departed nodes: the member table (and so the transport's dial list) follows
discovery, connections, the grace period and who still holds replicas.

The rule is in ``fastpaca/cluster/membership.py``'s docstring. The first
tests drive ``Membership`` alone on a fake clock; the last one wires it to
real transports on loopback and watches the dialing itself stop.
"""

from __future__ import annotations

import asyncio

from fastpaca.cluster.discovery import Member
from fastpaca.cluster.membership import Membership
from tests.cluster.test_transport_ws import FAST, Node, connected, eventually, start_node, stop_node

ME = Member("b@h", "h", 1)
A = Member("a@h", "h", 2)
C = Member("c@h", "h", 3)
X = Member("x@h", "h", 9)
GRACE_S = 60.0


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


class Pushed:
    """Records every peer map pushed to the transport."""

    def __init__(self) -> None:
        self.maps: list[dict[str, tuple[str, int]]] = []

    def __call__(self, peers: object) -> None:
        assert isinstance(peers, dict)
        self.maps.append(dict(peers))

    @property
    def last(self) -> dict[str, tuple[str, int]]:
        return self.maps[-1]


def table(clock: Clock, pushed: Pushed) -> Membership:
    membership = Membership(
        self_member=ME, grace_ms=int(GRACE_S * 1000), set_peers=pushed, clock_s=clock
    )
    membership.set_discovered([ME, A, C, X])
    return membership


def test_a_node_gone_from_discovery_is_dialed_until_it_holds_no_replica() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    membership.on_peer_state("x@h", True)
    membership.set_replicas({"a@h", "b@h", "c@h", "x@h"})
    membership.on_peer_state("x@h", False)  # x dies...
    membership.set_discovered([ME, A, C])  # ...and leaves DNS / CLUSTER_NODES
    assert "x@h" in pushed.last, "still a replica: Raft must reach it if it comes back"
    clock.now_s += GRACE_S + 1
    membership.set_replicas({"a@h", "b@h", "c@h", "x@h"})
    assert "x@h" in pushed.last and "x@h" in membership.known()
    assert "x@h" not in membership.present(), "past the grace: the coordinator moves its replicas"
    membership.set_replicas({"a@h", "b@h", "c@h"})  # ...and now it has
    assert pushed.last == {"a@h": ("h", 2), "c@h": ("h", 3)}
    assert membership.known() == {"a@h", "b@h", "c@h"}


def test_a_departed_node_is_kept_within_the_grace_period() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    membership.set_replicas({"a@h", "b@h", "c@h"})  # x holds nothing
    membership.on_peer_state("x@h", True)
    membership.on_peer_state("x@h", False)
    membership.set_discovered([ME, A, C])
    clock.now_s += GRACE_S - 1
    membership.set_replicas({"a@h", "b@h", "c@h"})
    assert "x@h" in pushed.last and "x@h" in membership.present(), "a quick restart keeps it"
    clock.now_s += 2
    membership.set_replicas({"a@h", "b@h", "c@h"})
    assert "x@h" not in pushed.last and "x@h" not in membership.known()


def test_discovered_or_connected_nodes_are_never_forgotten() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    membership.on_peer_state("x@h", True)
    membership.set_discovered([ME, A])  # c (never seen) and x (connected) leave the list
    clock.now_s += 10 * GRACE_S
    membership.set_replicas({"a@h", "b@h"})
    assert "x@h" in pushed.last, "x still talks to us: it is live, and would dial us again"
    assert "c@h" not in pushed.last, "c never connected and holds nothing: forgotten"
    membership.set_discovered([ME])
    membership.set_replicas(set())
    assert set(pushed.last) == {"x@h"}
    assert membership.live() == {"b@h", "x@h"}


def test_nothing_is_forgotten_before_the_replicas_are_known() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    membership.on_peer_state("x@h", False)
    clock.now_s += 10 * GRACE_S
    membership.set_discovered([ME, A, C])  # e.g. CLUSTER_NODES without x, right at start
    assert "x@h" in pushed.last
    membership.set_replicas({"a@h", "b@h", "c@h"})
    assert "x@h" not in pushed.last


def test_a_forgotten_node_is_learned_anew_when_it_returns() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    membership.set_discovered([ME, A, C])
    clock.now_s += 10 * GRACE_S
    membership.set_replicas({"a@h", "b@h", "c@h"})
    assert "x@h" not in membership.known()
    membership.set_discovered([ME, A, C, X])  # back in DNS
    assert pushed.last["x@h"] == ("h", 9)
    assert "x@h" in membership.present(), "a rediscovered node gets a fresh grace period"
    membership.set_discovered([ME, A, C])
    membership.on_peer_state("x@h", True)  # or it connects to us by itself
    membership.learn("x@h", "h", 9)
    assert pushed.last["x@h"] == ("h", 9) and "x@h" in membership.live()


def test_unchanged_peer_maps_are_not_pushed_again() -> None:
    clock, pushed = Clock(), Pushed()
    membership = table(clock, pushed)
    before = len(pushed.maps)
    for _ in range(5):
        membership.set_replicas({"a@h", "b@h", "c@h", "x@h"})
    assert len(pushed.maps) == before


async def test_the_transport_stops_dialing_a_departed_node() -> None:
    """Real transports on loopback: a's membership drives a's dial list. x
    dies and leaves discovery; a keeps redialing it while it is a replica,
    stops once it is not (past the grace period), and dials it again when
    it is rediscovered."""
    grace_s = 0.3
    a = await start_node("a")
    x: Node | None = await start_node("x")
    assert x is not None
    x_port = x.port
    attempts: list[int] = []
    listener: asyncio.Server | None = None
    try:
        membership = Membership(
            self_member=Member("a", "127.0.0.1", a.port),
            grace_ms=int(grace_s * 1000),
            set_peers=a.transport.set_peers,
        )
        a.transport.on_peer_state(membership.on_peer_state)  # as gossip.py wires it
        x_member = Member("x", "127.0.0.1", x_port)
        membership.set_discovered([x_member])
        membership.set_replicas({"a", "x"})
        await eventually(connected(a, x))

        await stop_node(x)
        x = None
        await eventually(lambda: not a.transport.connected_peers())
        membership.set_discovered([])  # x left DNS

        async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            attempts.append(1)
            writer.close()

        # Whatever listens on x's old port sees a's dial attempts.
        listener = await asyncio.start_server(count, "127.0.0.1", x_port, reuse_address=True)
        await eventually(lambda: len(attempts) >= 2)  # still a replica: redialed
        await asyncio.sleep(grace_s)
        membership.set_replicas({"a", "x"})
        assert "x" in a.transport.peers()
        membership.set_replicas({"a"})  # the coordinator moved its replicas away
        assert a.transport.peers() == {}
        assert "x" not in a.transport.stats.peers, "a forgotten peer's counters go too"
        await asyncio.sleep(FAST.dial_backoff_max_s)  # a dial cancelled mid-way may land
        settled = len(attempts)
        await asyncio.sleep(3 * FAST.dial_backoff_max_s)
        assert len(attempts) == settled, "a departed node is still being dialed"

        listener.close()
        await listener.wait_closed()
        listener = None
        x = back = await start_node("x", port=x_port)
        membership.set_discovered([x_member])  # back in DNS: dialed again
        await eventually(connected(a, back))
    finally:
        if listener is not None:
            listener.close()
        await stop_node(a)
        if x is not None:
            await stop_node(x)
