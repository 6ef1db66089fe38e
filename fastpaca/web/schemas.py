"""Request validation and its limits: bytes and strings in, typed values out.

Owns the rules of DESIGN section 1 for what a client may send (ids, bodies,
query parameters) and says exactly what is wrong when it is not. Every refusal
is a ``ValidationError`` with the DESIGN error code; it never builds an HTTP
response (``web/errors.py`` does) and never touches the store.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import orjson

from fastpaca.errors import ValidationError
from fastpaca.store.messages import NewMessage

__all__ = [
    "BATCH_MESSAGES_MAX",
    "CONVERSATION_ID_BYTES_MAX",
    "IDEMPOTENCY_KEY_BYTES_MAX",
    "PAGE_LIMIT_MAX",
    "SEQ_MAX",
    "TOKEN_COUNT_MAX",
    "VERSION_MAX",
    "AppendRequest",
    "json_int_in",
    "parse_append",
    "parse_conversation_id",
    "parse_query_int",
    "parse_upsert",
]

CONVERSATION_ID_BYTES_MAX = 256
IDEMPOTENCY_KEY_BYTES_MAX = 128
BATCH_MESSAGES_MAX = 1000
PAGE_LIMIT_MAX = 1000
TOKEN_COUNT_MAX = 2**32 - 1
VERSION_MAX = 2**63 - 1
SEQ_MAX = 2**63 - 1
"""The largest ``from``, ``offset`` and stream ``from_seq`` a read accepts (signed 64-bit)."""

# Printable ASCII but '%' (an escape) and '/': such a segment is its own
# decoding and breaks no rule, so most ids skip the general check.
_PLAIN_ID = re.compile(rf"[!-$&-.0-~]{{1,{CONVERSATION_ID_BYTES_MAX}}}")

_APPEND_FIELDS = frozenset({"message", "messages", "if_version", "idempotency_key"})
_MESSAGE_FIELDS = frozenset({"role", "parts", "metadata", "token_count"})


# Not frozen (built per append; immutable by convention): see store/commands.py.
@dataclass(slots=True, kw_only=True)
class AppendRequest:
    messages: list[NewMessage]
    is_batch: bool
    if_version: int | None
    idempotency_key: str | None


def parse_conversation_id(raw_segment: str) -> str:
    """The id from its still percent-encoded path segment: 1-256 bytes of
    UTF-8, no ``/``, no control characters, no whitespace."""
    if _PLAIN_ID.fullmatch(raw_segment) is not None:
        return raw_segment
    try:
        raw = unquote_to_bytes(raw_segment)
        conversation_id = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(
            "invalid_conversation_id", "Conversation id is not valid UTF-8"
        ) from None
    if not 1 <= len(raw) <= CONVERSATION_ID_BYTES_MAX:
        raise ValidationError(
            "invalid_conversation_id",
            f"Conversation id must be 1 to {CONVERSATION_ID_BYTES_MAX} bytes of UTF-8",
        )
    for ch in conversation_id:
        if ch == "/" or ch.isspace() or unicodedata.category(ch) == "Cc":
            raise ValidationError(
                "invalid_conversation_id",
                f"Conversation id must not contain {ch!r} (no '/', whitespace or control characters)",
            )
    return conversation_id


def _load_object(body: bytes, *, code: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationError("invalid_json", f"Body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(code, f"{what} must be a JSON object")
    return value


def parse_upsert(body: bytes) -> dict[str, Any] | None:
    """The new metadata of a PUT, or None to keep it (empty body or no key)."""
    if not body.strip():
        return None
    value = _load_object(body, code="invalid_metadata", what="Body")
    unknown = sorted(set(value) - {"metadata"})
    if unknown:
        raise ValidationError("invalid_metadata", f"Unknown field {unknown[0]!r}")
    if "metadata" not in value:
        return None
    metadata = value["metadata"]
    if not isinstance(metadata, dict):
        raise ValidationError("invalid_metadata", "metadata must be a JSON object")
    return metadata


def parse_append(body: bytes, header_key: str | None) -> AppendRequest:
    value = _load_object(body, code="invalid_message", what="Body")
    if not _APPEND_FIELDS.issuperset(value):
        unknown = sorted(set(value) - _APPEND_FIELDS)
        raise ValidationError("invalid_message", f"Unknown field {unknown[0]!r}")
    if ("message" in value) == ("messages" in value):
        raise ValidationError("invalid_message", "Give exactly one of 'message' or 'messages'")
    if "message" in value:
        messages = [_parse_message(value["message"], "message")]
    else:
        messages = _parse_batch(value["messages"])
    return AppendRequest(
        messages=messages,
        is_batch="messages" in value,
        if_version=_parse_if_version(value.get("if_version")),
        idempotency_key=_parse_idempotency_key(value.get("idempotency_key"), header_key),
    )


def _parse_batch(raw: object) -> list[NewMessage]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError("invalid_message", "messages must be a non-empty array")
    if len(raw) > BATCH_MESSAGES_MAX:
        raise ValidationError(
            "invalid_message",
            f"A batch holds at most {BATCH_MESSAGES_MAX} messages, got {len(raw)}",
        )
    return [_parse_message(item, f"messages[{i}]") for i, item in enumerate(raw)]


def _parse_message(raw: object, where: str) -> NewMessage:
    if not isinstance(raw, dict):
        raise ValidationError("invalid_message", f"{where} must be a JSON object")
    if not _MESSAGE_FIELDS.issuperset(raw):
        unknown = sorted(set(raw) - _MESSAGE_FIELDS)
        raise ValidationError("invalid_message", f"{where}: unknown field {unknown[0]!r}")
    role = raw.get("role")
    if not isinstance(role, str) or not role:
        raise ValidationError("invalid_message", f"{where}.role must be a non-empty string")
    parts = raw.get("parts")
    if not isinstance(parts, list) or not parts:
        raise ValidationError("invalid_message", f"{where}.parts must be a non-empty array")
    for i, part in enumerate(parts):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise ValidationError(
                "invalid_message", f"{where}.parts[{i}] must be an object with a string 'type'"
            )
    metadata = raw.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValidationError("invalid_message", f"{where}.metadata must be a JSON object")
    token_count = raw.get("token_count")
    if token_count is not None:
        token_count = json_int_in(token_count, 0, TOKEN_COUNT_MAX)
        if token_count is None:
            raise ValidationError(
                "invalid_message",
                f"{where}.token_count must be an integer from 0 to {TOKEN_COUNT_MAX}",
            )
    return NewMessage(role=role, parts=parts, metadata=metadata, token_count=token_count)


def _parse_if_version(raw: object) -> int | None:
    if raw is None:
        return None
    version = json_int_in(raw, 0, VERSION_MAX)
    if version is None:
        raise ValidationError("invalid_message", "if_version must be an integer >= 0")
    return version


def _parse_idempotency_key(raw: object, header_key: str | None) -> str | None:
    if raw is not None and header_key is not None and raw != header_key:
        raise ValidationError(
            "invalid_message", "idempotency_key and the Idempotency-Key header differ"
        )
    key = raw if raw is not None else header_key
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key.encode()) <= IDEMPOTENCY_KEY_BYTES_MAX:
        raise ValidationError(
            "invalid_message",
            f"idempotency_key must be a string of 1 to {IDEMPOTENCY_KEY_BYTES_MAX} bytes",
        )
    return key


_EXACT_FLOAT_MAX = 2**53
"""Every integer up to this is exactly one float, and no other float rounds to it."""


def json_int_in(value: object, lo: int, hi: int) -> int | None:
    """``value`` as an integer within ``[lo, hi]``, else None. JSON has only
    numbers, and JSON Schema (so the OpenAPI document) counts ``128.0`` as
    the integer 128: a float with no fraction is taken as that integer, up
    to 2^53, past which a float no longer names one integer exactly."""
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_FLOAT_MAX:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    return None


def parse_query_int(query: Mapping[str, str], name: str, *, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within ``[lo, hi]``; digits only."""
    raw = query.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 20 or not lo <= int(raw) <= hi:
        raise ValidationError("invalid_query", f"{name} must be an integer from {lo} to {hi}")
    return int(raw)
