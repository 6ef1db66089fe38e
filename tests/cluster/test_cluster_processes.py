"""Real clusters: ``python -m fastpaca serve`` processes on loopback.

Routing (read-your-writes through every node, one ordered log under
concurrent writers through all nodes), kill -9 of every node in turn (the
coordinator included) with catch-up through a snapshot, a node whose disk
fills up, and the secret rule.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.support.cluster_procs import (
    SECRET,
    ClusterNodeProcess,
    LocalCluster,
    history,
    message,
    metric,
    wait_ready,
)
from tests.support.replica_check import read_replicas


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(
        tmp_path,
        3,
        groups=8,
        env={"FASTPACA_RAFT_COMPACT_THRESHOLD": "60", "FASTPACA_RAFT_COMPACT_KEEP": "10"},
    )
    yield local
    local.stop_all()


async def append(session: aiohttp.ClientSession, url: str, cid: str, text: str) -> int:
    async with session.post(
        f"{url}/v1/conversations/{cid}/messages", json={"message": message(text)}
    ) as response:
        assert response.status == 201, (url, response.status, await response.text())
        seq: int = (await response.json())["seq"]
        return seq


async def test_every_node_serves_every_conversation_in_one_order(cluster: LocalCluster) -> None:
    cluster.start_all()
    await cluster.wait_ready()
    urls = [node.url for node in cluster.nodes]
    async with aiohttp.ClientSession() as session:
        # Read-your-writes through every node, at once.
        for i in range(6):
            cid = f"ryw-{i}"
            writer = urls[i % 3]
            async with session.put(f"{writer}/v1/conversations/{cid}", json={}) as response:
                assert response.status == 201
            seq = await append(session, writer, cid, f"hello {i}")
            for reader in urls:
                messages = await history(session, reader, cid)
                assert [m["seq"] for m in messages] == [seq]
                assert messages[0]["parts"][0]["text"] == f"hello {i}"

        # Concurrent appends to one conversation through all three nodes.
        await session.put(f"{urls[0]}/v1/conversations/shared", json={})
        count = 90
        seqs = await asyncio.gather(
            *(append(session, urls[i % 3], "shared", f"m{i}") for i in range(count))
        )
        assert sorted(seqs) == list(range(1, count + 1))
        stored = await history(session, urls[2], "shared")
        assert [m["seq"] for m in stored] == list(range(1, count + 1))
        assert sorted(m["parts"][0]["text"] for m in stored) == sorted(
            f"m{i}" for i in range(count)
        )
        async with session.get(f"{urls[1]}/v1/conversations/shared") as response:
            assert (await response.json())["last_seq"] == count

        # Forwarding shows in the metrics; each node sees its two peers.
        forwarded = [
            await metric(session, u, "fastpaca_cluster_forwarded_requests_total") for u in urls
        ]
        assert sum(forwarded) > 0
        for url in urls:
            assert await metric(session, url, "fastpaca_cluster_peers_connected") == 2
            assert await metric(session, url, "fastpaca_cluster_transport_bytes_sent_total") > 0
        hosted = [await metric(session, u, "fastpaca_raft_groups_hosted") for u in urls]
        assert hosted == [8, 8, 8]
        # Leaderships end up spread: at most ceil(8 / 3) per node.
        deadline = time.monotonic() + 15
        while True:
            led = [await metric(session, u, "fastpaca_raft_leaders") for u in urls]
            if (sum(led) == 8 and max(led) <= 3) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert sum(led) == 8 and max(led) <= 3, led


async def test_a_peer_with_the_wrong_secret_is_rejected(cluster: LocalCluster) -> None:
    cluster.start_all()
    await cluster.wait_ready()
    intruder = cluster.add_node()
    env = cluster.env_for(intruder)
    env["FASTPACA_CLUSTER_SECRET"] = "not-" + SECRET
    intruder.start(env)
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 10
        failures = 0.0
        while time.monotonic() < deadline and failures == 0:
            await asyncio.sleep(0.2)
            failures = sum(
                [
                    await metric(session, n.url, "fastpaca_cluster_transport_auth_failures_total")
                    for n in cluster.nodes[:3]
                ]
            )
        assert failures > 0
        for node in cluster.nodes[:3]:
            assert await metric(session, node.url, "fastpaca_cluster_peers_connected") == 2
        async with session.get(intruder.url + "/health/ready") as response:
            assert response.status == 503
        # The cluster did not notice beyond the counter.
        await session.put(f"{cluster.nodes[0].url}/v1/conversations/still-fine", json={})
        assert await append(session, cluster.nodes[1].url, "still-fine", "x") == 1


async def test_kill_9_of_any_node_keeps_writes_and_the_node_catches_up(
    cluster: LocalCluster,
) -> None:
    cluster.start_all()
    await cluster.wait_ready()
    acknowledged: dict[str, list[str]] = {}
    async with aiohttp.ClientSession() as session:
        cids = [f"k{i}" for i in range(8)]
        for cid in cids:
            await session.put(f"{cluster.nodes[0].url}/v1/conversations/{cid}", json={})
            acknowledged[cid] = []
        # n1 is the coordinator (lowest id): it goes first.
        for victim in cluster.nodes:
            victim.kill()
            survivors = [n for n in cluster.nodes if n is not victim]
            if victim is cluster.nodes[0]:  # the coordinator: n2 takes over
                await _wait_metric(session, survivors[0].url, "fastpaca_cluster_coordinator", 1)
            window = await _write_until_ok(session, survivors, cids, acknowledged)
            # The followers of the dead leaders see its connection drop and
            # elect within a few ticks (RaftNode.leader_unreachable): ~0.3 s
            # on an idle machine; 3 s leaves room for a loaded CI box.
            assert window < 3.0, f"writes failed for {window:.1f} s after killing {victim.name}"
            # Far behind: well past the compaction threshold (60 entries).
            for round_ in range(25):
                for i, cid in enumerate(cids):
                    text = f"{victim.name}-{round_}-{cid}"
                    await append(session, survivors[i % 2].url, cid, text)
                    acknowledged[cid].append(text)
            cluster.start(victim)
            await wait_ready(victim)
        for cid in cids:
            for node in cluster.nodes:
                texts = [m["parts"][0]["text"] for m in await history(session, node.url, cid)]
                assert texts == acknowledged[cid], (node.name, cid)
        # Back to even leadership once everyone is back (n1 coordinates again).
        for node in cluster.nodes:
            await _wait_metric(session, node.url, "fastpaca_raft_leaders", 2, at_least=True)
        installed = [
            await metric(session, n.url, "fastpaca_raft_snapshots_installed_total")
            for n in cluster.nodes
        ]
        assert sum(installed) > 0, installed
    await _assert_replicas_agree(cluster, cids, acknowledged)


async def test_a_node_whose_storage_fails_exits_1_and_the_others_go_on(
    cluster: LocalCluster,
) -> None:
    """n3 may not grow a file past 1 MB, so its LevelDB writes fail as on a
    full disk once its write-ahead log reaches that: it exits 1 rather than
    staying connected with a dead engine, the others keep accepting writes,
    and once restarted without the limit it holds every acknowledged append."""
    first, second, failing = cluster.nodes
    cluster.start(first)
    cluster.start(second)
    cluster.start(failing, max_file_bytes=1_000_000)
    await cluster.wait_ready()
    cids = [f"d{i}" for i in range(8)]
    acknowledged: dict[str, list[str]] = {cid: [] for cid in cids}
    async with aiohttp.ClientSession() as session:
        for cid in cids:
            await session.put(f"{first.url}/v1/conversations/{cid}", json={})
        # Every node holds every group: n3 stores all of it. 2 MB of text.
        for round_ in range(250):
            for cid in cids:
                text = f"{round_}-{cid}-" + "z" * 1000
                await append(session, (first, second)[round_ % 2].url, cid, text)
                acknowledged[cid].append(text)
            if not failing.is_running():
                break
        assert failing.wait_exit(15) == 1, failing.log_text()[-2000:]
        log = failing.log_text()
        assert '"type":"server.failed"' in log and "File too large" in log, log[-2000:]
        window = await _write_until_ok(session, [first, second], cids, acknowledged)
        assert window < 3.0, f"writes failed for {window:.1f} s after n3 stopped"
        cluster.start(failing)
        await wait_ready(failing)
        # Leading again (the coordinator rebalances) means it caught up.
        await _wait_metric(session, failing.url, "fastpaca_raft_leaders", 2, at_least=True)
    await _assert_replicas_agree(cluster, cids, acknowledged)


async def _wait_metric(
    session: aiohttp.ClientSession, url: str, name: str, value: float, *, at_least: bool = False
) -> None:
    deadline = time.monotonic() + 15
    seen = None
    while time.monotonic() < deadline:
        seen = await metric(session, url, name)
        if seen == value or (at_least and seen >= value):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{url} {name} = {seen}, expected {value}")


async def _write_until_ok(
    session: aiohttp.ClientSession,
    nodes: list[ClusterNodeProcess],
    cids: list[str],
    acknowledged: dict[str, list[str]],
) -> float:
    """Write to every conversation through the survivors until each write
    succeeds; return the longest time one conversation took to accept one."""
    started = time.monotonic()
    longest = 0.0
    for i, cid in enumerate(cids):
        text = f"probe-{started}-{cid}"
        while True:
            url = nodes[i % len(nodes)].url
            async with session.post(
                f"{url}/v1/conversations/{cid}/messages",
                json={"message": message(text), "idempotency_key": text},
            ) as response:
                if response.status == 201:
                    acknowledged[cid].append(text)
                    break
                assert response.status == 503, await response.text()
            await asyncio.sleep(0.05)
        longest = max(longest, time.monotonic() - started)
    return longest


async def _assert_replicas_agree(
    cluster: LocalCluster, cids: list[str], acknowledged: dict[str, list[str]]
) -> None:
    """Stop every node, then read each replica's LevelDB directly."""
    for node in cluster.nodes:
        node.terminate()
    for node in cluster.nodes:
        assert node.wait_exit(15) == 0, node.log_text()[-2000:]
    replicas = read_replicas([n.data_dir for n in cluster.nodes], cids, group_count=8)
    for cid in cids:
        copies = replicas[cid]
        assert len(copies) == 3, (cid, len(copies))
        for texts in copies:
            assert texts == acknowledged[cid]


async def test_clustered_node_without_secret_exits_2(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, 2)
    node = local.nodes[0]
    env = local.env_for(node)
    del env["FASTPACA_CLUSTER_SECRET"]
    node.start(env)
    assert node.wait_exit(15) == 2
    lines = node.log_text().strip().splitlines()
    assert len(lines) == 1 and "FASTPACA_CLUSTER_SECRET" in lines[0], lines


async def test_node_name_outside_cluster_nodes_exits_2(tmp_path: Path) -> None:
    local = LocalCluster(tmp_path, 2)
    node = local.nodes[0]
    env = local.env_for(node)
    env["NODE_NAME"] = "stranger@127.0.0.1:1"
    node.start(env)
    assert node.wait_exit(15) == 2
    lines = node.log_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].count("NODE_NAME=stranger") == 1, lines


async def test_a_member_started_without_its_cluster_exits_2(cluster: LocalCluster) -> None:
    """A member's data started alone could never elect a leader (the other
    voters are not there): one line at start, instead of a node that stays
    "starting" and refuses every write."""
    cluster.start_all()
    await cluster.wait_ready()
    for node in cluster.nodes:
        node.terminate()
    for node in cluster.nodes:
        assert node.wait_exit(15) == 0
    first = cluster.nodes[0]
    env = cluster.env_for(first)
    del env["CLUSTER_NODES"]
    env["NODE_NAME"] = first.entry  # the same name: only the cluster is missing
    first.start(env)
    assert first.wait_exit(15) == 2
    lines = first.log_text().strip().splitlines()
    assert len(lines) == 1 and "CLUSTER_NODES" in lines[0], lines
    assert cluster.nodes[1].entry in lines[0] and cluster.nodes[2].entry in lines[0], lines
