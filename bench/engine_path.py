"""The clustered append's engine path alone, in one process, deterministic.

Three ``NodeHost``s (n1, n2, n3) with their own LevelDB and the real
conversation state machine host ``--groups`` groups, all led by n1. Frames go
from host to host synchronously: no asyncio, no sockets, no threads. Each
round proposes one keyed append in each of ``--per-round`` groups (one entry
per group and Ready cycle, as the bench's traffic over 256 groups gives),
then runs the hosts' iterations until none has work. Writes are real
(fsync'd where Raft needs it).

It prints the CPU per append (user + system, all three replicas together)
and checks that every replica applied every append. What it leaves out (HTTP,
the event loop, the peer links, the writer thread) is the rest of a real
cluster's cost.

Machines here are noisy; for a before/after comparison run it under
callgrind twice with different ``--rounds`` and take the difference of the
instruction totals, which does not drift with the machine::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python bench/engine_path.py --rounds 20
    (and again with --rounds 120; instructions per append =
     difference of the totals / (100 * --per-round))

``--profile`` prints cProfile's top functions instead.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastpaca.raft.driver import DriverConfig
from fastpaca.raft.host import NodeHost
from fastpaca.raft.kv import LevelDBKV
from fastpaca.store.commands import UpsertConversation, encode_command
from fastpaca.store.fsm import ConversationStateMachine
from fastpaca.store.messages import NewMessage, build_append

NODES = ("n1", "n2", "n3")
MESSAGE = NewMessage(
    role="user", parts=[{"type": "text", "text": "x" * 240}], metadata={"source": "bench"}
)


class Cluster:
    def __init__(self, workdir: Path, groups: int) -> None:
        driver = DriverConfig()  # the production settings of the cores and hosts
        self.hosts: dict[str, NodeHost] = {}
        for name in NODES:
            kv = LevelDBKV(str(workdir / name))
            state_machine = ConversationStateMachine(kv)
            self.hosts[name] = NodeHost(
                name,
                kv,
                state_machine,
                driver.raft_template(name),
                random.Random(1),
                driver.host_config(),
            )
        for host in self.hosts.values():
            for group_id in range(groups):
                host.ensure_group(group_id, NODES)
        self.settle()
        leader = self.hosts["n1"]
        for group_id in range(groups):
            leader.campaign(group_id)
        self.settle()
        if not all(leader.is_leader(group_id) for group_id in range(groups)):
            raise RuntimeError("n1 did not win every election")

    def settle(self) -> None:
        """Run every host's iterations, delivering frames, until all are idle."""
        for _ in range(10_000):
            idle = True
            for name, host in self.hosts.items():
                if not host.has_work():
                    continue
                idle = False
                iteration = host.prepare()
                early = iteration.take_early_frames()
                iteration.write()
                late = iteration.frames()
                host.finish(iteration)
                for frames in (early, late):
                    for peer, frame in frames.items():
                        self.hosts[peer].receive(name, frame)
            if idle:
                return
        raise RuntimeError("the hosts never went idle")

    def catch_up(self) -> None:
        """Followers learn the last commit from the next heartbeat: tick
        until one has gone, so every replica has applied everything."""
        for _ in range(DriverConfig().heartbeat_interval_ticks + 1):
            for host in self.hosts.values():
                host.tick()
            self.settle()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--groups", type=int, default=64)
    parser.add_argument("--per-round", type=int, default=32, help="appends per round")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.per_round > args.groups:
        sys.exit("--per-round must not exceed --groups (one entry per group and round)")

    with tempfile.TemporaryDirectory(prefix="engine-path-") as workdir:
        cluster = Cluster(Path(workdir), args.groups)
        leader = cluster.hosts["n1"]
        now_ms = int(time.time() * 1000)
        for group_id in range(args.groups):
            upsert = UpsertConversation(
                conversation_id=f"c{group_id}", metadata_json=None, now_ms=now_ms
            )
            leader.propose(group_id, encode_command(upsert))
        cluster.settle()
        cluster.catch_up()
        appended_before = {
            name: _applied(host, args.groups) for name, host in cluster.hosts.items()
        }

        def run() -> None:
            key = 0
            for round_no in range(args.rounds):
                for slot in range(args.per_round):
                    group_id = (round_no * args.per_round + slot) % args.groups
                    key += 1
                    command, _ = build_append(
                        f"c{group_id}", [MESSAGE], now_ms=now_ms, is_batch=False,
                        idempotency_key=f"key-{key}",
                    )  # fmt: skip
                    leader.propose(group_id, encode_command(command))
                cluster.settle()

        appends = args.rounds * args.per_round
        started = time.process_time()
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run)
        else:
            run()
        cpu_s = time.process_time() - started
        cluster.catch_up()
        for name, host in cluster.hosts.items():
            applied = _applied(host, args.groups) - appended_before[name]
            if applied != appends:
                raise RuntimeError(f"{name} applied {applied} of {appends} appends")
        print(
            f"{appends} appends over {args.groups} groups, 3 replicas: "
            f"{cpu_s / appends * 1e6:.1f} us CPU per append (all replicas applied all)"
        )
        if args.profile:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)


def _applied(host: NodeHost, groups: int) -> int:
    return sum(host.core(group_id).applied_index for group_id in range(groups))


if __name__ == "__main__":
    main()
