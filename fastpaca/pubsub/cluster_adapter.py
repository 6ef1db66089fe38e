"""Stream events to subscribers on every node, over the peer transport.

``FASTPACA_PUBSUB_ADAPTER=cluster`` (the default). A subscriber connected to
any node receives the events of any conversation, whichever nodes host the
conversation's Raft group.

Design, and why:

- **Interest, not broadcast.** Each node tells every connected peer which
  conversations it has subscribers for (``Channel.PUBSUB`` interest frames,
  layout in ``wire.py``): its whole set when a link comes up (links drop, and
  a peer that reconnects knows nothing of us), then add/remove deltas as local
  interest starts and ends, and the whole set again every ``refresh_s``. The
  periodic full set repairs what deltas cannot: one lost to a full send queue,
  or two reordered across the old and new connection while the transport
  replaces a duplicate one. An append nobody watches therefore costs two dict
  lookups and sends nothing; a 3-node cluster does not pay for fan-out on
  every append (throughput target: >= 0.5x single node).
- **The group leader publishes.** Every replica applies each committed entry
  and hands its effects to this adapter, but only the leader's apply acts:
  it delivers to this node's subscribers and queues the event for the peers
  that announced interest. The leader applies as soon as an entry commits;
  followers learn the commit one round later, so this is the lowest latency
  and each event leaves exactly one node. Followers' applies publish nothing
  (their subscribers get the leader's copy), so there is no duplicate in the
  steady state.
- **Batching.** Events for one peer are buffered as a Raft driver
  iteration's effects are released (one iteration covers many groups) and
  sent as one frame per peer from a ``call_soon`` callback.
  Each event is encoded once, whatever the number of interested peers.
- **Leader changes.** An event may be published twice (the old leader
  applied it, and the new one applies it again after taking over) or never
  (the old leader died between commit and apply, and the new leader applied
  it while still a follower). Subscribers dedupe by ``seq`` and report holes
  as ``gap`` so the client replays (DESIGN section 5; ``bus.py``). A peer
  link that drops loses its queued events the same way.
- **No join race.** A websocket join subscribes to the local bus (which
  queues the interest frame for every connected peer in the same loop turn,
  ``call_soon``) before it reads ``last_seq``, and that read is forwarded to
  the group leader over the same ordered peer link, so the leader knows of
  the interest before it serves the read: every event applied after the
  read is sent to us. The bus's ready gate (``LocalBus.wait_ready``) is
  therefore not needed here, unlike with Redis, whose SUBSCRIBE is made on
  another connection in the background.
- **Loss signals.** Events lost on the way here (a link drop, a leader
  change) would show only with the next event of the conversation, never on
  a quiet one. So the adapter remembers, for every Raft group with a local
  subscriber, the leader it last saw (``leader_of``: the driver's view, or the
  peers' statuses for groups not hosted here). A group becomes *suspect*
  when the link to that leader (or to anyone, while no leader is known)
  goes down, or when its leader changes. Once the group's current leader
  receives our interest again (it is this node, or a connected peer that has
  been sent our whole set since the link came up, twice: the second time
  ``resync_delay_s`` later, after a simultaneous dial from both ends may have
  replaced the connection and lost the first), the adapter calls
  ``LocalBus.signal_loss`` for the group's watched conversations: each
  channel re-reads ``last_seq`` (at that leader, over the same ordered link,
  so every event applied after the read reaches us) and pushes a ``gap`` if
  it moved. Leaders are compared every ``leader_check_s`` for the watched
  groups only, and suspects are settled at that tick too, so a flapping link
  or a node whose groups all change leader at once costs each watched
  conversation at most one signal per tick; nothing runs on the append path.
  Events the leader drops on a link that stays up (its send queue to us
  full, counted in its ``events_dropped``) are reported by the leader
  itself: it remembers their conversations and sends a *loss notice* (a
  ``wire.LOSS`` frame) once the queue takes frames again, at its next flush
  or ``leader_check_s`` tick; we signal those conversations at once. Not
  covered: a connection replaced without a down/up on our side long after it
  came up (the peer restarted before we noticed: it learns our interest at
  the next ``refresh_s``) shows only with the next event.
- **Bad input.** A malformed frame is counted, logged and dropped; it never
  raises into the transport (which would close the link and with it Raft's
  traffic) and never reaches a subscriber.

The node that runs alone needs none of this: ``publisher.StreamPublisher``
publishes every apply to the local bus.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from fastpaca.cluster.placement import group_for_conversation
from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.pubsub.publisher import event_for
from fastpaca.pubsub.stats import PubSubStats
from fastpaca.raft.transport import Channel, Transport
from fastpaca.store.effects import Effect

__all__ = ["ClusterFanout"]

_log = logging.getLogger(__name__)

FRAME_BYTES_MAX = 256 * 1024
"""Events to one peer are split into frames of about this size, so one busy
iteration does not build a single huge payload ahead of Raft's frames."""
REFRESH_S = 10.0
RESYNC_DELAY_S = 0.5
"""After a peer's queue refused an interest frame, retry the full set this late."""
LEADER_CHECK_S = 0.25
"""How often the leaders of watched groups are compared, and suspect groups
settled (the latency of a loss signal; a Raft election takes seconds)."""


class ClusterFanout:
    """The cluster adapter; an ``EffectSink`` for the node's ``EffectHub``.

    ``is_leader(group_id)`` says whether this node currently leads the
    group (``RaftDriver.is_leader``); ``leader_of(group_id)`` names the
    group's leader as far as this node knows, or None (``RaftDriver.leader_of``,
    better ``Gossip.leader_of``: see ``use_leader_directory``);
    ``group_count`` maps conversations to groups as the router does."""

    def __init__(
        self,
        *,
        bus: LocalBus,
        transport: Transport,
        is_leader: Callable[[int], bool],
        leader_of: Callable[[int], str | None],
        group_count: int,
        frame_bytes_max: int = FRAME_BYTES_MAX,
        refresh_s: float = REFRESH_S,
        resync_delay_s: float = RESYNC_DELAY_S,
        leader_check_s: float = LEADER_CHECK_S,
    ) -> None:
        self._bus = bus
        self._transport = transport
        self._is_leader = is_leader
        self._leader_of = leader_of
        self._group_count = group_count
        self._frame_bytes_max = frame_bytes_max
        self._refresh_s = refresh_s
        self._resync_delay_s = resync_delay_s
        self._leader_check_s = leader_check_s
        self.stats = PubSubStats()
        self._peers_of: dict[str, set[str]] = {}
        """Conversation id -> peers that announced interest in it."""
        self._interest_of: dict[str, set[str]] = {}
        """Peer -> conversation ids it announced (the inverse of ``_peers_of``)."""
        self._outbox: dict[str, list[tuple[str, bytes]]] = {}
        """Peer -> (conversation id, event record) waiting for this iteration's flush."""
        self._lost_to: dict[str, set[str]] = {}
        """Peer (still connected) -> conversations whose events to it were
        dropped (its queue was full): owed a loss notice."""
        self._pending_interest: dict[str, bool] = {}
        """Local interest changes not yet announced (latest state per conversation)."""
        self._resync: set[str] = set()
        self._flush_scheduled = False
        self._watched: dict[int, set[str]] = {}
        """Group -> conversations of it with a local subscriber."""
        self._leaders: dict[int, str] = {}
        """Watched group -> the leader last seen for it (absent: none seen yet)."""
        self._suspect: set[int] = set()
        """Watched groups whose events may have been lost since they were last
        received (a link drop, a leader change): settled at the next check."""
        self._refresh_timer: asyncio.TimerHandle | None = None
        self._resync_timer: asyncio.TimerHandle | None = None
        self._leader_timer: asyncio.TimerHandle | None = None
        self._running = False
        transport.subscribe(Channel.PUBSUB, self._on_frame)
        transport.on_peer_state(self._on_peer_state)
        bus.on_interest(self._on_local_interest)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start announcing (before the transport starts, so no link-up is missed)."""
        self._running = True
        self._schedule_refresh()
        self._schedule_leader_check()

    async def stop(self) -> None:
        """Stop sending anything; inbound events are still delivered."""
        self._running = False
        for timer in (self._refresh_timer, self._resync_timer, self._leader_timer):
            if timer is not None:
                timer.cancel()
        self._refresh_timer = self._resync_timer = self._leader_timer = None
        self._outbox.clear()
        self._lost_to.clear()
        self._pending_interest.clear()

    # --- queries (tests, diagnostics) ---------------------------------------------------

    def interested_peers(self, conversation_id: str) -> frozenset[str]:
        return frozenset(self._peers_of.get(conversation_id, ()))

    def interest_of(self, peer: str) -> frozenset[str]:
        return frozenset(self._interest_of.get(peer, ()))

    def suspect_groups(self) -> frozenset[int]:
        return frozenset(self._suspect)

    def use_leader_directory(self, leader_of: Callable[[int], str | None]) -> None:
        """Replace ``leader_of`` (the cluster's directory exists only after
        this adapter: it also knows the leaders of groups not hosted here)."""
        self._leader_of = leader_of

    # --- the apply path -----------------------------------------------------------------

    def __call__(self, group_id: int, effects: Sequence[Effect]) -> None:
        """Called from the Raft driver's loop once the applies are written; must not block."""
        bus, peers_of = self._bus, self._peers_of
        if not peers_of and not bus.has_any_subscribers():
            return  # nobody anywhere watches anything: the common case under load
        if not self._is_leader(group_id):
            return
        stats = self.stats
        for effect in effects:
            conversation_id = effect.conversation_id
            local = bus.has_subscribers(conversation_id)
            peers = peers_of.get(conversation_id)
            if not local and not peers:
                continue
            event = event_for(effect)
            if local:
                bus.publish(event)
                stats.events_published += 1
            if peers and self._running:
                item = (conversation_id, wire.event_record(event))
                outbox = self._outbox
                for peer in peers:
                    queued = outbox.get(peer)
                    if queued is None:
                        outbox[peer] = [item]
                    else:
                        queued.append(item)
                self._schedule_flush()

    # --- sending ------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._running:
            return
        outbox, self._outbox = self._outbox, {}
        for peer, items in outbox.items():
            self._send_events(peer, items)
        if self._lost_to:
            self._send_loss_notices()
        if self._pending_interest:
            self._announce_changes()

    def _send_events(self, peer: str, items: list[tuple[str, bytes]]) -> None:
        stats = self.stats
        limit = self._frame_bytes_max
        start, size = 0, 0
        for index, (_, record) in enumerate(items):
            if size and size + len(record) > limit:
                self._send_event_frame(peer, items[start:index])
                start, size = index, 0
            size += len(record)
        self._send_event_frame(peer, items[start:])
        stats.events_forwarded += len(items)

    def _send_event_frame(self, peer: str, items: list[tuple[str, bytes]]) -> None:
        frame = wire.encode_events(record for _, record in items)
        if self._transport.send(peer, Channel.PUBSUB, frame):
            self.stats.frames_sent += 1
            return
        self.stats.events_dropped += len(items)
        if peer in self._transport.connected_peers():
            # The link stays up, so the peer sees no drop: tell it which
            # conversations lost events once its queue takes frames again.
            self._lost_to.setdefault(peer, set()).update(cid for cid, _ in items)
        # (A link that went down is a loss signal on the peer's side already.)

    def _send_loss_notices(self) -> None:
        connected = self._transport.connected_peers()
        for peer in list(self._lost_to):
            if peer not in connected:
                del self._lost_to[peer]
                continue
            conversations = sorted(self._lost_to[peer])
            if self._transport.send(peer, Channel.PUBSUB, wire.encode_loss(conversations)):
                del self._lost_to[peer]
                _log.info(
                    "pubsub: told %s of %d conversations with dropped events",
                    peer,
                    len(conversations),
                    extra={"type": "pubsub.loss_notice", "peer": peer},
                )

    def _on_local_interest(self, conversation_id: str, interested: bool) -> None:
        self.stats.local_interests += 1 if interested else -1
        self._track(conversation_id, interested)
        if not self._running:
            return  # the full set goes out when links come up
        self._pending_interest[conversation_id] = interested
        self._schedule_flush()

    def _announce_changes(self) -> None:
        """Send the pending local interest changes to every connected peer."""
        pending, self._pending_interest = self._pending_interest, {}
        added = [cid for cid, interested in pending.items() if interested]
        removed = [cid for cid, interested in pending.items() if not interested]
        frames = []
        if added:
            frames.append(wire.encode_interest(wire.INTEREST_ADD, added))
        if removed:
            frames.append(wire.encode_interest(wire.INTEREST_REMOVE, removed))
        for peer in sorted(self._transport.connected_peers()):
            for frame in frames:
                if not self._send_interest(peer, frame):
                    break

    def _announce_all(self, peer: str) -> None:
        frame = wire.encode_interest(wire.INTEREST_FULL, self._bus.interests())
        self._send_interest(peer, frame)

    def _send_interest(self, peer: str, frame: bytes) -> bool:
        if self._transport.send(peer, Channel.PUBSUB, frame):
            self.stats.interest_frames_sent += 1
            return True
        if peer in self._transport.connected_peers():
            # The link is up but its queue is full: the peer's view of us is
            # now wrong, so it gets the whole set again shortly.
            self._resync_later(peer)
        return False

    def _resync_later(self, peer: str) -> None:
        self._resync.add(peer)
        if self._resync_timer is None:
            loop = asyncio.get_running_loop()
            self._resync_timer = loop.call_later(self._resync_delay_s, self._resync_now)

    def _resync_now(self) -> None:
        self._resync_timer = None
        peers, self._resync = self._resync, set()
        if not self._running:
            return
        connected = self._transport.connected_peers()
        for peer in sorted(peers & connected):
            self._announce_all(peer)

    def _schedule_refresh(self) -> None:
        loop = asyncio.get_running_loop()
        self._refresh_timer = loop.call_later(self._refresh_s, self._refresh)

    def _refresh(self) -> None:
        self._refresh_timer = None
        if not self._running:
            return
        for peer in sorted(self._transport.connected_peers()):
            self._announce_all(peer)
        self._schedule_refresh()

    # --- receiving ----------------------------------------------------------------------

    def _on_frame(self, peer: str, frame: bytes) -> None:
        """A ``Channel.PUBSUB`` payload from ``peer``. Never raises: the
        transport would close the link, and with it the Raft traffic."""
        try:
            kind = wire.frame_kind(frame)
            if kind == wire.EVENTS:
                events = wire.decode_events(frame)
            elif kind == wire.LOSS:
                ids = wire.decode_loss(frame)
            else:
                kind, ids = wire.decode_interest(frame)
        except wire.WireError as exc:
            self.stats.malformed_frames += 1
            _log.warning(
                "pubsub: malformed frame from %s dropped: %s",
                peer,
                exc,
                extra={"type": "pubsub.malformed_frame", "peer": peer},
            )
            return
        if kind == wire.EVENTS:
            self._deliver(events)
        elif kind == wire.LOSS:
            self._on_loss_notice(ids)
        else:
            self._on_interest(peer, kind, ids)

    def _deliver(self, events: list[StreamEvent]) -> None:
        stats = self.stats
        stats.frames_received += 1
        bus = self._bus
        for event in events:
            stats.events_received += 1
            bus.publish(event)  # no-op if our subscribers left meanwhile

    def _on_loss_notice(self, conversation_ids: list[str]) -> None:
        """The sender dropped events of these conversations on their way
        here: their channels re-check ``last_seq`` (and push a ``gap``)."""
        signalled = 0
        for conversation_id in conversation_ids:
            if self._bus.has_subscribers(conversation_id):
                self._bus.signal_loss(conversation_id)
                signalled += 1
        self.stats.loss_signals += signalled

    def _on_interest(self, peer: str, kind: int, ids: list[str]) -> None:
        self.stats.interest_frames_received += 1
        if kind == wire.INTEREST_FULL:
            wanted = set(ids)
            current = self._interest_of.get(peer, set())
            for conversation_id in current - wanted:
                self._forget(peer, conversation_id)
            for conversation_id in wanted - current:
                self._remember(peer, conversation_id)
        elif kind == wire.INTEREST_ADD:
            for conversation_id in ids:
                self._remember(peer, conversation_id)
        else:
            for conversation_id in ids:
                self._forget(peer, conversation_id)

    def _remember(self, peer: str, conversation_id: str) -> None:
        conversations = self._interest_of.setdefault(peer, set())
        if conversation_id in conversations:
            return
        conversations.add(conversation_id)
        self._peers_of.setdefault(conversation_id, set()).add(peer)
        self.stats.remote_interests += 1

    def _forget(self, peer: str, conversation_id: str) -> None:
        conversations = self._interest_of.get(peer)
        if conversations is None or conversation_id not in conversations:
            return
        conversations.discard(conversation_id)
        if not conversations:
            del self._interest_of[peer]
        peers = self._peers_of[conversation_id]
        peers.discard(peer)
        if not peers:
            del self._peers_of[conversation_id]
        self.stats.remote_interests -= 1

    def _on_peer_state(self, peer: str, connected: bool) -> None:
        if connected:
            if self._running:
                self._announce_all(peer)
                # Both ends may have dialed at once: the transport then replaces
                # one connection by the other without a down/up, and what was in
                # flight on the loser (this set, maybe) is gone. Send it again
                # once that race is over; until then the peer counts as not
                # knowing our interest (no loss signal settles against it).
                self._resync_later(peer)
            return
        # Whatever that peer led and was sending us is lost until it knows our
        # interest again (it forgets it on its side of the drop too).
        for group_id in self._watched:
            if self._leaders.get(group_id, peer) == peer:
                self._suspect.add(group_id)
        # The peer re-announces its whole set when the link is back; until
        # then nothing we send would reach it.
        for conversation_id in list(self._interest_of.get(peer, ())):
            self._forget(peer, conversation_id)
        dropped = self._outbox.pop(peer, None)
        if dropped:
            self.stats.events_dropped += len(dropped)
        self._lost_to.pop(peer, None)  # the drop is the peer's loss signal
        self._resync.discard(peer)

    # --- loss signals -------------------------------------------------------------------

    def _track(self, conversation_id: str, interested: bool) -> None:
        """Keep ``_watched`` (and the leaders seen) in step with local interest."""
        group_id = group_for_conversation(conversation_id, self._group_count)
        conversations = self._watched.get(group_id)
        if interested:
            if conversations is None:
                conversations = self._watched[group_id] = set()
                # A join reads last_seq itself: the leader seen now is the
                # baseline, not a change.
                leader = self._leader_of(group_id)
                if leader is not None:
                    self._leaders[group_id] = leader
            conversations.add(conversation_id)
        elif conversations is not None:
            conversations.discard(conversation_id)
            if not conversations:
                del self._watched[group_id]
                self._leaders.pop(group_id, None)
                self._suspect.discard(group_id)

    def _schedule_leader_check(self) -> None:
        loop = asyncio.get_running_loop()
        self._leader_timer = loop.call_later(self._leader_check_s, self._check_leaders)

    def _check_leaders(self) -> None:
        self._leader_timer = None
        if not self._running:
            return
        try:
            if self._lost_to:
                self._send_loss_notices()
            self.check_losses()
        except Exception:  # a bug must not end the checks for good
            _log.exception("pubsub: loss check failed", extra={"type": "pubsub.loss_check_error"})
        self._schedule_leader_check()

    def check_losses(self) -> int:
        """Note leader changes of the watched groups, and signal possible loss
        for the suspect groups whose leader receives our interest again;
        returns how many conversations were signalled. Runs every
        ``leader_check_s``; a cost per watched group, none without subscribers."""
        if not self._watched:
            return 0
        leaders, suspect = self._leaders, self._suspect
        for group_id in self._watched:
            leader = self._leader_of(group_id)
            if leader is None:
                continue  # an election, or our view of it lags: compare later
            seen = leaders.get(group_id)
            if seen != leader:
                leaders[group_id] = leader
                if seen is not None:
                    # The old leader may have stopped publishing before the new
                    # one started (DESIGN section 5): events in between are lost.
                    suspect.add(group_id)
        if not suspect:
            return 0
        me = self._transport.node_id
        connected = self._transport.connected_peers()
        settled = []
        for group_id in suspect:
            leader = leaders.get(group_id)
            # A peer whose full set was refused (``_resync``) does not know our
            # interest yet: a read now could predate it and miss events.
            if leader == me or (
                leader is not None and leader in connected and leader not in self._resync
            ):
                settled.append(group_id)
        signalled = 0
        for group_id in sorted(settled):
            suspect.discard(group_id)
            for conversation_id in sorted(self._watched[group_id]):
                signalled += 1
                self._bus.signal_loss(conversation_id)
        if signalled:
            self.stats.loss_signals += signalled
            _log.info(
                "pubsub: events may have been lost for %d watched conversations of %d groups "
                "(peer link or leader change); their subscribers re-check",
                signalled,
                len(settled),
                extra={"type": "pubsub.loss_signal", "groups": len(settled)},
            )
        return signalled
