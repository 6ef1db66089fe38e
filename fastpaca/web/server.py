"""The aiohttp application of the public API: routes and the front door.

Owns the route table (the one list the router and the OpenAPI test both read)
and what every request passes before its handler, outermost first: counting
it in flight, timing it into the metrics, mapping what it raised to its error
reply, and the optional per-node rate limit. These are not aiohttp
middlewares: an application with any middleware runs two extra coroutines
per request (the middleware and aiohttp's own ``_fix_request_current_app``),
about 2% of an append's instructions. Each route's handler is wrapped once,
at registration, instead, and a catch-all route answers what no route
matches (404, or 405 with ``Allow``) through the same wrapper. It builds no
subsystem: ``app.py`` fills the ``AppKey``s of ``rest.py`` and adds the
lifecycle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from fastpaca.errors import Overloaded
from fastpaca.observability.metrics import Metrics
from fastpaca.web import rest
from fastpaca.web.errors import response_for_exception
from fastpaca.web.socket import STREAM_PATH, STREAMS_KEY, StreamSockets, stream_socket

__all__ = [
    "CATCH_ALL_ROUTE",
    "IN_FLIGHT_KEY",
    "ROUTES",
    "STREAM_ROUTE",
    "InFlightRequests",
    "Route",
    "build_web_app",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    is_rate_limited: bool = True


_CONVERSATION = "/v1/conversations/{id}"
# aiohttp tries the resources under one static prefix in registration order
# (a regex match each), so the busiest ones, appends and reads, come first.
ROUTES: tuple[Route, ...] = (
    Route("POST", _CONVERSATION + "/messages", rest.append_messages),
    Route("GET", _CONVERSATION + "/messages", rest.replay_messages),
    Route("GET", _CONVERSATION + "/tail", rest.tail_messages),
    Route("PUT", _CONVERSATION, rest.put_conversation),
    Route("GET", _CONVERSATION, rest.get_conversation),
    Route("DELETE", _CONVERSATION, rest.delete_conversation),
    Route("GET", "/health/live", rest.health_live, is_rate_limited=False),
    Route("GET", "/health/ready", rest.health_ready, is_rate_limited=False),
    Route("GET", "/metrics", rest.metrics, is_rate_limited=False),
    Route("GET", "/v1/openapi.json", rest.openapi, is_rate_limited=False),
)
# The websocket stream (``socket.py``) is left out of ROUTES, and so out of
# the OpenAPI document, on purpose: OpenAPI cannot describe a Phoenix
# Channels conversation; the README's "Streaming" section does. Upgrades are
# not rate limited: a socket is one long connection, not a request.
STREAM_ROUTE = Route("GET", STREAM_PATH, stream_socket, is_rate_limited=False)
_UNROUTED = "unmatched"
"""The metrics' route label of requests no route matched."""


async def _unrouted(request: web.Request) -> web.StreamResponse:
    """The catch-all route's handler. aiohttp's router tries resources by
    static prefix, longest first, and this one's is the root, so it is
    reached only when no other route matched: 405 when some route serves
    this path with other methods, else 404."""
    allowed: set[str] = set()
    catch_all = request.match_info.route.resource
    for resource in request.app.router.resources():
        if resource is not catch_all:
            _, methods = await resource.resolve(request)
            allowed |= methods
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


CATCH_ALL_ROUTE = Route("*", r"/{unrouted:[\s\S]*}", _unrouted)
"""Not an endpoint (the OpenAPI document leaves it out): errors only. Any
path at all: ``.*`` would miss one holding a newline (``%0A``), which
aiohttp would then answer in plain text."""


class InFlightRequests:
    """Counts requests being handled, so shutdown can wait for them.

    aiohttp's own graceful shutdown stops reading from connections at once,
    so a request whose body is still arriving would never finish; ``serve``
    therefore stops listening, waits here until the count drops to zero, and
    only then lets aiohttp close connections. While draining, replies carry
    ``Connection: close`` so clients stop reusing the connection."""

    def __init__(self) -> None:
        self.count = 0
        self.is_draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout_s: float) -> bool:
        """Wait until no request is in flight; False if ``timeout_s`` passed first."""
        self.is_draining = True
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()


IN_FLIGHT_KEY = web.AppKey("in_flight", InFlightRequests)


class _TokenBucket:
    """Per-node request budget: ``rate_per_s`` sustained, bursts up to one second's worth."""

    def __init__(self, rate_per_s: float) -> None:
        self.rate_per_s = rate_per_s
        self._capacity = max(1.0, rate_per_s)
        self._tokens = self._capacity
        self._updated = time.monotonic()

    def try_take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self.rate_per_s)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def _front_door(
    route: Route, in_flight: InFlightRequests, metrics: Metrics, bucket: _TokenBucket | None
) -> Handler:
    """``route``'s handler behind, in order, outermost first: the in-flight
    count, the request timing, the error mapping and the rate limit (only
    for a rate-limited route, and only with a budget configured). A
    redirect (``HTTPException`` below 400) passes through, untimed."""
    handler = route.handler
    template = _UNROUTED if route is CATCH_ALL_ROUTE else route.path
    observe_request = metrics.observe_request
    clock = time.perf_counter
    limit = bucket if route.is_rate_limited else None
    refusal = (
        None
        if bucket is None
        else f"Rate limit of {bucket.rate_per_s:g} requests/s exceeded (FASTPACA_RATE_LIMIT_RPS)"
    )

    async def front(request: web.Request) -> web.StreamResponse:
        # A websocket (peer link, stream socket) is a connection, not a
        # request: the drain must not wait for it; stopping the runner closes it.
        counted = request.headers.get("Upgrade", "").lower() != "websocket"
        if counted:
            in_flight.enter()
        try:
            started = clock()
            try:
                if limit is not None and not limit.try_take():
                    raise Overloaded(refusal)
                response = await handler(request)
            except Exception as exc:
                response = response_for_exception(exc, request)
            if response.status != 101:  # a socket's lifetime is no request duration
                observe_request(template, request.method, response.status, clock() - started)
            if in_flight.is_draining:
                response.force_close()
            return response
        finally:
            if counted:
                in_flight.leave()

    return front


def build_web_app(
    *,
    metrics: Metrics,
    max_body_bytes: int,
    rate_limit_rps: float | None,
    extra_routes: tuple[Route, ...] = (),
) -> web.Application:
    """The application with ``ROUTES``, the stream, ``extra_routes`` (the
    cluster's peer link) and the catch-all, each behind the front door."""
    in_flight = InFlightRequests()
    bucket = None if rate_limit_rps is None else _TokenBucket(rate_limit_rps)
    app = web.Application(client_max_size=max_body_bytes)
    for route in (*ROUTES, STREAM_ROUTE, *extra_routes, CATCH_ALL_ROUTE):
        app.router.add_route(
            route.method, route.path, _front_door(route, in_flight, metrics, bucket)
        )
    streams = StreamSockets()
    metrics.watch_streams(lambda: streams.stats)
    # on_shutdown runs in runner.cleanup, after serve's HTTP drain and before
    # aiohttp waits for handlers: the sockets close at once instead of
    # holding the exit for the straggler timeout.
    app.on_shutdown.append(streams.close_all)
    app[rest.METRICS_KEY] = metrics
    app[IN_FLIGHT_KEY] = in_flight
    app[STREAMS_KEY] = streams
    return app
