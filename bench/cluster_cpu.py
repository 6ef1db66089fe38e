"""Where a clustered append's CPU goes, by node role: a 3-node loopback cluster.

Picks ``--conversations`` conversations whose groups n2 leads (once the
coordinator has balanced the leaders), then measures in interleaved rounds:

* ``direct``: wrk writes them through n2, their leader; n1 and n3 only follow;
* ``forwarded``: wrk writes them through n1, which forwards each to n2;
  n3 only follows;
* ``any``: wrk writes 1,000 conversations spread over all 256 groups through
  n1, as ``cluster_bench.py`` does (two thirds forwarded).

For each run it prints appends/s and p50/p99, then per node: CPU per append
(user + system, from /proc), the share of a core its event loop thread used
and the one its other threads used (the Raft writer thread and LevelDB's
background compactions), and per append: Raft loop iterations, fsync'd
writes, and peer-link payloads and websocket frames sent (from /metrics).

64 connections, appends only, ~300-byte messages. wrk and the three nodes
share the machine; compare the runs of one invocation with each other.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.http_bench import create_conversations, run_wrk  # noqa: E402
from tests.support.cluster_procs import LocalCluster, metric  # noqa: E402

COUNTERS = {
    "iterations": "fastpaca_raft_iterations_total",
    "fsyncs": "fastpaca_raft_synced_writes_total",
    "payloads out": "fastpaca_cluster_transport_messages_sent_total",
    "frames out": "fastpaca_cluster_transport_frames_sent_total",
}
# Sums and counts of two histograms, printed as means: how much of the
# client's latency is the leader's propose → apply, and how much of that
# the fsync'd writes (hand-off to the writer thread and back).
TIMERS = {
    "commit": "fastpaca_raft_commit_latency_seconds",
    "synced write": "fastpaca_raft_synced_write_seconds",
}


def cpu_s(pid: int, tid: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def counters(cluster: LocalCluster) -> list[dict[str, float]]:
    async with aiohttp.ClientSession() as session:
        series = {**COUNTERS}
        for name, family in TIMERS.items():
            series[f"{name} sum"] = f"{family}_sum"
            series[f"{name} count"] = f"{family}_count"
        return [
            {name: await metric(session, node.url, family) for name, family in series.items()}
            for node in cluster.nodes
        ]


async def wait_balanced(cluster: LocalCluster, timeout_s: float = 60.0) -> list[float]:
    """Leaders per node, once the count has held still for a second."""
    deadline = time.monotonic() + timeout_s
    previous: list[float] | None = None
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            led = [await metric(session, n.url, "fastpaca_raft_leaders") for n in cluster.nodes]
            if led == previous and max(led) - min(led) <= 2:
                return led
            previous = led
            await asyncio.sleep(1.0)
    raise RuntimeError(f"leaders never settled: {previous}")


async def conversations_led_by(cluster: LocalCluster, index: int, count: int) -> list[str]:
    """Ids whose appends through node ``index`` are not forwarded."""
    node = cluster.nodes[index]
    forwarded = "fastpaca_cluster_forwarded_requests_total"
    chosen: list[str] = []
    async with aiohttp.ClientSession() as session:
        for i in range(1, 50 * count):
            cid = f"led-{i}"
            async with session.put(f"{node.url}/v1/conversations/{cid}", json={}) as response:
                await response.read()
            before = await metric(session, node.url, forwarded)
            async with session.post(
                f"{node.url}/v1/conversations/{cid}/messages",
                json={"message": {"role": "user", "parts": [{"type": "text", "text": "hi"}]}},
            ) as response:
                await response.read()
            if await metric(session, node.url, forwarded) == before:
                chosen.append(cid)
                if len(chosen) == count:
                    return chosen
    raise RuntimeError(f"found only {len(chosen)} conversations led by {node.name}")


def wrk_ids(port: int, ids_file: Path, seconds: int) -> dict[str, float]:
    return run_wrk(port, seconds=seconds, connections=64, append_pct=100, conversations=0,
                   prefix="", ids_file=ids_file)  # fmt: skip


def measure(cluster: LocalCluster, mode: str, ids_file: Path, seconds: int) -> None:
    pids = [node.process.pid for node in cluster.nodes if node.process]
    before_counters = asyncio.run(counters(cluster))
    before_main = [cpu_s(pid, pid) for pid in pids]
    before_all = [cpu_s(pid) for pid in pids]
    if mode == "direct":
        result = wrk_ids(cluster.nodes[1].port, ids_file, seconds)
    elif mode == "forwarded":
        result = wrk_ids(cluster.nodes[0].port, ids_file, seconds)
    else:
        result = run_wrk(cluster.nodes[0].port, seconds=seconds, connections=64,
                         append_pct=100, conversations=1000, prefix="bench")  # fmt: skip
    after_all = [cpu_s(pid) for pid in pids]
    after_main = [cpu_s(pid, pid) for pid in pids]
    after_counters = asyncio.run(counters(cluster))
    appends = result["appends"]
    duration = result["duration_s"]
    print(f"{mode:9s}: {appends / duration:6.0f} appends/s  p50 {result['p50_ms']:5.1f} ms"
          f"  p99 {result['p99_ms']:6.1f} ms  errors {int(result.get('errors', 0))}",
          flush=True)  # fmt: skip
    for i, node in enumerate(cluster.nodes):
        total = after_all[i] - before_all[i]
        loop = after_main[i] - before_main[i]
        delta = {name: after_counters[i][name] - before_counters[i][name]
                 for name in after_counters[i]}  # fmt: skip
        per_append = {name: delta[name] / appends for name in COUNTERS}
        means = [f"{name} {delta[f'{name} sum'] / delta[f'{name} count'] * 1e3:.1f} ms"
                 for name in TIMERS if delta[f"{name} count"]]  # fmt: skip
        print(f"  {node.name}: {total / appends * 1e6:4.0f} us CPU/append;"
              f" event loop {loop / duration:4.0%} of a core, other threads"
              f" {(total - loop) / duration:4.0%}; per append: "
              + ", ".join(f"{name} {value:.2f}" for name, value in per_append.items())
              + ("; mean " + ", ".join(means) if means else ""),
              flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--modes", default="direct,forwarded,any")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: run `make bench`, which installs it")
    modes = args.modes.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-cpu-") as tmp:
        cluster = LocalCluster(Path(tmp), 3, groups=256, env={"LOG_LEVEL": "warning"})
        try:
            cluster.start_all()
            asyncio.run(cluster.wait_ready(timeout_s=60))
            print(f"leaders per node: {asyncio.run(wait_balanced(cluster))}", flush=True)
            ids = asyncio.run(conversations_led_by(cluster, 1, args.conversations))
            ids_file = Path(tmp) / "ids"
            ids_file.write_text("\n".join(ids) + "\n")
            asyncio.run(create_conversations(cluster.nodes[0].port, 1000, "bench"))
            wrk_ids(cluster.nodes[1].port, ids_file, 3)  # warm-up
            for round_no in range(args.rounds):
                shift = round_no % len(modes)
                for mode in modes[shift:] + modes[:shift]:
                    measure(cluster, mode, ids_file, args.seconds)
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
