"""Every knob of one simulated run, drawn from the run's seed.

Owns the mapping seed → parameters (the VOPR idea: the seed alone names the
run, so a failing seed replays exactly). It draws from the simulator's one
``random.Random`` in a fixed order and must not touch any other randomness;
adding a knob appends a draw at the end so existing seeds keep their meaning
as far as possible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fastpaca.raft.core import RaftConfig

from .process import CrashPoint

__all__ = ["SimParams", "draw_params", "raft_config"]

TICK_MS = 10
"""Nominal period of a node's tick: the core counts election and heartbeat
timeouts in ticks, so this only scales simulated time."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SimParams:
    seed: int
    storage: str
    """``"memory"`` (MemoryKV) or ``"leveldb"`` (LevelDBKV in a temp dir)."""
    node_ids: tuple[str, ...]
    group_count: int
    replicas_per_group: int
    tick_ms_by_node: tuple[int, ...]
    """Per-node tick period: clock drift makes nodes time out at different rates."""
    latency_ms_by_link: dict[tuple[str, str], int]
    jitter_ms_max: int
    drop_rate: float
    duplicate_rate: float
    reorder_rate: float
    reorder_delay_ms_max: int
    partition_interval_ms: int
    """Mean time between partition changes; 0 disables partitions."""
    partition_duration_ms_max: int
    crash_interval_ms: int
    """Mean time between crashes; 0 disables them."""
    downtime_ms_max: int
    write_fault_rate: float
    """Chance that a node's disk write fails (the node then crashes)."""
    propose_interval_ms: int
    conf_change_interval_ms: int
    """Mean time between membership changes; 0 disables them."""
    transfer_interval_ms: int
    """Mean time between leadership transfers; 0 disables them."""
    compact_interval_ms: int
    """How often a node snapshots and compacts its logs; 0 disables it."""
    safety_ms: int
    liveness_ms_max: int
    pause_interval_ms: int
    """Mean time between process pauses (GC, swapping, SIGSTOP); 0 disables."""
    pause_ms_max: int
    max_down: int
    """How many nodes may be crashed at once: usually a minority, sometimes
    all but one or all (crashes lose only unsynced writes, so even a full
    outage must recover)."""
    padding_bytes: tuple[int, ...]
    """Extra bytes a proposal may carry (batching and chunking limits)."""
    election_timeout_ticks: int
    heartbeat_interval_ticks: int
    max_inflight_msgs: int
    """Pipelining window; 1 makes every follower stop-and-wait."""
    max_msg_bytes: int
    max_uncommitted_bytes: int
    """Small values make leaders refuse proposals (ProposalDropped)."""
    crash_points: tuple[str, ...] = CrashPoint.ALL
    """Where a planned crash may land inside an iteration (``CrashPoint``)."""
    readd_wiped: bool
    """Let a node whose replica was deleted rejoin the group under the same
    id, as the coordinator does for a node that lost its data (FINDINGS.md, 2)."""
    link_down_rate: float
    """Chance that a partition's cut link is also reported down to both ends
    (a transport noticing a dead connection); crashes always are."""
    blip_interval_ms: int
    """Mean time between link blips: a connection between two live nodes
    drops and comes back at once, so both report the other down while
    nothing is lost (a live leader must survive it); 0 disables them."""
    prompt_commit_notice: bool
    """``RaftConfig.prompt_commit_notice``: both ways must be safe and live."""


def _sometimes(rng: random.Random, chance: float, value: int) -> int:
    return value if rng.random() < chance else 0


def draw_params(seed: int, rng: random.Random, *, safety_ms: int) -> SimParams:
    node_count = 5 if rng.random() < 0.25 else 3
    node_ids = tuple(f"n{i + 1}" for i in range(node_count))
    group_count = rng.choice((1, 1, 2, 2, 3, 4, 6, 8))
    # Raft is live only when a round trip is well under the election timeout
    # (10+ ticks of ~10 ms): one-way latency stays under ~25 ms with jitter.
    base_latency = rng.randint(1, 10)
    latency = {
        (a, b): base_latency + rng.randint(0, 6) for a in node_ids for b in node_ids if a != b
    }
    faulty_network = rng.random() < 0.8
    return SimParams(
        seed=seed,
        storage="leveldb" if seed % 2 else "memory",
        node_ids=node_ids,
        group_count=group_count,
        replicas_per_group=3,
        tick_ms_by_node=tuple(TICK_MS + rng.randint(-1, 1) for _ in node_ids),
        latency_ms_by_link=latency,
        jitter_ms_max=rng.randint(0, 8),
        drop_rate=rng.uniform(0.0, 0.15) if faulty_network else 0.0,
        duplicate_rate=rng.uniform(0.0, 0.05) if faulty_network else 0.0,
        reorder_rate=rng.uniform(0.0, 0.1) if faulty_network else 0.0,
        reorder_delay_ms_max=rng.randint(20, 200),
        partition_interval_ms=_sometimes(rng, 0.7, rng.randint(100, 1000)),
        partition_duration_ms_max=rng.randint(100, 1000),
        crash_interval_ms=_sometimes(rng, 0.85, rng.randint(80, 800)),
        downtime_ms_max=rng.randint(20, 800),
        write_fault_rate=rng.choice((0.0, 0.0, 0.002, 0.01)),
        propose_interval_ms=rng.randint(3, 40),
        conf_change_interval_ms=_sometimes(rng, 0.7, rng.randint(60, 500)),
        transfer_interval_ms=_sometimes(rng, 0.6, rng.randint(100, 800)),
        compact_interval_ms=_sometimes(rng, 0.7, rng.randint(100, 800)),
        safety_ms=safety_ms,
        liveness_ms_max=10_000,
        pause_interval_ms=_sometimes(rng, 0.5, rng.randint(200, 1500)),
        pause_ms_max=rng.randint(50, 800),
        max_down=rng.choice(
            ((node_count - 1) // 2,) * 6 + (node_count - 1, node_count, node_count)
        ),
        padding_bytes=rng.choice(((0,), (0, 0, 40), (0, 200, 1000))),
        election_timeout_ticks=rng.choice((10, 10, 20)),
        heartbeat_interval_ticks=rng.choice((1, 1, 2)),
        max_inflight_msgs=rng.choice((1, 4, 64)),
        max_msg_bytes=rng.choice((64, 512, 1 << 20)),
        max_uncommitted_bytes=rng.choice((2048, 64 << 20, 64 << 20)),
        readd_wiped=rng.random() < 0.7,
        link_down_rate=rng.choice((0.0, 0.5, 1.0)),
        blip_interval_ms=_sometimes(rng, 0.5, rng.randint(50, 500)),
        prompt_commit_notice=rng.random() < 0.5,
    )


def raft_config(params: SimParams, node_id: str, group_id: int, applied_index: int) -> RaftConfig:
    """The core configuration every node of the run uses."""
    return RaftConfig(
        node_id=node_id,
        group_id=group_id,
        election_timeout_ticks=params.election_timeout_ticks,
        heartbeat_interval_ticks=params.heartbeat_interval_ticks,
        max_msg_bytes=params.max_msg_bytes,
        max_inflight_msgs=params.max_inflight_msgs,
        max_uncommitted_bytes=params.max_uncommitted_bytes,
        applied_index=applied_index,
        prompt_commit_notice=params.prompt_commit_notice,
    )
