"""Small cluster parts on their own: configuration rules, membership and the
grace period, the status and forwarding codecs, the bootstrap record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fastpaca.cluster.admin import ClusterRecord
from fastpaca.cluster.discovery import Member
from fastpaca.cluster.forward_codec import (
    ForwardedOp,
    LeaderMoved,
    decode_append,
    decode_applied,
    decode_messages,
    decode_op,
    encode_append,
    encode_applied,
    encode_messages,
    encode_op,
    error_to_remote,
    remote_to_error,
)
from fastpaca.cluster.membership import Membership
from fastpaca.cluster.setup import cluster_settings
from fastpaca.cluster.status import GroupReport, NodeStatus, decode_status, encode_status
from fastpaca.config import Settings
from fastpaca.errors import (
    ConfigError,
    ConversationNotFound,
    IdempotencyConflict,
    SequenceConflict,
    Unavailable,
)
from fastpaca.store.reads import StoredMessage
from fastpaca.store.results import AppendApplied, AppendedItem, ConversationApplied
from fastpaca.store.state import ConversationState

NODES = "n1@10.0.0.1,n2@10.0.0.2:4100,n3@10.0.0.3"


def settings(**values: Any) -> Settings:
    return Settings(**values)


# --- configuration ------------------------------------------------------------------


def test_a_node_alone_is_not_clustered() -> None:
    assert cluster_settings(settings()) is None
    assert cluster_settings(settings(CLUSTER_NODES="n1@10.0.0.1")) is None


def test_peers_without_a_secret_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^FASTPACA_CLUSTER_SECRET: required"):
        cluster_settings(settings(CLUSTER_NODES=NODES, NODE_NAME="n1"))


def test_node_name_picks_an_entry_by_name_or_whole_entry() -> None:
    by_name = cluster_settings(
        settings(CLUSTER_NODES=NODES, NODE_NAME="n2", FASTPACA_CLUSTER_SECRET="s")
    )
    assert by_name is not None
    assert (by_name.me.node_id, by_name.me.host, by_name.me.port) == (
        "n2@10.0.0.2:4100", "10.0.0.2", 4100,
    )  # fmt: skip
    whole = cluster_settings(
        settings(CLUSTER_NODES=NODES, NODE_NAME="n3@10.0.0.3", FASTPACA_CLUSTER_SECRET="s")
    )
    assert whole is not None and whole.me.port == 4000
    assert whole.required == {"n1@10.0.0.1", "n2@10.0.0.2:4100", "n3@10.0.0.3"}
    assert whole.bootstrap_expect == 3


@pytest.mark.parametrize("name", [None, "n9", "n1@10.0.0.9"])
def test_node_name_outside_the_list_is_a_config_error(name: str | None) -> None:
    values = {"CLUSTER_NODES": NODES, "FASTPACA_CLUSTER_SECRET": "s"}
    if name is not None:
        values["NODE_NAME"] = name
    with pytest.raises(ConfigError, match=r"^NODE_NAME"):
        cluster_settings(settings(**values))


def test_dns_identity_and_resolver() -> None:
    config = cluster_settings(
        settings(
            DNS_CLUSTER_QUERY="fastpaca.internal",
            FASTPACA_BIND="10.1.2.3",
            FASTPACA_CLUSTER_SECRET="s",
            FASTPACA_DNS_RESOLVER="127.0.0.1:5353",
            FASTPACA_CLUSTER_BOOTSTRAP_EXPECT="5",
        )
    )
    assert config is not None
    assert config.me.node_id == "fastpaca@10.1.2.3"
    assert (config.dns_nameservers, config.dns_nameserver_port) == (("127.0.0.1",), 5353)
    assert config.bootstrap_expect == 5 and config.required == frozenset()
    with pytest.raises(ConfigError, match=r"^NODE_NAME: required with DNS_CLUSTER_QUERY"):
        cluster_settings(settings(DNS_CLUSTER_QUERY="q", FASTPACA_CLUSTER_SECRET="s"))
    with pytest.raises(ConfigError, match=r"^FASTPACA_DNS_RESOLVER"):
        cluster_settings(
            settings(
                DNS_CLUSTER_QUERY="q", FASTPACA_BIND="10.1.2.3", FASTPACA_CLUSTER_SECRET="s",
                FASTPACA_DNS_RESOLVER="127.0.0.1:x",
            )
        )  # fmt: skip


# --- membership ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_membership_grace_period_and_coordinator() -> None:
    clock = Clock()
    pushed: list[dict[str, tuple[str, int]]] = []
    me = Member("b@h", "h", 1)
    membership = Membership(
        self_member=me, grace_ms=60_000, set_peers=lambda p: pushed.append(dict(p)), clock_s=clock
    )
    membership.set_discovered([me, Member("a@h", "h", 2), Member("c@h", "h", 3)])
    assert pushed[-1] == {"a@h": ("h", 2), "c@h": ("h", 3)}
    # Never seen yet: not live, but present (down since we started).
    assert membership.live() == {"b@h"}
    assert membership.present() == {"a@h", "b@h", "c@h"}
    assert membership.is_coordinator()
    membership.on_peer_state("a@h", True)
    assert membership.coordinator() == "a@h"
    membership.on_peer_state("a@h", False)
    clock.now_s += 59
    assert membership.coordinator() == "b@h"  # a is down: next lowest live
    assert "a@h" in membership.present()  # within the grace period
    clock.now_s += 2
    assert membership.present() == {"b@h"}
    # A peer announcing itself is learned and dialed.
    membership.learn("d@h", "h", 4)
    assert pushed[-1]["d@h"] == ("h", 4)


# --- codecs -------------------------------------------------------------------------


def test_status_round_trip_and_malformed_input() -> None:
    status = NodeStatus(
        node_id="a", host="10.0.0.1", port=4000, group_count=8, blank=False,
        bootstrap_members=("a", "b", "c"), bootstrap_applied=True,
        members_view=("a", "b", "c"), hosted=(0, 3, 7),
        led={3: GroupReport(term=4, voters=("a", "b", "c"), learners=("d",), last_index=90,
                            match={"a": 90, "b": 88, "c": 90, "d": 12})},
    )  # fmt: skip
    assert decode_status(encode_status(status)) == status
    for garbage in (b"", b"[]", b'{"id": "a"}', b"\xff"):
        with pytest.raises(ValueError):
            decode_status(garbage)


def test_forwarded_operations_and_replies_round_trip() -> None:
    op = ForwardedOp(op="append", conversation_id="c/1", timeout_ms=250, args={"k": "\x00x:1"})
    assert decode_op(encode_op(op)) == op
    appended = AppendApplied(items=(AppendedItem(seq=4, version=2, token_count=7),), deduped=True)
    assert decode_append(encode_append(appended)) == appended
    state = ConversationState(version=2, last_seq=4, created_ms=1, updated_ms=2)
    applied = ConversationApplied(
        conversation_id="c", state=state, metadata_json=b'{"a":1}', created=False
    )
    assert decode_applied(encode_applied(applied)) == applied
    messages = [StoredMessage(seq=1, body=b'{"role":"u"}'), StoredMessage(seq=2, body=b"{}")]
    assert decode_messages(encode_messages(messages)) == messages


def test_domain_errors_cross_the_wire_and_redirects_are_retryable() -> None:
    for error in (ConversationNotFound("gone"), IdempotencyConflict("used"), SequenceConflict(9)):
        remote = error_to_remote(error)
        assert remote is not None
        back = remote_to_error(remote)
        assert type(back) is type(error) and str(back) == str(error)
    moved = error_to_remote(LeaderMoved(3, "n2"))
    assert moved is not None and (moved.code, moved.message) == ("not_leader", "n2")
    assert remote_to_error(moved) is None
    unavailable = error_to_remote(Unavailable("no quorum"))
    assert unavailable is not None and remote_to_error(unavailable) is None
    assert error_to_remote(RuntimeError("bug")) is None


# --- bootstrap record ---------------------------------------------------------------


def test_cluster_record_is_durable_and_never_undone(tmp_path: Path) -> None:
    record = ClusterRecord(tmp_path)
    assert (record.bootstrap_members, record.bootstrap_applied, record.has_joined) == (
        None, False, False,
    )  # fmt: skip
    record.save(bootstrap_members=("a", "b"))
    record.save(applied=True)
    record.save()  # nothing new: nothing undone
    again = ClusterRecord(tmp_path)
    assert (again.bootstrap_members, again.bootstrap_applied, again.has_joined) == (
        ("a", "b"), True, False,
    )  # fmt: skip
    again.save(joined=True, bootstrap_members=("x",))
    last = ClusterRecord(tmp_path)
    assert (last.bootstrap_members, last.has_joined) == (("a", "b"), True)
