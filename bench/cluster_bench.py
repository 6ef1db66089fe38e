"""Cluster benchmark: a 3-node loopback cluster against one node, and failover.

Drives the servers with wrk exactly as ``http_bench.py`` does (same Lua
script, ~300-byte messages over 1,000 conversations, appends only) and prints,
in one run:

* one node alone (the baseline);
* the 3-node cluster through one node, then spread over all three (one wrk
  per node, the connections split between them): appends/s, p50/p99, and
  the ratio to the single node;
* the failover window: with writers appending steadily through the two
  survivors (one writer per conversation, one append at a time), kill -9
  the node leading the most groups; the window is the longest any append
  acknowledged after the kill was held up past it (an append in flight at
  the kill counts from the kill: the router retried it on the new leader).
  It includes ordinary request latency; appends refused are counted too.

All processes share this machine (three servers and wrk on two cores), so
the ratio says more than the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.http_bench import (  # noqa: E402
    await_ready,
    create_conversations,
    fmt,
    rss_mb,
    run_wrk,
    server,
)
from tests.support.cluster_procs import LocalCluster, metric  # noqa: E402


def spread_wrk(
    ports: list[int], *, seconds: int, connections: int, conversations: int
) -> dict[str, float]:
    """One wrk per node at once; sums throughput, keeps the worst percentiles."""
    per_node = max(2, connections // len(ports))
    with ThreadPoolExecutor(len(ports)) as pool:
        results = list(
            pool.map(
                lambda port: run_wrk(
                    port, seconds=seconds, connections=per_node, append_pct=100,
                    conversations=conversations, prefix="bench",
                ),
                ports,
            )
        )  # fmt: skip
    total: dict[str, float] = {
        key: sum(r[key] for r in results)
        for key in ("requests", "appends", "reads", "errors", "socket_errors", "appends_per_s")
    }
    total["duration_s"] = max(r["duration_s"] for r in results)
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        total[key] = max(r[key] for r in results)
    return total


async def failover_window(cluster: LocalCluster, *, writers: int) -> tuple[float, int, str]:
    """Kill -9 the node leading the most groups under steady writes through
    the others; return (window seconds, failed writes, victim name)."""
    nodes = cluster.nodes
    async with aiohttp.ClientSession() as session:
        led = [await metric(session, n.url, "fastpaca_raft_leaders") for n in nodes]
        victim = nodes[led.index(max(led))]
        survivors = [n for n in nodes if n is not victim]
        cids = [f"fo-{i}" for i in range(writers)]
        for cid in cids:
            await session.put(f"{survivors[0].url}/v1/conversations/{cid}", json={})
        killed_at: list[float] = []
        held_up_s: list[float] = []
        """Per append acknowledged after the kill: how long past the kill
        (or past its start, if later) it took."""
        fresh_ok: set[str] = set()
        """Conversations with an append sent after the kill acknowledged."""
        failures = 0
        stop = asyncio.Event()

        async def write(index: int, cid: str) -> None:
            nonlocal failures
            body = {"message": {"role": "user", "parts": [{"type": "text", "text": "x" * 240}]}}
            n = 0
            while not stop.is_set():
                url = survivors[(index + n) % len(survivors)].url
                n += 1
                started = time.monotonic()
                try:
                    async with session.post(
                        f"{url}/v1/conversations/{cid}/messages", json=body
                    ) as response:
                        ok = response.status == 201
                        await response.read()
                except aiohttp.ClientError:
                    ok = False
                ended = time.monotonic()
                if ok and killed_at and ended > killed_at[0]:
                    held_up_s.append(ended - max(started, killed_at[0]))
                    if started >= killed_at[0]:
                        fresh_ok.add(cid)
                if not ok:
                    failures += 1
                    await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(write(i, cid)) for i, cid in enumerate(cids)]
        await asyncio.sleep(2.0)
        killed_at.append(time.monotonic())
        victim.kill()
        deadline = time.monotonic() + 20
        while len(fresh_ok) < len(cids) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
    window = max(held_up_s) if len(fresh_ok) == len(cids) else float("inf")
    return window, failures, victim.name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--failover-writers", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run `make bench`, which installs it")
    wrk_args = {"seconds": args.seconds, "connections": args.connections,
                "conversations": args.conversations}  # fmt: skip

    with (
        tempfile.TemporaryDirectory(prefix="bench-single-") as tmp,
        server("fastpaca", Path(tmp)) as (port, pid),
    ):
        asyncio.run(await_ready(port))
        asyncio.run(create_conversations(port, args.conversations, "bench"))
        single = run_wrk(port, append_pct=100, prefix="bench", **wrk_args)
        print(f"single node        : {fmt(single, rss_mb(pid))}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        cluster = LocalCluster(Path(tmp), 3, groups=args.groups, env={"LOG_LEVEL": "warning"})
        try:
            cluster.start_all()
            asyncio.run(cluster.wait_ready(timeout_s=60))
            ports = [node.port for node in cluster.nodes]
            asyncio.run(create_conversations(ports[0], args.conversations, "bench"))
            one = run_wrk(ports[0], append_pct=100, prefix="bench", **wrk_args)
            rss = max(rss_mb(n.process.pid) for n in cluster.nodes if n.process)
            print(f"3 nodes, via one   : {fmt(one, rss)}", flush=True)
            spread = spread_wrk(ports, **wrk_args)
            print(f"3 nodes, via all 3 : {fmt(spread, rss)}", flush=True)
            for name, result in (("via one", one), ("via all 3", spread)):
                ratio = result["appends_per_s"] / single["appends_per_s"]
                print(f"ratio 3 nodes ({name}) / single node appends/s: {ratio:.2f}")
            window, failures, victim = asyncio.run(
                failover_window(cluster, writers=args.failover_writers)
            )
            print(
                f"failover window after kill -9 of {victim} (leader-heavy): {window:.2f} s "
                f"({failures} writes failed meanwhile)",
                flush=True,
            )
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
