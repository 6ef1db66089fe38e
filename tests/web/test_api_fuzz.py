"""Whatever a client sends, the answer is a JSON reply below 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip
message_like = st.fixed_dictionaries(
    {},
    optional={
        "role": json_values,
        "parts": st.lists(
            st.fixed_dictionaries({"type": json_values}, optional={"text": json_values}),
            max_size=3,
        )
        | json_values,
        "metadata": json_values,
        "token_count": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(orjson.dumps),
    st.fixed_dictionaries(
        {},
        optional={
            "message": message_like,
            "messages": st.lists(message_like, max_size=3),
            "if_version": json_values,
            "idempotency_key": json_values,
        },
    ).map(orjson.dumps),
)


async def _check(response: Any) -> None:
    assert response.status < 500, await response.text()
    if response.status != 204:
        body = await response.json()
        if response.status >= 400:
            assert set(body) == {"error", "message"}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, key=st.none() | st.text(max_size=140))
async def test_append_bodies_never_5xx(client: TestClient, body: bytes, key: str | None) -> None:
    await client.put("/v1/conversations/fuzz")
    headers = {"Content-Type": "application/json"}
    if key is not None and key.isprintable() and key.isascii():
        headers["Idempotency-Key"] = key
    await _check(await client.post("/v1/conversations/fuzz/messages", data=body, headers=headers))
    await _check(await client.put("/v1/conversations/fuzz", data=body))


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    conversation_id=st.text(min_size=1, max_size=80),
    query=st.dictionaries(
        st.sampled_from(["limit", "offset", "from", "x"]), st.text(max_size=25), max_size=3
    ),
)
async def test_ids_and_queries_never_5xx(
    client: TestClient, conversation_id: str, query: dict[str, str]
) -> None:
    path = "/v1/conversations/" + quote(conversation_id, safe="", errors="surrogatepass")
    for suffix in ("", "/tail", "/messages"):
        await _check(await client.get(path + suffix, params=query))
