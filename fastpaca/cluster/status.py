"""What one node tells its peers about itself: the ``NodeStatus`` record.

Owns the record (address, data-dir state, groups hosted, and for every group
it leads the leader's view: term, membership, each member's replication
progress), its byte codec, and building it from the local Raft host. The
coordinator plans from these records; the router learns leaders from them.
It sends nothing itself (``gossip.py`` does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from fastpaca.raft.host import NodeHost

__all__ = ["GroupReport", "NodeStatus", "build_status", "decode_status", "encode_status"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GroupReport:
    """A leader's view of one group it leads."""

    term: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    last_index: int
    match: Mapping[str, int]
    """Highest index known replicated on each member (the leader: its last index)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStatus:
    node_id: str
    host: str
    port: int
    group_count: int
    blank: bool
    """No group on disk and never told to bootstrap or join: may take part in
    the cluster's first bootstrap."""
    bootstrap_members: tuple[str, ...] | None
    """The member list of the bootstrap this node took part in, if any."""
    bootstrap_applied: bool
    """Its groups were created (else only prepared: see ``admin.py``)."""
    members_view: tuple[str, ...]
    """Every node this one knows of (the bootstrap waits until all agree)."""
    hosted: tuple[int, ...]
    led: Mapping[int, GroupReport] = field(default_factory=dict)


def build_status(
    host: NodeHost,
    *,
    address: tuple[str, int],
    group_count: int,
    bootstrap_members: tuple[str, ...] | None,
    bootstrap_applied: bool,
    has_joined: bool,
    members_view: tuple[str, ...],
) -> NodeStatus:
    hosted = tuple(host.group_ids())
    led: dict[int, GroupReport] = {}
    for group_id in hosted:
        if not host.is_leader(group_id):
            continue
        core = host.core(group_id)
        conf = core.conf_state
        match = {}
        for member in (*conf.voters, *conf.learners):
            progress = core.progress(member)
            match[member] = (
                core.last_index
                if member == host.node_id
                else (progress.match if progress is not None else 0)
            )
        led[group_id] = GroupReport(
            term=core.term,
            voters=conf.voters,
            learners=conf.learners,
            last_index=core.last_index,
            match=match,
        )
    return NodeStatus(
        node_id=host.node_id,
        host=address[0],
        port=address[1],
        group_count=group_count,
        blank=not hosted and bootstrap_members is None and not has_joined,
        bootstrap_members=bootstrap_members,
        bootstrap_applied=bootstrap_applied,
        members_view=members_view,
        hosted=hosted,
        led=led,
    )


def encode_status(status: NodeStatus) -> bytes:
    return orjson.dumps(
        {
            "id": status.node_id,
            "h": status.host,
            "p": status.port,
            "g": status.group_count,
            "b": status.blank,
            "bm": status.bootstrap_members,
            "ba": status.bootstrap_applied,
            "mv": status.members_view,
            "hs": status.hosted,
            "l": {
                str(group_id): [r.term, r.voters, r.learners, r.last_index, dict(r.match)]
                for group_id, r in status.led.items()
            },
        }
    )


def decode_status(data: bytes) -> NodeStatus:
    """Raises ``ValueError`` for anything malformed."""
    try:
        raw: dict[str, Any] = orjson.loads(data)
        led = {
            int(group_id): GroupReport(
                term=int(term),
                voters=tuple(str(v) for v in voters),
                learners=tuple(str(v) for v in learners),
                last_index=int(last_index),
                match={str(k): int(v) for k, v in match.items()},
            )
            for group_id, (term, voters, learners, last_index, match) in raw["l"].items()
        }
        members = raw["bm"]
        return NodeStatus(
            node_id=str(raw["id"]),
            host=str(raw["h"]),
            port=int(raw["p"]),
            group_count=int(raw["g"]),
            blank=bool(raw["b"]),
            bootstrap_members=None if members is None else tuple(str(m) for m in members),
            bootstrap_applied=bool(raw["ba"]),
            members_view=tuple(str(m) for m in raw["mv"]),
            hosted=tuple(int(g) for g in raw["hs"]),
            led=led,
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed node status: {exc!r}") from exc
