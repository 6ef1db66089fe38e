"""The rules that settle the driver's futures, one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fastpaca.errors import LeadershipLost, ProposalTimeout, Unavailable
from fastpaca.raft.messages import Entry, ReadState
from fastpaca.raft.stats import RaftStats
from fastpaca.raft.waiters import Waiters


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


async def test_proposal_resolves_only_when_its_index_applies_with_its_term() -> None:
    stats = RaftStats()
    waiters = Waiters(stats)
    ours, replaced = _future(), _future()
    waiters.add_proposal(1, 5, 3, 0.0, ours)
    waiters.add_proposal(1, 6, 3, 0.0, replaced)
    entries = [Entry(index=5, term=3), Entry(index=6, term=4)]  # 6 came from a new leader
    waiters.on_applied(1, entries, ["r5", "r6"], now=0.002, applied_index=6, leader_hint="n2")
    assert ours.result() == "r5"
    with pytest.raises(LeadershipLost) as caught:
        replaced.result()
    assert caught.value.leader_hint == "n2"
    assert waiters.proposal_count == 0
    assert (stats.proposals_applied, stats.proposals_failed) == (1, 1)
    assert stats.commit_latency.samples == 1


async def test_losing_leadership_fails_pending_proposals_with_the_new_leader() -> None:
    waiters = Waiters(RaftStats())
    pending, other_group = _future(), _future()
    waiters.add_proposal(1, 9, 2, 0.0, pending)
    waiters.add_proposal(2, 9, 2, 0.0, other_group)
    waiters.on_leader_change(1, is_leader=False, leader_id="n3")
    with pytest.raises(LeadershipLost) as caught:
        pending.result()
    assert caught.value.leader_hint == "n3"
    assert not other_group.done()
    assert waiters.proposal_count == 1


async def test_read_waits_for_its_state_then_for_the_apply() -> None:
    waiters = Waiters(RaftStats())
    read = _future()
    waiters.add_read(1, b"ctx", read)
    waiters.on_read_state(1, ReadState(index=10, context=b"ctx"), applied_index=8)
    assert not read.done()
    assert waiters.groups_with_reads() == [1]
    waiters.release_reads(1, 9)
    assert not read.done()
    waiters.on_applied(
        1, [Entry(index=10, term=1)], [None], now=0, applied_index=10, leader_hint=None
    )
    assert read.done()
    assert waiters.groups_with_reads() == []


async def test_leader_wait_resolves_on_the_target_only() -> None:
    waiters = Waiters(RaftStats())
    done = _future()
    waiters.add_leader_wait(4, "n2", done)
    waiters.on_leader_change(4, is_leader=False, leader_id=None)
    assert not done.done()
    waiters.on_leader_change(4, is_leader=False, leader_id="n2")
    assert done.done()


async def test_fail_all_leaves_nothing_hanging() -> None:
    waiters = Waiters(RaftStats())
    futures = [_future() for _ in range(4)]
    waiters.add_proposal(1, 1, 1, 0.0, futures[0])
    waiters.add_read(1, b"a", futures[1])
    waiters.add_read(2, b"b", futures[2])
    waiters.on_read_state(2, ReadState(index=5, context=b"b"), applied_index=0)
    waiters.add_leader_wait(3, "n1", futures[3])
    waiters.fail_all(Unavailable("stopping"))
    for future in futures:
        with pytest.raises(Unavailable):
            future.result()


async def test_deadlines_fail_only_what_is_due_and_unsettled() -> None:
    waiters = Waiters(RaftStats())
    due, settled, later = _future(), _future(), _future()
    waiters.add_deadline(10, 1, due)
    waiters.add_deadline(10, 1, settled)
    waiters.add_deadline(12, 2, later)
    settled.set_result("ok")
    assert waiters.expire(9) == 0
    assert waiters.expire(11) == 1
    with pytest.raises(ProposalTimeout, match="group 1"):
        due.result()
    assert settled.result() == "ok"
    assert not later.done()
    waiters.fail_all(Unavailable("stopping"))  # queued work is failed too
    with pytest.raises(Unavailable):
        later.result()
