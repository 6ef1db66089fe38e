"""One Raft node as an OS process, for the real-network test.

Runs a ``RaftDriver`` over a real ``LevelDBKV`` in ``--data-dir`` with the
key-value test state machine, the websocket peer transport mounted on an
aiohttp app, and a tiny HTTP control API on the same port:

    POST /put/{group}     body {"items": {key: value, ...}} -> proposes every put at
                          once; 200 {"acked": [keys applied], "failed": {key: error}}
    GET  /get/{group}     linearizable read: read barrier, then every local item;
                          200 {"items": {...}} or 503 {"error": ..., "leader": hint}
    GET  /items/{group}   local applied items, no barrier (to check replication)
    GET  /status          {"node", "groups": {g: {"leader", "applied"}}, "connected",
                           "snapshots_installed", "snapshots_sent" (driver counters),
                           "state_machine_restores" (counted at the state machine)}

Usage: ``python -m tests.raft.node_proc --node-id n1 --port 4001 --data-dir DIR
--peers n1=127.0.0.1:4001,n2=... --groups 6`` with ``FASTPACA_CLUSTER_SECRET``
in the environment. Every group has all ``--peers`` as voters. SIGTERM stops
it cleanly; the test uses SIGKILL to crash it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from aiohttp import web

from fastpaca.cluster.transport_ws import WebSocketTransport, add_cluster_route
from fastpaca.errors import FastpacaError, NotLeader
from fastpaca.raft.driver import DriverConfig, RaftDriver
from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.raft.messages import Entry
from fastpaca.raft.testing import KVStateMachine, KVStateSnapshot, put_command

PROPOSE_TIMEOUT_S = 3.0


class CountingStateMachine:
    """The KV test state machine, counting snapshots installed through it."""

    def __init__(self, inner: KVStateMachine) -> None:
        self.inner = inner
        self.snapshots_installed = 0

    def applied_index(self, group_id: int) -> int:
        return self.inner.applied_index(group_id)

    def apply(self, group_id: int, entries: Sequence[Entry], batch: WriteBatch) -> list[Any]:
        return self.inner.apply(group_id, entries, batch)

    def snapshot(self, group_id: int) -> KVStateSnapshot:
        return self.inner.snapshot(group_id)

    def restore(
        self, group_id: int, applied_index: int, chunks: Iterable[bytes], batch: WriteBatch
    ) -> None:
        self.inner.restore(group_id, applied_index, chunks, batch)
        self.snapshots_installed += 1


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        self.node_id: str = args.node_id
        self.peers = _parse_peers(args.peers)
        self.group_ids = list(range(args.groups))
        self.kv = LevelDBKV(args.data_dir)
        self.fsm = CountingStateMachine(KVStateMachine(self.kv))
        secret = os.environ["FASTPACA_CLUSTER_SECRET"].encode()
        self.transport = WebSocketTransport(node_id=self.node_id, secret=secret, peers=self.peers)
        self.driver = RaftDriver(
            node_id=self.node_id,
            kv=self.kv,
            state_machine=self.fsm,
            transport=self.transport,
            config=DriverConfig(
                tick_interval_ms=args.tick_ms,
                compact_threshold_entries=args.compact_threshold,
                compact_keep_entries=args.compact_keep,
            ),
        )

    async def start(self) -> None:
        await self.driver.start()  # subscribes to the transport before any frame arrives
        await self.transport.start()
        voters = sorted(self.peers)
        for group_id in self.group_ids:
            self.driver.ensure_group(group_id, voters)

    async def stop(self) -> None:
        await self.driver.stop()
        await self.transport.stop()
        self.kv.close()

    # --- control API -------------------------------------------------------------------

    async def put(self, request: web.Request) -> web.Response:
        group_id = int(request.match_info["group"])
        items: dict[str, str] = (await request.json())["items"]

        async def propose(key: str, value: str) -> None:
            command = put_command(key.encode(), value.encode())
            await self.driver.propose(group_id, command, timeout_s=PROPOSE_TIMEOUT_S)

        keys = list(items)
        outcomes = await asyncio.gather(
            *(propose(key, items[key]) for key in keys), return_exceptions=True
        )
        acked = [key for key, outcome in zip(keys, outcomes, strict=True) if outcome is None]
        failed = {
            key: _describe(outcome)
            for key, outcome in zip(keys, outcomes, strict=True)
            if outcome is not None
        }
        return web.json_response({"acked": acked, "failed": failed})

    async def get(self, request: web.Request) -> web.Response:
        group_id = int(request.match_info["group"])
        try:
            await self.driver.read_barrier(group_id, timeout_s=PROPOSE_TIMEOUT_S)
        except FastpacaError as exc:
            return web.json_response(
                {"error": _describe(exc), "leader": _leader_hint(exc)}, status=503
            )
        return web.json_response({"items": self._items(group_id)})

    async def items(self, request: web.Request) -> web.Response:
        return web.json_response({"items": self._items(int(request.match_info["group"]))})

    async def status(self, request: web.Request) -> web.Response:
        groups = {
            str(group_id): {
                "leader": self.driver.leader_of(group_id),
                "applied": self.fsm.applied_index(group_id),
            }
            for group_id in self.group_ids
        }
        return web.json_response(
            {
                "node": self.node_id,
                "groups": groups,
                "snapshots_installed": self.driver.stats.snapshots_installed,
                "snapshots_sent": self.driver.stats.snapshots_sent,
                "state_machine_restores": self.fsm.snapshots_installed,
                "connected": sorted(self.transport.connected_peers()),
            }
        )

    def _items(self, group_id: int) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.fsm.inner.items(group_id).items()}


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _leader_hint(error: BaseException) -> str | None:
    return error.leader_hint if isinstance(error, NotLeader) else None


def _parse_peers(spec: str) -> dict[str, tuple[str, int]]:
    peers: dict[str, tuple[str, int]] = {}
    for item in spec.split(","):
        name, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        peers[name] = (host, int(port))
    return peers


async def serve(args: argparse.Namespace) -> None:
    node = Node(args)
    app = web.Application()
    add_cluster_route(app, node.transport)
    app.router.add_post("/put/{group}", node.put)
    app.router.add_get("/get/{group}", node.get)
    app.router.add_get("/items/{group}", node.items)
    app.router.add_get("/status", node.status)
    runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port, reuse_address=True).start()
    await node.start()
    print(f"READY {node.node_id}", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await node.stop()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--peers", required=True, help="id=host:port,... including ourselves")
    parser.add_argument("--groups", type=int, default=6)
    parser.add_argument("--tick-ms", type=int, default=50)
    parser.add_argument("--compact-threshold", type=int, default=20_000)
    parser.add_argument("--compact-keep", type=int, default=5_000)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"{args.node_id} %(levelname)s %(message)s"
    )
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
