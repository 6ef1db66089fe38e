"""Plain counters and gauges of one node's Raft engine.

``RaftStats`` is filled by ``driver.py`` (``HostStats`` by ``host.py``) and
read by the metrics module, which exports them; it holds numbers only (no prometheus, no IO, no locks: the
driver's event loop is its only writer).
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["COMMIT_LATENCY_BUCKETS_S", "HostStats", "LatencyHistogram", "RaftStats"]

COMMIT_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


@dataclass(slots=True)
class LatencyHistogram:
    """Cumulative-friendly buckets: ``counts[i]`` holds samples <= ``bounds_s[i]``
    (and above the previous bound); ``counts[-1]`` holds those above every bound."""

    bounds_s: tuple[float, ...] = COMMIT_LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=lambda: [0] * (len(COMMIT_LATENCY_BUCKETS_S) + 1))
    total_s: float = 0.0
    samples: int = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds_s, seconds)] += 1
        self.total_s += seconds
        self.samples += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (inf if above all)."""
        if not self.samples:
            return 0.0
        rank, seen = q * self.samples, 0
        for bound, count in zip((*self.bounds_s, float("inf")), self.counts, strict=True):
            seen += count
            if seen >= rank:
                return bound
        return float("inf")


@dataclass(slots=True)
class HostStats:
    dropped_unknown_group: int = 0
    dropped_misaddressed: int = 0
    dropped_snapshots: int = 0
    """Snapshot chunks or SNAPSHOT messages out of order or unexpected."""
    snapshots_sent: int = 0
    snapshots_installed: int = 0
    snapshot_failures: int = 0


@dataclass(slots=True)
class RaftStats:
    leaders_held: int = 0
    """Gauge: groups this node currently leads."""
    groups_hosted: int = 0
    term_changes: int = 0
    leader_changes: int = 0
    proposals: int = 0
    proposals_applied: int = 0
    proposals_rejected: int = 0
    """NotLeader / ProposalDropped / Overloaded at proposal time."""
    proposals_failed: int = 0
    """LeadershipLost after being accepted."""
    proposals_timed_out: int = 0
    """Proposals, reads and transfers failed with ProposalTimeout."""
    reads: int = 0
    iterations: int = 0
    synced_writes: int = 0
    messages_dropped: int = 0
    """Inbound: unknown group, misaddressed, stale term, non-member (updated per iteration)."""
    malformed_frames: int = 0
    snapshots_sent: int = 0
    snapshots_installed: int = 0
    frames_sent: Counter[str] = field(default_factory=Counter)
    messages_sent: Counter[str] = field(default_factory=Counter)
    """Raft messages per peer (heartbeats of many groups count one each)."""
    bytes_sent: Counter[str] = field(default_factory=Counter)
    send_failures: Counter[str] = field(default_factory=Counter)
    commit_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Proposal accepted by the leader → applied there (seconds)."""
    synced_write_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """An fsync'd batch write, handed to the writer thread → back on the
    loop (seconds): the disk's share of every write's latency."""
