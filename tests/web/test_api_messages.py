"""Contract: appends, idempotency, batches, tail and replay (DESIGN section 1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

URL = "/v1/conversations/c1/messages"


def msg(text: str, **extra: Any) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}], **extra}


@pytest.fixture
async def conv(client: TestClient) -> TestClient:
    assert (await client.put("/v1/conversations/c1")).status == 201
    return client


async def test_append_replies_seq_version_token_count(conv: TestClient) -> None:
    message = {
        "role": "assistant",
        "parts": [
            {"type": "text", "text": "Checking now..."},
            {"type": "tool_call", "name": "lookup", "payload": {"sku": "A-19"}},
        ],
        "token_count": 128,
        "metadata": {"reasoning": "..."},
    }
    response = await conv.post(URL, json={"message": message})
    assert response.status == 201
    assert await response.json() == {"seq": 1, "version": 1, "token_count": 128}
    second = await conv.post(URL, json={"message": msg("x")})
    assert await second.json() == {"seq": 2, "version": 2, "token_count": 0}


async def test_token_count_estimated_from_utf8_text_bytes(conv: TestClient) -> None:
    parts = [
        {"type": "text", "text": "héllo wörld!"},  # 14 bytes
        {"type": "image", "url": "http://x/" + "y" * 100},  # not text: not counted
        {"type": "text", "text": "ab"},  # 2 bytes
    ]
    response = await conv.post(URL, json={"message": {"role": "user", "parts": parts}})
    assert (await response.json())["token_count"] == 4
    stored = await (await conv.get("/v1/conversations/c1/messages")).json()
    assert stored["messages"][0]["token_count"] == 4


async def test_read_shape_of_a_message(conv: TestClient) -> None:
    await conv.post(URL, json={"message": msg("hi", metadata={"k": "v"}, token_count=3)})
    body = await (await conv.get("/v1/conversations/c1/tail")).json()
    assert body == {
        "messages": [
            {
                "seq": 1,
                "role": "user",
                "parts": [{"type": "text", "text": "hi"}],
                "token_count": 3,
                "metadata": {"k": "v"},
                "inserted_at": "2026-02-02T12:00:00Z",
            }
        ]
    }


async def test_if_version_mismatch_is_409_with_current(conv: TestClient) -> None:
    await conv.post(URL, json={"message": msg("a")})
    refused = await conv.post(URL, json={"message": msg("b"), "if_version": 0})
    assert refused.status == 409
    assert await refused.json() == {"error": "conflict", "message": "Version mismatch (current: 1)"}
    accepted = await conv.post(URL, json={"message": msg("b"), "if_version": 1})
    assert accepted.status == 201 and (await accepted.json())["seq"] == 2


async def test_idempotent_retry_returns_original_plus_deduped(conv: TestClient) -> None:
    first = await conv.post(URL, json={"message": msg("a"), "idempotency_key": "req-1"})
    assert await first.json() == {"seq": 1, "version": 1, "token_count": 0}
    retry = await conv.post(URL, json={"message": msg("a"), "idempotency_key": "req-1"})
    assert retry.status == 201
    assert await retry.json() == {"seq": 1, "version": 1, "token_count": 0, "deduped": True}
    record = await (await conv.get("/v1/conversations/c1")).json()
    assert record["last_seq"] == 1 and record["version"] == 1


async def test_idempotency_key_header_is_the_same_key(conv: TestClient) -> None:
    await conv.post(URL, json={"message": msg("a")}, headers={"Idempotency-Key": "h-1"})
    retry = await conv.post(URL, json={"message": msg("a"), "idempotency_key": "h-1"})
    assert (await retry.json())["deduped"] is True
    both_differ = await conv.post(
        URL, json={"message": msg("a"), "idempotency_key": "x"}, headers={"Idempotency-Key": "y"}
    )
    assert both_differ.status == 400


async def test_key_checked_before_if_version(conv: TestClient) -> None:
    body = {"message": msg("a"), "if_version": 0, "idempotency_key": "k"}
    assert (await conv.post(URL, json=body)).status == 201
    retry = await conv.post(URL, json=body)
    assert retry.status == 201 and (await retry.json())["deduped"] is True


async def test_same_key_different_message_is_409(conv: TestClient) -> None:
    await conv.post(URL, json={"message": msg("a"), "idempotency_key": "k"})
    response = await conv.post(URL, json={"message": msg("b"), "idempotency_key": "k"})
    assert response.status == 409
    assert (await response.json())["error"] == "idempotency_conflict"


async def test_batch_is_atomic_with_one_version(conv: TestClient) -> None:
    await conv.post(URL, json={"message": msg("first")})
    response = await conv.post(URL, json={"messages": [msg("a"), msg("bb", token_count=9)]})
    assert response.status == 201
    assert await response.json() == {
        "messages": [
            {"seq": 2, "version": 2, "token_count": 0},
            {"seq": 3, "version": 2, "token_count": 9},
        ]
    }
    refused = await conv.post(URL, json={"messages": [msg("c"), msg("d")], "if_version": 0})
    assert refused.status == 409
    bad_item = await conv.post(URL, json={"messages": [msg("c"), {"role": "user"}]})
    assert bad_item.status == 400
    record = await (await conv.get("/v1/conversations/c1")).json()
    assert (record["last_seq"], record["version"]) == (3, 2)


async def test_batch_dedupe_and_limits(conv: TestClient) -> None:
    body = {"messages": [msg("a"), msg("b")], "idempotency_key": "batch-1"}
    first = await (await conv.post(URL, json=body)).json()
    retry = await (await conv.post(URL, json=body)).json()
    assert retry == {**first, "deduped": True}
    full = await conv.post(URL, json={"messages": [msg(str(i)) for i in range(1000)]})
    assert full.status == 201 and len((await full.json())["messages"]) == 1000
    over = await conv.post(URL, json={"messages": [msg(str(i)) for i in range(1001)]})
    assert over.status == 400 and "1000" in (await over.json())["message"]
    empty = await conv.post(URL, json={"messages": []})
    assert empty.status == 400


async def test_append_to_unknown_is_404(client: TestClient) -> None:
    response = await client.post("/v1/conversations/ghost/messages", json={"message": msg("a")})
    assert response.status == 404
    assert (await response.json())["error"] == "conversation_not_found"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"", "invalid_json"),
        (b"[1]", "invalid_message"),
        (b"{}", "invalid_message"),
        (orjson.dumps({"message": msg("a"), "messages": [msg("b")]}), "invalid_message"),
        (orjson.dumps({"message": "hi"}), "invalid_message"),
        (orjson.dumps({"message": {"role": "", "parts": [{"type": "text"}]}}), "invalid_message"),
        (orjson.dumps({"message": {"role": 5, "parts": [{"type": "text"}]}}), "invalid_message"),
        (orjson.dumps({"message": {"role": "u", "parts": []}}), "invalid_message"),
        (
            orjson.dumps({"message": {"role": "u", "parts": [{"text": "no type"}]}}),
            "invalid_message",
        ),
        (orjson.dumps({"message": {"role": "u", "parts": [{"type": 1}]}}), "invalid_message"),
        (orjson.dumps({"message": {"role": "u", "parts": ["x"]}}), "invalid_message"),
        (orjson.dumps({"message": msg("a", metadata=[])}), "invalid_message"),
        (orjson.dumps({"message": msg("a", token_count=-1)}), "invalid_message"),
        (orjson.dumps({"message": msg("a", token_count=1.5)}), "invalid_message"),
        (orjson.dumps({"message": msg("a", token_count=True)}), "invalid_message"),
        (orjson.dumps({"message": msg("a", token_count="3")}), "invalid_message"),
        (orjson.dumps({"message": msg("a", colour="red")}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "if_version": "1"}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "if_version": -1}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "if_version": 0.5}), "invalid_message"),
        # Past 2^53 a float names no single integer: a guard must not round.
        (orjson.dumps({"message": msg("a"), "if_version": 2.0**53 + 2}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "idempotency_key": 7}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "idempotency_key": ""}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "idempotency_key": "k" * 129}), "invalid_message"),
        (orjson.dumps({"message": msg("a"), "extra": 1}), "invalid_message"),
    ],
)
async def test_bad_append_bodies_are_400_naming_the_problem(
    conv: TestClient, body: bytes, code: str
) -> None:
    response = await conv.post(URL, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    reply = await response.json()
    assert reply["error"] == code and reply["message"]


async def test_integral_floats_are_the_integers_json_schema_says_they_are(
    conv: TestClient,
) -> None:
    """JSON has only numbers, and the OpenAPI document's ``integer`` (JSON
    Schema) admits ``3.0``: a client that computed a count in floating point
    is not refused, and what is stored and answered is the integer."""
    first = await conv.post(URL, json={"message": msg("a", token_count=3.0)})
    assert first.status == 201
    assert await first.read() == b'{"seq":1,"version":1,"token_count":3}'
    guarded = await conv.post(URL, json={"message": msg("b"), "if_version": 1.0})
    assert guarded.status == 201 and (await guarded.json())["version"] == 2
    stale = await conv.post(URL, json={"message": msg("c"), "if_version": 1.0})
    assert stale.status == 409
    stored = await (await conv.get("/v1/conversations/c1/messages?from=1")).read()
    assert orjson.loads(stored)["messages"][0]["token_count"] == 3
    assert b"3.0" not in stored  # stored as the integer, not the float


async def test_key_of_128_bytes_is_accepted(conv: TestClient) -> None:
    response = await conv.post(URL, json={"message": msg("a"), "idempotency_key": "é" * 64})
    assert response.status == 201


async def test_body_over_the_limit_is_413(make_node: Any) -> None:
    client = await make_node(FASTPACA_MAX_BODY_BYTES=2048)
    await client.put("/v1/conversations/c1")
    big = {"message": msg("x" * 4096)}
    response = await client.post(URL, json=big)
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"
    small = await client.post(URL, json={"message": msg("x" * 1000)})
    assert small.status == 201


async def _in_pieces(body: bytes, piece: int = 700) -> AsyncIterator[bytes]:
    """The body as a chunked upload whose pieces arrive apart: the handler
    starts before the whole body is there."""
    for start in range(0, len(body), piece):
        yield body[start : start + piece]
        await asyncio.sleep(0.01)


async def test_a_body_that_arrives_in_pieces_is_read_whole_and_limited(make_node: Any) -> None:
    client = await make_node(FASTPACA_MAX_BODY_BYTES=2048)
    await client.put("/v1/conversations/c1")
    headers = {"Content-Type": "application/json"}
    whole = orjson.dumps({"message": msg("y" * 1500)})
    response = await client.post(URL, data=_in_pieces(whole), headers=headers)
    assert response.status == 201
    tail = await (await client.get("/v1/conversations/c1/tail")).json()
    assert tail["messages"][-1]["parts"][0]["text"] == "y" * 1500
    too_big = orjson.dumps({"message": msg("z" * 4096)})
    response = await client.post(URL, data=_in_pieces(too_big), headers=headers)
    assert response.status == 413
    assert (await response.json())["error"] == "payload_too_large"


async def test_tail_pages_newest_first_in_chronological_order(conv: TestClient) -> None:
    await conv.post(URL, json={"messages": [msg(str(n)) for n in range(1, 11)]})

    async def seqs(query: str) -> list[int]:
        response = await conv.get(f"/v1/conversations/c1/tail{query}")
        assert response.status == 200
        return [m["seq"] for m in (await response.json())["messages"]]

    assert await seqs("") == list(range(1, 11))
    assert await seqs("?limit=3") == [8, 9, 10]
    assert await seqs("?limit=3&offset=3") == [5, 6, 7]
    assert await seqs("?limit=3&offset=9") == [1]
    assert await seqs("?limit=3&offset=10") == []
    assert await seqs("?limit=1000&offset=0") == list(range(1, 11))


async def test_replay_from_seq_ascending(conv: TestClient) -> None:
    await conv.post(URL, json={"messages": [msg(str(n)) for n in range(1, 11)]})

    async def seqs(query: str) -> list[int]:
        response = await conv.get(f"/v1/conversations/c1/messages{query}")
        assert response.status == 200
        return [m["seq"] for m in (await response.json())["messages"]]

    assert await seqs("") == list(range(1, 11))
    assert await seqs("?from=4&limit=3") == [4, 5, 6]
    assert await seqs("?from=0&limit=2") == [1, 2]
    assert await seqs("?from=10") == [10]
    assert await seqs("?from=11") == []
    assert await seqs("?from=99999999999") == []


@pytest.mark.parametrize(
    "query",
    [
        "/tail?limit=0",
        "/tail?limit=1001",
        "/tail?limit=-1",
        "/tail?limit=abc",
        "/tail?limit=1.5",
        "/tail?limit=",
        "/tail?offset=-1",
        "/tail?offset=x",
        "/messages?from=-1",
        "/messages?from=1e3",
        "/messages?limit=0",
        "/messages?limit=5000",
        "/messages?from=99999999999999999999999",
    ],
)
async def test_bad_query_parameters_are_400(conv: TestClient, query: str) -> None:
    response = await conv.get("/v1/conversations/c1" + query)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_query"


async def test_reads_of_unknown_conversation_are_404(client: TestClient) -> None:
    for path in ("/v1/conversations/ghost/tail", "/v1/conversations/ghost/messages"):
        response = await client.get(path)
        assert response.status == 404
        assert (await response.json())["error"] == "conversation_not_found"


async def test_an_acknowledged_append_reaches_a_stream_subscriber(client: TestClient) -> None:
    from fastpaca.app import BUS_KEY

    bus = client.app[BUS_KEY]
    events: list[bytes] = []
    bus.subscribe("streamed", lambda event: events.append(event.payload))
    assert (await client.put("/v1/conversations/streamed", json={})).status == 201
    resp = await client.post(
        "/v1/conversations/streamed/messages",
        json={"message": {"role": "user", "parts": [{"type": "text", "text": "hello"}]}},
    )
    assert resp.status == 201
    assert (await client.delete("/v1/conversations/streamed")).status == 204
    decoded = [orjson.loads(payload) for payload in events]
    assert [event["type"] for event in decoded] == ["message", "tombstone"]
    assert decoded[0]["seq"] == 1 and decoded[0]["message"]["role"] == "user"
