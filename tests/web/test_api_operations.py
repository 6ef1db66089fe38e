"""Contract: health, metrics, error shapes for the unexpected, 503 and 429."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from node_harness import FAST_DRIVER

from fastpaca.app import NODE_KEY, create_app
from fastpaca.config import Settings
from fastpaca.raft.messages import ConfChange, ConfChangeOp


async def test_health_live_and_ready(client: TestClient) -> None:
    live = await client.get("/health/live")
    assert live.status == 200 and await live.json() == {"status": "ok"}
    ready = await client.get("/health/ready")
    assert ready.status == 200 and await ready.json() == {"status": "ok"}


async def test_metrics_expose_design_series(client: TestClient) -> None:
    await client.put("/v1/conversations/c1")
    message = {"role": "assistant", "parts": [{"type": "text", "text": "x" * 40}]}
    await client.post("/v1/conversations/c1/messages", json={"message": message})
    # The Raft gauges are refreshed once per driver tick (50 ms): scrape until
    # they have caught up with the start-up, as Prometheus would a moment later.
    for _ in range(100):
        response = await client.get("/metrics")
        assert response.status == 200 and response.content_type == "text/plain"
        text = await response.text()
        if "fastpaca_raft_groups_hosted 4.0" in text and "fastpaca_raft_leaders 4.0" in text:
            break
        await asyncio.sleep(0.02)
    assert 'fastpaca_messages_append_total{role="assistant",source="http"} 1.0' in text
    assert 'fastpaca_messages_token_count_bucket{le="16.0"} 1.0' in text
    assert "fastpaca_messages_token_count_sum 10.0" in text
    assert (
        'fastpaca_http_request_duration_seconds_count{method="POST",'
        'route="/v1/conversations/{id}/messages",status="201"} 1.0'
    ) in text
    assert "fastpaca_raft_leaders 4.0" in text
    assert "fastpaca_raft_groups_hosted 4.0" in text
    assert "fastpaca_raft_commit_latency_seconds_count" in text
    synced_writes = re.search(r"^fastpaca_raft_synced_write_seconds_count (\S+)$", text, re.M)
    assert synced_writes is not None and float(synced_writes.group(1)) >= 1
    assert 'fastpaca_raft_proposals_dropped_total{reason="refused"}' in text
    assert "fastpaca_raft_term_changes_total" in text
    for archive_series in (
        "fastpaca_archive_pending_rows",
        "fastpaca_archive_pending_conversations",
        "fastpaca_archive_flush_duration_ms_bucket",
        "fastpaca_archive_attempted_total",
        "fastpaca_archive_inserted_total",
        "fastpaca_archive_bytes_attempted_total",
        "fastpaca_archive_bytes_inserted_total",
        "fastpaca_archive_tail_size",
        "fastpaca_archive_trimmed_total",
    ):
        assert archive_series in text


async def test_unknown_route_and_method_get_json_errors(client: TestClient) -> None:
    missing = await client.get("/v2/nothing")
    assert missing.status == 404 and (await missing.json())["error"] == "not_found"
    wrong = await client.patch("/v1/conversations/c1")
    assert wrong.status == 405 and (await wrong.json())["error"] == "method_not_allowed"
    assert "PUT" in wrong.headers["Allow"]
    # A path holding a newline (found by the fuzz test) is no exception.
    odd = await client.get("/v1/conversations/%0A%7B")
    assert odd.status == 404 and (await odd.json())["error"] == "not_found"
    odd = await client.get("/nothing%0A/at/all")
    assert odd.status == 404 and (await odd.json())["error"] == "not_found"


async def test_rate_limit_gives_429_but_spares_health(make_node: Any) -> None:
    client = await make_node(FASTPACA_RATE_LIMIT_RPS="2")
    responses = [await client.get("/v1/conversations/x") for _ in range(8)]
    statuses = [r.status for r in responses]
    # A burst of one second's worth passes, the rest is refused.
    assert statuses[0] == 404 and statuses[-1] == 429, statuses
    limited = responses[-1]
    assert (await limited.json())["error"] == "rate_limited"
    assert limited.headers["Retry-After"] == "1"
    assert all([(await client.get("/health/live")).status == 200 for _ in range(10)])


async def test_without_quorum_requests_get_503_and_ready_says_why(tmp_path: Path) -> None:
    """Every group gains a second voter that never shows up: the leader loses
    its quorum, steps down (check-quorum), and no group can elect again."""
    settings = Settings(
        FASTPACA_RAFT_DATA_DIR=str(tmp_path / "data"),
        FASTPACA_RAFT_GROUPS=4,
        FASTPACA_REQUEST_TIMEOUT_MS=300,
        NODE_NAME="n1",
    )
    app = create_app(settings, driver_config=FAST_DRIVER)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        deadline = asyncio.get_running_loop().time() + 10
        while (await client.get("/health/ready")).status != 200:
            assert asyncio.get_running_loop().time() < deadline, "never ready"
            await asyncio.sleep(0.05)
        driver = app[NODE_KEY].driver
        for group_id in range(4):
            await driver.change_membership(
                group_id, ConfChange(op=ConfChangeOp.ADD_VOTER, node_id="ghost"), timeout_s=5
            )
        deadline = asyncio.get_running_loop().time() + 10
        while any(driver.leader_of(g) is not None for g in range(4)):
            assert asyncio.get_running_loop().time() < deadline, "a leader kept its group"
            await asyncio.sleep(0.05)
        ready = await client.get("/health/ready")
        assert ready.status == 503
        body = await ready.json()
        assert body["status"] == "starting" and "no leader" in body["reason"]
        for method, path in (("PUT", "/v1/conversations/c1"), ("GET", "/v1/conversations/c1")):
            response = await client.request(method, path)
            assert response.status == 503, (method, path)
            assert (await response.json())["error"] == "unavailable"
            assert int(response.headers["Retry-After"]) >= 1
