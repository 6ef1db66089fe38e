"""One PySyncObj replica for the comparison in ``raft_bench.py`` (bench only).

Started three times by the bench, on loopback. Every replica runs a
replicated append-only list with PySyncObj's file journal; the replica that
wins the election drives the load from inside its own process (as our
engine's bench does), keeping ``--inflight`` commands outstanding, and prints
one JSON line with throughput and commit latencies. The others print nothing
and exit when the bench kills them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from pysyncobj import SyncObj, SyncObjConf, replicated


class ReplicatedLog(SyncObj):  # type: ignore[misc]
    def __init__(self, self_addr: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(self_addr, partners, conf=conf)
        self._entries = 0

    @replicated  # type: ignore[misc]
    def append(self, data: bytes) -> int:
        self._entries += 1
        return self._entries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--self", dest="self_addr", required=True)
    parser.add_argument("--partners", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--ops", type=int, default=50_000)
    parser.add_argument("--inflight", type=int, default=1_000)
    parser.add_argument("--payload-bytes", type=int, default=300)
    parser.add_argument("--rate", type=float, default=0.0, help="ops/s cap; 0 = unlimited")
    args = parser.parse_args()

    conf = SyncObjConf(
        autoTick=False,
        journalFile=os.path.join(args.data_dir, "journal.bin"),
        commandsQueueSize=max(100_000, args.inflight * 2),
        appendEntriesUseBatch=True,
    )
    log = ReplicatedLog(args.self_addr, args.partners.split(","), conf)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and log._getLeader() is None:
        log.doTick(0.01)
    time.sleep(0.5)  # let the election settle before deciding who drives the load
    for _ in range(50):
        log.doTick(0.01)
    if not log._isLeader():
        while True:
            log.doTick(0.05)

    payload = os.urandom(args.payload_bytes)
    latencies_ms: list[float] = []
    failures = 0
    in_flight = 0
    submitted = 0

    def on_done(started: float) -> object:
        def callback(result: object, error: object) -> None:
            nonlocal in_flight, failures
            in_flight -= 1
            if error:
                failures += 1
            else:
                latencies_ms.append((time.perf_counter() - started) * 1000.0)

        return callback

    started_at = time.perf_counter()
    while len(latencies_ms) + failures < args.ops:
        now = time.perf_counter()
        allowed = args.ops if args.rate <= 0 else int((now - started_at) * args.rate) + 1
        while in_flight < args.inflight and submitted < min(args.ops, allowed):
            log.append(payload, callback=on_done(time.perf_counter()))
            in_flight += 1
            submitted += 1
        log.doTick(0.0)
    elapsed_s = time.perf_counter() - started_at
    latencies_ms.sort()
    out = {
        "ops": len(latencies_ms),
        "failures": failures,
        "elapsed_s": elapsed_s,
        "ops_per_s": len(latencies_ms) / elapsed_s,
        "p50_ms": latencies_ms[len(latencies_ms) // 2] if latencies_ms else None,
        "p99_ms": latencies_ms[int(len(latencies_ms) * 0.99)] if latencies_ms else None,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
