"""Three OS processes on loopback replicate through the real transport and LevelDB.

Each node is ``tests/raft/node_proc.py``: a ``RaftDriver`` over its own
LevelDB directory, the websocket peer transport on its HTTP port, and a small
control API. The test writes through the group leaders, kills -9 the node that
leads the most groups, keeps writing through the survivors (they elect new
leaders), restarts the killed node far behind a compacted log so it must catch
up through InstallSnapshot, and then requires every acknowledged write on all
three replicas.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.ports import free_port

NODE_IDS = ("n1", "n2", "n3")
GROUPS = 6
COMPACT_THRESHOLD = 40
COMPACT_KEEP = 10
"""Every node snapshots and compacts its log about every ``COMPACT_THRESHOLD``
entries, keeping the last ``COMPACT_KEEP``: a node that misses a few times that
many entries per group is behind the leaders' compacted logs."""
WRITES_BEFORE_KILL = 20
WRITES_WHILE_DOWN = 4 * COMPACT_THRESHOLD
WRITES_AFTER_RESTART = 5
REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "real-network-test-secret"

Acked = dict[int, dict[str, str]]
"""group -> key -> value of every write a leader acknowledged."""


@dataclass
class NodeProcess:
    node_id: str
    port: int
    data_dir: Path
    log_path: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Cluster:
    def __init__(self, root: Path) -> None:
        self.nodes = {
            node_id: NodeProcess(node_id, free_port(), root / node_id, root / f"{node_id}.log")
            for node_id in NODE_IDS
        }
        self.peers_spec = ",".join(f"{n.node_id}=127.0.0.1:{n.port}" for n in self.nodes.values())

    async def start(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.data_dir.mkdir(exist_ok=True)
        log = node.log_path.open("ab")
        node.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.raft.node_proc",
            "--node-id", node_id, "--port", str(node.port), "--data-dir", str(node.data_dir),
            "--peers", self.peers_spec, "--groups", str(GROUPS),
            "--compact-threshold", str(COMPACT_THRESHOLD), "--compact-keep", str(COMPACT_KEEP),
            cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=log,
            env={**os.environ, "FASTPACA_CLUSTER_SECRET": SECRET},
        )  # fmt: skip
        log.close()
        assert node.process.stdout is not None
        async with asyncio.timeout(15):
            line = await node.process.stdout.readline()
        assert line.strip() == f"READY {node_id}".encode(), self.log_tail(node_id)

    async def kill(self, node_id: str) -> None:
        process = self.nodes[node_id].process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        await process.wait()

    async def stop_all(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.returncode is None:
                node.process.send_signal(signal.SIGKILL)
                await node.process.wait()

    async def eventually(
        self, check: Callable[[], Awaitable[bool]], timeout_s: float, what: str
    ) -> None:
        """Poll ``check`` until true; on timeout fail with every node's log tail."""
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                while not await check():
                    await asyncio.sleep(0.1)
        except TimeoutError:
            if not deadline.expired():
                raise  # a request inside ``check`` timed out: report that, not ours
            tails = "\n".join(self.log_tail(n) for n in NODE_IDS)
            raise AssertionError(
                f"timed out after {timeout_s}s waiting for {what}\n{tails}"
            ) from None

    def log_tail(self, node_id: str, lines: int = 30) -> str:
        text = self.nodes[node_id].log_path.read_text(errors="replace")
        return f"--- {node_id} log ---\n" + "\n".join(text.splitlines()[-lines:])


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        await cluster.stop_all()


# --- control API client --------------------------------------------------------------


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        return await response.json()


async def statuses(
    http: aiohttp.ClientSession, cluster: Cluster, node_ids: Iterable[str]
) -> dict[str, Any]:
    return {n: await get_json(http, f"{cluster.nodes[n].url}/status") for n in node_ids}


async def has_leaders(
    http: aiohttp.ClientSession, cluster: Cluster, node_ids: Iterable[str]
) -> bool:
    return await agreed_leaders(http, cluster, node_ids) is not None


async def agreed_leaders(
    http: aiohttp.ClientSession, cluster: Cluster, node_ids: Iterable[str]
) -> dict[int, str] | None:
    """group -> leader, if every listed node names the same live leader for every group."""
    node_ids = list(node_ids)
    views = await statuses(http, cluster, node_ids)
    leaders: dict[int, str] = {}
    for group_id in range(GROUPS):
        named = {views[n]["groups"][str(group_id)]["leader"] for n in node_ids}
        if len(named) != 1 or (leader := named.pop()) not in node_ids:
            return None
        leaders[group_id] = leader
    return leaders


async def write_round(
    http: aiohttp.ClientSession, cluster: Cluster, node_ids: list[str], label: str, count: int,
    acked: Acked,
) -> None:  # fmt: skip
    """Write ``count`` keys per group through the group leaders until all are acked.

    A put is retried (same key, same value: idempotent) until some leader
    acknowledges it; only acknowledged puts are recorded.
    """
    pending = {g: {f"{label}-{g}-{i}": f"v{label}{i}" for i in range(count)} for g in range(GROUPS)}

    async def attempt() -> bool:
        leaders = await agreed_leaders(http, cluster, node_ids)
        if leaders is None:
            return False
        results = await asyncio.gather(
            *(
                _put(http, cluster.nodes[leaders[g]].url, g, pending[g])
                for g in range(GROUPS)
                if pending[g]
            )
        )
        for group_id, acked_keys in results:
            for key in acked_keys:
                acked[group_id][key] = pending[group_id].pop(key)
        return not any(pending.values())

    await cluster.eventually(attempt, 20, f"round {label} acknowledged")


async def _put(
    http: aiohttp.ClientSession, url: str, group_id: int, items: dict[str, str]
) -> tuple[int, list[str]]:
    async with http.post(
        f"{url}/put/{group_id}", json={"items": items}, timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        body = await response.json()
    return group_id, body["acked"]


async def holds_every_acked_write(
    http: aiohttp.ClientSession, cluster: Cluster, node_id: str, acked: Acked
) -> bool:
    for group_id, expected in acked.items():
        items = (await get_json(http, f"{cluster.nodes[node_id].url}/items/{group_id}"))["items"]
        if any(items.get(key) != value for key, value in expected.items()):
            return False
    return True


# --- the test --------------------------------------------------------------------------


async def test_kill9_and_restart_catches_up_through_a_snapshot(cluster: Cluster) -> None:
    await asyncio.gather(*(cluster.start(n) for n in NODE_IDS))
    acked: Acked = {g: {} for g in range(GROUPS)}
    async with aiohttp.ClientSession() as http:
        await cluster.eventually(
            lambda: has_leaders(http, cluster, NODE_IDS), 15, "a leader for every group"
        )
        await write_round(http, cluster, list(NODE_IDS), "before", WRITES_BEFORE_KILL, acked)

        leaders = await agreed_leaders(http, cluster, NODE_IDS)
        assert leaders is not None
        victim = collections.Counter(leaders.values()).most_common(1)[0][0]
        survivors = [n for n in NODE_IDS if n != victim]
        await cluster.kill(victim)
        # The survivors elect new leaders for the victim's groups and go on.
        await write_round(http, cluster, survivors, "down", WRITES_WHILE_DOWN, acked)

        await cluster.start(victim)
        await cluster.eventually(
            lambda: holds_every_acked_write(http, cluster, victim, acked), 15, f"{victim} caught up"
        )
        await check_caught_up_through_snapshots(http, cluster, victim, survivors)

        # The restarted node takes part again: writes with all three up.
        await write_round(http, cluster, list(NODE_IDS), "after", WRITES_AFTER_RESTART, acked)
        await check_every_acked_write_everywhere(http, cluster, acked)

    assert sum(len(keys) for keys in acked.values()) == GROUPS * (
        WRITES_BEFORE_KILL + WRITES_WHILE_DOWN + WRITES_AFTER_RESTART
    )


async def check_caught_up_through_snapshots(
    http: aiohttp.ClientSession, cluster: Cluster, victim: str, survivors: list[str]
) -> None:
    """Every group's log was compacted past where the victim stopped, so each
    group caught up through InstallSnapshot: counted by the driver, and
    independently where the state machine restores itself."""

    async def installed_every_group() -> bool:
        status = await statuses(http, cluster, [victim, *survivors])
        return bool(
            status[victim]["snapshots_installed"] >= GROUPS
            and status[victim]["state_machine_restores"] >= GROUPS
            and sum(status[n]["snapshots_sent"] for n in survivors) >= GROUPS
        )

    # The driver's counters are refreshed once per tick, hence "eventually".
    await cluster.eventually(installed_every_group, 5, f"a snapshot per group sent to {victim}")


async def check_every_acked_write_everywhere(
    http: aiohttp.ClientSession, cluster: Cluster, acked: Acked
) -> None:
    """On every replica's applied state, and through a linearizable read on
    each group's leader."""
    for node_id in NODE_IDS:
        await cluster.eventually(
            functools.partial(holds_every_acked_write, http, cluster, node_id, acked),
            5,
            f"every acknowledged write on {node_id}",
        )
    leaders = await agreed_leaders(http, cluster, NODE_IDS)
    assert leaders is not None
    for group_id, leader in leaders.items():
        body = await get_json(http, f"{cluster.nodes[leader].url}/get/{group_id}")
        missing = {k: v for k, v in acked[group_id].items() if body["items"].get(k) != v}
        assert not missing, (group_id, leader, missing)
