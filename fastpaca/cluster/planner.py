"""The coordinator's decisions, as a pure function of what it sees.

Owns the placement rules: from the live/present node sets and the latest
status of every live node, ``plan`` returns the next topology actions. It does
no IO and keeps no state between calls; ``coordinator.py`` executes what it
returns and reports which groups are busy.

Safety rules encoded here (see also README "Cluster"):

* First bootstrap only from a blank cluster: every live node blank, at least
  ``bootstrap_expect`` of them, every required (configured) node live, and
  every node reporting the same member list. The group → voters plan is then
  a pure function of that sorted member list, computed identically by every
  member, so two bootstraps of one group can only ever be identical.
* A bootstrap that stopped half-way (coordinator died) is finished by sending
  ``apply`` of the *recorded* member list to the members that prepared it
  and did not apply it yet (``admin.py`` says why that is safe): never a
  second, different bootstrap. A member that never prepared (or lost its
  data) is blank: it gets no group from the bootstrap; see the next rule.
* A member whose live node reports that it does not host the group (its
  data dir was wiped, or it never got the replica) is removed from the group
  (it must not vote with an empty log) and then re-added the normal way, as
  a learner that catches up. Statuses go out within 50 ms of a change in
  the groups a node hosts, and a leader exists only a full election timeout
  after a group is created, so a fresh replica is not mistaken for a lost one.
* At most one action per group per round, and none for a group the executor
  still has busy; conf changes go through the group's leader one at a time.
* A node is added as a learner, promoted only once caught up, and a voter is
  removed only when every desired replica already is a voter.
* Replica data is dropped only from a node that the leader's membership does
  not list and that is not a desired replica.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fastpaca.cluster.placement import rendezvous_replicas
from fastpaca.cluster.status import GroupReport, NodeStatus

__all__ = [
    "AddLearner",
    "ApplyBootstrap",
    "Bootstrap",
    "ClusterView",
    "DropReplica",
    "PlannedAction",
    "Promote",
    "RemoveMember",
    "TransferLeader",
    "plan",
]


@dataclass(frozen=True, slots=True)
class Bootstrap:
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApplyBootstrap:
    """``node`` prepared the bootstrap of ``members`` but did not apply it."""

    node: str
    members: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AddLearner:
    group_id: int
    node: str
    leader: str


@dataclass(frozen=True, slots=True)
class Promote:
    group_id: int
    node: str
    leader: str


@dataclass(frozen=True, slots=True)
class RemoveMember:
    group_id: int
    node: str
    leader: str


@dataclass(frozen=True, slots=True)
class DropReplica:
    group_id: int
    node: str


@dataclass(frozen=True, slots=True)
class TransferLeader:
    group_id: int
    leader: str
    to: str


PlannedAction = (
    Bootstrap | ApplyBootstrap | AddLearner | Promote | RemoveMember | DropReplica | TransferLeader
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    group_count: int
    live: frozenset[str]
    present: frozenset[str]
    statuses: Mapping[str, NodeStatus]
    """Latest status of live nodes (ours included)."""
    required: frozenset[str] = frozenset()
    """Nodes that must be live for the first bootstrap (the configured list)."""
    bootstrap_expect: int = 1
    busy_groups: frozenset[int] = frozenset()
    catch_up_lag_entries: int = 100
    max_leader_transfers: int = 8
    replication: int = 3


def plan(view: ClusterView) -> list[PlannedAction]:
    statuses = {n: s for n, s in view.statuses.items() if n in view.live}
    if any(s.group_count != view.group_count for s in statuses.values()):
        return []  # misconfigured peer: FASTPACA_RAFT_GROUPS differs; change nothing
    bootstrap = _plan_bootstrap(view, statuses)
    if bootstrap is not None:
        return bootstrap
    reports = _leader_reports(statuses)
    hosting = {node: frozenset(status.hosted) for node, status in statuses.items()}
    actions: list[PlannedAction] = []
    settled: dict[int, GroupReport] = {}
    for group_id, (leader, report) in sorted(reports.items()):
        if group_id in view.busy_groups:
            continue
        desired = rendezvous_replicas(group_id, view.present, replication=view.replication)
        action = _plan_group(view, group_id, leader, report, desired, hosting)
        if action is not None:
            actions.append(action)
        elif set(report.voters) == set(desired):
            settled[group_id] = report
    actions.extend(_plan_drops(view, statuses, reports))
    actions.extend(_plan_leader_balance(view, reports, settled))
    return actions


def _plan_bootstrap(
    view: ClusterView, statuses: Mapping[str, NodeStatus]
) -> list[PlannedAction] | None:
    """Bootstrap actions, ``[]`` to wait for the bootstrap, None once it is done."""
    recorded = [s.bootstrap_members for s in statuses.values() if s.bootstrap_members]
    if recorded:
        unapplied: list[PlannedAction] = [
            ApplyBootstrap(node, status.bootstrap_members)
            for node, status in sorted(statuses.items())
            if status.bootstrap_members and not status.bootstrap_applied
        ]
        return unapplied or None
    if any(not s.blank for s in statuses.values()):
        return None  # groups exist (a node joined later): the cluster is running
    if set(statuses) != set(view.live):
        return []  # not heard from everyone yet
    ready = (
        len(view.live) >= view.bootstrap_expect
        and view.required <= view.live
        and all(set(s.members_view) == set(view.live) for s in statuses.values())
    )
    return [Bootstrap(tuple(sorted(view.live)))] if ready else []


def _leader_reports(statuses: Mapping[str, NodeStatus]) -> dict[int, tuple[str, GroupReport]]:
    """Per group, the report of the live leader with the highest term."""
    reports: dict[int, tuple[str, GroupReport]] = {}
    for node, status in statuses.items():
        for group_id, report in status.led.items():
            best = reports.get(group_id)
            if best is None or report.term > best[1].term:
                reports[group_id] = (node, report)
    return reports


def _plan_group(
    view: ClusterView,
    group_id: int,
    leader: str,
    report: GroupReport,
    desired: list[str],
    hosting: Mapping[str, frozenset[int]],
) -> PlannedAction | None:
    voters, learners = set(report.voters), set(report.learners)
    for member in sorted(voters | learners):
        if member != leader and member in hosting and group_id not in hosting[member]:
            return RemoveMember(group_id, member, leader)  # its replica is gone
    for learner in sorted(learners):
        if learner not in desired:
            return RemoveMember(group_id, learner, leader)
    for learner in sorted(learners):
        lag = report.last_index - report.match.get(learner, 0)
        if learner in view.live and lag <= view.catch_up_lag_entries:
            return Promote(group_id, learner, leader)
    if learners:
        return None  # one newcomer at a time: wait for it to catch up
    for node in desired:  # best-ranked first
        if node in view.live and node not in voters:
            return AddLearner(group_id, node, leader)
    surplus = voters - set(desired)
    if not surplus or not set(desired) <= voters:
        return None  # never remove a voter before its replacement is one
    victim = min(surplus, key=lambda n: (n in view.live, n == leader, n))
    if victim != leader:
        return RemoveMember(group_id, victim, leader)
    successor = _best_successor(view, report, leader, set(desired))
    return None if successor is None else TransferLeader(group_id, leader, successor)


def _best_successor(
    view: ClusterView, report: GroupReport, leader: str, candidates: set[str]
) -> str | None:
    eligible = [v for v in report.voters if v != leader and v in candidates and v in view.live]
    if not eligible:
        return None
    return max(eligible, key=lambda v: (report.match.get(v, 0), v))


def _plan_drops(
    view: ClusterView,
    statuses: Mapping[str, NodeStatus],
    reports: Mapping[int, tuple[str, GroupReport]],
) -> list[PlannedAction]:
    drops: list[PlannedAction] = []
    for node, status in sorted(statuses.items()):
        for group_id in status.hosted:
            entry = reports.get(group_id)
            if entry is None or group_id in view.busy_groups:
                continue  # without a leader's view nobody knows the membership
            report = entry[1]
            if node in report.voters or node in report.learners:
                continue
            desired = rendezvous_replicas(group_id, view.present, replication=view.replication)
            if node not in desired:
                drops.append(DropReplica(group_id, node))
    return drops


def _plan_leader_balance(
    view: ClusterView,
    reports: Mapping[int, tuple[str, GroupReport]],
    settled: Mapping[int, GroupReport],
) -> list[PlannedAction]:
    """Move leaderships from nodes above the even share to voters below it."""
    led: dict[str, int] = {node: 0 for node in view.live}
    eligible: set[str] = set()
    for leader, report in reports.values():
        led[leader] = led.get(leader, 0) + 1
        eligible.update(v for v in report.voters if v in view.live)
    if not eligible:
        return []
    share = math.ceil(len(reports) / len(eligible))
    transfers: list[PlannedAction] = []
    for group_id, report in sorted(settled.items()):
        if len(transfers) >= view.max_leader_transfers:
            break
        leader = reports[group_id][0]
        if led[leader] <= share:
            continue
        candidates = [
            v
            for v in report.voters
            if v != leader
            and v in view.live
            and led.get(v, 0) + 1 < led[leader]
            and led.get(v, 0) < share
            and report.last_index - report.match.get(v, 0) <= view.catch_up_lag_entries
        ]
        if not candidates:
            continue
        target = min(candidates, key=lambda v: (led.get(v, 0), v))
        transfers.append(TransferLeader(group_id, leader, target))
        led[leader] -= 1
        led[target] = led.get(target, 0) + 1
    return transfers
