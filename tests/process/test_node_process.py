"""The real server process: restart, kill -9, SIGTERM drain, start-up errors."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from node_process import REPO, NodeProcess, free_port

NodeFactory = Callable[..., NodeProcess]


def msg(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


async def history(session: aiohttp.ClientSession, url: str, cid: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        query = f"?from={len(messages) + 1}&limit=1000"
        async with session.get(f"{url}/v1/conversations/{cid}/messages{query}") as response:
            assert response.status == 200
            page = (await response.json())["messages"]
        if not page:
            return messages
        messages.extend(page)


async def test_restart_keeps_messages_and_idempotency_keys(node_factory: NodeFactory) -> None:
    node = node_factory()
    node.start()
    await node.wait_ready()
    async with aiohttp.ClientSession(node.url) as session:
        for n in range(3):
            await session.put(f"/v1/conversations/c{n}", json={"metadata": {"n": n}})
        url = "/v1/conversations/c0/messages"
        async with session.post(url, json={"message": msg("keyed"), "idempotency_key": "k1"}) as r:
            original = await r.json()
        await session.post(url, json={"messages": [msg(f"b{i}") for i in range(50)]})
        await session.delete("/v1/conversations/c2")
        before = {cid: await history(session, node.url, cid) for cid in ("c0", "c1", "c2")}
        records = {}
        for cid in ("c0", "c1", "c2"):
            async with session.get(f"/v1/conversations/{cid}") as r:
                records[cid] = await r.json()

    node.signal(signal.SIGTERM)
    assert await node.wait_exit(10) == 0
    node.start()
    await node.wait_ready()
    async with aiohttp.ClientSession(node.url) as session:
        for cid in ("c0", "c1", "c2"):
            assert await history(session, node.url, cid) == before[cid]
            async with session.get(f"/v1/conversations/{cid}") as r:
                assert await r.json() == records[cid]
        async with session.post(url, json={"message": msg("keyed"), "idempotency_key": "k1"}) as r:
            assert await r.json() == {**original, "deduped": True}
        async with session.post(url, json={"message": msg("next")}) as r:
            assert (await r.json())["seq"] == 52


async def _append_until_failure(
    session: aiohttp.ClientSession, cid: str, writer: int, acked: list[tuple[str, int, str]]
) -> int:
    """Append until the server goes away; returns the count of non-201 replies."""
    bad_replies = 0
    for n in range(1_000_000):
        text = f"w{writer}-{n}"
        try:
            async with session.post(
                f"/v1/conversations/{cid}/messages", json={"message": msg(text)}
            ) as response:
                if response.status == 201:
                    acked.append((cid, (await response.json())["seq"], text))
                else:
                    bad_replies += 1
        except (TimeoutError, aiohttp.ClientError):
            return bad_replies
    return bad_replies


async def _run_writers_then(
    node: NodeProcess, stop: Callable[[], None], acked: list[tuple[str, int, str]]
) -> list[int]:
    conversations = [f"conv-{n}" for n in range(4)]
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(node.url, timeout=timeout) as session:
        for cid in conversations:
            async with session.put(f"/v1/conversations/{cid}") as response:
                assert response.status == 201
        writers = [
            asyncio.create_task(_append_until_failure(session, conversations[w % 4], w, acked))
            for w in range(16)
        ]
        while len(acked) < 300:
            await asyncio.sleep(0.01)
        stop()
        return await asyncio.gather(*writers)


async def _check_acked_survived(node: NodeProcess, acked: list[tuple[str, int, str]]) -> None:
    async with aiohttp.ClientSession(node.url) as session:
        for cid in sorted({cid for cid, _, _ in acked}):
            stored = await history(session, node.url, cid)
            # Gap-free, and every acknowledged append is there with its content.
            assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
            texts = {m["seq"]: m["parts"][0]["text"] for m in stored}
            for _, seq, text in (a for a in acked if a[0] == cid):
                assert texts.get(seq) == text, (cid, seq)


async def test_kill_9_loses_no_acknowledged_append(node_factory: NodeFactory) -> None:
    node = node_factory()
    node.start()
    await node.wait_ready()
    acked: list[tuple[str, int, str]] = []
    await _run_writers_then(node, node.kill, acked)
    assert len(acked) >= 300
    node.start()
    await node.wait_ready()
    await _check_acked_survived(node, acked)


async def test_sigterm_drains_and_exits_0(node_factory: NodeFactory) -> None:
    node = node_factory()
    node.start()
    await node.wait_ready()
    acked: list[tuple[str, int, str]] = []
    bad_replies = await _run_writers_then(node, lambda: node.signal(signal.SIGTERM), acked)
    # Requests the node accepted were answered in full; none failed.
    assert sum(bad_replies) == 0
    assert await node.wait_exit(10) == 0
    assert '"type":"server.stopped"' in node.log_text()
    node.start()
    await node.wait_ready()
    await _check_acked_survived(node, acked)


async def test_a_failed_storage_write_stops_the_node_with_exit_1(
    node_factory: NodeFactory,
) -> None:
    """A LevelDB write that fails (here the process may not grow a file past
    1 MB, so the write-ahead log's write fails as on a full disk) stops the
    node with exit code 1 instead of leaving it up, refusing every request.
    Every append it acknowledged is there after a restart."""
    node = node_factory()
    node.start(max_file_bytes=1_000_000)
    await node.wait_ready()
    url = f"{node.url}/v1/conversations/full-disk"
    acked_seq = 0
    refused = None
    async with aiohttp.ClientSession() as session:
        async with session.put(url, json={}) as response:
            assert response.status == 201
        for _ in range(2_000):  # 2 MB of text: well past the limit
            try:
                async with session.post(f"{url}/messages", json={"message": msg("y" * 1000)}) as r:
                    if r.status != 201:
                        refused = (r.status, await r.json())
                        break
                    acked_seq = (await r.json())["seq"]
            except aiohttp.ClientError as exc:  # the node went away mid-request
                refused = (0, {"error": repr(exc)})
                break
    assert refused is not None, "every append succeeded: the file size limit did not bite"
    assert refused[0] in (0, 503), refused
    assert acked_seq > 100
    assert await node.wait_exit(15) == 1
    log = node.log_text()
    assert '"type":"server.failed"' in log, log
    assert "File too large" in log, log
    node.start()
    await node.wait_ready()
    async with aiohttp.ClientSession() as session:
        stored = await history(session, node.url, "full-disk")
    # The refused append may or may not have reached the disk; nothing
    # acknowledged is missing and the seqs have no hole.
    assert [m["seq"] for m in stored] == list(range(1, len(stored) + 1))
    assert acked_seq <= len(stored) <= acked_seq + 1


def _serve_once(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        "PYTHONPATH": str(REPO),
        "PORT": str(free_port()),
        "FASTPACA_BIND": "127.0.0.1",
        "FASTPACA_RAFT_DATA_DIR": str(tmp_path / "data"),
        "FASTPACA_RAFT_GROUPS": "2",
    }
    return subprocess.run(
        [sys.executable, "-m", "fastpaca", "serve"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


def _assert_one_line(done: subprocess.CompletedProcess[str], variable: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0] and "Traceback" not in done.stderr


def test_bad_values_exit_2_with_one_line(tmp_path: Path) -> None:
    _assert_one_line(
        _serve_once(tmp_path, FASTPACA_MAX_BODY_BYTES="lots"), "FASTPACA_MAX_BODY_BYTES"
    )
    _assert_one_line(_serve_once(tmp_path, LOG_LEVEL="chatty"), "LOG_LEVEL")
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    _assert_one_line(
        _serve_once(tmp_path, FASTPACA_RAFT_DATA_DIR=str(a_file)), "FASTPACA_RAFT_DATA_DIR"
    )


def test_port_in_use_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        _assert_one_line(_serve_once(tmp_path, PORT=str(port)), "PORT")


async def test_second_node_on_the_same_data_dir_exits_2(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    node = node_factory()
    node.start()
    await node.wait_ready()
    done = _serve_once(
        tmp_path, FASTPACA_RAFT_DATA_DIR=str(node.data_dir), FASTPACA_RAFT_GROUPS="8"
    )
    _assert_one_line(done, "FASTPACA_RAFT_DATA_DIR")
    assert "cannot open LevelDB" in done.stderr, done.stderr


async def test_another_group_count_on_the_same_data_dir_exits_2(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    """A conversation's group is its id's hash modulo the group count: a
    node restarted with another count would not find its conversations."""
    node = node_factory()  # FASTPACA_RAFT_GROUPS=8
    node.start()
    await node.wait_ready()
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{node.url}/v1/conversations/kept", json={}) as response,
    ):
        assert response.status == 201
    node.signal(signal.SIGTERM)
    assert await node.wait_exit(10) == 0
    done = _serve_once(
        tmp_path, FASTPACA_RAFT_DATA_DIR=str(node.data_dir), FASTPACA_RAFT_GROUPS="4"
    )
    _assert_one_line(done, "FASTPACA_RAFT_GROUPS=4")
    assert "created with 8 groups" in done.stderr, done.stderr
    node.start()  # the right count: all there
    await node.wait_ready()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{node.url}/v1/conversations/kept") as response,
    ):
        assert response.status == 200


async def test_sigterm_waits_for_a_request_still_being_sent(node_factory: NodeFactory) -> None:
    """A request whose body is half sent when SIGTERM arrives still gets its 201."""
    node = node_factory()
    node.start()
    await node.wait_ready()
    async with (
        aiohttp.ClientSession(node.url) as session,
        session.put("/v1/conversations/slow") as response,
    ):
        assert response.status == 201
    body = b'{"message": {"role": "user", "parts": [{"type": "text", "text": "in flight"}]}}'
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    head = (
        f"POST /v1/conversations/slow/messages HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    writer.write(head + body[:20])
    await writer.drain()
    await asyncio.sleep(0.3)
    node.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert node.process is not None and node.process.poll() is None  # still draining
    writer.write(body[20:])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert status_line.startswith(b"HTTP/1.1 201"), status_line
    writer.close()
    assert await node.wait_exit(10) == 0
