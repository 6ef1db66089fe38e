"""Cluster soak: random kill -9 / restart cycles under steady writes, then audit.

Starts a 3-node loopback cluster (small log-compaction settings, so restarted
nodes also catch up through snapshots), keeps ``--writers`` clients appending
through random available nodes, and runs ``--cycles`` cycles of: kill -9 a random
node, wait a random 0.2-2 s, restart it, wait until it is ready. Then:

* every acknowledged append is in its conversation, in acknowledgement
  order per writer, exactly once; no conversation has a hole or a duplicate;
* after a graceful stop, every replica's LevelDB holds exactly the same
  messages for every conversation (read directly, not over HTTP).

Prints the figures (cycles, appends acknowledged and refused, the longest
stretch one writer saw only failures) and exits 1 on any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.cluster_procs import (
    ClusterNodeProcess,
    LocalCluster,
    history,
    message,
    wait_ready,
)
from tests.support.replica_check import read_replicas

GROUPS = 16


@dataclass
class WriterState:
    cid: str
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    longest_outage_s: float = 0.0


async def writer(
    session: aiohttp.ClientSession,
    available: list[ClusterNodeProcess],
    state: WriterState,
    stop: asyncio.Event,
    rng: random.Random,
) -> None:
    outage_started: float | None = None
    n = 0
    while not stop.is_set():
        node = rng.choice(available)
        text = f"{state.cid}-{n}"
        n += 1
        ok = False
        try:
            async with session.post(
                f"{node.url}/v1/conversations/{state.cid}/messages",
                json={"message": message(text)},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                ok = response.status == 201
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass
        now = time.monotonic()
        if ok:
            state.acknowledged.append(text)
            if outage_started is not None:
                state.longest_outage_s = max(state.longest_outage_s, now - outage_started)
                outage_started = None
        else:
            state.refused += 1
            outage_started = outage_started or now
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.005)


async def chaos(
    cluster: LocalCluster, available: list[ClusterNodeProcess], cycles: int, rng: random.Random
) -> tuple[int, str | None]:
    """Writers use ``available``: a victim leaves it before the kill and comes
    back once ready, as behind a load balancer that checks /health/ready.
    Returns the cycles run and, if a node failed to come back, why."""
    for cycle in range(1, cycles + 1):
        victim: ClusterNodeProcess = rng.choice(cluster.nodes)
        available.remove(victim)
        victim.kill()
        await asyncio.sleep(rng.uniform(0.2, 2.0))
        cluster.start(victim)
        try:
            await wait_ready(victim, timeout_s=60)
        except AssertionError as exc:
            return cycle, f"cycle {cycle}: {victim.name} did not come back: {str(exc)[-1500:]}"
        available.append(victim)
        if cycle % 10 == 0:
            print(f"  cycle {cycle}/{cycles}", flush=True)
    return cycles, None


async def audit(
    session: aiohttp.ClientSession, cluster: LocalCluster, states: list[WriterState]
) -> list[str]:
    problems = []
    for state in states:
        url = cluster.running()[0].url
        stored = [m["parts"][0]["text"] for m in await history(session, url, state.cid)]
        if len(stored) != len(set(stored)):
            problems.append(f"{state.cid}: duplicate messages")
        positions = {text: i for i, text in enumerate(stored)}
        missing = [t for t in state.acknowledged if t not in positions]
        if missing:
            problems.append(
                f"{state.cid}: {len(missing)} acknowledged appends lost, e.g. {missing[:3]}"
            )
        order = [positions[t] for t in state.acknowledged if t in positions]
        if order != sorted(order):
            problems.append(f"{state.cid}: acknowledged appends out of order")
    return problems


async def run(args: argparse.Namespace, workdir: Path) -> int:
    rng = random.Random(args.seed)
    cluster = LocalCluster(
        workdir,
        3,
        groups=GROUPS,
        env={
            "LOG_LEVEL": "warning",
            "FASTPACA_RAFT_COMPACT_THRESHOLD": "200",
            "FASTPACA_RAFT_COMPACT_KEEP": "50",
        },
    )
    cluster.start_all()
    try:
        await cluster.wait_ready(timeout_s=60)
        states = [WriterState(f"soak-{i}") for i in range(args.writers)]
        async with aiohttp.ClientSession() as session:
            for state in states:
                async with session.put(
                    f"{cluster.nodes[0].url}/v1/conversations/{state.cid}", json={}
                ):
                    pass
            stop = asyncio.Event()
            started = time.monotonic()
            available = list(cluster.nodes)
            tasks = [asyncio.create_task(writer(session, available, s, stop, rng)) for s in states]
            cycles, crash = await chaos(cluster, available, args.cycles, rng)
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*tasks)
            elapsed = time.monotonic() - started
            await cluster.wait_ready(timeout_s=60)
            if crash is not None:  # audit what the survivors serve, keep the evidence
                problems = [crash, *await audit(session, cluster, states)]
                print(f"soak: stopped after {cycles} cycles; data and logs in {workdir}")
                report(args, cycles, elapsed, states, problems)
                return 1
            problems = await audit(session, cluster, states)
            await asyncio.sleep(2.0)  # let the last commit index reach every follower
        for node in cluster.nodes:
            node.terminate()
        for node in cluster.nodes:
            if node.wait_exit(20) != 0:
                problems.append(f"{node.name} did not exit cleanly on SIGTERM")
        replicas = read_replicas([n.data_dir for n in cluster.nodes], [s.cid for s in states],
                                 group_count=GROUPS)  # fmt: skip
        for cid, copies in replicas.items():
            if len(copies) != 3 or any(copy != copies[0] for copy in copies):
                problems.append(f"{cid}: replicas disagree ({[len(c) for c in copies]} messages)")
    finally:
        cluster.stop_all()
    report(args, cycles, elapsed, states, problems)
    return 1 if problems else 0


def report(
    args: argparse.Namespace,
    cycles: int,
    elapsed: float,
    states: list[WriterState],
    problems: list[str],
) -> None:
    acknowledged = sum(len(s.acknowledged) for s in states)
    refused = sum(s.refused for s in states)
    print(
        f"soak: {cycles} kill -9/restart cycles in {elapsed:.0f} s, {args.writers} writers: "
        f"{acknowledged} appends acknowledged ({acknowledged / elapsed:.0f}/s), {refused} refused; "
        f"longest stretch of failures for one writer {max(s.longest_outage_s for s in states):.2f} s"
    )
    for problem in problems:
        print("VIOLATION:", problem)
    print("soak: OK, nothing acknowledged lost, replicas agree" if not problems else "soak: FAILED")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--keep", action="store_true", help="keep the data and logs (always kept on failure)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="cluster-soak-"))
    status = asyncio.run(run(args, workdir))
    if status == 0 and not args.keep:
        shutil.rmtree(workdir)
    else:
        print(f"data and logs kept in {workdir}")
    sys.exit(status)


if __name__ == "__main__":
    main()
