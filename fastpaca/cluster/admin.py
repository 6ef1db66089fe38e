"""Topology commands one node executes when the coordinator asks.

Owns the ``admin.*`` RPC methods: take part in the cluster bootstrap, host a
replica of a group (empty: it learns membership from the leader's log or
snapshot), drop a replica, and, at a group's leader, propose a membership
change or hand leadership over. It decides nothing: ``planner.py`` does.

The bootstrap has two phases so that one interrupted half-way can be
finished without ever creating a group twice: ``prepare`` records the member
list durably (no group yet); ``apply`` marks the record applied, then creates
this node's groups with their initial voters. A node with a prepared record
never took part in any election, so giving it the initial state later is
exactly as if ``apply`` had arrived late. The record (``cluster_state.json``)
is also what "blank" means: no record, never joined, no group.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from fastpaca.cluster.placement import rendezvous_replicas
from fastpaca.cluster.rpc import RemoteError, RpcEndpoint
from fastpaca.errors import NotLeader, ProposalDropped, ProposalTimeout, Unavailable
from fastpaca.raft.driver import RaftDriver
from fastpaca.raft.messages import ConfChange, ConfChangeOp

__all__ = ["ADMIN_METHODS", "ClusterAdmin", "ClusterRecord", "bootstrap_voters"]

ADMIN_METHODS = ("admin.bootstrap", "admin.ensure", "admin.drop", "admin.conf", "admin.transfer")


def bootstrap_voters(group_id: int, members: tuple[str, ...]) -> list[str]:
    """The initial voters of ``group_id`` in a cluster bootstrapped with ``members``."""
    return rendezvous_replicas(group_id, members)


class ClusterRecord:
    """``cluster_state.json``: the bootstrap we took part in, or that we joined."""

    def __init__(self, data_dir: Path) -> None:
        self._path = data_dir / "cluster_state.json"
        raw: dict[str, Any] = {}
        if self._path.exists():
            raw = orjson.loads(self._path.read_bytes())
        members = raw.get("bootstrap_members")
        self.bootstrap_members: tuple[str, ...] | None = None if members is None else tuple(members)
        self.bootstrap_applied = bool(raw.get("bootstrap_applied", False))
        self.has_joined = bool(raw.get("joined", False))

    def save(
        self,
        *,
        bootstrap_members: tuple[str, ...] | None = None,
        applied: bool = False,
        joined: bool = False,
    ) -> None:
        """Record a bootstrap phase or a join (durably); nothing recorded is undone."""
        members = self.bootstrap_members or bootstrap_members
        applied = self.bootstrap_applied or applied
        joined = self.has_joined or joined
        state = (members, applied, joined)
        if state == (self.bootstrap_members, self.bootstrap_applied, self.has_joined):
            return
        self.bootstrap_members, self.bootstrap_applied, self.has_joined = state
        body = orjson.dumps(
            {"bootstrap_members": members, "bootstrap_applied": applied, "joined": joined}
        )
        temporary = self._path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._path)


class ClusterAdmin:
    def __init__(
        self,
        *,
        driver: RaftDriver,
        record: ClusterRecord,
        group_count: int,
        change_timeout_s: float = 5.0,
    ) -> None:
        self._driver = driver
        self._record = record
        self._group_count = group_count
        self._timeout_s = change_timeout_s
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "admin.bootstrap": self._bootstrap,
            "admin.ensure": self._ensure,
            "admin.drop": self._drop,
            "admin.conf": self._conf,
            "admin.transfer": self._transfer,
        }

    def register(self, rpc: RpcEndpoint) -> None:
        for method in self._methods:
            rpc.register(method, self._rpc_handler(method))

    async def call_local(self, method: str, args: dict[str, Any]) -> None:
        """Run ``method`` here, raising ``RemoteError`` as a peer would."""
        await self._methods[method](args)

    def _rpc_handler(self, method: str) -> Callable[[str, bytes], Awaitable[bytes]]:
        async def handle(peer: str, payload: bytes) -> bytes:
            await self._methods[method](orjson.loads(payload))
            return b""

        return handle

    # --- methods ---------------------------------------------------------------------

    async def _bootstrap(self, args: dict[str, Any]) -> None:
        members = tuple(sorted(args["members"]))
        node_id = self._driver.host.node_id
        if node_id not in members:
            raise RemoteError("bad_request", f"{node_id} is not in the bootstrap {members}")
        record = self._record
        if record.bootstrap_members is not None and record.bootstrap_members != members:
            raise RemoteError("conflict", f"already bootstrapped with {record.bootstrap_members}")
        if args["phase"] == "prepare":
            if record.bootstrap_members is None and (record.has_joined or self._driver.group_ids()):
                raise RemoteError("conflict", "this node already takes part in a cluster")
            record.save(bootstrap_members=members)
            return
        if record.bootstrap_members is None:
            raise RemoteError("conflict", "bootstrap applied before it was prepared")
        if record.bootstrap_applied:
            return  # the groups were created (or are being): never twice
        record.save(applied=True)
        for group_id in range(self._group_count):
            voters = bootstrap_voters(group_id, members)
            if node_id in voters:
                self._driver.ensure_group(group_id, voters)

    async def _ensure(self, args: dict[str, Any]) -> None:
        self._record.save(joined=True)
        self._driver.ensure_group(int(args["g"]), [])

    async def _drop(self, args: dict[str, Any]) -> None:
        group_id = int(args["g"])
        if self._driver.is_leader(group_id):
            raise RemoteError("refused", f"this node leads group {group_id}")
        if self._driver.host.has_group(group_id):
            self._driver.remove_group(group_id)

    async def _conf(self, args: dict[str, Any]) -> None:
        group_id = int(args["g"])
        change = ConfChange(op=ConfChangeOp(int(args["op"])), node_id=str(args["n"]))
        try:
            await self._driver.change_membership(group_id, change, timeout_s=self._timeout_s)
        except NotLeader as exc:
            raise RemoteError("not_leader", exc.leader_hint or "") from None
        except (ProposalDropped, ProposalTimeout, Unavailable) as exc:
            raise RemoteError("retry", str(exc)) from None

    async def _transfer(self, args: dict[str, Any]) -> None:
        group_id, target = int(args["g"]), str(args["to"])
        try:
            await self._driver.transfer_leadership(group_id, target, timeout_s=self._timeout_s)
        except NotLeader as exc:
            raise RemoteError("not_leader", exc.leader_hint or "") from None
        except (ProposalDropped, ProposalTimeout, Unavailable) as exc:
            raise RemoteError("retry", str(exc)) from None
