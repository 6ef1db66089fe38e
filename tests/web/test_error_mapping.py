"""The one error table: every domain error's status, code and shape."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from fastpaca.errors import (
    ConversationNotFound,
    ConversationTombstoned,
    IdempotencyConflict,
    LeadershipLost,
    NotLeader,
    Overloaded,
    ProposalDropped,
    ProposalTimeout,
    SequenceConflict,
    Unavailable,
    ValidationError,
)
from fastpaca.web.errors import error_middleware

CASES: list[tuple[Exception, int, str]] = [
    (ValidationError("invalid_query", "limit must be..."), 400, "invalid_query"),
    (ConversationNotFound("c"), 404, "conversation_not_found"),
    (SequenceConflict(84), 409, "conflict"),
    (IdempotencyConflict("k"), 409, "idempotency_conflict"),
    (ConversationTombstoned("c"), 410, "conversation_tombstoned"),
    (Overloaded("busy"), 429, "rate_limited"),
    (Unavailable("no quorum", retry_after_s=3), 503, "unavailable"),
    (NotLeader(1, None), 503, "unavailable"),
    (LeadershipLost(1, "n2"), 503, "unavailable"),
    (ProposalDropped("x"), 503, "unavailable"),
    (ProposalTimeout("x"), 503, "unavailable"),
    (RuntimeError("secret detail /etc/passwd"), 500, "internal"),
]


@pytest.fixture
async def raising_client() -> TestClient:
    async def handler(request: web.Request) -> web.Response:
        raise CASES[int(request.match_info["n"])][0]

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/{n}", handler)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.mark.parametrize("n", range(len(CASES)))
async def test_each_error_maps_once(raising_client: TestClient, n: int) -> None:
    error, status, code = CASES[n]
    response = await raising_client.get(f"/{n}")
    assert response.status == status
    body = await response.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    if status == 503:
        expected = "3" if isinstance(error, Unavailable) else "1"
        assert response.headers["Retry-After"] == expected
    if status == 409 and code == "conflict":
        assert body["message"] == "Version mismatch (current: 84)"
    if status == 500:
        # A bug never leaks its details or a stack trace to the client.
        assert body["message"] == "Internal server error"
        assert "secret" not in await response.text()
