"""Cluster benchmark: a 3-node loopback cluster against one node, and failover.

Drives the servers with wrk exactly as ``http_bench.py`` does (same Lua
script, ~300-byte messages over 1,000 conversations, appends only) and prints,
in one run:

* one node alone (the baseline);
* the 3-node cluster through one node, then spread over all three (one wrk
  per node, the connections split between them): appends/s, p50/p99, and
  the ratio to the single node;

measured in interleaved rounds (--rounds, --seconds each): the single node
and the cluster are both up, and whichever is not being measured is paused
with SIGSTOP, so it takes no CPU, and resumed with SIGCONT (one second to
settle) for its turn. A shared machine's speed drifts by 10-30% within a
minute; each round compares the two within seconds. The figures are medians
over the rounds, the ratios medians of the per-round ratios (with their
range). A pause shorter than the node-down grace period moves nothing, and
ticks are counted, not replayed, so no election follows a resume.

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
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.cluster_cpu import cpu_s  # noqa: E402
from bench.http_bench import (  # noqa: E402
    await_ready,
    create_conversations,
    fmt,
    median_result,
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


def with_cpu(pids: list[int], measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``measure()``'s result plus the CPU (user + system, every thread of
    ``pids``, from /proc) it cost per append and in cores while it ran."""
    before = sum(cpu_s(pid) for pid in pids)
    result = measure()
    used = sum(cpu_s(pid) for pid in pids) - before
    result["cpu_us_per_append"] = used / result["appends"] * 1e6
    result["cores"] = used / result["duration_s"]
    return result


def _signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        os.kill(pid, signum)


def print_cpu_budget(runs: dict[str, list[dict[str, float]]]) -> None:
    """CPU per append of each setup (medians over the rounds), and how many
    cores the cluster would need to run at half the single node's rate with
    its CPU per append: more than the machine has means the throughput
    target cannot be met by scheduling alone."""
    cpu = {name: statistics.median(r["cpu_us_per_append"] for r in results)
           for name, results in runs.items()}  # fmt: skip
    cores = {name: statistics.median(r["cores"] for r in results)
             for name, results in runs.items()}  # fmt: skip
    single_rate = statistics.median(r["appends_per_s"] for r in runs["single"])
    for name, label in (("single", "single node"), ("one", "3 nodes, via one"),
                        ("spread", "3 nodes, via all 3")):  # fmt: skip
        print(f"CPU per append, {label:18s}: {cpu[name]:5.0f} us"
              f" ({cores[name]:.2f} cores busy)")  # fmt: skip
    for name, label in (("one", "via one"), ("spread", "via all 3")):
        needed = 0.5 * single_rate * cpu[name] / 1e6
        print(
            f"cores the cluster ({label}) would need at 0.5 x single"
            f" ({0.5 * single_rate:.0f} appends/s): {needed:.2f}"
            f" ({cpu[name] / cpu['single']:.1f} x the single node's CPU per append)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=4, help="per setup and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured seconds per setup")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--groups", type=int, default=256)
    parser.add_argument("--failover-writers", type=int, default=64)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run `make bench`, which installs it")
    wrk_args = {"seconds": args.seconds, "connections": args.connections,
                "conversations": args.conversations}  # fmt: skip
    warm_args = {**wrk_args, "seconds": args.warmup}

    with (
        tempfile.TemporaryDirectory(prefix="bench-single-") as single_tmp,
        tempfile.TemporaryDirectory(prefix="bench-cluster-") as cluster_tmp,
        server("fastpaca", Path(single_tmp)) as (single_port, single_pid),
    ):
        asyncio.run(await_ready(single_port))
        asyncio.run(create_conversations(single_port, args.conversations, "bench"))
        if args.warmup:
            run_wrk(single_port, append_pct=100, prefix="bench", **warm_args)
        os.kill(single_pid, signal.SIGSTOP)
        cluster = LocalCluster(
            Path(cluster_tmp), 3, groups=args.groups, env={"LOG_LEVEL": "warning"}
        )
        try:
            cluster.start_all()
            asyncio.run(cluster.wait_ready(timeout_s=60))
            ports = [node.port for node in cluster.nodes]
            cluster_pids = [n.process.pid for n in cluster.nodes if n.process]
            asyncio.run(create_conversations(ports[0], args.conversations, "bench"))
            if args.warmup:
                run_wrk(ports[0], append_pct=100, prefix="bench", **warm_args)
            runs: dict[str, list[dict[str, float]]] = {"single": [], "one": [], "spread": []}
            for round_no in range(args.rounds):
                # Alternate which setup goes first, so neither always meets
                # the machine as the other left it.
                setups = ("single", "cluster") if round_no % 2 == 0 else ("cluster", "single")
                for setup in setups:
                    pids = [single_pid] if setup == "single" else cluster_pids
                    _signal_all(pids, signal.SIGCONT)
                    time.sleep(1)
                    if setup == "single":
                        runs["single"].append(
                            with_cpu(
                                pids,
                                lambda: run_wrk(
                                    single_port, append_pct=100, prefix="bench", **wrk_args
                                ),
                            )
                        )
                    else:
                        runs["one"].append(
                            with_cpu(
                                pids,
                                lambda: run_wrk(
                                    ports[0], append_pct=100, prefix="bench", **wrk_args
                                ),
                            )
                        )
                        runs["spread"].append(with_cpu(pids, lambda: spread_wrk(ports, **wrk_args)))
                    _signal_all(pids, signal.SIGSTOP)
                print(f"round {round_no + 1}/{args.rounds}: " + "  ".join(
                    f"{name} {results[-1]['appends_per_s']:.0f}/s"
                    for name, results in runs.items()), flush=True)  # fmt: skip
            _signal_all(cluster_pids, signal.SIGCONT)
            rss = max(rss_mb(pid) for pid in cluster_pids)
            print(f"single node        : {fmt(median_result(runs['single']), rss_mb(single_pid))}")
            print(f"3 nodes, via one   : {fmt(median_result(runs['one']), rss)}")
            print(f"3 nodes, via all 3 : {fmt(median_result(runs['spread']), rss)}", flush=True)
            for name, key in (("via one", "one"), ("via all 3", "spread")):
                per_round = [
                    ours["appends_per_s"] / alone["appends_per_s"]
                    for ours, alone in zip(runs[key], runs["single"], strict=True)
                ]
                print(
                    f"ratio 3 nodes ({name}) / single node appends/s:"
                    f" {statistics.median(per_round):.2f}"
                    f" (rounds {min(per_round):.2f}-{max(per_round):.2f})"
                )
            print_cpu_budget(runs)
            os.kill(single_pid, signal.SIGCONT)  # to stop it cleanly at the end
            window, failures, victim = asyncio.run(
                failover_window(cluster, writers=args.failover_writers)
            )
            print(
                f"failover window after kill -9 of {victim} (leader-heavy): {window:.2f} s "
                f"({failures} writes failed meanwhile)",
                flush=True,
            )
        finally:
            for pid in [single_pid] + [n.process.pid for n in cluster.nodes if n.process]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)  # a stopped process would not see SIGTERM
            cluster.stop_all()


if __name__ == "__main__":
    main()
