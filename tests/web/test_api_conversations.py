"""Contract: the conversation rows of DESIGN section 1."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from node_harness import FakeClock


async def test_put_creates_with_empty_metadata_and_full_record(client: TestClient) -> None:
    response = await client.put("/v1/conversations/support-123")
    assert response.status == 201
    assert response.content_type == "application/json"
    assert await response.json() == {
        "id": "support-123",
        "version": 0,
        "tombstoned": False,
        "last_seq": 0,
        "archived_seq": 0,
        "metadata": {},
        "created_at": "2026-02-02T12:00:00Z",
        "updated_at": "2026-02-02T12:00:00Z",
    }


async def test_put_again_updates_metadata_replaced_or_kept(
    client: TestClient, clock: FakeClock
) -> None:
    created = await client.put("/v1/conversations/c1", json={"metadata": {"a": 1}})
    assert created.status == 201 and (await created.json())["metadata"] == {"a": 1}
    clock.now_ms += 61_000
    kept = await client.put("/v1/conversations/c1", json={})
    assert kept.status == 200 and (await kept.json())["metadata"] == {"a": 1}
    replaced = await client.put("/v1/conversations/c1", json={"metadata": {"b": [1, 2]}})
    body = await replaced.json()
    assert replaced.status == 200 and body["metadata"] == {"b": [1, 2]}
    assert body["created_at"] == "2026-02-02T12:00:00Z"
    assert body["updated_at"] == "2026-02-02T12:01:01Z"
    fetched = await client.get("/v1/conversations/c1")
    assert fetched.status == 200 and await fetched.json() == body


async def test_get_unknown_is_404(client: TestClient) -> None:
    response = await client.get("/v1/conversations/nope")
    assert response.status == 404
    body = await response.json()
    assert body["error"] == "conversation_not_found" and "nope" in body["message"]


async def test_delete_tombstones_permanently(client: TestClient) -> None:
    await client.put("/v1/conversations/c1")
    await client.post("/v1/conversations/c1/messages", json=_message("hello"))
    first = await client.delete("/v1/conversations/c1")
    assert first.status == 204 and await first.read() == b""
    again = await client.delete("/v1/conversations/c1")
    assert again.status == 204
    # GET still works and says so; reads of messages keep working.
    record = await (await client.get("/v1/conversations/c1")).json()
    assert record["tombstoned"] is True and record["last_seq"] == 1
    tail = await client.get("/v1/conversations/c1/tail")
    assert tail.status == 200 and len((await tail.json())["messages"]) == 1
    replay = await client.get("/v1/conversations/c1/messages")
    assert replay.status == 200 and len((await replay.json())["messages"]) == 1
    # Writes are refused with 410, PUT included.
    put = await client.put("/v1/conversations/c1", json={"metadata": {}})
    assert put.status == 410 and (await put.json())["error"] == "conversation_tombstoned"
    post = await client.post("/v1/conversations/c1/messages", json=_message("late"))
    assert post.status == 410 and (await post.json())["error"] == "conversation_tombstoned"


async def test_delete_unknown_is_404(client: TestClient) -> None:
    response = await client.delete("/v1/conversations/nope")
    assert response.status == 404
    assert (await response.json())["error"] == "conversation_not_found"


async def test_percent_encoded_unicode_id_round_trips(client: TestClient) -> None:
    response = await client.put("/v1/conversations/caf%C3%A9:%E2%9C%93")
    assert response.status == 201
    assert (await response.json())["id"] == "café:✓"
    assert (await client.get("/v1/conversations/caf%C3%A9:%E2%9C%93")).status == 200


async def test_bad_ids_are_400(client: TestClient) -> None:
    long_id = "x" * 257
    for path in (
        "/v1/conversations/a%2Fb",
        "/v1/conversations/a%20b",
        "/v1/conversations/a%09b",
        "/v1/conversations/a%00b",
        "/v1/conversations/a%7Fb",
        "/v1/conversations/%FF",
        "/v1/conversations/a%E2%80%83b",  # EM SPACE
        f"/v1/conversations/{long_id}",
    ):
        for method in ("PUT", "GET", "DELETE"):
            response = await client.request(method, path)
            assert response.status == 400, (method, path)
            assert (await response.json())["error"] == "invalid_conversation_id"
    for path in ("/v1/conversations/a%2Fb/messages", "/v1/conversations/a%20b/tail"):
        response = await client.get(path)
        assert (
            response.status == 400 and (await response.json())["error"] == "invalid_conversation_id"
        )
    # 256 bytes of UTF-8 is the limit, not 256 characters.
    assert (await client.put("/v1/conversations/" + "x" * 256)).status == 201
    assert (await client.put("/v1/conversations/" + "%C3%A9" * 128)).status == 201
    assert (await client.put("/v1/conversations/x" + "%C3%A9" * 128)).status == 400


async def test_bad_put_bodies_are_400(client: TestClient) -> None:
    cases = [
        (b"{not json", "invalid_json"),
        (b"[]", "invalid_metadata"),
        (b'{"metadata": [1]}', "invalid_metadata"),
        (b'{"metadata": "x"}', "invalid_metadata"),
        (b'{"meta": {}}', "invalid_metadata"),
    ]
    for body, code in cases:
        response = await client.put("/v1/conversations/c1", data=body)
        assert response.status == 400, body
        assert (await response.json())["error"] == code, body
    assert (await client.get("/v1/conversations/c1")).status == 404


def _message(text: str) -> dict[str, object]:
    return {"message": {"role": "user", "parts": [{"type": "text", "text": text}]}}
