"""Gossip's handling of peers' statuses: decoded when they change, refreshed when not."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastpaca.cluster import gossip as gossip_module
from fastpaca.cluster.gossip import Gossip
from fastpaca.cluster.status import GroupReport, NodeStatus, encode_status
from fastpaca.raft.transport import Channel


class _Transport:
    def __init__(self) -> None:
        self.handlers: dict[Channel, Callable[[str, bytes], None]] = {}
        self.peer_state: list[Callable[[str, bool], None]] = []

    def subscribe(self, channel: Channel, handler: Callable[[str, bytes], None]) -> None:
        self.handlers[channel] = handler

    def on_peer_state(self, callback: Callable[[str, bool], None]) -> None:
        self.peer_state.append(callback)

    def send(self, peer: str, channel: Channel, payload: bytes) -> bool:
        return True

    def connected_peers(self) -> frozenset[str]:
        return frozenset()


class _Driver:
    def leader_of(self, group_id: int) -> str | None:
        return None  # this node hosts none of the groups


class _Membership:
    def __init__(self) -> None:
        self.learned: list[tuple[str, str, int]] = []

    def learn(self, node_id: str, host: str, port: int) -> None:
        self.learned.append((node_id, host, port))

    def on_peer_state(self, peer: str, connected: bool) -> None:
        pass


def _status(node: str, led: dict[int, int]) -> bytes:
    return encode_status(
        NodeStatus(
            node_id=node, host="127.0.0.1", port=4000, group_count=8, blank=False,
            bootstrap_members=None, bootstrap_applied=True, members_view=(node,),
            hosted=tuple(led),
            led={
                group: GroupReport(
                    term=term, voters=(node,), learners=(), last_index=1, match={node: 1}
                )
                for group, term in led.items()
            },
        )
    )  # fmt: skip


def test_an_unchanged_status_refreshes_the_peer_without_decoding_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    transport, membership = _Transport(), _Membership()
    gossip = Gossip(
        transport=transport,  # type: ignore[arg-type]
        driver=_Driver(),  # type: ignore[arg-type]
        membership=membership,  # type: ignore[arg-type]
        build_status=lambda: NodeStatus(
            node_id="a",
            host="127.0.0.1",
            port=1,
            group_count=8,
            blank=False,
            bootstrap_members=None,
            bootstrap_applied=True,
            members_view=("a",),
            hosted=(),
        ),
        clock_s=lambda: now[0],
    )
    decoded: list[bytes] = []
    real_decode = gossip_module.decode_status

    def counting_decode(payload: bytes) -> Any:
        decoded.append(payload)
        return real_decode(payload)

    monkeypatch.setattr(gossip_module, "decode_status", counting_decode)
    deliver = transport.handlers[Channel.STATUS]

    first = _status("b", {1: 3, 2: 3})
    deliver("b", first)
    assert gossip.leader_of(1) == "b" and len(decoded) == 1
    now[0] = 105.0
    deliver("b", first)  # the same bytes: fresher, not decoded again
    assert len(decoded) == 1
    assert gossip.status_age_s("b") == 0.0
    assert gossip.statuses_received == 2
    assert membership.learned[-1] == ("b", "127.0.0.1", 4000)

    deliver("b", _status("b", {2: 3}))  # changed: decoded, leaders rebuilt
    assert len(decoded) == 2
    assert gossip.leader_of(1) is None and gossip.leader_of(2) == "b"

    for callback in transport.peer_state:
        callback("b", False)  # gone: its status and bytes are forgotten
    assert gossip.leader_of(2) is None
    deliver("b", _status("b", {2: 3}))
    assert len(decoded) == 3 and gossip.leader_of(2) == "b"


def test_a_status_naming_another_node_is_refused() -> None:
    transport = _Transport()
    Gossip(
        transport=transport,  # type: ignore[arg-type]
        driver=_Driver(),  # type: ignore[arg-type]
        membership=_Membership(),  # type: ignore[arg-type]
        build_status=lambda: None,  # type: ignore[arg-type,return-value]
    )
    with pytest.raises(ValueError, match="sent the status of"):
        transport.handlers[Channel.STATUS]("b", _status("c", {}))
