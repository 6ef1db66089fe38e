"""The cluster adapter on an in-memory transport: interest tracking, leader-only
publishing, withdrawal, link restarts, malformed frames and full queues, and
the loss signals after a link to the leader drops or the leader changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.pubsub.cluster_adapter import ClusterFanout
from fastpaca.raft.transport import Channel
from fastpaca.raft.transport_memory import InMemoryHub, InMemoryTransport
from fastpaca.store.effects import Appended, Effect, Tombstoned

NODES = ("n1", "n2", "n3")
STORED = b'{"role":"user","parts":[],"metadata":{},"token_count":0}'


def appended(cid: str, seq: int) -> Appended:
    return Appended(conversation_id=cid, seq=seq, version=seq, message=STORED)


class RecordingBus(LocalBus):
    """A real bus that also records which conversations it was told to signal."""

    def __init__(self) -> None:
        super().__init__()
        self.signalled: list[str] = []

    def signal_loss(self, conversation_id: str) -> int:
        self.signalled.append(conversation_id)
        return super().signal_loss(conversation_id)


@dataclass
class Node:
    name: str
    transport: InMemoryTransport
    bus: RecordingBus
    fanout: ClusterFanout
    got: dict[str, list[StreamEvent]] = field(default_factory=dict)
    losses: dict[str, int] = field(default_factory=dict)

    def watch(self, cid: str) -> Callable[[], None]:
        events = self.got.setdefault(cid, [])
        self.losses.setdefault(cid, 0)

        def on_loss() -> None:
            self.losses[cid] += 1

        return self.bus.subscribe(cid, events.append, on_loss=on_loss).close

    def seqs(self, cid: str) -> list[int | None]:
        return [event.seq for event in self.got.get(cid, [])]


class Cluster:
    """Three nodes, one Raft group (0) led by ``leader`` (None: an election)."""

    def __init__(self, *, leader_check_s: float = 3600) -> None:
        self.hub = InMemoryHub()
        self.leader: str | None = "n1"
        self.nodes: dict[str, Node] = {}
        for name in NODES:
            transport = self.hub.transport(name)
            bus = RecordingBus()
            fanout = ClusterFanout(
                bus=bus,
                transport=transport,
                is_leader=lambda group_id, name=name: name == self.leader,
                leader_of=lambda group_id: self.leader,
                group_count=1,
                refresh_s=3600,  # only where a test asks for it
                resync_delay_s=0.01,
                # Most loss tests tick ``check_losses`` themselves.
                leader_check_s=leader_check_s,
            )
            self.nodes[name] = Node(name, transport, bus, fanout)

    def apply(self, effects: list[Effect]) -> None:
        """Every replica applies; the adapter decides who publishes."""
        for node in self.nodes.values():
            node.fanout(0, effects)


@asynccontextmanager
async def running(local: Cluster) -> AsyncIterator[Cluster]:
    for node in local.nodes.values():
        await node.fanout.start()
        await node.transport.start()
    try:
        yield local
    finally:
        for node in local.nodes.values():
            await node.fanout.stop()
            await node.transport.stop()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running(Cluster()) as local:
        yield local


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.001)


async def test_only_the_leader_publishes_to_every_interested_node(cluster: Cluster) -> None:
    n1, n2, n3 = (cluster.nodes[n] for n in NODES)
    for node in (n1, n2, n3):
        node.watch("c1")
    await until(lambda: n1.fanout.interested_peers("c1") == {"n2", "n3"})
    cluster.apply([appended("c1", 1), appended("c1", 2), Tombstoned(conversation_id="c1")])
    await until(lambda: len(n2.got["c1"]) == 3 and len(n3.got["c1"]) == 3)
    for node in (n1, n2, n3):
        assert node.seqs("c1") == [1, 2, None]
        assert node.got["c1"][2].payload == b'{"type":"tombstone"}'
    assert n1.fanout.stats.events_published == 3
    assert n1.fanout.stats.events_forwarded == 6
    assert n1.fanout.stats.frames_sent == 2  # one frame per peer for the whole apply
    assert n2.fanout.stats.events_forwarded == n3.fanout.stats.events_forwarded == 0
    assert n2.fanout.stats.events_received == 3

    # A leader change: the new leader's apply is the one that fans out.
    cluster.leader = "n3"
    cluster.apply([appended("c1", 3)])
    await until(lambda: n1.seqs("c1")[-1] == 3 and n2.seqs("c1")[-1] == 3)
    assert n3.seqs("c1") == [1, 2, None, 3]
    assert n1.fanout.stats.events_forwarded == 6


async def test_conversations_nobody_watches_send_nothing(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    n2.watch("watched")
    await until(lambda: bool(n1.fanout.interested_peers("watched")))
    sent_before = cluster.nodes["n1"].transport.frames_sent.copy()
    cluster.apply([appended("other", 1), appended("other", 2)])
    await asyncio.sleep(0)
    assert n1.transport.frames_sent == sent_before
    assert n1.fanout.stats.events_forwarded == 0


async def test_withdrawn_interest_stops_the_leader_sending(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    close = n2.watch("c1")
    second = n2.bus.subscribe("c1", lambda event: None)
    await until(lambda: n1.fanout.interested_peers("c1") == {"n2"})
    cluster.apply([appended("c1", 1)])
    await until(lambda: n2.seqs("c1") == [1])
    close()  # one subscriber left: still interested
    await asyncio.sleep(0.01)
    assert n1.fanout.interested_peers("c1") == {"n2"}
    second.close()
    await until(lambda: not n1.fanout.interested_peers("c1"))
    assert n1.fanout.stats.remote_interests == 0
    cluster.apply([appended("c1", 2)])
    await asyncio.sleep(0.01)
    assert n1.fanout.stats.events_forwarded == 1
    assert n2.fanout.stats.events_received == 1


async def test_a_link_restart_forgets_and_then_re_announces_interest(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    n2.watch("c1")
    await until(lambda: n1.fanout.interested_peers("c1") == {"n2"})
    cluster.hub.isolate("n2")
    assert n1.fanout.interested_peers("c1") == frozenset()
    n2.watch("c2")  # announced to nobody: no link is up
    cluster.apply([appended("c1", 1)])
    assert n1.fanout.stats.events_forwarded == 0
    cluster.hub.heal()
    await until(lambda: n1.fanout.interest_of("n2") == {"c1", "c2"})
    cluster.apply([appended("c1", 2), appended("c2", 1)])
    await until(lambda: n2.seqs("c1") == [2] and n2.seqs("c2") == [1])


async def test_full_announcements_replace_and_repair_a_peers_view(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
    n2.watch("c1")
    await until(lambda: n1.fanout.interest_of("n2") == {"c1"})
    await asyncio.sleep(0.05)  # the link-up resync (resync_delay_s) is over: it would repair
    # A stale delta (as if reordered across a replaced connection) ...
    n2.transport.send("n1", Channel.PUBSUB, wire.encode_interest(wire.INTEREST_REMOVE, ["c1"]))
    n2.transport.send("n1", Channel.PUBSUB, wire.encode_interest(wire.INTEREST_ADD, ["gone"]))
    await until(lambda: n1.fanout.interest_of("n2") == {"gone"})
    # ... is repaired by the periodic full set.
    n2.fanout._refresh()
    await until(lambda: n1.fanout.interest_of("n2") == {"c1"})
    assert n1.fanout.stats.remote_interests == 1


async def test_malformed_frames_are_counted_and_keep_the_link(cluster: Cluster) -> None:
    n1, n2, n3 = (cluster.nodes[n] for n in NODES)
    n1.watch("c1")
    await until(lambda: n3.fanout.interested_peers("c1") == {"n1"})
    for garbage in (b"", b"\x09", b"\x04\x00\x05", b"\x02\x00\x09ab"):
        n2.transport.send("n1", Channel.PUBSUB, garbage)
    await until(lambda: n1.fanout.stats.malformed_frames == 4)
    assert n1.transport.handler_errors == 0
    assert n1.got["c1"] == []
    cluster.leader = "n3"
    cluster.apply([appended("c1", 1)])
    await until(lambda: n1.seqs("c1") == [1])


class FullQueueTransport(InMemoryTransport):
    """Refuses the next ``refuse`` sends while staying connected."""

    refuse = 0

    def send(self, peer: str, channel: int, payload: bytes) -> bool:
        if self.refuse:
            self.refuse -= 1
            self.frames_dropped[peer] += 1
            return False
        return super().send(peer, channel, payload)


@dataclass
class Pair:
    """Two nodes, n1 leading group 0; one of them sends through a
    ``FullQueueTransport`` (``flaky``) that a test can make refuse frames."""

    hub: InMemoryHub
    flaky: FullQueueTransport
    buses: dict[str, RecordingBus]
    fanouts: dict[str, ClusterFanout]


@asynccontextmanager
async def pair(
    *, flaky: str, resync_delay_s: float, leader_check_s: float = 3600
) -> AsyncIterator[Pair]:
    hub = InMemoryHub()
    flaky_transport = FullQueueTransport(hub, flaky)
    hub._transports[flaky] = flaky_transport
    transports = {name: hub.transport(name) for name in ("n1", "n2")}
    buses = {name: RecordingBus() for name in transports}
    fanouts = {
        name: ClusterFanout(
            bus=buses[name],
            transport=transport,
            is_leader=lambda g, name=name: name == "n1",
            leader_of=lambda g: "n1",
            group_count=1,
            resync_delay_s=resync_delay_s,
            leader_check_s=leader_check_s,
        )
        for name, transport in transports.items()
    }
    for name, transport in transports.items():
        await fanouts[name].start()
        await transport.start()
    try:
        yield Pair(hub, flaky_transport, buses, fanouts)
    finally:
        for name, transport in transports.items():
            await fanouts[name].stop()
            await transport.stop()


async def test_an_interest_frame_refused_by_a_full_queue_is_resent_as_the_full_set() -> None:
    async with pair(flaky="n2", resync_delay_s=0.01) as two:
        two.flaky.refuse = 1
        two.buses["n2"].subscribe("c1", lambda event: None)
        await until(lambda: two.fanouts["n1"].interest_of("n2") == {"c1"})
        assert two.flaky.frames_dropped["n1"] == 1


async def test_events_dropped_on_a_link_that_stays_up_are_reported_as_a_loss() -> None:
    """The leader's queue to n2 refuses an events frame while the link stays
    up: n2 sees no drop of its own, so the leader sends a loss notice for
    those conversations once its queue takes frames again (next flush, or
    the periodic check), and n2's channels re-check."""
    async with pair(flaky="n1", resync_delay_s=0.01, leader_check_s=0.05) as two:
        leader, follower = two.fanouts["n1"], two.fanouts["n2"]
        got: list[int | None] = []
        losses: list[str] = []
        two.buses["n2"].subscribe(
            "c1", lambda e: got.append(e.seq), on_loss=lambda: losses.append("c1")
        )
        two.buses["n2"].subscribe("c2", lambda e: None, on_loss=lambda: losses.append("c2"))
        await until(lambda: leader.interest_of("n2") == {"c1", "c2"})
        await asyncio.sleep(0.05)  # the delayed resync of the full set has gone too
        two.flaky.refuse = 1  # the next frame to n2 (the events) is refused
        leader(0, [appended("c1", 1)])
        await until(lambda: leader.stats.events_dropped == 1)
        assert "n2" in two.flaky.connected_peers()
        await until(lambda: "c1" in losses)  # sent by the periodic check
        assert got == [] and losses == ["c1"]  # only the conversation that lost one
        assert follower.stats.loss_signals == 1
        leader(0, [appended("c1", 2)])  # and the stream goes on
        await until(lambda: got == [2])


def test_loss_notices_round_trip_and_stay_apart_from_interest() -> None:
    frame = wire.encode_loss(["a", "b é"])
    assert wire.frame_kind(frame) == wire.LOSS
    assert wire.decode_loss(frame) == ["a", "b é"]
    with pytest.raises(wire.WireError):
        wire.decode_interest(frame)
    with pytest.raises(wire.WireError):
        wire.decode_loss(wire.encode_interest(wire.INTEREST_ADD, ["a"]))


async def test_events_to_one_peer_split_into_bounded_frames() -> None:
    hub = InMemoryHub()
    transports = {name: hub.transport(name) for name in ("n1", "n2")}
    buses = {name: LocalBus() for name in transports}
    fanouts = {
        name: ClusterFanout(
            bus=buses[name],
            transport=transports[name],
            is_leader=lambda g, name=name: name == "n1",
            leader_of=lambda g: "n1",
            group_count=1,
            frame_bytes_max=1000,
        )
        for name in transports
    }
    for name in transports:
        await fanouts[name].start()
        await transports[name].start()
    got: list[int | None] = []
    buses["n2"].subscribe("c1", lambda event: got.append(event.seq))
    await until(lambda: fanouts["n1"].interested_peers("c1") == {"n2"})
    fanouts["n1"](0, [appended("c1", seq) for seq in range(1, 101)])
    await until(lambda: len(got) == 100)
    assert got == list(range(1, 101))
    assert fanouts["n1"].stats.frames_sent > 5
    for name in transports:
        await fanouts[name].stop()
        await transports[name].stop()


# --- loss signals -------------------------------------------------------------------------


async def test_a_link_to_the_leader_back_up_signals_its_watched_conversations(
    cluster: Cluster,
) -> None:
    n1, n2, n3 = (cluster.nodes[n] for n in NODES)
    n2.watch("c1")
    n3.watch("c1")
    n2.watch("left")()  # watched once, not any more
    n1.watch("c1")
    await until(lambda: n1.fanout.interested_peers("c1") == {"n2", "n3"})
    assert n2.fanout.check_losses() == 0  # the steady state signals nothing

    # A link that carried nothing for us (n2 - n3; n1 leads): no signal.
    cluster.hub.cut("n2", "n3")
    cluster.hub.heal()
    assert n2.fanout.check_losses() == 0
    assert n2.fanout.suspect_groups() == frozenset()

    # The link to the leader drops: events published meanwhile are lost.
    cluster.hub.isolate("n2")
    cluster.apply([appended("c1", 1)])
    await until(lambda: n3.seqs("c1") == [1])
    assert n2.fanout.check_losses() == 0, "nothing to re-check against while the leader is away"
    assert n2.losses["c1"] == 0
    cluster.hub.heal()
    # Not yet: our set goes out again once a simultaneous dial could have
    # replaced the new connection (and lost what was in flight on it).
    assert n2.fanout.check_losses() == 0
    await until(lambda: n1.fanout.interest_of("n2") == {"c1"})
    await until(lambda: n2.fanout.check_losses() == 1)
    assert n2.losses == {"c1": 1, "left": 0}
    assert n2.bus.signalled == ["c1"]  # never an unwatched conversation
    assert n2.fanout.stats.loss_signals == 1
    # Settled: the next checks say nothing; the other nodes never lost anything.
    assert n2.fanout.check_losses() == 0
    for node in (n1, n3):
        assert node.fanout.check_losses() == 0
        assert node.losses["c1"] == 0 and node.bus.signalled == []
    assert n2.seqs("c1") == []  # the lost event is not replayed by the adapter


async def test_a_leader_change_signals_once_the_new_leader_is_known(cluster: Cluster) -> None:
    n1, n2, n3 = (cluster.nodes[n] for n in NODES)
    n2.watch("c1")
    await until(lambda: n3.fanout.interested_peers("c1") == {"n2"})
    cluster.leader = None  # an election: no one to re-check against yet
    assert n2.fanout.check_losses() == 0
    cluster.leader = "n3"
    await until(lambda: n2.fanout.check_losses() == 1)
    assert n2.losses["c1"] == 1
    # Leadership comes to this very node: its own applies publish from now on.
    cluster.leader = "n2"
    assert n2.fanout.check_losses() == 1
    assert n2.losses["c1"] == 2
    assert n1.fanout.stats.loss_signals == n3.fanout.stats.loss_signals == 0


async def test_a_dead_leader_is_signalled_once_when_its_successor_is_known(
    cluster: Cluster,
) -> None:
    n2 = cluster.nodes["n2"]
    n2.watch("c1")
    n2.watch("c2")
    await until(lambda: cluster.nodes["n1"].fanout.interest_of("n2") == {"c1", "c2"})
    cluster.hub.isolate("n1")  # the leader dies; its link never comes back
    cluster.leader = None
    assert n2.fanout.check_losses() == 0
    assert n2.fanout.suspect_groups() == {0}
    cluster.leader = "n3"  # a link drop and a leader change: one signal each
    await until(lambda: n2.fanout.check_losses() == 2)
    assert sorted(n2.bus.signalled) == ["c1", "c2"]
    assert n2.losses == {"c1": 1, "c2": 1}


async def test_a_flapping_link_is_coalesced_into_one_signal_per_tick() -> None:
    async with running(Cluster(leader_check_s=0.05)) as cluster:
        n1, n2 = cluster.nodes["n1"], cluster.nodes["n2"]
        n2.watch("c1")
        await until(lambda: n1.fanout.interest_of("n2") == {"c1"})
        for _ in range(5):
            cluster.hub.isolate("n2")
            cluster.hub.heal()
        cluster.leader = "n3"  # and a leader change on top, before the tick
        # The adapter's own timer settles it, once.
        await until(lambda: n2.losses["c1"] == 1)
        assert n2.fanout.check_losses() == 0  # nothing left for a later tick
        assert n2.losses["c1"] == 1
        assert n2.fanout.stats.loss_signals == 1


async def test_no_signal_before_the_leader_got_our_whole_interest_set() -> None:
    """A re-check read must not overtake our interest: if the full set was
    refused by a full queue on link-up, the signal waits for its resend."""
    async with pair(flaky="n2", resync_delay_s=0.05) as two:
        leader, follower = two.fanouts["n1"], two.fanouts["n2"]
        losses: list[str] = []
        two.buses["n2"].subscribe("c1", lambda event: None, on_loss=lambda: losses.append("c1"))
        await until(lambda: leader.interest_of("n2") == {"c1"})
        two.hub.isolate("n2")
        two.flaky.refuse = 2  # the full set sent on link-up is refused (the hub says "up" twice)
        two.hub.heal()
        assert leader.interest_of("n2") == frozenset()
        assert follower.check_losses() == 0
        await until(lambda: leader.interest_of("n2") == {"c1"})  # the resend
        assert follower.check_losses() == 1
        assert losses == ["c1"]
