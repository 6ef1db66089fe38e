"""Composition root: builds one node's subsystems and fixes their order.

Owns which objects exist, who gets which dependency, and the lifecycle:
LevelDB opens first and closes last; the Raft driver starts after it and stops
before it; HTTP serves only while both run. Each subsystem's start/stop is one
``cleanup_ctx`` generator. ``serve`` runs the node until SIGTERM/SIGINT, then
stops accepting, drains in-flight requests, stops the driver and returns.
It holds no business logic and reads no configuration but ``Settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from fastpaca.archive.archiver import Archiver, DriverLeadership
from fastpaca.archive.postgres import ArchiveUnavailable, PostgresArchive, archive_url
from fastpaca.cluster.node import ClusterNode
from fastpaca.cluster.setup import ClusterSettings, cluster_settings
from fastpaca.cluster.transport_ws import CLUSTER_PATH, WebSocketTransport
from fastpaca.config import Settings
from fastpaca.errors import ConfigError, NodeFailed
from fastpaca.observability.health import (
    Readiness,
    every_group_has_leader,
    storage_not_stalled,
)
from fastpaca.observability.metrics import Metrics
from fastpaca.pubsub.adapter import PubSubAdapter
from fastpaca.pubsub.bus import LocalBus
from fastpaca.pubsub.cluster_adapter import ClusterFanout
from fastpaca.pubsub.publisher import StreamPublisher
from fastpaca.pubsub.redis_adapter import RedisFanout
from fastpaca.raft.driver import DriverConfig, RaftDriver
from fastpaca.raft.kv import LevelDBKV
from fastpaca.raft.leveldb import LevelDBStorage
from fastpaca.raft.transport import Transport
from fastpaca.raft.transport_memory import InMemoryHub
from fastpaca.sdnotify import notify
from fastpaca.store.effects import EffectHub
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.reads import StoreReader
from fastpaca.store.runtime import ConversationRuntime, RaftEngine, wall_clock_ms
from fastpaca.web.openapi import openapi_json
from fastpaca.web.rest import OPENAPI_KEY, READINESS_KEY, RUNTIME_KEY
from fastpaca.web.server import IN_FLIGHT_KEY, Route, build_web_app

__all__ = ["ARCHIVER_KEY", "BUS_KEY", "NODE_KEY", "Node", "create_app", "serve"]

_log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5.0
"""In-flight requests get this long after SIGTERM; with the driver's bounded
stop the node exits well within DESIGN's 10 s."""
STRAGGLER_TIMEOUT_S = 1.0
"""After the drain, what aiohttp still waits for a request begun meanwhile."""


@dataclass(frozen=True, slots=True)
class Node:
    """The running subsystems of one node (for tests and operators' tools)."""

    node_id: str
    kv: LevelDBKV
    driver: RaftDriver
    runtime: ConversationRuntime
    effects: EffectHub
    readiness: Readiness
    metrics: Metrics
    bus: LocalBus
    cluster: ClusterNode | None = None
    pubsub: PubSubAdapter | None = None
    """Fans stream events out to other nodes; None on a node running alone."""


NODE_KEY = web.AppKey("node", Node)
BUS_KEY = web.AppKey("bus", LocalBus)
"""This node's stream subscribers (``pubsub/bus.py``); the websocket handler reads it."""
ARCHIVER_KEY = web.AppKey("archiver", Archiver)
"""The Postgres archiver; present only when ``FASTPACA_ARCHIVER_ENABLED=true``."""


def create_app(
    settings: Settings,
    *,
    clock_ms: Callable[[], int] = wall_clock_ms,
    driver_config: DriverConfig | None = None,
) -> web.Application:
    """The node's application; nothing runs until aiohttp starts it. Raises
    ``ConfigError`` when the data directory or the archive's URL cannot be used."""
    cluster_config = cluster_settings(settings)
    archive_store = _archive_store(settings)  # None when the archive is off
    data_dir = _prepare_data_dir(settings.raft_data_dir)
    if cluster_config is not None:  # the node id is our CLUSTER_NODES / DNS name
        settings = settings.model_copy(update={"node_name": cluster_config.me.node_id})
    node_id = _resolve_node_id(settings, data_dir)
    _check_group_count(settings, data_dir)
    kv = _open_kv(data_dir)
    try:
        if cluster_config is None:
            _check_not_a_cluster_member(kv, node_id, data_dir)
        metrics, readiness, effects = Metrics(), Readiness(), EffectHub()
        bus = LocalBus()
        fsm = ConversationStateMachine(kv, effect_sink=effects)
        transport: Transport
        if cluster_config is None:
            transport = InMemoryHub().transport(node_id)  # a cluster of one: no peers
        else:
            transport = WebSocketTransport(node_id=node_id, secret=cluster_config.secret)
        driver = RaftDriver(
            node_id=node_id,
            kv=kv,
            state_machine=fsm,
            transport=transport,
            config=driver_config or _driver_config(settings),
            on_written=effects.release,  # effects only of durable applies
        )

        def make_runtime(engine: RaftEngine) -> ConversationRuntime:
            return ConversationRuntime(
                engine=engine,
                reader=StoreReader(kv),
                group_count=settings.raft_groups,
                request_timeout_s=settings.request_timeout_ms / 1000,
                clock_ms=clock_ms,
                observer=metrics,
                archive=archive_store,
            )

        runtime = make_runtime(driver)
        archiver = None
        if archive_store is not None:
            archiver = _archiver(settings, archive_store, kv, driver, metrics)
            effects.add_listener(archiver.on_effects)
        pubsub = _pubsub(
            settings, bus, transport, driver, node_id=node_id, clustered=cluster_config is not None
        )
        if pubsub is None:  # running alone: every group applies here, publish them all
            effects.add_listener(StreamPublisher(bus))
        else:
            effects.add_listener(pubsub)
            metrics.watch_pubsub(pubsub.stats)
        readiness.add_check(storage_not_stalled(driver))
        cluster = None
        if isinstance(transport, WebSocketTransport) and cluster_config is not None:
            cluster = _cluster_node(cluster_config, settings, driver, transport, make_runtime)
            readiness.add_check(cluster.readiness)
            metrics.watch_cluster(cluster.numbers)
            if isinstance(pubsub, ClusterFanout):  # it also knows groups not hosted here
                pubsub.use_leader_directory(cluster.gossip.leader_of)
        else:
            readiness.add_check(every_group_has_leader(driver))
        metrics.watch_raft(driver.stats)
        # Peers are not clients: their link is never rate limited.
        peer_link = () if cluster is None else (
            Route("GET", CLUSTER_PATH, cluster.transport.handle_inbound, is_rate_limited=False),
        )  # fmt: skip
        app = build_web_app(
            metrics=metrics,
            max_body_bytes=settings.max_body_bytes,
            rate_limit_rps=settings.rate_limit_rps,
            extra_routes=peer_link,
        )
        app[RUNTIME_KEY] = runtime if cluster is None else cluster.conversations
        app[READINESS_KEY] = readiness
        app[OPENAPI_KEY] = openapi_json()
        app[BUS_KEY] = bus
        if archiver is not None:
            app[ARCHIVER_KEY] = archiver
        app[NODE_KEY] = Node(
            node_id, kv, driver, runtime, effects, readiness, metrics, bus, cluster, pubsub
        )
    except BaseException:
        kv.close()
        raise
    app.cleanup_ctx.append(_storage_ctx(kv))
    if cluster is None:
        app.cleanup_ctx.append(_raft_ctx(driver, transport, node_id, settings.raft_groups, pubsub))
    else:
        app.cleanup_ctx.append(_cluster_ctx(driver, cluster, pubsub))
    if archive_store is not None and archiver is not None:  # after Raft: it stops first
        app.cleanup_ctx.append(_archive_ctx(archive_store, archiver))
    return app


# --- archive (DESIGN section 4) ----------------------------------------------------------

ARCHIVE_START_MIGRATE_TIMEOUT_S = 5.0
"""How long the start waits for the schema before serving anyway; the
archiver keeps retrying it (Postgres down never stops a node)."""


def _archive_store(settings: Settings) -> PostgresArchive | None:
    """The archive's connection pool when the archive is on (nothing connects
    yet). Raises ``ConfigError`` for a missing or malformed URL."""
    if not settings.archiver_enabled:
        return None
    return PostgresArchive(
        archive_url(settings),
        pool_size=settings.db_pool_size,
        statement_timeout_s=max(settings.request_timeout_ms / 1000, 1.0),
    )


def _archiver(
    settings: Settings, store: PostgresArchive, kv: LevelDBKV, driver: RaftDriver, metrics: Metrics
) -> Archiver:
    return Archiver(
        store=store,
        reader=StoreReader(kv),
        engine=driver,
        leadership=DriverLeadership(driver),
        metrics=metrics,
        flush_interval_s=settings.archive_flush_interval_ms / 1000,
        batch_size=settings.archive_batch_size,
        tail_keep=settings.tail_keep,
        propose_timeout_s=settings.request_timeout_ms / 1000,
    )


def _archive_ctx(
    store: PostgresArchive, archiver: Archiver
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Open the pool, try the migration once (bounded), run the flush loop."""

    async def archive(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        try:
            async with asyncio.timeout(ARCHIVE_START_MIGRATE_TIMEOUT_S):
                await archiver.ensure_schema()
        except (TimeoutError, ArchiveUnavailable) as exc:
            _log.warning(
                "archive schema not created at start; retrying at every flush",
                extra={"type": "archive.unreachable", "error": str(exc) or type(exc).__name__},
            )
        loop_task = asyncio.create_task(archiver.run(), name="archiver")
        yield
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
        await store.close()

    return archive


def _pubsub(
    settings: Settings,
    bus: LocalBus,
    transport: Transport,
    driver: RaftDriver,
    *,
    node_id: str,
    clustered: bool,
) -> PubSubAdapter | None:
    """The adapter that carries stream events between nodes: through Redis,
    or over the peer transport; None for a node running alone with the
    cluster adapter (it has no one to tell)."""
    if settings.pubsub_adapter == "redis":
        return RedisFanout(
            bus=bus,
            node_id=node_id,
            is_leader=driver.is_leader,
            host=settings.redis_host,
            port=settings.redis_port,
        )
    if not clustered:
        return None
    return ClusterFanout(
        bus=bus,
        transport=transport,
        is_leader=driver.is_leader,
        leader_of=driver.leader_of,
        group_count=settings.raft_groups,
    )


def _driver_config(settings: Settings) -> DriverConfig:
    return DriverConfig(
        compact_threshold_entries=settings.raft_compact_threshold,
        compact_keep_entries=min(settings.raft_compact_keep, settings.raft_compact_threshold - 1),
    )


def _cluster_node(
    config: ClusterSettings,
    settings: Settings,
    driver: RaftDriver,
    transport: WebSocketTransport,
    make_runtime: Callable[[RaftEngine], ConversationRuntime],
) -> ClusterNode:
    return ClusterNode(
        config,
        driver=driver,
        transport=transport,
        data_dir=settings.raft_data_dir,
        group_count=settings.raft_groups,
        request_timeout_s=settings.request_timeout_ms / 1000,
        make_runtime=make_runtime,
    )


def _prepare_data_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"FASTPACA_RAFT_DATA_DIR={path}: cannot create the data directory ({exc.strerror})"
        ) from None
    return path


def _resolve_node_id(settings: Settings, data_dir: Path) -> str:
    """NODE_NAME, or a random name chosen once and kept in the data dir: the
    Raft groups on disk name their voters, so the id must survive restarts."""
    stored = _kept(data_dir, "node_name")
    if settings.node_name is not None:
        if stored is not None and stored != settings.node_name:
            raise ConfigError(
                f"NODE_NAME={settings.node_name}: the data directory {data_dir} belongs to "
                f"node {stored!r}; use that name or a fresh FASTPACA_RAFT_DATA_DIR"
            )
        node_id = settings.node_name
    else:
        node_id = stored or f"fastpaca-{secrets.token_hex(4)}"
    if stored is None:
        _keep(data_dir, "node_name", node_id)
    return node_id


def _check_group_count(settings: Settings, data_dir: Path) -> None:
    """Keep FASTPACA_RAFT_GROUPS in the data dir and refuse another value:
    a conversation's group is its id's hash modulo the count, so a node
    restarted with a different count would look for every conversation in
    the wrong group, answer "not found" and start new histories there.
    (A data dir from before this file was kept takes the current value.)"""
    stored = _kept(data_dir, "raft_groups")
    if stored is None:
        _keep(data_dir, "raft_groups", str(settings.raft_groups))
    elif stored != str(settings.raft_groups):
        raise ConfigError(
            f"FASTPACA_RAFT_GROUPS={settings.raft_groups}: the data directory {data_dir} "
            f"was created with {stored} groups and a conversation's group depends on "
            f"it; use {stored} or a fresh FASTPACA_RAFT_DATA_DIR"
        )


def _kept(data_dir: Path, name: str) -> str | None:
    """A setting the data directory keeps (one line in file ``name``), if any."""
    path = data_dir / name
    return path.read_text().strip() if path.exists() else None


def _keep(data_dir: Path, name: str, value: str) -> None:
    try:
        (data_dir / name).write_text(value + "\n")
    except OSError as exc:
        raise ConfigError(
            f"FASTPACA_RAFT_DATA_DIR={data_dir}: not writable ({exc.strerror})"
        ) from None


def _check_not_a_cluster_member(kv: LevelDBKV, node_id: str, data_dir: Path) -> None:
    """A node started alone on a cluster member's data could never elect a
    leader (its groups' other voters are not there): it would stay "starting"
    and refuse every write. Say so at start instead."""
    others = LevelDBStorage.stored_members(kv) - {node_id}
    if others:
        named = ", ".join(sorted(others)[:3]) + (", ..." if len(others) > 3 else "")
        raise ConfigError(
            f"CLUSTER_NODES and DNS_CLUSTER_QUERY are unset, but the data directory "
            f"{data_dir} belongs to a cluster member (its groups also name {named}); "
            "set them as before, or use a fresh FASTPACA_RAFT_DATA_DIR"
        )


def _open_kv(data_dir: Path) -> LevelDBKV:
    try:
        return LevelDBKV(str(data_dir / "leveldb"))
    except Exception as exc:  # plyvel raises its own IOError/CorruptionError
        raise ConfigError(
            f"FASTPACA_RAFT_DATA_DIR={data_dir}: cannot open LevelDB "
            f"(another fastpaca running on it?): {exc}"
        ) from None


def _storage_ctx(kv: LevelDBKV) -> Callable[[web.Application], AsyncIterator[None]]:
    async def storage(app: web.Application) -> AsyncIterator[None]:
        yield
        kv.close()

    return storage


def _raft_ctx(
    driver: RaftDriver,
    transport: Transport,
    node_id: str,
    group_count: int,
    pubsub: PubSubAdapter | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def raft(app: web.Application) -> AsyncIterator[None]:
        if pubsub is not None:
            await pubsub.start()
        await transport.start()
        await driver.start()
        for group_id in range(group_count):
            driver.ensure_group(group_id, [node_id])  # bootstraps only if absent
        _log.info(
            "raft started",
            extra={"type": "raft.started", "node_id": node_id, "groups": group_count},
        )
        yield
        await driver.stop(transfer_leadership=True)
        if pubsub is not None:
            await pubsub.stop()
        await transport.stop()

    return raft


def _cluster_ctx(
    driver: RaftDriver, cluster: ClusterNode, pubsub: PubSubAdapter | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Groups come from the coordinator (bootstrap, placement), not from here.

    ``serve`` stops the cluster itself before ``runner.cleanup``: aiohttp
    stops reading every connection when its shutdown begins, and the peers'
    inbound links are such connections, so a leadership handed over after
    that point is never seen to complete. The exit here covers the other
    users of the app (tests), and is a no-op after ``serve`` did it."""

    async def raft(app: web.Application) -> AsyncIterator[None]:
        await driver.start()  # subscribes to the transport before it connects
        await cluster.start()
        if pubsub is not None:  # before the transport: it announces on every link-up
            await pubsub.start()
        await cluster.transport.start()
        _log.info(
            "raft started (clustered)",
            extra={"type": "raft.started", "node_id": cluster.node_id},
        )
        yield
        await _stop_cluster(driver, cluster, pubsub)  # no-op after the on_shutdown hook

    return raft


async def _stop_cluster(
    driver: RaftDriver, cluster: ClusterNode, pubsub: PubSubAdapter | None
) -> None:
    """No more topology changes, hand our leaderships over (the transport
    still runs, so the transfers reach the peers), then go quiet."""
    if cluster.is_stopped:
        return
    started = asyncio.get_running_loop().time()
    await cluster.stop_planning()
    await driver.stop(transfer_leadership=True)
    handed_over_s = asyncio.get_running_loop().time() - started
    if pubsub is not None:
        await pubsub.stop()
    await cluster.stop()
    await cluster.transport.stop()
    _log.info(
        "raft stopped (clustered)",
        extra={"type": "raft.stopped", "handover_s": round(handed_over_s, 3)},
    )


async def serve(settings: Settings) -> None:
    """Run one node until SIGTERM or SIGINT; then drain and stop. Raises
    ``ConfigError`` for start-up failures the operator must fix."""
    _limit_heap_retention()
    # Bind before anything else starts, so a taken port fails fast and alone.
    sock = _bind(settings)
    try:
        app = create_app(settings)
    except BaseException:
        sock.close()
        raise
    node = app[NODE_KEY]
    access_log = logging.getLogger("aiohttp.access") if settings.log_level == "debug" else None
    runner = web.AppRunner(app, access_log=access_log, shutdown_timeout=STRAGGLER_TIMEOUT_S)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    _tune_gc()
    _log.info(
        "listening",
        extra={"type": "server.listening", "node_id": node.node_id, "bind": settings.bind,
               "port": settings.port},
    )  # fmt: skip
    notify("READY=1")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # A node whose Raft engine died (a failed LevelDB write: disk full, I/O
    # error) would otherwise stay up, look live, and refuse every request
    # until someone noticed. It shuts down as on SIGTERM instead and exits
    # 1, so systemd or Nomad restart it from what is durable.
    node.driver.on_failure(lambda _: stop.set())
    if node.driver.failure is not None:  # failed before the callback was in
        stop.set()
    await stop.wait()
    notify("STOPPING=1")
    node.readiness.mark_stopping()
    in_flight = app[IN_FLIGHT_KEY]
    _log.info(
        "stopping: draining requests",
        extra={"type": "server.stopping", "in_flight": in_flight.count},
    )
    for site in runner.sites:
        await site.stop()  # no new connections; open ones are still read
    if not await in_flight.wait_idle(DRAIN_TIMEOUT_S):
        _log.warning(
            "drain timed out", extra={"type": "server.drain_timeout", "in_flight": in_flight.count}
        )
    if node.cluster is not None:  # while aiohttp still reads the peers' links
        await _stop_cluster(node.driver, node.cluster, node.pubsub)
    await runner.cleanup()
    if node.driver.failure is not None:
        raise NodeFailed(f"the raft engine stopped: {node.driver.failure!r}")
    _log.info("stopped", extra={"type": "server.stopped"})


GC_THRESHOLDS = (20_000, 20, 20)
"""Young-generation size and the two promotion counts of the cyclic GC."""


def _tune_gc() -> None:
    """Freeze what start-up built and collect the young generation less often.

    An append leaves ~20 more tracked containers than it frees while in
    flight, so CPython's default (700, 10, 10) ran a young collection every
    ~35 requests and a full one (over every object of the node) about once a
    second: measured 0.5-0.66 s of GC in 6 s under 64 connections, ~50 us
    per append, and pauses that showed in the p99. Frozen start-up objects
    are never scanned again; the larger thresholds collect ~30x less often.
    Cyclic garbage is still collected, only in larger, rarer steps."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
_MMAP_THRESHOLD_BYTES = 128 * 1024


def _limit_heap_retention() -> None:
    """Serve allocations above 128 KiB from mmap for good (glibc only).

    Raft entries of batch appends are large; glibc's default raises its mmap
    threshold after freeing such blocks and then keeps them on the heap, where
    fragmentation holds freed memory: measured RSS 498 MB instead of 158 MB
    after a restart over 1M stored messages. A fixed threshold returns them."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)


def _bind(settings: Settings) -> socket.socket:
    try:
        infos = socket.getaddrinfo(
            settings.bind, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(
            f"FASTPACA_BIND={settings.bind}: not an address to listen on ({exc.strerror or exc})"
        ) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"PORT={settings.port}: cannot listen on {settings.bind}:{settings.port} "
            f"({exc.strerror or exc})"
        ) from None
    sock.set_inheritable(False)
    return sock
