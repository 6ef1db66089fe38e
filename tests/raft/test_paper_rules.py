"""The Raft paper's rules for servers (Figure 2, §5.1-§5.3), one test each,
driving single nodes with hand-made messages."""

from __future__ import annotations

import random
from typing import Any

from fastpaca.raft.core import RaftConfig, RaftNode
from fastpaca.raft.messages import ConfState, Entry, HardState, Message, MessageType
from fastpaca.raft.ready import Role
from fastpaca.raft.storage import MemoryStorage
from tests.raft.harness import GROUP_ID, Network

VOTERS = ("a", "b", "c")


def node(
    node_id: str = "a", *, terms: tuple[int, ...] = (), term: int = 0, **config: bool
) -> RaftNode:
    storage = MemoryStorage(conf_state=ConfState(voters=VOTERS))
    storage.append([Entry(index=i, term=t) for i, t in enumerate(terms, 1)])
    storage.set_hard_state(HardState(term=term))
    return RaftNode(
        RaftConfig(node_id=node_id, group_id=GROUP_ID, **config), storage, random.Random(5)
    )


def message(
    msg_type: MessageType, *, sender: str = "b", to: str = "a", term: int, **fields: Any
) -> Message:
    return Message(type=msg_type, group_id=GROUP_ID, sender=sender, to=to, term=term, **fields)


def sent(n: RaftNode) -> list[Message]:
    return n.ready().messages if n.has_ready() else []


def test_5_1_higher_term_in_any_message_makes_a_server_follower() -> None:
    for role_setup in ("follower", "candidate", "leader"):
        n = node(pre_vote=False)
        if role_setup != "follower":
            n.campaign()
        if role_setup == "leader":
            n.step(message(MessageType.VOTE_RESP, term=n.term))
        n.step(message(MessageType.APPEND, term=9))
        assert (n.role, n.term, n.leader_id) == (Role.FOLLOWER, 9, "b"), role_setup


def test_5_1_request_with_stale_term_is_rejected() -> None:
    n = node(term=5)
    n.step(message(MessageType.VOTE, term=4, index=9, log_term=9))
    assert n.vote is None and n.term == 5
    assert [m.type for m in sent(n)] == []
    assert n.dropped_messages == 1


def test_5_2_follower_without_heartbeats_starts_an_election_for_itself() -> None:
    n = node(pre_vote=False)
    for _ in range(20):
        n.tick()
    assert n.role is Role.CANDIDATE and n.term == 1 and n.vote == "a"
    requests = [m for m in sent(n) if m.type is MessageType.VOTE]
    assert sorted(m.to for m in requests) == ["b", "c"]


def test_5_2_leader_sends_heartbeats_to_keep_its_authority() -> None:
    net = Network(list(VOTERS))
    net.elect("a")
    net["a"].tick()
    rd = net.process_ready("a")
    assert rd is not None
    assert sorted(m.to for m in rd.messages if m.type is MessageType.HEARTBEAT) == ["b", "c"]
    net.tick(100)
    assert net["a"].is_leader and net["a"].term == 1


def test_5_2_candidate_that_times_out_starts_a_new_term() -> None:
    n = node(pre_vote=False)
    n.campaign()
    for _ in range(20):
        n.tick()
    assert n.role is Role.CANDIDATE and n.term == 2


def test_5_3_append_is_rejected_unless_the_log_contains_the_previous_entry() -> None:
    n = node(terms=(1, 1, 2), term=2)
    n.step(message(MessageType.APPEND, term=2, index=3, log_term=1))  # term mismatch at 3
    n.step(message(MessageType.APPEND, term=2, index=5, log_term=2))  # index 5 missing
    replies = sent(n)
    assert [(m.reject, m.index) for m in replies] == [(True, 3), (True, 5)]
    assert n.last_index == 3


def test_5_3_conflicting_entries_are_deleted_and_new_ones_appended() -> None:
    n = node(terms=(1, 1, 1, 1), term=2)
    entries = (Entry(index=3, term=2), Entry(index=4, term=2), Entry(index=5, term=2))
    n.step(message(MessageType.APPEND, term=2, index=2, log_term=1, entries=entries))
    assert [n.log_term(i) for i in range(1, 6)] == [1, 1, 2, 2, 2]
    rd = n.ready()
    assert rd.entries[0].index == 3, "the rewrite starts at the first conflict"
    assert rd.messages[-1].index == 5 and not rd.messages[-1].reject


def test_5_3_follower_commit_follows_leader_commit_up_to_its_last_new_entry() -> None:
    n = node(terms=(1,), term=1)
    entries = (Entry(index=2, term=1),)
    n.step(message(MessageType.APPEND, term=1, index=1, log_term=1, commit=9, entries=entries))
    assert n.commit_index == 2
