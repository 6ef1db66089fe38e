"""The websocket stream: Phoenix Channels over ``/socket/websocket``.

Owns what the frames of ``web/phoenix.py`` mean (DESIGN section 2): channels
on ``conversation:{id}`` topics, their join / replay / live hand-over, the
per-socket send queue and what happens to a client that does not keep up.
It reads conversations through the conversation service (``RUNTIME_KEY``,
linearizable, single node or cluster) and receives live events from the
local bus (``app.BUS_KEY``); it never writes.

Behaviour a client author can rely on (the README's "Streaming" section says
the same for users):

- **Join** ``conversation:{id}`` with ``{}`` or ``{"from_seq": N}``. The reply
  is ``ok`` with ``{"last_seq", "version", "tombstoned"}`` as of the join.
  With ``from_seq`` every message with ``seq >= N`` is pushed first (replayed
  pushes have no ``version``: the store keeps none per message), then the
  channel continues live with no hole and no duplicate. Without it the
  channel is live from ``last_seq + 1``. A channel subscribes to the bus
  *before* it reads and waits (``join_ready_timeout_s``) until the bus says
  the conversation's events reach this node (Redis: SUBSCRIBE acknowledged;
  otherwise ``unavailable``), buffers what arrives while it replays in pages, then
  flushes the buffer dropping every seq it already sent. If that buffer
  outgrows its bound, it is thrown away and the replay simply reads on: the
  events are in the store, since they were applied before being published.
- **Unknown conversation**: ``error`` reply ``{"reason":"conversation_not_found"}``
  (the JS client retries the join by itself, 1, 2, 5, then every 10 s, so a
  conversation created later is picked up). **Tombstoned**: the join succeeds,
  as HTTP reads of it do; the requested replay is pushed, then one
  ``tombstone`` push. Bad id or params: ``invalid_conversation_id`` /
  ``invalid_params``; another topic: ``"unmatched topic"`` (Phoenix's reason).
  No quorum: ``unavailable``. Any other exception during the join is a bug:
  ``internal``, logged with its traceback, the subscription released. An
  error reply never closes the socket.
- **Possible loss**: when the pub/sub adapter signals that events may have
  been lost (Redis came back after the subscriber connection dropped; the
  link to the group's leader dropped and came back, or the leader changed), a
  live channel re-reads ``last_seq`` and pushes a ``gap`` up to it if it
  moved; a channel still catching up re-reads the store before going live.
- **Live order**: the channel tracks the next seq it expects. A duplicate is
  dropped; a hole becomes ``{"type":"gap","expected":E,"actual":A}`` followed
  by the message ``A``; the client replays ``GET .../messages?from=E``.
- **Slow consumer**: each socket queues encoded frames for its writer. Above
  ``send_queue_bytes`` live events are dropped (the channel's expected seq
  stays where it was), and once the queue has drained the channel pushes a
  ``gap`` whose ``actual`` is the seq after the last dropped one. Replies are
  never dropped; a socket whose queue still passes ``send_queue_hard_bytes``
  (a client that sends but does not read) is closed with 1008. Replay waits
  for room before each message instead of dropping, and reads pages of about
  ``replay_page_bytes``. Memory per socket is therefore bounded: the queue by
  ``send_queue_bytes`` plus one message per replaying channel (replies and
  the join buffers' flushes aside), plus one page per replaying channel.
  Heartbeat replies go ahead of queued pushes (they belong to no channel);
  every other frame keeps its order.
- **Pushes** carry ``ref`` null and the channel's ``join_ref``, so the client
  drops frames a replaced channel still had queued.
- **Limits**: inbound frames over ``max_frame_bytes`` close the socket with
  1009 (the protocol's frames are tiny); a socket that sends nothing for
  ``idle_timeout_s`` (Phoenix's 60 s; the JS client beats every 30 s) is
  closed. A frame that is not JSON, not a Phoenix frame, or binary gets an
  ``error`` reply on its topic (``phoenix`` if unreadable) and the socket
  stays open.
- **Shutdown**: ``close_all`` (an ``on_shutdown`` hook, after the HTTP drain)
  closes every socket with 1001 and waits at most ``close_timeout_s`` for the
  close handshakes, so open sockets never hold the node's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import unicodedata
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from fastpaca.errors import ConversationNotFound, FastpacaError, Unavailable, ValidationError
from fastpaca.pubsub.bus import LocalBus, StreamEvent, Subscription
from fastpaca.store.reads import StoredMessage
from fastpaca.store.service import ConversationService
from fastpaca.web.errors import error_response
from fastpaca.web.phoenix import Frame, FrameError, Ref, Serializer, serializer_for
from fastpaca.web.rest import RUNTIME_KEY
from fastpaca.web.schemas import CONVERSATION_ID_BYTES_MAX, SEQ_MAX, json_int_in

__all__ = [
    "STREAMS_KEY",
    "STREAM_PATH",
    "StreamLimits",
    "StreamSockets",
    "StreamStats",
    "stream_socket",
]

_log = logging.getLogger(__name__)

STREAM_PATH = "/socket/websocket"
TOPIC_PREFIX = "conversation:"
_OK_EMPTY = b"{}"


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamLimits:
    send_queue_bytes: int = 1 << 20
    """Above this many queued bytes, live events are dropped (and become a gap)."""
    send_queue_hard_bytes: int = 8 << 20
    """Above this, the socket is closed: its client sends but does not read."""
    catch_up_buffer_bytes: int = 4 << 20
    """Live events held while a join replays; beyond it they are re-read instead."""
    replay_page: int = 200
    """Most messages read per replay page."""
    replay_page_bytes: int = 1 << 20
    """Replay pages are sized to about this many bytes of messages (see ``_catch_up``)."""
    replay_first_page: int = 16
    """Messages in a replay's first page, before their size is known."""
    join_ready_timeout_s: float = 3.0
    """How long a join waits for the pub/sub adapter to receive the
    conversation's events (Redis: its SUBSCRIBE acknowledged) before it
    answers ``unavailable``."""
    max_channels: int = 100
    max_frame_bytes: int = 64 * 1024
    idle_timeout_s: float = 60.0
    close_timeout_s: float = 1.0


@dataclass(slots=True)
class StreamStats:
    """Counters of this node's stream sockets, exported at scrape time."""

    sockets: int = 0
    channels: int = 0
    pushes: dict[str, int] = field(
        default_factory=lambda: {"message": 0, "replay": 0, "tombstone": 0, "gap": 0}
    )
    dropped: int = 0
    """Live events dropped because a socket's send queue was full."""
    bad_frames: int = 0
    queued_bytes_peak: int = 0
    """The most bytes any one socket of this node had queued at once."""


class StreamSockets:
    """The open stream sockets of one app: limits, counters, shutdown."""

    def __init__(self, limits: StreamLimits | None = None) -> None:
        self.limits = limits or StreamLimits()
        self.stats = StreamStats()
        self.is_closing = False
        self._sockets: set[StreamSocket] = set()

    def add(self, socket: StreamSocket) -> None:
        self._sockets.add(socket)
        self.stats.sockets = len(self._sockets)
        if self.is_closing:  # shutdown began while this one upgraded
            socket.abort(WSCloseCode.GOING_AWAY, "server shutting down")

    def remove(self, socket: StreamSocket) -> None:
        self._sockets.discard(socket)
        self.stats.sockets = len(self._sockets)

    async def close_all(self, app: web.Application | None = None) -> None:
        """Close every socket with 1001 and wait for them, bounded: the
        clients reconnect (elsewhere) and rejoin with ``from_seq``."""
        self.is_closing = True
        sockets = tuple(self._sockets)
        for socket in sockets:
            socket.abort(WSCloseCode.GOING_AWAY, "server shutting down")
        if sockets:
            await asyncio.wait(
                [socket.finished for socket in sockets], timeout=self.limits.close_timeout_s + 0.5
            )


STREAMS_KEY = web.AppKey("streams", StreamSockets)


async def stream_socket(request: web.Request) -> web.StreamResponse:
    """``GET /socket/websocket?vsn=2.0.0``: one Phoenix socket, until it closes."""
    streams = request.app[STREAMS_KEY]
    serializer = serializer_for(request.query.get("vsn"))
    if serializer is None:
        raise ValidationError("invalid_query", "vsn must be 1.x.x or 2.x.x (Phoenix serializer)")
    if streams.is_closing:
        raise Unavailable("Node is shutting down")
    limits = streams.limits
    ws = web.WebSocketResponse(
        protocols=("phoenix",),  # chosen when offered: the JS client's authToken mode needs it
        max_msg_size=limits.max_frame_bytes,
        timeout=limits.close_timeout_s,
    )
    if not ws.can_prepare(request).ok:
        return error_response(
            426, "upgrade_required", "This endpoint speaks websocket (Phoenix Channels) only"
        )
    await ws.prepare(request)
    socket = StreamSocket(ws, serializer, request.app[RUNTIME_KEY], _bus(request.app), streams)
    streams.add(socket)
    try:
        await socket.run()
    finally:
        streams.remove(socket)
    return ws


def _bus(app: web.Application) -> LocalBus:
    # app.py, the composition root, owns BUS_KEY and reaches this module
    # through server.py: a module-level import would be a cycle.
    from fastpaca.app import BUS_KEY

    return app[BUS_KEY]


class StreamSocket:
    """One client connection: its channels by topic and its send queue."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        serializer: Serializer,
        service: ConversationService,
        bus: LocalBus,
        streams: StreamSockets,
    ) -> None:
        self.ws = ws
        self.serializer = serializer
        self.service = service
        self.bus = bus
        self.limits = streams.limits
        self.stats = streams.stats
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queued_bytes = 0
        self._channels: dict[str, Channel] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        """Every channel task still running (joins, loss checks), replaced channels' too."""
        self._queue: deque[bytes] = deque()
        self._urgent: deque[bytes] = deque()
        """Heartbeat replies: written before queued pushes (see ``reply_urgent``)."""
        self._has_frames = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._lossy: set[Channel] = set()  # channels owing a gap for dropped events
        self._close_code = WSCloseCode.OK
        self._close_reason = ""
        self._reader: asyncio.Task[None] | None = None
        self._aborted = False

    # --- lifecycle --------------------------------------------------------

    async def run(self) -> None:
        reader = self._reader = asyncio.create_task(self._read_loop())
        if self._aborted:
            reader.cancel()
        writer = asyncio.create_task(self._write_loop())
        try:
            await asyncio.wait((reader, writer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            # aiohttp cancels this handler when the peer goes away: the
            # synchronous clean-up comes first, and ``finished`` is set
            # however the awaits below end.
            for channel in tuple(self._channels.values()):
                channel.close()
            tasks = (reader, writer, *self._tasks)
            for task in tasks:
                task.cancel()
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
                await self._close_ws()
            finally:
                if not self.finished.done():
                    self.finished.set_result(None)

    async def _close_ws(self) -> None:
        if self.ws.closed:
            return
        # A client that does not read would keep the close frame's drain
        # waiting forever: bound it, then the transport is simply dropped.
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(self.limits.close_timeout_s):
                await self.ws.close(code=self._close_code, message=self._close_reason.encode())

    def abort(self, code: int, reason: str) -> None:
        """Stop reading and close with ``code`` (from any task, never blocks)."""
        self._close_code = WSCloseCode(code)
        self._close_reason = reason
        self._aborted = True
        if self._reader is not None:
            self._reader.cancel()

    # --- inbound ----------------------------------------------------------

    async def _read_loop(self) -> None:
        ws = self.ws
        while True:
            try:
                message = await ws.receive(timeout=self.limits.idle_timeout_s)
            except TimeoutError:
                self._close_code, self._close_reason = WSCloseCode.OK, "idle timeout"
                return
            if message.type is WSMsgType.TEXT:
                self._handle_text(message.data)
            elif message.type is WSMsgType.BINARY:
                self._reply_bad_frame(FrameError("binary frames are not supported"))
            else:  # CLOSE / CLOSING / CLOSED, or ERROR (aiohttp closed it: e.g. 1009)
                return

    def _handle_text(self, data: str) -> None:
        try:
            frame = self.serializer.decode(data)
        except FrameError as exc:
            self._reply_bad_frame(exc)
            return
        if frame.topic == "phoenix":
            if frame.event == "heartbeat":
                self.reply_urgent(frame)
            else:
                self._reply_error(
                    frame, "unsupported_event", f"no event {frame.event!r} on phoenix"
                )
        elif frame.event == "phx_join":
            self._join(frame)
        elif frame.event == "phx_leave":
            channel = self._channels.get(frame.topic)
            # Only the instance the leave names: the JS client also sends
            # leaves for channel objects a newer join replaced (as Phoenix,
            # a stale join_ref leaves the current channel alone; v1 clients
            # send none).
            if channel is not None and frame.join_ref in (None, channel.join_ref):
                channel.close()
            # ok even when not joined: the JS client only forgets a channel on ok.
            self.reply(frame, "ok", _OK_EMPTY)
        elif frame.topic in self._channels:
            self._reply_error(frame, "unsupported_event", "this channel only streams to the client")
        else:
            self._reply_error(frame, "unmatched topic", f"not joined to {frame.topic!r}")

    def _join(self, frame: Frame) -> None:
        try:
            conversation_id = parse_topic(frame.topic)
            from_seq = parse_join_params(frame.payload)
        except _JoinRefused as exc:
            self._reply_error(frame, exc.reason, str(exc))
            return
        old = self._channels.get(frame.topic)
        if old is not None:  # as Phoenix: close the old channel, then join anew
            old.close(notify=True)
        elif len(self._channels) >= self.limits.max_channels:
            self._reply_error(
                frame, "too_many_channels", f"at most {self.limits.max_channels} per socket"
            )
            return
        channel = Channel(self, frame, conversation_id, from_seq)
        self._channels[frame.topic] = channel
        channel.start()

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a channel's coroutine; the socket cancels and awaits it on close."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def forget(self, channel: Channel) -> None:
        if self._channels.get(channel.topic) is channel:
            del self._channels[channel.topic]
        self._lossy.discard(channel)

    # --- outbound ---------------------------------------------------------

    def reply(self, frame: Frame, status: str, response: bytes) -> None:
        self.send_control(
            self.serializer.reply(frame.join_ref, frame.ref, frame.topic, status, response)
        )

    def reply_urgent(self, frame: Frame) -> None:
        """An ``ok`` reply written ahead of every queued push: a heartbeat's.
        A client in a long replay over a slow link must still get it within
        its timeout (the JS client's is 30 s), and it belongs to no channel,
        so the order of any channel's frames is unchanged."""
        reply = self.serializer.reply(frame.join_ref, frame.ref, frame.topic, "ok", _OK_EMPTY)
        self._urgent.append(reply)
        self._account(len(reply))
        self._check_hard_limit()

    def _reply_error(self, frame: Frame, reason: str, message: str) -> None:
        self.reply(frame, "error", orjson.dumps({"reason": reason, "message": message}))

    def _reply_bad_frame(self, exc: FrameError) -> None:
        self.stats.bad_frames += 1
        body = orjson.dumps({"reason": "invalid_frame", "message": exc.reason})
        self.send_control(self.serializer.reply(exc.join_ref, exc.ref, exc.topic, "error", body))

    def has_room(self) -> bool:
        return self.queued_bytes < self.limits.send_queue_bytes

    def send_control(self, frame: bytes) -> None:
        """Queue a frame that must not be dropped (replies, tombstones)."""
        self._enqueue(frame)
        self._check_hard_limit()

    def send_event(self, frame: bytes) -> None:
        """Queue a push; the caller checked ``has_room`` or waited for it
        (a gap, a few dozen bytes, is sent regardless)."""
        self._enqueue(frame)

    async def wait_room(self) -> None:
        while not self.has_room():
            self._has_room.clear()
            await self._has_room.wait()

    def owe_gap(self, channel: Channel) -> None:
        self._lossy.add(channel)

    def _enqueue(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._account(len(frame))

    def _account(self, size: int) -> None:
        self.queued_bytes += size
        if self.queued_bytes > self.stats.queued_bytes_peak:
            self.stats.queued_bytes_peak = self.queued_bytes
        self._has_frames.set()

    def _check_hard_limit(self) -> None:
        if self.queued_bytes > self.limits.send_queue_hard_bytes:
            self.abort(WSCloseCode.POLICY_VIOLATION, "send queue overflow: read your socket")

    async def _write_loop(self) -> None:
        queue, urgent, ws = self._queue, self._urgent, self.ws
        while True:
            if urgent:
                frame = urgent.popleft()
            elif queue:
                frame = queue.popleft()
            else:
                if self._lossy:  # drained: now the dropped events can be reported
                    for channel in tuple(self._lossy):
                        channel.push_owed_gap()
                    self._lossy.clear()
                    continue
                self._has_frames.clear()
                await self._has_frames.wait()
                continue
            self.queued_bytes -= len(frame)
            if self.queued_bytes < self.limits.send_queue_bytes:
                self._has_room.set()
            await ws.send_frame(frame, WSMsgType.TEXT)


class _JoinRefused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_topic(topic: str) -> str:
    """The conversation id of a ``conversation:{id}`` topic (the id as is,
    not percent-encoded; same rules as in the HTTP path)."""
    if not topic.startswith(TOPIC_PREFIX):
        raise _JoinRefused("unmatched topic", f"no topic {topic!r}; expected conversation:{{id}}")
    conversation_id = topic[len(TOPIC_PREFIX) :]
    size = len(conversation_id.encode("utf-8", "surrogatepass"))  # Cs refused below
    if not 1 <= size <= CONVERSATION_ID_BYTES_MAX:
        raise _JoinRefused(
            "invalid_conversation_id",
            f"Conversation id must be 1 to {CONVERSATION_ID_BYTES_MAX} bytes of UTF-8",
        )
    for ch in conversation_id:
        if ch == "/" or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cs"):
            raise _JoinRefused(
                "invalid_conversation_id",
                f"Conversation id must not contain {ch!r} "
                "(no '/', whitespace or control characters)",
            )
    return conversation_id


def parse_join_params(params: dict[str, Any]) -> int | None:
    """``from_seq`` of the join params, or None; anything else is refused
    (a typo like ``last_seq`` would otherwise silently mean "live only")."""
    unknown = sorted(set(params) - {"from_seq"})
    if unknown:
        raise _JoinRefused("invalid_params", f"unknown join params {unknown}; expected from_seq")
    raw = params.get("from_seq")
    if raw is None:
        return None
    from_seq = json_int_in(raw, 0, SEQ_MAX)  # 5.0 is 5, as over HTTP
    if from_seq is None:
        raise _JoinRefused("invalid_params", "from_seq must be an integer >= 0")
    return from_seq


def _message_payload(message: StoredMessage) -> bytes:
    return b'{"type":"message","seq":%d,"message":%b}' % (message.seq, message.body)


def _gap_payload(expected: int, actual: int) -> bytes:
    return b'{"type":"gap","expected":%d,"actual":%d}' % (expected, actual)


class Channel:
    """One joined ``conversation:{id}`` topic of a socket.

    States: *catching up* (``_buffer`` is a list: live events wait there while
    the join reads) then *live* (``_buffer`` None: events go out as they come).
    ``expected`` is the next seq the client should get."""

    def __init__(
        self, socket: StreamSocket, join: Frame, conversation_id: str, from_seq: int | None
    ) -> None:
        self.socket = socket
        self.topic = join.topic
        self.conversation_id = conversation_id
        self.join = join
        self.from_seq = from_seq
        self.expected = 0
        self._head = socket.serializer.push_head(join.join_ref, join.topic)
        self._buffer: list[StreamEvent] | None = []
        self._buffered_bytes = 0
        self._buffer_overflowed = False
        self._tombstoned = False
        self._tombstone_sent = False
        self._dropped_through: int | None = None
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._loss_check: asyncio.Task[None] | None = None
        self._loss_recheck = False
        # Subscribe before the first read: nothing applied after it can be
        # missed (once the adapter confirms it receives the events: _run_join).
        self._subscription: Subscription = socket.bus.subscribe(
            conversation_id, self._deliver, on_loss=self._on_possible_loss
        )
        socket.stats.channels += 1

    @property
    def join_ref(self) -> Ref:
        return self.join.join_ref

    def start(self) -> None:
        self._task = self.socket.spawn(self._run_join())

    def close(self, *, notify: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        self._subscription.close()
        self.socket.stats.channels -= 1
        self.socket.forget(self)
        for task in (self._task, self._loss_check):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if notify:
            self.socket.send_control(self._push("phx_close", _OK_EMPTY))

    def _push(self, event: str, payload: bytes) -> bytes:
        return self.socket.serializer.push(self._head, event, payload)

    # --- join: reply, replay, hand over to live ---------------------------

    async def _run_join(self) -> None:
        socket = self.socket
        try:
            # With Redis the subscription is made in the background: reading
            # last_seq before it is in force could miss the events published
            # in between, with no hole ever showing on a quiet conversation.
            if not await socket.bus.wait_ready(
                self.conversation_id, socket.limits.join_ready_timeout_s
            ):
                self._refuse(
                    "unavailable",
                    "Live events of this conversation cannot be received yet "
                    "(pub/sub subscription not confirmed); retry",
                )
                return
            view = await socket.service.get(self.conversation_id)
        except ConversationNotFound as exc:
            self._refuse("conversation_not_found", str(exc))
            return
        except FastpacaError as exc:  # no leader / quorum in time: the client retries
            self._refuse("unavailable", str(exc))
            return
        except Exception:  # a bug: answer it, never leave the join hanging
            _log.exception(
                "stream join crashed",
                extra={"type": "stream.join_crash", "conversation_id": self.conversation_id},
            )
            self._refuse("internal", "Internal error while joining")
            return
        state = view.state
        response = b'{"last_seq":%d,"version":%d,"tombstoned":%b}' % (
            state.last_seq,
            state.version,
            b"true" if state.tombstoned else b"false",
        )
        socket.reply(self.join, "ok", response)
        self._tombstoned = self._tombstoned or state.tombstoned
        try:
            await self._catch_up(state.last_seq)
        except Exception as exc:
            # The join was answered already: report the channel as crashed,
            # so the client rejoins (after 1 s) and replays from where it is.
            if isinstance(exc, FastpacaError):
                _log.info(
                    "stream replay failed",
                    extra={"type": "stream.replay_failed",
                           "conversation_id": self.conversation_id, "error": str(exc)},
                )  # fmt: skip
            else:  # a bug: crash the channel, never the socket or the node
                _log.exception(
                    "stream channel crashed",
                    extra={"type": "stream.channel_crash", "conversation_id": self.conversation_id},
                )
            self.close()
            socket.send_control(self._push("phx_error", b'{"reason":"replay_failed"}'))

    def _refuse(self, reason: str, message: str) -> None:
        self.close()
        self.socket.reply(self.join, "error", orjson.dumps({"reason": reason, "message": message}))

    async def _catch_up(self, last_seq: int) -> None:
        socket = self.socket
        limits = socket.limits
        # Pages are sized in bytes from what the previous page weighed, so a
        # page of large messages holds about replay_page_bytes in memory;
        # each message then waits for room in the send queue (never dropped),
        # so the queue passes send_queue_bytes by at most one message.
        limit = max(1, min(limits.replay_page, limits.replay_first_page))
        # Seqs start at 1: from_seq 0 must not leave ``expected`` at 0 when
        # nothing is replayed (the first live message would become a gap).
        next_seq = last_seq + 1 if self.from_seq is None else max(1, self.from_seq)
        must_read = self.from_seq is not None and self.from_seq <= last_seq
        while True:
            if must_read:
                await socket.wait_room()
                page = await socket.service.replay(
                    self.conversation_id, from_seq=next_seq, limit=limit
                )
                page_bytes = 0
                for message in page:
                    page_bytes += len(message.body)
                    if message.seq >= next_seq:
                        await socket.wait_room()
                        socket.send_event(self._push("message", _message_payload(message)))
                        next_seq = message.seq + 1
                socket.stats.pushes["replay"] += len(page)
                if len(page) == limit:
                    per_message = max(1, page_bytes // len(page))
                    limit = max(1, min(limits.replay_page, limits.replay_page_bytes // per_message))
                    continue
            await socket.wait_room()
            if self._buffer_overflowed:  # what was thrown away is in the store: read it
                self._buffer_overflowed = False
                must_read = True
                continue
            break
        # No await from here on: the buffer is complete up to this instant.
        self.expected = next_seq
        buffered, self._buffer = self._buffer or [], None
        for event in buffered:  # bounded by catch_up_buffer_bytes: never dropped
            self._push_message(event, force=True)
        if self._tombstoned:
            self._push_tombstone()

    # --- possible loss (the pub/sub adapter's link was down) ---------------

    def _on_possible_loss(self) -> None:
        """The bus's loss signal: events may have been lost with no hole
        showing. The adapter receives the events again when this is called,
        so a read of last_seq now tells what may be missing."""
        if self._closed:
            return
        if self._buffer is not None:
            # Catching up: re-read the store before going live, exactly as
            # when the buffer overflowed (the join's own read may be older
            # than the loss).
            self._buffer_overflowed = True
            return
        if self._loss_check is not None and not self._loss_check.done():
            self._loss_recheck = True  # the running read may predate this signal
            return
        self._loss_check = self.socket.spawn(self._check_loss())

    async def _check_loss(self) -> None:
        delay_s = 0.5
        while not self._closed:
            self._loss_recheck = False
            try:
                view = await self.socket.service.get(self.conversation_id)
            except FastpacaError:  # no quorum now: events may still be missing, retry
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, 5.0)
                continue
            except Exception:
                _log.exception(
                    "stream loss check crashed",
                    extra={"type": "stream.channel_crash", "conversation_id": self.conversation_id},
                )
                return
            self._report_missing(view.state.last_seq, view.state.tombstoned)
            if not self._loss_recheck:
                return

    def _report_missing(self, last_seq: int, tombstoned: bool) -> None:
        """Push a gap for every seq up to ``last_seq`` this channel has not
        sent (and a tombstone it may have missed)."""
        if last_seq >= self.expected:
            self._send_gap(last_seq + 1)
            self.expected = last_seq + 1
            if self._dropped_through is not None and self._dropped_through <= last_seq:
                self._dropped_through = None  # this gap covers the owed one
        if tombstoned:
            self._tombstoned = True
            self._push_tombstone()

    # --- live -------------------------------------------------------------

    def _deliver(self, event: StreamEvent) -> None:
        """The bus callback: never blocks, never awaits."""
        if self._closed:
            return
        if event.kind == "tombstone":
            self._tombstoned = True
            if self._buffer is None:
                self._push_tombstone()
            return
        buffer = self._buffer
        if buffer is None:
            self._push_message(event)
            return
        if self._buffered_bytes + len(event.payload) > self.socket.limits.catch_up_buffer_bytes:
            buffer.clear()
            self._buffered_bytes = 0
            self._buffer_overflowed = True
            return
        buffer.append(event)
        self._buffered_bytes += len(event.payload)

    def _push_message(self, event: StreamEvent, *, force: bool = False) -> None:
        seq = event.seq
        assert seq is not None
        if seq < self.expected:
            return  # a duplicate (replayed already, or delivered twice)
        socket = self.socket
        if not force and not socket.has_room():
            self._dropped_through = seq
            socket.stats.dropped += 1
            socket.owe_gap(self)
            return
        if seq > self.expected:
            self._send_gap(seq)
        socket.send_event(self._push("message", event.payload))
        socket.stats.pushes["message"] += 1
        self.expected = seq + 1
        self._dropped_through = None

    def push_owed_gap(self) -> None:
        """After a queue overflow, once drained: report what was dropped."""
        dropped = self._dropped_through
        if self._closed or dropped is None or dropped < self.expected:
            return
        self._send_gap(dropped + 1)
        self.expected = dropped + 1
        self._dropped_through = None

    def _send_gap(self, actual: int) -> None:
        self.socket.send_event(self._push("gap", _gap_payload(self.expected, actual)))
        self.socket.stats.pushes["gap"] += 1

    def _push_tombstone(self) -> None:
        if not self._tombstone_sent:
            self._tombstone_sent = True
            self.socket.send_control(self._push("tombstone", b'{"type":"tombstone"}'))
            self.socket.stats.pushes["tombstone"] += 1
