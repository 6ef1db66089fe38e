"""Request/response calls between nodes over the peer transport.

Owns the ``Channel.RPC`` frames: a caller sends a request naming a method and
an opaque payload, the peer runs the registered handler and answers with the
handler's bytes or with an error. It knows nothing about what the methods do
(request forwarding lives in ``store/``), and it never retries: a caller that
wants a retry decides so, because only it knows whether the call is safe to
repeat.

Frame layout (big-endian):
  request:  kind=0 u8 | call id u64 | method length u8 | method utf-8 | payload
  reply:    kind=1 u8 | call id u64 | payload
  failure:  kind=2 u8 | call id u64 | error code length u8 | code utf-8 | message utf-8
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastpaca.cancellation import cancel_and_wait
from fastpaca.raft.transport import Channel, Transport

__all__ = ["PeerUnavailable", "RemoteError", "RpcEndpoint", "RpcTimeout"]

log = logging.getLogger(__name__)

_REQUEST, _REPLY, _FAILURE = 0, 1, 2
_HEADER = struct.Struct(">BQ")

Handler = Callable[[str, bytes], Awaitable[bytes]]


class RemoteError(Exception):
    """The peer's handler failed. ``code`` is the handler's error code
    (``RemoteError`` raised by a handler travels as is; anything else arrives
    as ``internal``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PeerUnavailable(Exception):
    """The request could not be sent, or the peer went away before replying.
    Whether a sent request ran on the peer is unknown."""


class RpcTimeout(Exception):
    """No reply within the deadline; whether the request ran is unknown."""


@dataclass(slots=True)
class _Pending:
    peer: str
    future: asyncio.Future[bytes]


def _expire(future: asyncio.Future[bytes], method: str, peer: str, timeout_s: float) -> None:
    if not future.done():
        future.set_exception(RpcTimeout(f"{method} on {peer}: no reply within {timeout_s:.1f}s"))


class RpcEndpoint:
    def __init__(self, transport: Transport, *, max_concurrent_requests: int = 1024) -> None:
        self._transport = transport
        self._handlers: dict[str, Handler] = {}
        self._pending: dict[int, _Pending] = {}
        self._next_call_id = 1
        self._running: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(max_concurrent_requests)
        self.malformed_frames = 0
        transport.subscribe(Channel.RPC, self._on_frame)
        transport.on_peer_state(self._on_peer_state)

    def register(self, method: str, handler: Handler) -> None:
        if len(method.encode()) > 255:
            raise ValueError("method name longer than 255 bytes")
        self._handlers[method] = handler

    async def call(self, peer: str, method: str, payload: bytes, *, timeout_s: float) -> bytes:
        call_id = self._next_call_id
        self._next_call_id += 1
        name = method.encode()
        frame = _HEADER.pack(_REQUEST, call_id) + bytes([len(name)]) + name + payload
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bytes] = loop.create_future()
        if not self._transport.send(peer, Channel.RPC, frame):
            raise PeerUnavailable(f"{peer} is not connected")
        self._pending[call_id] = _Pending(peer, future)
        # A plain timer failing the future, not ``asyncio.timeout``: this runs
        # for most appends in a cluster, and the timer costs a fifth as much.
        timer = loop.call_later(timeout_s, _expire, future, method, peer, timeout_s)
        try:
            return await future
        finally:
            timer.cancel()
            self._pending.pop(call_id, None)

    async def close(self) -> None:
        """Fail pending calls and cancel running handlers."""
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(PeerUnavailable("rpc endpoint closed"))
        await cancel_and_wait(list(self._running), what="rpc handlers")

    # --- inbound -------------------------------------------------------------

    def _on_frame(self, peer: str, frame: bytes) -> None:
        try:
            kind, call_id = _HEADER.unpack_from(frame)
        except struct.error:
            self._malformed(peer, "short frame")
            return
        body = frame[_HEADER.size :]
        if kind == _REQUEST:
            self._on_request(peer, call_id, body)
        elif kind in (_REPLY, _FAILURE):
            self._on_reply(peer, call_id, kind, body)
        else:
            self._malformed(peer, f"unknown kind {kind}")

    def _on_request(self, peer: str, call_id: int, body: bytes) -> None:
        if not body or len(body) < 1 + body[0]:
            self._malformed(peer, "truncated request")
            return
        try:
            method = body[1 : 1 + body[0]].decode()
        except UnicodeDecodeError:
            self._malformed(peer, "method is not utf-8")
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(peer, call_id, method, body[1 + body[0] :])
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _serve(self, peer: str, call_id: int, method: str, payload: bytes) -> None:
        handler = self._handlers.get(method)
        async with self._slots:
            try:
                if handler is None:
                    raise RemoteError("unknown_method", method)
                reply = _HEADER.pack(_REPLY, call_id) + await handler(peer, payload)
            except RemoteError as exc:
                reply = _failure(call_id, exc.code, exc.message)
            except Exception:
                log.exception("rpc handler failed", extra={"type": "rpc", "method": method})
                reply = _failure(call_id, "internal", f"{method} failed on the peer")
        self._transport.send(peer, Channel.RPC, reply)

    def _on_reply(self, peer: str, call_id: int, kind: int, body: bytes) -> None:
        pending = self._pending.get(call_id)
        if pending is None or pending.peer != peer or pending.future.done():
            return  # late reply to a call that timed out, or a stray: nothing waits
        if kind == _REPLY:
            pending.future.set_result(body)
            return
        if not body or len(body) < 1 + body[0]:
            pending.future.set_exception(RemoteError("internal", "malformed failure reply"))
            return
        code = body[1 : 1 + body[0]].decode(errors="replace")
        message = body[1 + body[0] :].decode(errors="replace")
        pending.future.set_exception(RemoteError(code, message))

    def _on_peer_state(self, peer: str, connected: bool) -> None:
        if connected:
            return
        for pending in self._pending.values():
            if pending.peer == peer and not pending.future.done():
                pending.future.set_exception(PeerUnavailable(f"{peer} disconnected"))

    def _malformed(self, peer: str, detail: str) -> None:
        self.malformed_frames += 1
        log.warning("malformed rpc frame", extra={"type": "rpc", "peer": peer, "detail": detail})


def _failure(call_id: int, code: str, message: str) -> bytes:
    code_bytes = code.encode()[:255]
    return (
        _HEADER.pack(_FAILURE, call_id) + bytes([len(code_bytes)]) + code_bytes + message.encode()
    )
