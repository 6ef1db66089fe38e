"""The peer transport over websockets: one authenticated connection per peer.

Owns the node-to-node connections on ``/internal/cluster`` of each node's own
HTTP port: dialing peers (with capped, jittered exponential backoff), the
server route, the mutual HMAC handshake (bytes in ``auth.py``), per-peer
bounded send queues and one writer per connection that coalesces them into as
few websocket messages as possible (layout in ``frames.py``), inbound dispatch
by channel, peer up/down callbacks and counters. It implements
``fastpaca.raft.transport.Transport`` and knows nothing of what the payloads
mean; it never retries a payload (Raft tolerates loss).

Wiring::

    transport = WebSocketTransport(node_id="n1", secret=b"...", peers={"n2": ("10.0.0.2", 4000)})
    add_cluster_route(app, transport)      # or the service's build_web_app(extra_routes=...)
    await transport.start()                # dials peers; call stop() before the runner's cleanup

Duplicate connections. Every node dials every peer it knows of and has no
connection to, so a pair can end up with two connections (both dialed at
once), or with a stale one (the peer restarted before we noticed). The rule,
applied identically on both ends when a second connection to the same peer
authenticates: the new connection replaces the existing one, *except* when the
existing one was dialed by the lower node id of the pair and is younger than
``duplicate_window_s`` — then the new one is refused. Within a simultaneous
dial both ends therefore keep the connection dialed by the lower id; outside
that window a new connection means the peer lost the old one, so it wins.
Replacing a connection moves its queued payloads over and fires no up/down
callbacks. A node accepts any peer that proves the secret, even one missing
from its peer map (discovery may lag on either side); ``set_peers`` decides
whom we dial.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Final

import aiohttp
from aiohttp import web

from fastpaca.cancellation import cancel_and_wait
from fastpaca.cluster import auth
from fastpaca.cluster.frames import MalformedFrame
from fastpaca.cluster.peer_link import (
    CLOSE_AUTH_FAILED,
    CLOSE_DUPLICATE,
    CLOSE_GOING_AWAY,
    CLOSE_SUPERSEDED,
    PeerLink,
    PeerSocket,
)
from fastpaca.cluster.transport_stats import PeerStats, TransportConfig, TransportStats
from fastpaca.raft.transport import FrameHandler, PeerStateHandler

__all__ = [
    "CLUSTER_PATH",
    "PeerStats",
    "TransportConfig",
    "TransportStats",
    "WebSocketTransport",
    "add_cluster_route",
]

CLUSTER_PATH: Final = "/internal/cluster"

_log = logging.getLogger(__name__)


class _Refused(Exception):
    """The peer closed the connection during our handshake (``code`` says why)."""

    def __init__(self, code: int | None) -> None:
        super().__init__(f"peer closed the handshake (code {code})")
        self.code = code


class WebSocketTransport:
    """``Transport`` over one websocket per peer; see the module docstring."""

    def __init__(
        self,
        *,
        node_id: str,
        secret: bytes,
        peers: Mapping[str, tuple[str, int]] | None = None,
        config: TransportConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not secret:
            raise ValueError("the cluster secret must not be empty")
        self._node_id = node_id
        self._secret = secret
        self._config = config or TransportConfig()
        self._rng = rng or random.Random()
        self._peers: dict[str, tuple[str, int]] = {}
        self._links: dict[str, PeerLink] = {}
        self._handlers: dict[int, FrameHandler] = {}
        self._peer_state_handlers: list[PeerStateHandler] = []
        self._dialers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None
        self._running = False
        self.stats = TransportStats()
        self.set_peers(peers or {})

    # --- Transport protocol --------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node_id

    def send(self, peer: str, channel: int, payload: bytes) -> bool:
        link = self._links.get(peer)
        if link is None or not link.enqueue(channel, payload):
            self.stats.peer(peer).drops += 1
            return False
        return True

    def subscribe(self, channel: int, handler: FrameHandler) -> None:
        if not 0 <= channel <= 255:
            raise ValueError(f"channel must fit in one byte: {channel}")
        self._handlers[channel] = handler

    def on_peer_state(self, handler: PeerStateHandler) -> None:
        self._peer_state_handlers.append(handler)

    def connected_peers(self) -> frozenset[str]:
        return frozenset(self._links)

    async def start(self) -> None:
        if self._running:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=self._config.connect_timeout_s)
        )
        self._running = True
        for peer_id in sorted(self._peers):
            self._ensure_dialer(peer_id)

    async def stop(self) -> None:
        """Stop dialing, close every connection (both directions), free the session."""
        self._running = False
        dialers = list(self._dialers.values())
        self._dialers.clear()
        await cancel_and_wait(dialers, what="cluster dialers")
        links = list(self._links.values())
        for link in links:
            await link.close(CLOSE_GOING_AWAY)
        # Inbound links are served by aiohttp's handler tasks; let them unwind.
        waiters = [asyncio.create_task(link.closed.wait()) for link in links]
        if waiters:
            await asyncio.wait(waiters, timeout=self._config.close_timeout_s)
        for waiter in waiters:
            waiter.cancel()
        if self._background:
            await asyncio.wait(self._background, timeout=self._config.close_timeout_s)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- membership ----------------------------------------------------------------

    def set_peers(self, peers: Mapping[str, tuple[str, int]]) -> None:
        """Replace the peers we dial (node id -> (host, port)); ourselves is ignored.

        New peers are dialed, removed ones are no longer dialed and our
        outbound connection to them is closed; a changed address is used from
        the next dial on.
        """
        wanted = {peer_id: (host, int(port)) for peer_id, (host, port) in peers.items()}
        wanted.pop(self._node_id, None)
        for peer_id in set(self._peers) - set(wanted):
            task = self._dialers.get(peer_id)
            # The dialer owns our outbound link: cancelled, it closes it on the
            # way out. Not when it is the caller (a peer-state callback fired
            # from its own link's teardown): cancelling it would cut that
            # teardown short; it sees the peer gone and ends by itself (or
            # carries on, should the peer be put back meanwhile).
            if task is not None and task is not asyncio.current_task():
                del self._dialers[peer_id]
                task.cancel()
            if peer_id not in self._links:
                # Forgotten: its counters go too (metrics label sets stay bounded).
                self.stats.peers.pop(peer_id, None)
        self._peers = wanted
        for peer_id in sorted(wanted):
            self.stats.peer(peer_id)
            if self._running:
                self._ensure_dialer(peer_id)

    def peers(self) -> dict[str, tuple[str, int]]:
        return dict(self._peers)

    def connections(self) -> dict[str, str]:
        """Connected peer id -> node id that dialed the connection (for
        diagnostics: both ends of a pair report the same dialer)."""
        return {peer_id: link.initiator for peer_id, link in self._links.items()}

    # --- server side ---------------------------------------------------------------

    async def handle_inbound(self, request: web.Request) -> web.StreamResponse:
        """The ``/internal/cluster`` route: authenticate, then serve the link."""
        config = self._config
        ws = web.WebSocketResponse(
            timeout=config.close_timeout_s,
            heartbeat=config.heartbeat_s,
            max_msg_size=config.message_bytes_max,
            compress=False,
        )
        if not self._running or not ws.can_prepare(request).ok:
            self.stats.rejected_requests += 1
            _log.warning("cluster: refused a non-websocket request from %s", request.remote)
            return web.Response(status=400 if self._running else 503, text="cluster peers only\n")
        await ws.prepare(request)
        try:
            async with asyncio.timeout(config.handshake_timeout_s):
                peer_id = await self._server_handshake(ws)
        except TimeoutError:
            self.stats.handshake_timeouts += 1
            _log.warning("cluster: handshake from %s timed out; closed", request.remote)
            await ws.close(code=CLOSE_AUTH_FAILED, message=b"handshake timeout")
            return ws
        except (auth.HandshakeError, _Refused) as exc:
            _log.warning("cluster: rejected connection from %s: %s", request.remote, exc)
            await ws.close(code=CLOSE_AUTH_FAILED, message=b"authentication failed")
            return ws
        except ConnectionError as exc:  # the client vanished mid-handshake
            _log.info("cluster: connection from %s lost during handshake: %s", request.remote, exc)
            return ws
        link = PeerLink(peer_id, initiator=peer_id, ws=ws, config=config)
        if not self._register(link):
            await ws.close(code=CLOSE_DUPLICATE, message=b"duplicate connection")
            return ws
        await self._serve(link, send_first=auth.encode_accept())
        return ws

    async def _server_handshake(self, ws: PeerSocket) -> str:
        try:
            hello = auth.decode_hello(await self._receive_handshake(ws))
        except auth.HandshakeError:
            self.stats.auth_failures += 1
            raise
        if hello.client_id == self._node_id:
            self.stats.auth_failures += 1
            raise auth.HandshakeError("peer claims our own node id")
        server_nonce = auth.new_nonce()
        proof = auth.server_proof(
            self._secret, hello.client_id, self._node_id, hello.client_nonce, server_nonce
        )
        await ws.send_bytes(
            auth.encode_challenge(auth.Challenge(self._node_id, server_nonce, proof))
        )
        try:
            received = auth.decode_proof(await self._receive_handshake(ws))
            expected = auth.client_proof(
                self._secret, hello.client_id, self._node_id, hello.client_nonce, server_nonce
            )
            auth.verify_proof(expected, received)
        except (auth.HandshakeError, _Refused) as exc:
            self._count_auth_failure(hello.client_id)
            raise auth.HandshakeError(f"node {hello.client_id!r}: {exc}") from exc
        return hello.client_id

    # --- client side ---------------------------------------------------------------

    def _ensure_dialer(self, peer_id: str) -> None:
        task = self._dialers.get(peer_id)
        if task is None or task.done():
            self._dialers[peer_id] = asyncio.create_task(
                self._dial_loop(peer_id), name=f"cluster-dial-{peer_id}"
            )

    async def _dial_loop(self, peer_id: str) -> None:
        """Keep one connection to ``peer_id`` while it is in the peer map."""
        backoff_s = self._config.dial_backoff_initial_s
        failures = 0
        while self._running and peer_id in self._peers:
            existing = self._links.get(peer_id)
            if existing is not None:
                await existing.closed.wait()
                await self._sleep_jittered(self._config.dial_backoff_initial_s)
                continue
            try:
                link = await self._dial(peer_id, self._peers[peer_id])
            except Exception as exc:
                if isinstance(exc, _Refused) and exc.code == CLOSE_DUPLICATE:
                    # The peer kept a connection it already has with us (both
                    # dialed at once, or it still holds our previous one): the
                    # duplicate rule at work, not a failure worth a warning.
                    _log.debug("cluster: %s kept its other connection to us", peer_id)
                else:
                    failures += 1
                    log = _log.warning if failures == 1 else _log.debug
                    log("cluster: cannot connect to %s (attempt %d): %s", peer_id, failures, exc)
                await self._sleep_jittered(backoff_s)
                backoff_s = min(backoff_s * 2, self._config.dial_backoff_max_s)
                continue
            failures = 0
            backoff_s = self._config.dial_backoff_initial_s
            if link is not None:
                await self._serve(link)

    async def _dial(self, peer_id: str, address: tuple[str, int]) -> PeerLink | None:
        """Connect and authenticate; None when the connection lost a duplicate race."""
        assert self._session is not None
        host, port = address
        url = f"http://{host}:{port}{CLUSTER_PATH}"
        config = self._config
        async with asyncio.timeout(config.connect_timeout_s + config.handshake_timeout_s):
            ws = await self._session.ws_connect(
                url,
                heartbeat=config.heartbeat_s,
                max_msg_size=config.message_bytes_max,
                timeout=aiohttp.ClientWSTimeout(ws_close=config.close_timeout_s),
            )
            try:
                await self._client_handshake(ws, peer_id)
            except BaseException:
                await ws.close()
                raise
        link = PeerLink(peer_id, initiator=self._node_id, ws=ws, config=config)
        if not self._register(link):
            await ws.close(code=CLOSE_DUPLICATE, message=b"duplicate connection")
            return None
        return link

    async def _client_handshake(self, ws: PeerSocket, peer_id: str) -> None:
        client_nonce = auth.new_nonce()
        await ws.send_bytes(auth.encode_hello(auth.Hello(self._node_id, client_nonce)))
        try:
            challenge = auth.decode_challenge(await self._receive_handshake(ws))
            if challenge.server_id != peer_id:
                raise auth.HandshakeError(
                    f"dialed {peer_id!r} but {challenge.server_id!r} answered"
                )
            expected = auth.server_proof(
                self._secret, self._node_id, peer_id, client_nonce, challenge.server_nonce
            )
            auth.verify_proof(expected, challenge.server_proof)
        except auth.HandshakeError:
            self._count_auth_failure(peer_id)
            raise
        proof = auth.client_proof(
            self._secret, self._node_id, peer_id, client_nonce, challenge.server_nonce
        )
        await ws.send_bytes(auth.encode_proof(proof))
        try:
            auth.decode_accept(await self._receive_handshake(ws))
        except _Refused as exc:
            if exc.code == CLOSE_AUTH_FAILED:
                self._count_auth_failure(peer_id)
            raise

    # --- links -----------------------------------------------------------------------

    def _register(self, link: PeerLink) -> bool:
        """Make ``link`` the peer's connection, or refuse it (duplicate rule above)."""
        if not self._running:
            return False  # a handshake that finished while we were stopping
        peer_id = link.peer_id
        existing = self._links.get(peer_id)
        if existing is not None:
            lower_id = min(self._node_id, peer_id)
            existing_is_protected = (
                existing.initiator == lower_id
                and link.initiator != lower_id
                and time.monotonic() - existing.established_at < self._config.duplicate_window_s
            )
            if existing_is_protected:
                return False
            link.take_queue_of(existing)
            self._spawn(existing.close(CLOSE_SUPERSEDED))
        self._links[peer_id] = link
        stats = self.stats.peer(peer_id)
        stats.connects += 1
        _log.info("cluster: connected to %s (dialed by %s)", peer_id, link.initiator)
        if existing is None:
            self._notify_peer_state(peer_id, True)
        return True

    def _unregister(self, link: PeerLink) -> None:
        if self._links.get(link.peer_id) is not link:
            return  # superseded: its successor carries on, nothing changed for callers
        del self._links[link.peer_id]
        stats = self.stats.peer(link.peer_id)
        stats.disconnects += 1
        stats.drops += link.discard_queue()
        _log.info("cluster: disconnected from %s", link.peer_id)
        self._notify_peer_state(link.peer_id, False)

    async def _serve(self, link: PeerLink, *, send_first: bytes | None = None) -> None:
        """Serve ``link`` until the connection ends, then retire it."""
        try:
            await link.run(self._dispatch, self.stats.peer(link.peer_id), send_first=send_first)
        finally:
            self._unregister(link)
            try:
                await link.close(CLOSE_GOING_AWAY)
            finally:
                link.closed.set()  # even if cancelled meanwhile: waiters must not hang

    def _dispatch(self, peer_id: str, records: list[tuple[int, bytes]]) -> None:
        """Hand each payload to its channel's handler, in order.

        A handler that raises rejects the payload as malformed (the Raft
        driver raises ``CodecError`` for a frame it cannot decode): the rest
        of the message is not delivered and the link is closed, because a peer
        that sends garbage once cannot be trusted to be in sync after it.
        """
        for channel, payload in records:
            handler = self._handlers.get(channel)
            if handler is None:
                self.stats.unroutable_messages += 1
                continue
            try:
                handler(peer_id, payload)
            except Exception as exc:
                self.stats.handler_errors += 1
                raise MalformedFrame(
                    f"channel {channel} handler rejected a payload: {exc!r}"
                ) from exc

    # --- helpers ---------------------------------------------------------------------

    async def _receive_handshake(self, ws: PeerSocket) -> bytes:
        message = await ws.receive()
        if message.type is aiohttp.WSMsgType.BINARY:
            data: bytes = message.data
            return data
        if message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSING,
            aiohttp.WSMsgType.CLOSED,
        ):
            raise _Refused(message.data if isinstance(message.data, int) else None)
        raise auth.HandshakeError(f"unexpected websocket message type {message.type!r}")

    def _count_auth_failure(self, peer_id: str) -> None:
        self.stats.auth_failures += 1
        # Per-peer counters only for ids we know, so forged ids cannot grow the table.
        if peer_id in self._peers or peer_id in self.stats.peers:
            self.stats.peer(peer_id).auth_failures += 1

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # Held until done so the task is neither garbage collected nor forgotten at stop().
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sleep_jittered(self, delay_s: float) -> None:
        # Jitter in [delay/2, delay] keeps restarting peers from dialing in lockstep.
        await asyncio.sleep(delay_s * (0.5 + 0.5 * self._rng.random()))

    def _notify_peer_state(self, peer_id: str, is_connected: bool) -> None:
        for handler in self._peer_state_handlers:
            try:
                handler(peer_id, is_connected)
            except Exception:
                _log.exception("cluster: peer state handler failed for %s", peer_id)


def add_cluster_route(app: web.Application, transport: WebSocketTransport) -> None:
    """Mount the transport's server side at ``/internal/cluster`` on ``app``
    (an application of its own, as in tests; the service mounts it through
    ``web.server.build_web_app``, behind its front door)."""
    app.router.add_get(CLUSTER_PATH, transport.handle_inbound)
