"""Bad input never crashes a node: stale, misaddressed, non-member and
malformed messages are dropped (and counted), and change nothing."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpaca.raft.core import RaftNode
from fastpaca.raft.messages import Entry, Message, MessageType, SnapshotMeta
from fastpaca.raft.ready import Role
from tests.raft.harness import GROUP_ID, Network


def state_of(node: RaftNode) -> tuple[int, str | None, int, int, Role]:
    return node.term, node.vote, node.commit_index, node.last_index, node.role


def msg(msg_type: MessageType, to: str, *, sender: str = "b", **fields: Any) -> Message:
    return Message(type=msg_type, group_id=GROUP_ID, sender=sender, to=to, **fields)


def test_wrong_group_and_wrong_recipient_are_dropped() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    node = net["a"]
    before = state_of(node)
    dropped = node.dropped_messages
    node.step(Message(type=MessageType.VOTE, group_id=GROUP_ID + 1, sender="b", to="a", term=99))
    node.step(Message(type=MessageType.VOTE, group_id=GROUP_ID, sender="b", to="c", term=99))
    node.step(Message(type=MessageType.APPEND, group_id=GROUP_ID, sender="a", to="a", term=99))
    assert node.dropped_messages == dropped + 3
    assert state_of(node) == before


def test_stale_term_responses_are_dropped_and_counted() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    dropped = net["a"].dropped_messages
    net["a"].step(msg(MessageType.VOTE_RESP, "a", term=0))
    net["a"].step(msg(MessageType.APPEND_RESP, "a", term=0, index=50))
    assert net["a"].dropped_messages == dropped + 2
    progress = net["a"].progress("b")
    assert progress is not None and progress.match < 50


def test_stale_leader_learns_the_new_term_from_its_append() -> None:
    net = Network(["a", "b", "c"], pre_vote=True, check_quorum=False)
    net.elect("a")
    net.isolate("a")
    net["b"].campaign()
    net.stabilize()
    net.heal()
    net["a"].propose(b"from the past")
    net.stabilize()
    assert net["a"].role is Role.FOLLOWER and net["a"].term == net["b"].term
    assert b"from the past" not in net.applied_data("b")


def test_non_member_cannot_ask_for_votes_without_a_newer_log() -> None:
    # A stranger whose log is not ahead of ours cannot know a membership
    # newer than ours that includes it: dropped, whatever term it claims.
    net = Network(["a", "b", "c"])
    net.elect("a")
    net.tick(25, nodes=["b"])
    dropped = net["b"].dropped_messages
    last = net["b"].last_index
    for index, log_term in ((last, 1), (last - 1, 1), (last + 5, 0)):
        net["b"].step(
            msg(MessageType.VOTE, "b", sender="zed", term=50, index=index, log_term=log_term)
        )
    assert net["b"].dropped_messages == dropped + 3 and net["b"].term == 1


def test_malformed_append_is_dropped() -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    node = net["b"]
    before = state_of(node)
    dropped = node.dropped_messages
    gap = (Entry(index=node.last_index + 3, term=1),)
    node.step(
        msg(
            MessageType.APPEND,
            "b",
            sender="a",
            term=1,
            index=node.last_index,
            log_term=1,
            entries=gap,
        )
    )
    future = (Entry(index=node.last_index + 1, term=9),)
    node.step(
        msg(
            MessageType.APPEND,
            "b",
            sender="a",
            term=1,
            index=node.last_index,
            log_term=1,
            entries=future,
        )
    )
    node.step(msg(MessageType.SNAPSHOT, "b", sender="a", term=1))  # no snapshot meta
    assert node.dropped_messages == dropped + 3
    assert state_of(node) == before


message_types = st.sampled_from(list(MessageType))
entries = st.lists(
    st.builds(
        Entry, index=st.integers(-2, 30), term=st.integers(-1, 5), data=st.binary(max_size=4)
    ),
    max_size=4,
).map(tuple)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    msg_type=message_types,
    target=st.sampled_from(["a", "b"]),
    term=st.integers(-5, 0),
    index=st.integers(-5, 40),
    log_term=st.integers(-1, 5),
    commit=st.integers(-5, 40),
    reject=st.booleans(),
    entries=entries,
    with_snapshot=st.booleans(),
)
def test_any_stale_message_changes_nothing(
    msg_type: MessageType,
    target: str,
    term: int,
    index: int,
    log_term: int,
    commit: int,
    reject: bool,
    entries: tuple[Entry, ...],
    with_snapshot: bool,
) -> None:
    net = Network(["a", "b", "c"])
    net.elect("a")
    net["a"].propose(b"x")
    net.stabilize()
    node = net[target]
    before = state_of(node)
    dropped = node.dropped_messages
    node.step(
        Message(
            type=msg_type,
            group_id=GROUP_ID,
            sender="c",
            to=target,
            term=node.term - 1 + term,  # always below the node's term
            index=index,
            log_term=log_term,
            commit=commit,
            reject=reject,
            entries=entries,
            snapshot=SnapshotMeta(index=index, term=log_term) if with_snapshot else None,
        )
    )
    assert state_of(node) == before
    replies = node.ready().messages if node.has_ready() else []
    if msg_type in (MessageType.APPEND, MessageType.HEARTBEAT, MessageType.PRE_VOTE):
        # Answered with our term so the stale sender catches up; still no change.
        assert [m.term for m in replies] == [node.term]
    else:
        assert node.dropped_messages == dropped + 1 and replies == []
