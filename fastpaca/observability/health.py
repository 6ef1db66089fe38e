"""Liveness and readiness of the node (``/health/live``, ``/health/ready``).

Owns the rule "ready once every Raft group this node hosts has a known
leader", the rule "not while a storage write is stuck", plus any extra
checks other subsystems register (the cluster adds "joined its peers"). It
reads state and never changes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "GroupLeadership",
    "Readiness",
    "ReadinessCheck",
    "ReadinessReport",
    "every_group_has_leader",
    "storage_not_stalled",
]

WRITE_STALL_LIMIT_S = 5.0
"""A Raft write (one fsync'd LevelDB batch) taking longer than this makes
the node not ready: far above any healthy disk's latency, and short enough
that a load balancer moves traffic away while the disk does not answer."""


@dataclass(frozen=True, slots=True)
class ReadinessReport:
    is_ready: bool
    reason: str = ""


ReadinessCheck = Callable[[], ReadinessReport]


class GroupLeadership(Protocol):
    def group_ids(self) -> list[int]: ...

    def leader_of(self, group_id: int) -> str | None: ...


class Readiness:
    """Ready when every registered check is; not ready once stopping."""

    def __init__(self) -> None:
        self._checks: list[ReadinessCheck] = []
        self._is_stopping = False

    def add_check(self, check: ReadinessCheck) -> None:
        self._checks.append(check)

    def mark_stopping(self) -> None:
        """From now on not ready, so load balancers stop sending traffic."""
        self._is_stopping = True

    def report(self) -> ReadinessReport:
        if self._is_stopping:
            return ReadinessReport(False, "stopping")
        for check in self._checks:
            report = check()
            if not report.is_ready:
                return report
        return ReadinessReport(True)


class WriteTiming(Protocol):
    def write_running_s(self) -> float: ...


def storage_not_stalled(
    engine: WriteTiming, limit_s: float = WRITE_STALL_LIMIT_S
) -> ReadinessCheck:
    def check() -> ReadinessReport:
        running_s = engine.write_running_s()
        if running_s > limit_s:
            return ReadinessReport(
                False, f"a raft storage write has not returned for {running_s:.1f} s"
            )
        return ReadinessReport(True)

    return check


def every_group_has_leader(engine: GroupLeadership) -> ReadinessCheck:
    def check() -> ReadinessReport:
        group_ids = engine.group_ids()
        if not group_ids:
            return ReadinessReport(False, "no raft groups hosted yet")
        leaderless = [g for g in group_ids if engine.leader_of(g) is None]
        if leaderless:
            return ReadinessReport(
                False, f"{len(leaderless)} of {len(group_ids)} raft groups have no leader"
            )
        return ReadinessReport(True)

    return check
