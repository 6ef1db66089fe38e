"""Stream events through Redis pub/sub, so websocket nodes can scale apart.

``FASTPACA_PUBSUB_ADAPTER=redis`` with ``REDIS_HOST``/``REDIS_PORT``.

- **Publishing.** The group leader's apply (see ``cluster_adapter.py`` for
  why the leader) delivers to this node's subscribers at once and queues the
  event for Redis on channel ``fastpaca:conversation:{id}``. The leader cannot
  see other nodes' interest through Redis without a round trip per event, so
  it publishes every event of the groups it leads; one task drains the queue
  in pipelined batches, one round trip per batch.
- **Subscribing.** One Redis connection per node subscribes to the channels
  of the conversations with a local subscriber (``LocalBus.on_interest``) and
  hands what arrives to the local bus. A message carries its origin node, so
  the leader drops its own copy (its subscribers already had the event).
- **Joins wait for the subscription.** Redis delivers a message only to the
  connections subscribed when it is published, so a websocket join must not
  read ``last_seq`` before this node's SUBSCRIBE for the conversation was
  acknowledged: events published in between would reach nobody, and on a
  quiet conversation no hole would ever show. The adapter is the bus's ready
  gate (``LocalBus.wait_ready``): a channel counts as ready once the last
  SUBSCRIBE/UNSUBSCRIBE sent for it on the *current* connection was answered
  and it was a SUBSCRIBE (Redis answers in order, so that reply means the
  subscription is in force). While the connection is down or reconnecting
  nothing is ready, and the join answers ``unavailable`` after its bounded
  wait (the client retries).
- **Losing Redis never loses data and never blocks appends.** The apply path
  only appends to a bounded queue; when Redis is down or slow the oldest
  queued events are dropped and counted. The subscriber connection is rebuilt
  with capped backoff and re-subscribes to the current interest; a connection
  that redis-py would silently re-establish under us counts as lost too, so
  the confirmed set always belongs to one connection. A channel that was
  ready on a lost connection is *suspect*: once its SUBSCRIBE is confirmed on
  the new connection, the adapter calls ``LocalBus.signal_loss`` and each
  subscriber re-reads the conversation's ``last_seq`` (events published after
  that read are delivered again) and pushes a ``gap`` if it moved. Other
  losses show as a hole in the seqs a subscriber receives: the websocket
  turns it into a ``gap`` push and the client replays from the store.
- **Not covered:** events the *publisher* drops (its queue overflowed, or a
  PUBLISH batch failed, e.g. a timeout) while the subscribers' connections
  stay up are lost without a signal; a subscriber learns of them only from
  the next event of that conversation (a ``gap``). The counter
  ``events_dropped`` on the leader shows it.

Message body: ``origin length u16 | origin node id utf-8 | event record``
(the record is ``wire.event_record``; its conversation id must match the
channel; its payload must be a JSON object). A body that does not parse
is counted, logged and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from fastpaca.cancellation import cancel_and_wait
from fastpaca.pubsub import wire
from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.pubsub.publisher import event_for
from fastpaca.pubsub.stats import PubSubStats
from fastpaca.store.effects import Effect

__all__ = ["CHANNEL_PREFIX", "RedisFanout", "channel_of", "decode_message", "encode_message"]

_log = logging.getLogger(__name__)

CHANNEL_PREFIX: Final = b"fastpaca:conversation:"
QUEUE_EVENTS_MAX = 50_000
"""Events waiting for Redis; beyond this the oldest are dropped (and counted)."""
BATCH_EVENTS_MAX = 1_000
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 5.0
_ORIGIN = struct.Struct(">H")


def channel_of(conversation_id: str) -> bytes:
    return CHANNEL_PREFIX + conversation_id.encode()


def encode_message(origin: str, event: StreamEvent) -> bytes:
    raw = origin.encode()
    return b"".join((_ORIGIN.pack(len(raw)), raw, wire.event_record(event)))


def decode_message(channel: bytes, body: bytes) -> tuple[str, StreamEvent]:
    """(origin node, event) of one Redis message; WireError if malformed."""
    if len(body) < _ORIGIN.size:
        raise wire.WireError("truncated origin")
    (size,) = _ORIGIN.unpack_from(body)
    end = _ORIGIN.size + size
    if len(body) < end:
        raise wire.WireError("origin runs past the end")
    try:
        origin = body[_ORIGIN.size : end].decode()
    except UnicodeDecodeError:
        raise wire.WireError("origin is not utf-8") from None
    events = wire.decode_events(bytes((wire.EVENTS,)) + body[end:])
    if len(events) != 1:
        raise wire.WireError(f"{len(events)} events in one message")
    (event,) = events
    if channel_of(event.conversation_id) != channel:
        raise wire.WireError("event of another conversation than its channel")
    # The payload is spliced unparsed into websocket frames, and anything that
    # can publish to this Redis reaches these channels: a payload that is not
    # a JSON object would break every subscribed client's frame parsing.
    try:
        is_object = isinstance(orjson.loads(event.payload), dict)
    except orjson.JSONDecodeError:
        is_object = False
    if not is_object:
        raise wire.WireError("event payload is not a JSON object")
    return origin, event


class RedisFanout:
    """The Redis adapter; an ``EffectSink`` for the node's ``EffectHub``."""

    def __init__(
        self,
        *,
        bus: LocalBus,
        node_id: str,
        is_leader: Callable[[int], bool],
        host: str,
        port: int,
        queue_events_max: int = QUEUE_EVENTS_MAX,
        command_timeout_s: float = 2.0,
    ) -> None:
        self._bus = bus
        self._node_id = node_id
        self._is_leader = is_leader
        self._host = host
        self._port = port
        self._queue_events_max = queue_events_max
        self._command_timeout_s = command_timeout_s
        self.stats = PubSubStats()
        self._queue: deque[tuple[bytes, bytes]] = deque()
        self._queued = asyncio.Event()
        self._interest_changed = asyncio.Event()
        self._subscribed: set[bytes] = set()
        """Channels the current connection was last told to subscribe."""
        self._outstanding: dict[bytes, int] = {}
        """Channel -> SUBSCRIBE/UNSUBSCRIBE sent on this connection, not answered yet."""
        self._confirmed: set[bytes] = set()
        """Channels whose subscription is in force on the current connection."""
        self._suspect: set[bytes] = set()
        """Channels confirmed on a lost connection: their subscribers may have lost events."""
        self._ready_waiters: dict[bytes, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.connected = asyncio.Event()
        """Set while the subscriber connection is up and subscribed (tests)."""
        bus.on_interest(self._on_local_interest)
        bus.set_ready_gate(self.wait_ready)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the publisher and subscriber tasks; never waits for Redis."""
        self._running = True
        self._tasks = [
            asyncio.create_task(self._publish_loop(), name="pubsub-redis-publish"),
            asyncio.create_task(self._subscribe_loop(), name="pubsub-redis-subscribe"),
        ]

    async def stop(self) -> None:
        self._running = False
        await cancel_and_wait(self._tasks, what="redis pub/sub")
        self._tasks = []
        self._queue.clear()

    # --- the apply path -----------------------------------------------------------------

    def __call__(self, group_id: int, effects: Sequence[Effect]) -> None:
        """Called from the Raft driver's loop once the applies are written; must not block."""
        if not self._running or not self._is_leader(group_id):
            return
        bus, queue, stats = self._bus, self._queue, self.stats
        for effect in effects:
            event = event_for(effect)
            if bus.has_subscribers(event.conversation_id):
                bus.publish(event)
                stats.events_published += 1
            if len(queue) >= self._queue_events_max:
                queue.popleft()  # Redis is behind: the oldest event is the one to lose
                stats.events_dropped += 1
            queue.append((channel_of(event.conversation_id), encode_message(self._node_id, event)))
        self._queued.set()

    # --- publishing ---------------------------------------------------------------------

    def _client(self, *, socket_timeout: float | None) -> aioredis.Redis:
        return aioredis.Redis(
            host=self._host,
            port=self._port,
            socket_timeout=socket_timeout,
            socket_connect_timeout=self._command_timeout_s,
            retry=Retry(NoBackoff(), 0),  # we retry ourselves, and never on the apply path
        )

    async def _publish_loop(self) -> None:
        client = self._client(socket_timeout=self._command_timeout_s)
        backoff_s = BACKOFF_INITIAL_S
        failing = False
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                while self._queue:
                    batch = [
                        self._queue.popleft()
                        for _ in range(min(len(self._queue), BATCH_EVENTS_MAX))
                    ]
                    try:
                        async with client.pipeline(transaction=False) as pipe:
                            for channel, body in batch:
                                # Buffered in the pipeline, not a coroutine to await.
                                _ = pipe.publish(channel, body)
                            await pipe.execute()
                    except (RedisError, OSError) as exc:
                        self.stats.events_dropped += len(batch)
                        if not failing:
                            _log.warning(
                                "pubsub: cannot publish to redis at %s:%d: %s",
                                self._host,
                                self._port,
                                exc,
                                extra={"type": "pubsub.redis_down"},
                            )
                        failing = True
                        await asyncio.sleep(backoff_s)
                        backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
                        continue
                    if failing:
                        _log.info(
                            "pubsub: publishing to redis again", extra={"type": "pubsub.redis_up"}
                        )
                    failing, backoff_s = False, BACKOFF_INITIAL_S
                    self.stats.frames_sent += 1
                    self.stats.events_forwarded += len(batch)
        finally:
            await _close(client)

    # --- subscribing --------------------------------------------------------------------

    def _on_local_interest(self, conversation_id: str, interested: bool) -> None:
        self.stats.local_interests += 1 if interested else -1
        self._interest_changed.set()

    async def _subscribe_loop(self) -> None:
        """Keep one subscribed connection; rebuild it after any failure.
        An outage is logged once when it starts (a warning) and once when it
        ends, not at every attempt in between (every 5 s at most)."""
        backoff_s = BACKOFF_INITIAL_S
        down = False
        client = self._client(socket_timeout=None)  # an idle subscription is not a timeout
        try:
            while True:
                pubsub = client.pubsub()
                try:
                    # A channel of our own keeps the connection in subscribed
                    # mode (readable) even while no conversation is watched.
                    await pubsub.subscribe(b"fastpaca:node:" + self._node_id.encode())
                    if down:
                        _log.info(
                            "pubsub: redis subscription at %s:%d restored",
                            self._host,
                            self._port,
                            extra={"type": "pubsub.redis_up"},
                        )
                        down = False
                    # redis-py would reconnect this connection by itself (and
                    # re-subscribe) on the next command or read after a
                    # failure: refuse, so that losses are always seen here.
                    # (redis-py types the attribute as None; subscribe set it)
                    connection: Any = pubsub.connection
                    connection.register_connect_callback(self._refuse_reconnect)
                    self._subscribed = set()
                    backoff_s = BACKOFF_INITIAL_S
                    await self._serve(pubsub)
                except (RedisError, OSError) as exc:
                    self.connected.clear()
                    log = _log.debug if down else _log.warning
                    log(
                        "pubsub: redis subscription at %s:%d lost: %s",
                        self._host,
                        self._port,
                        exc,
                        extra={"type": "pubsub.redis_down"},
                    )
                    down = True
                finally:
                    self.connected.clear()
                    self._connection_lost()
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, BACKOFF_MAX_S)
        finally:
            await _close(client)

    async def _serve(self, pubsub: Any) -> None:
        """Read messages while following local interest, until a failure."""
        reader = asyncio.create_task(self._read(pubsub))
        syncer = asyncio.create_task(self._sync(pubsub))
        try:
            done, _ = await asyncio.wait((reader, syncer), return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # re-raise the failure
        finally:
            for task in (reader, syncer):
                task.cancel()
            await asyncio.gather(reader, syncer, return_exceptions=True)

    async def _sync(self, pubsub: Any) -> None:
        """Subscribe to exactly the channels of the local interest set."""
        while True:
            self._interest_changed.clear()
            wanted = {channel_of(cid) for cid in self._bus.interests()}
            added = sorted(wanted - self._subscribed)
            removed = sorted(self._subscribed - wanted)
            # The intent is recorded before sending: a reply can arrive
            # while the second command is still being written.
            self._subscribed = wanted
            outstanding = self._outstanding
            for channel in (*added, *removed):
                outstanding[channel] = outstanding.get(channel, 0) + 1
                self._confirmed.discard(channel)
            for channel in removed:
                self._suspect.discard(channel)  # nobody left to tell
            if added:
                await pubsub.subscribe(*added)
            if removed:
                await pubsub.unsubscribe(*removed)
            self.stats.interest_frames_sent += bool(added) + bool(removed)
            self.connected.set()
            await self._interest_changed.wait()

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message.get("type")
            if kind == "message":
                self._on_message(message["channel"], message["data"])
            elif kind in ("subscribe", "unsubscribe"):
                self._on_reply(message["channel"])

    def _on_reply(self, channel: bytes) -> None:
        """Redis answered one SUBSCRIBE/UNSUBSCRIBE of ``channel``; once all
        are answered, the last one sent is the state in force."""
        left = self._outstanding.get(channel)
        if left is None:
            return  # the node's own channel
        if left > 1:
            self._outstanding[channel] = left - 1
            return
        del self._outstanding[channel]
        if channel not in self._subscribed:
            return
        self._confirmed.add(channel)
        for waiter in self._ready_waiters.pop(channel, ()):
            if not waiter.done():
                waiter.set_result(None)
        if channel in self._suspect:
            self._suspect.discard(channel)
            self.stats.loss_signals += 1
            self._bus.signal_loss(channel[len(CHANNEL_PREFIX) :].decode())

    def _refuse_reconnect(self, connection: Any) -> None:
        # A method: redis-py keeps connect callbacks as weak methods.
        raise ConnectionError("the subscriber connection dropped; it is rebuilt from scratch")

    def _connection_lost(self) -> None:
        """Whatever was confirmed may have missed events from now until it
        is confirmed again on a new connection."""
        self._suspect |= self._confirmed
        self._confirmed = set()
        self._outstanding = {}
        self._subscribed = set()

    async def wait_ready(self, conversation_id: str, timeout_s: float) -> bool:
        """The bus's ready gate: True once a subscription covering the
        conversation is in force on the current connection (its SUBSCRIBE
        was answered), False if that takes longer than ``timeout_s``. The
        caller subscribed to the bus first, so the channel is wanted."""
        channel = channel_of(conversation_id)
        if channel in self._confirmed:
            return True
        if not self._running:
            return False
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._ready_waiters.setdefault(channel, [])
        waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            if not waiters and self._ready_waiters.get(channel) is waiters:
                del self._ready_waiters[channel]

    def _on_message(self, channel: bytes, body: bytes) -> None:
        try:
            origin, event = decode_message(channel, body)
        except wire.WireError as exc:
            self.stats.malformed_frames += 1
            _log.warning(
                "pubsub: malformed redis message on %r dropped: %s",
                channel[:100],
                exc,
                extra={"type": "pubsub.malformed_frame"},
            )
            return
        if origin == self._node_id:
            return  # published by us as leader: our subscribers had it already
        self.stats.events_received += 1
        self._bus.publish(event)


async def _close(client: aioredis.Redis) -> None:
    with contextlib.suppress(Exception):
        await client.aclose()
