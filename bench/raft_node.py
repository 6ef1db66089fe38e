"""One Raft node process for the loopback part of ``raft_bench.py``.

A ``RaftDriver`` over fsync'd LevelDB in ``--data-dir``, the websocket peer
transport, the key-value test state machine, and two control routes:

    GET  /status  {"leaders": {group: leader or null}}
    GET  /cpu     {"cpu_s": CPU seconds this process used so far (all threads)}
    POST /load    {"ops", "inflight", "rate_per_s", "payload_bytes"} -> runs the
                  load on the groups this node leads; replies with its figures
                  and latency samples
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.raft_load import run_load
from fastpaca.app import _tune_gc
from fastpaca.cli import _loop_factory
from fastpaca.cluster.transport_ws import WebSocketTransport, add_cluster_route
from fastpaca.raft.driver import DriverConfig, RaftDriver
from fastpaca.raft.kv import LevelDBKV
from fastpaca.raft.testing import KVStateMachine

SECRET = b"raft-bench-secret"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peers", required=True, help="id=host:port,...")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--groups", type=int, required=True)
    args = parser.parse_args()

    peers = {}
    for item in args.peers.split(","):
        node, _, address = item.partition("=")
        host, _, port = address.rpartition(":")
        peers[node] = (host, int(port))
    kv = LevelDBKV(args.data_dir)
    transport = WebSocketTransport(node_id=args.node_id, secret=SECRET, peers=peers)
    driver = RaftDriver(
        node_id=args.node_id, kv=kv, state_machine=KVStateMachine(kv), transport=transport,
        config=DriverConfig(tick_interval_ms=50),
    )  # fmt: skip
    for group in range(args.groups):
        driver.ensure_group(group, sorted(peers))

    async def status(request: web.Request) -> web.Response:
        leaders = {g: driver.leader_of(g) for g in driver.group_ids()}
        return web.json_response({"leaders": leaders})

    async def load(request: web.Request) -> web.Response:
        spec = await request.json()
        led = [g for g in driver.group_ids() if driver.is_leader(g)]
        if not led or spec["ops"] == 0:
            return web.json_response({"ops": 0, "failures": 0, "elapsed_s": 0, "latencies_ms": []})
        result = await run_load(
            lambda g: driver if driver.is_leader(g) else None, led, ops=spec["ops"],
            inflight=spec["inflight"], payload_bytes=spec["payload_bytes"],
            rate_per_s=spec["rate_per_s"],
        )  # fmt: skip
        body = {
            **result.summary(),
            "latencies_ms": result.latencies_ms,
            "failure_kinds": result.failure_kinds,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application(client_max_size=1 << 20)
    add_cluster_route(app, transport)

    async def cpu(request: web.Request) -> web.Response:
        return web.json_response({"cpu_s": time.process_time()})

    app.router.add_get("/status", status)
    app.router.add_get("/cpu", cpu)
    app.router.add_post("/load", load)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    await transport.start()
    await driver.start()
    _tune_gc()  # as `fastpaca serve` does: the bench measures the production setup
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await driver.stop(transfer_leadership=False)
    await transport.stop()
    await runner.cleanup()
    kv.close()


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:  # uvloop, as in serve
        runner.run(main())
