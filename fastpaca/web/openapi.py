"""The OpenAPI 3.1 description of the public API, served at /v1/openapi.json.

Owns the document only; ``tests/web/test_openapi.py`` checks that its paths and
methods are exactly the router's, so it cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import orjson

from fastpaca.version import __version__
from fastpaca.web.schemas import (
    BATCH_MESSAGES_MAX,
    CONVERSATION_ID_BYTES_MAX,
    IDEMPOTENCY_KEY_BYTES_MAX,
    PAGE_LIMIT_MAX,
    SEQ_MAX,
    TOKEN_COUNT_MAX,
    VERSION_MAX,
)

__all__ = ["openapi_document", "openapi_json"]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _reply(description: str, schema: str | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"description": description}
    if schema is not None:
        reply["content"] = {"application/json": {"schema": _ref(schema)}}
    return reply


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid input (invalid_message, invalid_metadata, invalid_query, invalid_json, "
        "invalid_conversation_id)",
        404: "Unknown conversation (conversation_not_found)",
        409: "Version guard failed (conflict) or idempotency key reused (idempotency_conflict)",
        410: "Conversation is tombstoned (conversation_tombstoned)",
        413: "Body over FASTPACA_MAX_BODY_BYTES (payload_too_large)",
        429: "Per-node rate limit (rate_limited)",
        503: "No quorum or no leader in time (unavailable); see Retry-After",
    }
    return {str(status): _reply(text[status], "Error") for status in statuses}


CONVERSATION_ID_PATTERN = (
    "^[^/\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]+$"
)
"""The id's characters as a pattern (ECMA-262, as JSON Schema reads it):
anything but ``/``, the control characters and what Python's
``str.isspace`` calls whitespace, the rule ``parse_conversation_id``
applies. The byte length (at most 256 bytes of UTF-8) has no JSON Schema
form; the description says it."""

_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": f"1-{CONVERSATION_ID_BYTES_MAX} bytes of UTF-8; no '/', whitespace or "
    "control characters (percent-encode in the path)",
    "schema": {"type": "string", "minLength": 1, "pattern": CONVERSATION_ID_PATTERN},
}


def _query(name: str, default: int, minimum: int, maximum: int | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer", "default": default, "minimum": minimum}
    if maximum is not None:
        schema["maximum"] = maximum
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _paths() -> dict[str, Any]:
    conversation = "/v1/conversations/{id}"
    common = [503]
    return {
        conversation: {
            "parameters": [_ID_PARAM],
            "put": {
                "summary": "Create or update a conversation",
                "requestBody": {
                    "required": False,
                    "content": {"application/json": {"schema": _ref("UpsertConversation")}},
                },
                "responses": {
                    "200": _reply("Updated", "Conversation"),
                    "201": _reply("Created", "Conversation"),
                    **_errors(400, 410, 413, 429, *common),
                },
            },
            "get": {
                "summary": "Read a conversation (tombstoned ones too)",
                "responses": {
                    "200": _reply("The record", "Conversation"),
                    **_errors(400, 404, 429, *common),
                },
            },
            "delete": {
                "summary": "Tombstone a conversation (permanent; repeat is 204)",
                "responses": {"204": _reply("Tombstoned"), **_errors(400, 404, 429, *common)},
            },
        },
        conversation + "/messages": {
            "parameters": [_ID_PARAM],
            "post": {
                "summary": "Append one message, or a batch atomically",
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": IDEMPOTENCY_KEY_BYTES_MAX},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("AppendRequest")}},
                },
                "responses": {
                    "201": {
                        "description": "Appended (or deduplicated retry, with deduped: true)",
                        "content": {
                            "application/json": {
                                "schema": {"oneOf": [_ref("AppendReply"), _ref("BatchAppendReply")]}
                            }
                        },
                    },
                    **_errors(400, 404, 409, 410, 413, 429, *common),
                },
            },
            "get": {
                "summary": "Replay: messages with seq >= from, ascending",
                "parameters": [
                    _query("from", 0, 0, SEQ_MAX),
                    _query("limit", 100, 1, PAGE_LIMIT_MAX),
                ],
                "responses": {
                    "200": _reply("A page", "MessagePage"),
                    **_errors(400, 404, 429, *common),
                },
            },
        },
        conversation + "/tail": {
            "parameters": [_ID_PARAM],
            "get": {
                "summary": "Newest-first paging, each page in chronological order",
                "parameters": [
                    _query("limit", 100, 1, PAGE_LIMIT_MAX),
                    _query("offset", 0, 0, SEQ_MAX),
                ],
                "responses": {
                    "200": _reply("A page", "MessagePage"),
                    **_errors(400, 404, 429, *common),
                },
            },
        },
        "/health/live": {
            "get": {"summary": "Liveness", "responses": {"200": _reply("Serving", "Health")}}
        },
        "/health/ready": {
            "get": {
                "summary": "Readiness: every hosted Raft group has a leader",
                "responses": {
                    "200": _reply("Ready", "Health"),
                    "503": _reply("Not ready", "Health"),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}
                },
            }
        },
    }


def _schemas() -> dict[str, Any]:
    obj = {"type": "object"}
    item: dict[str, Any] = {
        "type": "object",
        "required": ["seq", "version", "token_count"],
        "properties": {
            "seq": {"type": "integer"},
            "version": {"type": "integer"},
            "token_count": {"type": "integer"},
        },
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "message"],
            "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
        },
        "UpsertConversation": {
            "type": "object",
            "properties": {"metadata": obj},
            "additionalProperties": False,
        },
        "Conversation": {
            "type": "object",
            "required": [
                "id",
                "version",
                "tombstoned",
                "last_seq",
                "archived_seq",
                "metadata",
                "created_at",
                "updated_at",
            ],
            "properties": {
                "id": {"type": "string"},
                "version": {"type": "integer"},
                "tombstoned": {"type": "boolean"},
                "last_seq": {"type": "integer"},
                "archived_seq": {"type": "integer"},
                "metadata": obj,
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
        "Part": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"type": "string"}},
        },
        "NewMessage": {
            "type": "object",
            "required": ["role", "parts"],
            "additionalProperties": False,
            "properties": {
                "role": {"type": "string", "minLength": 1},
                "parts": {"type": "array", "minItems": 1, "items": _ref("Part")},
                "metadata": obj,
                "token_count": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": TOKEN_COUNT_MAX,
                    "description": "Estimated (UTF-8 bytes of text parts / 4) when omitted",
                },
            },
        },
        "AppendRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "message": _ref("NewMessage"),
                "messages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": BATCH_MESSAGES_MAX,
                    "items": _ref("NewMessage"),
                },
                "if_version": {"type": "integer", "minimum": 0, "maximum": VERSION_MAX},
                "idempotency_key": {
                    "type": "string",
                    "maxLength": IDEMPOTENCY_KEY_BYTES_MAX,
                    "description": f"At most {IDEMPOTENCY_KEY_BYTES_MAX} bytes of UTF-8. Also "
                    "accepted as the Idempotency-Key header; given both ways, they must be "
                    "equal (else 400 invalid_message)",
                },
            },
            "oneOf": [{"required": ["message"]}, {"required": ["messages"]}],
        },
        "AppendReply": {
            **item,
            "properties": {**item["properties"], "deduped": {"type": "boolean"}},
        },
        "BatchAppendReply": {
            "type": "object",
            "required": ["messages"],
            "properties": {
                "messages": {"type": "array", "items": item},
                "deduped": {"type": "boolean"},
            },
        },
        "Message": {
            "type": "object",
            "required": ["seq", "role", "parts", "token_count", "metadata", "inserted_at"],
            "properties": {
                "seq": {"type": "integer"},
                "role": {"type": "string"},
                "parts": {"type": "array", "items": _ref("Part")},
                "token_count": {"type": "integer"},
                "metadata": obj,
                "inserted_at": {"type": "string", "format": "date-time"},
            },
        },
        "MessagePage": {
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"type": "array", "items": _ref("Message")}},
        },
    }


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fastpaca",
            "version": __version__,
            "description": "Append-only, ordered, replayable message log per conversation. "
            'Errors are {"error": code, "message": text}.',
        },
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }


def openapi_json() -> bytes:
    return orjson.dumps(openapi_document())
