"""HTTP handlers: parse, call the runtime, serialize. No business logic.

Owns the JSON shapes of replies (DESIGN section 1). Validation lives in
``schemas.py``, error responses in ``errors.py``, the rules in the store.
Stored messages are JSON already, so replies splice their bytes instead of
decoding and re-encoding them.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from fastpaca.observability.health import Readiness
from fastpaca.observability.metrics import CONTENT_TYPE, Metrics
from fastpaca.store.reads import StoredMessage
from fastpaca.store.results import AppendApplied, AppendedItem
from fastpaca.store.service import ConversationService
from fastpaca.store.state import ConversationState, format_timestamp
from fastpaca.web.schemas import (
    PAGE_LIMIT_MAX,
    SEQ_MAX,
    parse_append,
    parse_conversation_id,
    parse_query_int,
    parse_upsert,
)

__all__ = [
    "METRICS_KEY",
    "OPENAPI_KEY",
    "READINESS_KEY",
    "RUNTIME_KEY",
    "append_messages",
    "delete_conversation",
    "get_conversation",
    "health_live",
    "health_ready",
    "metrics",
    "openapi",
    "put_conversation",
    "replay_messages",
    "tail_messages",
]

RUNTIME_KEY: web.AppKey[ConversationService] = web.AppKey("runtime")
METRICS_KEY = web.AppKey("metrics", Metrics)
READINESS_KEY = web.AppKey("readiness", Readiness)
OPENAPI_KEY = web.AppKey("openapi", bytes)

_PATH_ID_INDEX = 3  # "", "v1", "conversations", "{id}", ...


def _json(body: bytes, *, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


async def _read_body(request: web.Request) -> bytes:
    """The whole body. A small one has usually arrived whole by the time the
    handler runs: it is then taken from the buffer at once, where
    ``request.read()`` reads it chunk by chunk into a bytearray and copies
    it (about 3% of an append's CPU). Same limit, same error."""
    content = request.content
    if not content.is_eof():
        return await request.read()
    body = content.read_nowait()
    if len(body) > request.client_max_size:
        raise web.HTTPRequestEntityTooLarge(request.client_max_size)
    return body


def _conversation_id(request: web.Request) -> str:
    # The raw segment, not match_info: it tells "%FF" (bad UTF-8) from "%25FF".
    segment = request.raw_path.split("?", 1)[0].split("/")[_PATH_ID_INDEX]
    return parse_conversation_id(segment)


def _conversation_body(
    conversation_id: str, state: ConversationState, metadata_json: bytes
) -> bytes:
    return orjson.dumps(
        {
            "id": conversation_id,
            "version": state.version,
            "tombstoned": state.tombstoned,
            "last_seq": state.last_seq,
            "archived_seq": state.archived_seq,
            "metadata": orjson.Fragment(metadata_json),
            "created_at": format_timestamp(state.created_ms),
            "updated_at": format_timestamp(state.updated_ms),
        }
    )


def _messages_body(messages: list[StoredMessage]) -> bytes:
    items = b",".join(b'{"seq":%d,%s' % (m.seq, m.body[1:]) for m in messages)
    return b'{"messages":[' + items + b"]}"


def _item(item: AppendedItem) -> dict[str, object]:
    return {"seq": item.seq, "version": item.version, "token_count": item.token_count}


async def put_conversation(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    metadata = parse_upsert(await _read_body(request))
    result = await request.app[RUNTIME_KEY].upsert(conversation_id, metadata)
    body = _conversation_body(conversation_id, result.state, result.metadata_json)
    return _json(body, status=201 if result.created else 200)


async def get_conversation(request: web.Request) -> web.Response:
    view = await request.app[RUNTIME_KEY].get(_conversation_id(request))
    return _json(_conversation_body(view.conversation_id, view.state, view.metadata_json))


async def delete_conversation(request: web.Request) -> web.Response:
    await request.app[RUNTIME_KEY].tombstone(_conversation_id(request))
    return web.Response(status=204)


async def append_messages(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    append = parse_append(await _read_body(request), request.headers.get("Idempotency-Key"))
    result: AppendApplied = await request.app[RUNTIME_KEY].append(
        conversation_id,
        append.messages,
        is_batch=append.is_batch,
        if_version=append.if_version,
        idempotency_key=append.idempotency_key,
    )
    reply: dict[str, object]
    if append.is_batch:
        reply = {"messages": [_item(item) for item in result.items]}
    else:
        reply = _item(result.items[0])
    if result.deduped:
        reply["deduped"] = True
    return _json(orjson.dumps(reply), status=201)


async def tail_messages(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    limit = parse_query_int(request.query, "limit", default=100, lo=1, hi=PAGE_LIMIT_MAX)
    offset = parse_query_int(request.query, "offset", default=0, lo=0, hi=SEQ_MAX)
    messages = await request.app[RUNTIME_KEY].tail(conversation_id, limit=limit, offset=offset)
    return _json(_messages_body(messages))


async def replay_messages(request: web.Request) -> web.Response:
    conversation_id = _conversation_id(request)
    from_seq = parse_query_int(request.query, "from", default=0, lo=0, hi=SEQ_MAX)
    limit = parse_query_int(request.query, "limit", default=100, lo=1, hi=PAGE_LIMIT_MAX)
    messages = await request.app[RUNTIME_KEY].replay(
        conversation_id, from_seq=from_seq, limit=limit
    )
    return _json(_messages_body(messages))


async def health_live(request: web.Request) -> web.Response:
    return _json(b'{"status":"ok"}')


async def health_ready(request: web.Request) -> web.Response:
    report = request.app[READINESS_KEY].report()
    if report.is_ready:
        return _json(b'{"status":"ok"}')
    return _json(orjson.dumps({"status": "starting", "reason": report.reason}), status=503)


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return _json(request.app[OPENAPI_KEY])
