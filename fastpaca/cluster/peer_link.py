"""One authenticated websocket to a peer: its send queue, writer and reader.

Owns what happens on a connection after the handshake: the bounded queue
``send`` fills, the single writer that packs queued payloads into as few
websocket messages as possible (``frames.py``), and the reader that splits
inbound messages and hands them to a dispatch callback. A malformed message
(or one the callback rejects) closes this link only. It does not dial, authenticate or decide which
link is a peer's current one; ``transport_ws.py`` does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

import aiohttp

from fastpaca.cluster.frames import MalformedFrame, decode_records, take_records
from fastpaca.cluster.transport_stats import PeerStats, TransportConfig

__all__ = [
    "CLOSE_AUTH_FAILED",
    "CLOSE_DUPLICATE",
    "CLOSE_GOING_AWAY",
    "CLOSE_MALFORMED",
    "CLOSE_SUPERSEDED",
    "ENDED_TYPES",
    "PeerLink",
    "PeerSocket",
]

# Websocket close codes (4000-4999 are for applications).
CLOSE_GOING_AWAY: Final = 1001
CLOSE_MALFORMED: Final = 4400
CLOSE_AUTH_FAILED: Final = 4401
CLOSE_DUPLICATE: Final = 4409
CLOSE_SUPERSEDED: Final = 4410

ENDED_TYPES: Final = frozenset(
    {
        aiohttp.WSMsgType.CLOSE,
        aiohttp.WSMsgType.CLOSING,
        aiohttp.WSMsgType.CLOSED,
        aiohttp.WSMsgType.ERROR,
    }
)
"""Message types that mean the websocket is over."""

_log = logging.getLogger(__name__)

Dispatch = Callable[[str, list[tuple[int, bytes]]], None]
"""Delivers one message's records; raises MalformedFrame to reject them."""


class PeerSocket(Protocol):
    """What both aiohttp websocket classes (server and client side) offer."""

    @property
    def closed(self) -> bool: ...

    async def send_bytes(self, data: bytes) -> None: ...

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage: ...

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool: ...


class PeerLink:
    """An authenticated connection to ``peer_id``, dialed by ``initiator``."""

    def __init__(
        self, peer_id: str, *, initiator: str, ws: PeerSocket, config: TransportConfig
    ) -> None:
        self.peer_id = peer_id
        self.initiator = initiator
        self.ws = ws
        self.established_at = time.monotonic()
        self.closed = asyncio.Event()
        """Set once ``run`` has returned and the socket is closed."""
        self._config = config
        self._queue: deque[tuple[int, bytes]] = deque()
        self._queue_bytes = 0
        self._wake = asyncio.Event()

    def enqueue(self, channel: int, payload: bytes) -> bool:
        """Queue a payload for the writer; False if the link is closing or the
        queue is at its bound (the caller counts the drop)."""
        config = self._config
        if (
            self.ws.closed
            or len(self._queue) >= config.send_queue_messages_max
            or self._queue_bytes + len(payload) > config.send_queue_bytes_max
        ):
            return False
        self._queue.append((channel, payload))
        self._queue_bytes += len(payload)
        self._wake.set()
        return True

    def take_queue_of(self, other: PeerLink) -> None:
        """Adopt ``other``'s unsent payloads (it is being replaced by this link)."""
        self._queue.extend(other._queue)
        self._queue_bytes += other._queue_bytes
        other.discard_queue()
        if self._queue:
            self._wake.set()

    def discard_queue(self) -> int:
        """Drop every unsent payload; returns how many there were."""
        count = len(self._queue)
        self._queue.clear()
        self._queue_bytes = 0
        return count

    async def run(self, dispatch: Dispatch, stats: PeerStats, *, send_first: bytes | None) -> None:
        """Write and read until the connection ends; never raises for a broken
        connection. The caller closes the socket and sets ``closed`` after."""
        writer: asyncio.Task[None] | None = None
        try:
            if send_first is not None:
                await self.ws.send_bytes(send_first)
            writer = asyncio.create_task(
                self._write_loop(stats), name=f"cluster-write-{self.peer_id}"
            )
            await self._read_loop(dispatch, stats)
        except Exception as exc:  # a broken connection ends this link, never the node
            _log.info("cluster: link to %s failed: %s", self.peer_id, exc)
        finally:
            if writer is not None:
                writer.cancel()
                await asyncio.wait([writer])

    async def close(self, code: int) -> None:
        if not self.ws.closed:
            try:
                await self.ws.close(code=code)
            except Exception as exc:  # the peer may be gone already; nothing left to do
                _log.debug("cluster: closing link to %s: %s", self.peer_id, exc)

    async def _write_loop(self, stats: PeerStats) -> None:
        frame_bytes_max = self._config.frame_bytes_max
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                # Everything queued since the last wake-up goes out now, packed.
                while self._queue:
                    frame, messages, payload_bytes = take_records(self._queue, frame_bytes_max)
                    self._queue_bytes -= payload_bytes
                    await self.ws.send_bytes(frame)
                    stats.frames_sent += 1
                    stats.messages_sent += messages
                    stats.bytes_sent += payload_bytes
        except Exception as exc:  # any write failure ends this connection, never the node
            _log.info("cluster: write to %s failed: %s", self.peer_id, exc)
            await self.close(CLOSE_GOING_AWAY)

    async def _read_loop(self, dispatch: Dispatch, stats: PeerStats) -> None:
        while True:
            message = await self.ws.receive()
            if message.type in ENDED_TYPES:
                return
            try:
                if message.type is not aiohttp.WSMsgType.BINARY:
                    raise MalformedFrame(f"unexpected websocket message type {message.type!r}")
                records = decode_records(message.data)
                stats.frames_received += 1
                stats.messages_received += len(records)
                stats.bytes_received += sum(len(payload) for _, payload in records)
                dispatch(self.peer_id, records)
            except MalformedFrame as exc:
                stats.malformed_frames += 1
                _log.warning("cluster: malformed frame from %s, closing: %s", self.peer_id, exc)
                await self.close(CLOSE_MALFORMED)
                return
