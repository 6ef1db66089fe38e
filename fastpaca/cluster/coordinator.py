"""The coordinator loop: on the live node with the lowest id, plan and execute.

Every node runs this loop; only the current coordinator acts, so when it dies
the next-lowest live node takes over on its next round with no manual step.
A round builds a ``ClusterView`` (membership + the peers' latest statuses),
asks ``planner.plan`` for actions and runs them as tasks, at most one per
group (the group stays busy until its action ends, plus a cool-down so the
next plan sees a status sent after the change). Actions are ``admin.*`` RPCs
(``admin.py``): conf changes and transfers go to the group's leader, replica
creation/removal to the node concerned. Failures are logged and retried by a
later round; nothing here is Raft logic or placement logic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fastpaca.cluster.admin import ClusterAdmin
from fastpaca.cluster.gossip import Gossip
from fastpaca.cluster.membership import Membership
from fastpaca.cluster.planner import (
    AddLearner,
    ApplyBootstrap,
    Bootstrap,
    ClusterView,
    DropReplica,
    PlannedAction,
    Promote,
    RemoveMember,
    TransferLeader,
    plan,
)
from fastpaca.cluster.rpc import PeerUnavailable, RemoteError, RpcEndpoint, RpcTimeout
from fastpaca.raft.messages import ConfChangeOp

__all__ = ["Coordinator", "CoordinatorConfig"]

_log = logging.getLogger(__name__)
_BOOTSTRAP = -1
"""Busy key of the cluster-wide bootstrap."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CoordinatorConfig:
    group_count: int
    required: frozenset[str] = frozenset()
    bootstrap_expect: int = 1
    round_interval_s: float = 0.5
    cooldown_s: float = 1.2
    """After an action ends, its group waits this long (a fresh status arrives)."""
    max_concurrent_actions: int = 16
    rpc_timeout_s: float = 6.0
    takeover_settle_s: float = 1.5
    """A node that just became coordinator waits this long (more than one
    status interval) so it plans from statuses sent after the takeover."""


class Coordinator:
    def __init__(
        self,
        *,
        membership: Membership,
        gossip: Gossip,
        admin: ClusterAdmin,
        rpc: RpcEndpoint,
        config: CoordinatorConfig,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        self._membership = membership
        self._gossip = gossip
        self._admin = admin
        self._rpc = rpc
        self._config = config
        self._clock_s = clock_s
        self._busy: dict[int, float] = {}
        """Group (or _BOOTSTRAP) → when it is free again (inf while running)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.actions_done = 0
        self.actions_failed = 0

    async def run(self) -> None:
        coordinator_since: float | None = None
        try:
            while True:
                await asyncio.sleep(self._config.round_interval_s)
                if not self._membership.is_coordinator():
                    coordinator_since = None
                    continue
                now = self._clock_s()
                coordinator_since = coordinator_since or now
                if now - coordinator_since >= self._config.takeover_settle_s:
                    self.run_round()
        finally:
            for task in self._tasks:
                task.cancel()

    def run_round(self) -> None:
        now = self._clock_s()
        self._busy = {g: until for g, until in self._busy.items() if until > now}
        if _BOOTSTRAP in self._busy:
            return
        view = ClusterView(
            group_count=self._config.group_count,
            live=self._membership.live(),
            present=self._membership.present(),
            statuses=self._gossip.statuses(),
            required=self._config.required,
            bootstrap_expect=self._config.bootstrap_expect,
            busy_groups=frozenset(self._busy),
        )
        for action in plan(view):
            if len(self._tasks) >= self._config.max_concurrent_actions:
                break
            key = _BOOTSTRAP if isinstance(action, Bootstrap | ApplyBootstrap) else action.group_id
            if key in self._busy:
                continue
            self._busy[key] = float("inf")
            task = asyncio.create_task(self._execute(key, action))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _execute(self, key: int, action: PlannedAction) -> None:
        try:
            await self._perform(action)
            self.actions_done += 1
            _log.info("cluster: %s done", action, extra={"type": "cluster.action"})
        except (RemoteError, PeerUnavailable, RpcTimeout) as exc:
            self.actions_failed += 1
            _log.info("cluster: %s failed: %s", action, exc, extra={"type": "cluster.action"})
        except Exception:  # a bug or a local IO error: later rounds retry
            self.actions_failed += 1
            _log.exception("cluster: %s crashed", action, extra={"type": "cluster.action"})
        finally:
            self._busy[key] = self._clock_s() + self._config.cooldown_s

    async def _perform(self, action: PlannedAction) -> None:
        match action:
            case Bootstrap(members):
                _log.info("cluster: bootstrapping with %s", members)
                for phase in ("prepare", "apply"):  # every member prepared before any applies
                    calls = [
                        self._call(m, "admin.bootstrap", members=members, phase=phase)
                        for m in members
                    ]
                    await asyncio.gather(*calls)
            case ApplyBootstrap(node, members):
                await self._call(node, "admin.bootstrap", members=members, phase="apply")
            case AddLearner(group_id, node, leader):
                await self._call(node, "admin.ensure", g=group_id)
                await self._conf(leader, group_id, ConfChangeOp.ADD_LEARNER, node)
            case Promote(group_id, node, leader):
                await self._conf(leader, group_id, ConfChangeOp.ADD_VOTER, node)
            case RemoveMember(group_id, node, leader):
                await self._conf(leader, group_id, ConfChangeOp.REMOVE, node)
            case DropReplica(group_id, node):
                await self._call(node, "admin.drop", g=group_id)
            case TransferLeader(group_id, leader, to):
                await self._call(leader, "admin.transfer", g=group_id, to=to)

    async def _conf(self, leader: str, group_id: int, op: ConfChangeOp, node: str) -> None:
        await self._call(leader, "admin.conf", g=group_id, op=int(op), n=node)

    async def _call(self, node: str, method: str, **args: Any) -> None:
        if node == self._membership.node_id:
            await self._admin.call_local(method, args)
        else:
            payload = orjson.dumps(args)
            await self._rpc.call(node, method, payload, timeout_s=self._config.rpc_timeout_s)
