"""Raft engine benchmark: committed proposals/s and commit latency, 3 replicas.

Runs, in one go, with 300-byte commands:
  memory    3 drivers in this process over the in-memory transport, MemoryKV
  loopback  3 OS processes (bench/raft_node.py) over the websocket transport
            on 127.0.0.1, each with its own fsync'd LevelDB
  pysyncobj 3 OS processes of PySyncObj (bench/pysyncobj_peer.py) with its
            file journal, the leader driving the load from inside its process
for 1, 16 and 256 active groups (ours), first at --inflight proposals kept
outstanding, then paced at --rate commits/s for the latency target. Prints
ops/s, p50/p99 commit latency and the ratio loopback/pysyncobj at the same
number in flight. Everything shares this machine's cores: compare ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.raft_load import LoadResult, run_load  # noqa: E402
from fastpaca.raft.driver import DriverConfig, RaftDriver  # noqa: E402
from fastpaca.raft.kv import MemoryKV  # noqa: E402
from fastpaca.raft.testing import KVStateMachine  # noqa: E402
from fastpaca.raft.transport_memory import InMemoryHub  # noqa: E402

NODES = ("n1", "n2", "n3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def line(label: str, summary: dict[str, float]) -> str:
    return (
        f"{label:<34s} {summary['ops_per_s']:>9.0f} ops/s   p50 {summary['p50_ms']:8.2f} ms"
        f"   p99 {summary['p99_ms']:8.2f} ms   ({int(summary['ops'])} ops,"
        f" {int(summary['failures'])} failed)"
        + (f"  cpu {summary['cpu_us_per_op']:.0f} us/op" if "cpu_us_per_op" in summary else "")
    )


# --- memory ---------------------------------------------------------------------------


async def bench_memory(groups: int, *, ops: int, inflight: int, rate: float) -> dict[str, float]:
    hub = InMemoryHub()
    drivers: dict[str, RaftDriver] = {}
    for node in NODES:
        kv = MemoryKV()
        driver = RaftDriver(
            node_id=node, kv=kv, state_machine=KVStateMachine(kv), transport=hub.transport(node),
            config=DriverConfig(tick_interval_ms=50, write_in_thread=False), rng_seed=hash(node) & 0xFFFF,
        )  # fmt: skip
        for group in range(groups):
            driver.ensure_group(group, NODES)
        drivers[node] = driver
    for node in NODES:
        await hub.transport(node).start()
        await drivers[node].start()
    try:
        await _await_leaders(lambda g: drivers["n1"].leader_of(g), groups)

        def leader_for(group: int) -> RaftDriver | None:
            leader = drivers["n1"].leader_of(group)
            return drivers[leader] if leader and drivers[leader].is_leader(group) else None

        result = await run_load(
            leader_for, list(range(groups)), ops=ops, inflight=inflight, rate_per_s=rate
        )
        return result.summary()
    finally:
        for driver in drivers.values():
            await driver.stop(transfer_leadership=False)


async def _await_leaders(leader_of: object, groups: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(leader_of(g) for g in range(groups)):  # type: ignore[operator]
            await asyncio.sleep(0.5)  # let fresh leaders commit their no-op entries
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("groups did not elect leaders in time")


# --- loopback processes -------------------------------------------------------------------


@contextmanager
def processes(commands: list[list[str]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for cmd in commands
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def bench_loopback(groups: int, *, ops: int, inflight: int, rate: float) -> dict[str, float]:
    ports = {node: free_port() for node in NODES}
    peers = ",".join(f"{n}=127.0.0.1:{p}" for n, p in ports.items())
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        commands = [
            [sys.executable, str(HERE / "raft_node.py"), "--node-id", node, "--port", str(ports[node]),
             "--peers", peers, "--data-dir", os.path.join(tmp, node), "--groups", str(groups)]
            for node in NODES
        ]  # fmt: skip
        with processes(commands):
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
                leaders = await _await_process_leaders(http, ports["n1"], groups)
                led = {
                    node: sum(1 for leader in leaders.values() if leader == node) for node in NODES
                }
                specs = {
                    node: {
                        "ops": ops * led[node] // groups,
                        "inflight": max(1, inflight * led[node] // groups),
                        "rate_per_s": rate * led[node] / groups,
                        "payload_bytes": 300,
                    }
                    for node in NODES
                }

                async def load(node: str) -> dict[str, object]:
                    async with http.post(
                        f"http://127.0.0.1:{ports[node]}/load", json=specs[node]
                    ) as resp:
                        result: dict[str, object] = await resp.json()
                        return result

                async def cpu_s(node: str) -> float:
                    async with http.get(f"http://127.0.0.1:{ports[node]}/cpu") as resp:
                        return float((await resp.json())["cpu_s"])

                cpu_before = await asyncio.gather(*(cpu_s(node) for node in NODES))
                parts = await asyncio.gather(*(load(node) for node in NODES))
                cpu_after = await asyncio.gather(*(cpu_s(node) for node in NODES))
    latencies: list[float] = [x for part in parts for x in part["latencies_ms"]]  # type: ignore[attr-defined]
    merged = LoadResult(
        ops=sum(int(p["ops"]) for p in parts),  # type: ignore[call-overload]
        failures=sum(int(p["failures"]) for p in parts),  # type: ignore[call-overload]
        elapsed_s=max(float(p["elapsed_s"]) for p in parts),  # type: ignore[arg-type]
        latencies_ms=latencies,
    )
    summary = merged.summary()
    kinds: dict[str, int] = {}
    for part in parts:
        for kind, count in dict(part.get("failure_kinds") or {}).items():  # type: ignore[call-overload]
            kinds[kind] = kinds.get(kind, 0) + int(count)
    if kinds:
        print(f"  failures: {kinds}", flush=True)
    # CPU of the three processes per committed op: unlike ops/s it barely
    # moves with what else runs on this shared machine.
    cpu_used_s = sum(after - before for before, after in zip(cpu_before, cpu_after, strict=True))
    summary["cpu_us_per_op"] = cpu_used_s / max(1, merged.ops) * 1e6
    return summary


async def _await_process_leaders(
    http: aiohttp.ClientSession, port: int, groups: int
) -> dict[str, str]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            async with http.get(f"http://127.0.0.1:{port}/status") as resp:
                leaders = (await resp.json())["leaders"]
                if len(leaders) == groups and all(leaders.values()):
                    await asyncio.sleep(1.0)
                    return leaders  # type: ignore[no-any-return]
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("loopback cluster did not elect leaders in time")


# --- pysyncobj ------------------------------------------------------------------------------


def bench_pysyncobj(*, ops: int, inflight: int, rate: float) -> dict[str, float]:
    ports = [free_port() for _ in NODES]
    with tempfile.TemporaryDirectory(prefix="pysyncobj-bench-") as tmp:
        commands = []
        for port in ports:
            partners = ",".join(f"127.0.0.1:{p}" for p in ports if p != port)
            os.makedirs(os.path.join(tmp, str(port)))
            commands.append(
                [sys.executable, str(HERE / "pysyncobj_peer.py"), "--self", f"127.0.0.1:{port}",
                 "--partners", partners, "--data-dir", os.path.join(tmp, str(port)), "--ops", str(ops),
                 "--inflight", str(inflight), "--rate", str(rate)]
            )  # fmt: skip
        with processes(commands) as procs:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                for proc in procs:
                    if proc.poll() is not None and proc.stdout is not None:
                        out = proc.stdout.read().decode().strip()
                        if out:
                            result: dict[str, float] = json.loads(out.splitlines()[-1])
                            result["failures"] = result.get("failures", 0)
                            return result
                time.sleep(0.1)
    raise RuntimeError("pysyncobj bench produced no result")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=60_000)
    parser.add_argument("--inflight", type=int, default=10_000)
    parser.add_argument(
        "--rate", type=float, default=1000.0, help="paced run for the latency target"
    )
    parser.add_argument("--rate-seconds", type=float, default=5.0)
    parser.add_argument("--groups", default="1,16,256")
    parser.add_argument("--parts", default="memory,loopback,pysyncobj")
    args = parser.parse_args()
    group_counts = [int(g) for g in args.groups.split(",")]
    parts = args.parts.split(",")
    paced_ops = int(args.rate * args.rate_seconds)
    print(f"raft bench: 3 replicas, 300-byte commands, {args.ops} ops at {args.inflight} in flight;"
          f" paced runs at {args.rate:.0f}/s for {args.rate_seconds:.0f}s", flush=True)  # fmt: skip
    results: dict[str, dict[str, float]] = {}
    for groups in group_counts:
        if "memory" in parts:
            r = asyncio.run(bench_memory(groups, ops=args.ops, inflight=args.inflight, rate=0))
            print(line(f"memory    groups={groups:<3d} max", r), flush=True)
            r = asyncio.run(bench_memory(groups, ops=paced_ops, inflight=1000, rate=args.rate))
            print(line(f"memory    groups={groups:<3d} {args.rate:.0f}/s", r), flush=True)
        if "loopback" in parts:
            r = asyncio.run(bench_loopback(groups, ops=args.ops, inflight=args.inflight, rate=0))
            results[f"loopback-{groups}"] = r
            print(line(f"loopback  groups={groups:<3d} max", r), flush=True)
            r = asyncio.run(bench_loopback(groups, ops=paced_ops, inflight=1000, rate=args.rate))
            print(line(f"loopback  groups={groups:<3d} {args.rate:.0f}/s", r), flush=True)
    if "pysyncobj" in parts:
        r = bench_pysyncobj(ops=args.ops, inflight=args.inflight, rate=0)
        results["pysyncobj"] = r
        print(line("pysyncobj groups=1   max", r), flush=True)
        r = bench_pysyncobj(ops=paced_ops, inflight=1000, rate=args.rate)
        print(line(f"pysyncobj groups=1   {args.rate:.0f}/s", r), flush=True)
        for groups in group_counts:
            ours = results.get(f"loopback-{groups}")
            if ours:
                ratio = ours["ops_per_s"] / results["pysyncobj"]["ops_per_s"]
                print(
                    f"ratio loopback(groups={groups}, fsync on)/pysyncobj at {args.inflight} in flight: {ratio:.2f}"
                )


if __name__ == "__main__":
    main()
