"""The coordinator's pure planner: bootstrap rule, replica moves, leader spread."""

from __future__ import annotations

from collections.abc import Mapping

from fastpaca.cluster.placement import rendezvous_replicas
from fastpaca.cluster.planner import (
    AddLearner,
    ApplyBootstrap,
    Bootstrap,
    ClusterView,
    DropReplica,
    Promote,
    RemoveMember,
    TransferLeader,
    plan,
)
from fastpaca.cluster.status import GroupReport, NodeStatus

NODES = ("a", "b", "c", "d")


def status(
    node: str,
    *,
    blank: bool = False,
    hosted: tuple[int, ...] = (),
    led: Mapping[int, GroupReport] | None = None,
    members: tuple[str, ...] | None = None,
    applied: bool = False,
    view: tuple[str, ...] = ("a", "b", "c"),
    group_count: int = 1,
) -> NodeStatus:
    return NodeStatus(
        node_id=node,
        host="127.0.0.1",
        port=1,
        group_count=group_count,
        blank=blank,
        bootstrap_members=members,
        bootstrap_applied=applied,
        members_view=view,
        hosted=hosted,
        led=led or {},
    )


def report(
    voters: tuple[str, ...], learners: tuple[str, ...] = (), *, lag: Mapping[str, int] | None = None
) -> GroupReport:
    lag = lag or {}
    return GroupReport(
        term=2,
        voters=voters,
        learners=learners,
        last_index=1000,
        match={n: 1000 - lag.get(n, 0) for n in (*voters, *learners)},
    )


def view(
    statuses: list[NodeStatus],
    *,
    live: tuple[str, ...] = ("a", "b", "c"),
    present: tuple[str, ...] | None = None,
    **kwargs: object,
) -> ClusterView:
    return ClusterView(
        group_count=statuses[0].group_count,
        live=frozenset(live),
        present=frozenset(present or live),
        statuses={s.node_id: s for s in statuses},
        **kwargs,  # type: ignore[arg-type]
    )


# --- bootstrap --------------------------------------------------------------------


def test_blank_cluster_bootstraps_once_everyone_required_is_live_and_agrees() -> None:
    blank = [status(n, blank=True) for n in ("a", "b", "c")]
    assert plan(view(blank, required=frozenset({"a", "b", "c"}))) == [Bootstrap(("a", "b", "c"))]


def test_no_bootstrap_while_a_required_node_is_missing() -> None:
    blank = [status(n, blank=True, view=("a", "b")) for n in ("a", "b")]
    assert plan(view(blank, live=("a", "b"), required=frozenset({"a", "b", "c"}))) == []


def test_no_bootstrap_below_the_expected_size() -> None:
    blank = [status(n, blank=True, view=("a", "b")) for n in ("a", "b")]
    assert plan(view(blank, live=("a", "b"), bootstrap_expect=3)) == []


def test_no_bootstrap_while_member_views_differ() -> None:
    blank = [status("a", blank=True), status("b", blank=True), status("c", blank=True, view=("c",))]
    assert plan(view(blank, bootstrap_expect=3)) == []


def test_no_bootstrap_before_every_live_node_reported() -> None:
    blank = [status("a", blank=True), status("b", blank=True)]
    assert plan(view(blank, bootstrap_expect=2)) == []


def test_a_non_blank_node_means_the_cluster_exists_no_new_bootstrap() -> None:
    statuses = [status("a", blank=True), status("b", blank=True), status("c", hosted=(0,))]
    actions = plan(view(statuses, bootstrap_expect=3))
    assert not any(isinstance(a, Bootstrap) for a in actions)


def test_interrupted_bootstrap_is_finished_with_the_recorded_plan_never_a_new_one() -> None:
    members = ("a", "b", "c")
    statuses = [
        status("a", hosted=(0,), members=members, applied=True),
        status("b", members=members),
        status("c", blank=True),
    ]
    # b prepared but never applied: it applies the recorded plan; c never
    # prepared: it is left blank (the replica rules handle it).
    assert plan(view(statuses)) == [ApplyBootstrap("b", members)]


def test_voter_that_lost_its_data_is_removed_then_re_added() -> None:
    rep = report(("a", "b", "c"))
    statuses = running("a", rep, ("a", "b"), ("a", "b", "c"))
    statuses[2] = status("c", blank=True)
    assert plan(view(statuses)) == [RemoveMember(0, "c", "a")]
    statuses[2] = status("c", hosted=(5,))  # not blank, but no replica of group 0
    assert plan(view(statuses)) == [RemoveMember(0, "c", "a")]
    rep = report(("a", "b"))
    statuses = running("a", rep, ("a", "b"), ("a", "b", "c"))
    assert plan(view(statuses)) == [AddLearner(0, "c", "a")]


# --- replicas -----------------------------------------------------------------------


def running(
    led_by: str, rep: GroupReport, hosts: tuple[str, ...], live: tuple[str, ...]
) -> list[NodeStatus]:
    view_ = tuple(sorted(live))
    return [
        status(
            n, hosted=(0,) if n in hosts else (), led={0: rep} if n == led_by else None, view=view_
        )
        for n in live
    ]


def test_settled_group_needs_nothing() -> None:
    rep = report(("a", "b", "c"))
    assert plan(view(running("a", rep, ("a", "b", "c"), ("a", "b", "c")))) == []


def test_new_node_that_wins_the_group_is_added_as_learner_first() -> None:
    voters, newcomer = ("a", "b", "c"), "d"
    assert newcomer in rendezvous_replicas(0, NODES)  # d wins group 0 among a..d
    rep = report(voters)
    statuses = running("a", rep, voters, NODES)
    assert plan(view(statuses, live=NODES)) == [AddLearner(0, newcomer, "a")]


def test_caught_up_learner_is_promoted_lagging_one_waits() -> None:
    desired = rendezvous_replicas(0, NODES)
    newcomer = desired[0]
    voters = tuple(n for n in NODES if n != newcomer)
    lagging = report(voters, (newcomer,), lag={newcomer: 5000})
    leader = voters[0]
    assert plan(view(running(leader, lagging, NODES, NODES), live=NODES)) == []
    caught_up = report(voters, (newcomer,), lag={newcomer: 3})
    assert plan(view(running(leader, caught_up, NODES, NODES), live=NODES)) == [
        Promote(0, newcomer, leader)
    ]


def test_surplus_voter_is_removed_only_once_every_desired_node_votes() -> None:
    desired = rendezvous_replicas(0, NODES)
    surplus = next(n for n in NODES if n not in desired)
    leader = desired[0]
    rep = report(tuple(sorted(NODES)))
    assert plan(view(running(leader, rep, NODES, NODES), live=NODES)) == [
        RemoveMember(0, surplus, leader)
    ]


def test_surplus_leader_hands_over_before_it_is_removed() -> None:
    desired = rendezvous_replicas(0, NODES)
    surplus = next(n for n in NODES if n not in desired)
    # The most caught-up desired voter takes over.
    rep = report(tuple(sorted(NODES)), lag={desired[0]: 2, desired[1]: 1})
    actions = plan(view(running(surplus, rep, NODES, NODES), live=NODES))
    assert actions == [TransferLeader(0, surplus, desired[2])]


def test_quick_restart_moves_nothing_within_the_grace_period() -> None:
    rep = report(("a", "b", "c"))
    statuses = running("a", rep, ("a", "b"), ("a", "b"))
    # c is down but present (inside the grace period): its replica stays.
    assert plan(view(statuses, live=("a", "b"), present=("a", "b", "c"))) == []


def test_node_gone_past_grace_is_replaced_learner_first_then_removed() -> None:
    # Group 0 lived on a, b, d; d is down for good, so c replaces it.
    voters, live, leader = ("a", "b", "d"), ("a", "b", "c"), "a"
    assert set(rendezvous_replicas(0, NODES)) == set(voters)
    rep = report(voters)
    statuses = running(leader, rep, ("a", "b"), live)
    assert plan(view(statuses, live=live)) == [AddLearner(0, "c", leader)]
    # Once the replacement votes, d goes.
    rep = report(("a", "b", "c", "d"))
    statuses = running(leader, rep, live, live)
    assert plan(view(statuses, live=live)) == [RemoveMember(0, "d", leader)]


def test_stale_replica_is_dropped_only_when_not_a_member_and_not_wanted() -> None:
    desired = rendezvous_replicas(0, NODES)
    outsider = next(n for n in NODES if n not in desired)
    rep = report(tuple(desired))
    statuses = running(desired[0], rep, NODES, NODES)
    assert plan(view(statuses, live=NODES)) == [DropReplica(0, outsider)]
    # A busy group (an action in flight) is left alone.
    assert plan(view(statuses, live=NODES, busy_groups=frozenset({0}))) == []


def test_one_learner_at_a_time() -> None:
    desired = rendezvous_replicas(0, NODES)
    newcomer = desired[0]
    voters = tuple(n for n in NODES if n != newcomer)
    rep = report(voters, (newcomer,), lag={newcomer: 10_000})
    actions = plan(view(running(voters[0], rep, NODES, NODES), live=NODES))
    assert not any(isinstance(a, AddLearner) for a in actions)


def test_group_count_mismatch_freezes_topology() -> None:
    statuses = [status("a", blank=True), status("b", blank=True, group_count=2)]
    assert plan(view(statuses, live=("a", "b"), bootstrap_expect=2)) == []


# --- leaders ------------------------------------------------------------------------


def test_leaders_are_spread_evenly() -> None:
    groups = 9
    live = ("a", "b", "c")
    rep = report(live)
    statuses = [
        status("a", hosted=tuple(range(groups)), led={g: rep for g in range(groups)},
               view=live, group_count=groups),
        status("b", hosted=tuple(range(groups)), view=live, group_count=groups),
        status("c", hosted=tuple(range(groups)), view=live, group_count=groups),
    ]  # fmt: skip
    actions = plan(view(statuses, live=live))
    moved_to = [a.to for a in actions if isinstance(a, TransferLeader)]
    assert sorted(moved_to) == ["b", "b", "b", "c", "c", "c"]
