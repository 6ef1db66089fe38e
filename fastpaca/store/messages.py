"""A new message as the proposer prepares it: token estimate, bytes, digest.

Everything time- or input-dependent about an append is decided here, on the
proposing node, and carried in the command, so the state machine's apply stays
deterministic. This module validates nothing (``web/schemas.py`` did) and
touches no storage.

Values here are immutable by convention, not ``frozen``: they are built on
every append, and a frozen slots dataclass costs ~2.5x as much to build
(``object.__setattr__`` per field). Never assign to a field once built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from fastpaca.store.commands import AppendMessages
from fastpaca.store.state import format_timestamp

__all__ = [
    "NewMessage",
    "PreparedMessage",
    "build_append",
    "estimate_tokens",
    "prepare_messages",
    "request_digest",
]


@dataclass(slots=True, kw_only=True)
class NewMessage:
    """A validated message from a client. ``token_count`` None: estimate it."""

    role: str
    parts: Sequence[dict[str, Any]]
    metadata: dict[str, Any]
    token_count: int | None = None


@dataclass(slots=True, kw_only=True)
class PreparedMessage:
    role: str
    token_count: int
    canonical: bytes
    """JSON object of role, parts, metadata and token_count, keys sorted: the
    identity of the message for idempotency."""
    stored: bytes
    """``canonical`` plus ``inserted_at``: the bytes the state machine stores."""


def estimate_tokens(parts: Sequence[dict[str, Any]]) -> int:
    """UTF-8 bytes of the text parts divided by 4 (DESIGN section 1)."""
    text_bytes = 0
    for part in parts:
        text = part.get("text")
        if part.get("type") == "text" and isinstance(text, str):
            text_bytes += len(text.encode())
    return text_bytes // 4


def prepare_messages(messages: Sequence[NewMessage], *, now_ms: int) -> list[PreparedMessage]:
    inserted = b'{"inserted_at":"' + format_timestamp(now_ms).encode() + b'",'
    prepared = []
    for message in messages:
        tokens = message.token_count
        if tokens is None:
            tokens = estimate_tokens(message.parts)
        canonical = orjson.dumps(
            {
                "metadata": message.metadata,
                "parts": message.parts,
                "role": message.role,
                "token_count": tokens,
            },
            option=orjson.OPT_SORT_KEYS,
        )
        prepared.append(
            PreparedMessage(
                role=message.role,
                token_count=tokens,
                canonical=canonical,
                stored=inserted + canonical[1:],
            )
        )
    return prepared


def request_digest(messages: Sequence[PreparedMessage], *, is_batch: bool) -> bytes:
    """16-byte digest of the request's messages; a single append and a batch
    of one are different requests."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(b"B" if is_batch else b"1")
    for message in messages:
        digest.update(len(message.canonical).to_bytes(4, "big"))
        digest.update(message.canonical)
    return digest.digest()


def build_append(
    conversation_id: str,
    messages: Sequence[NewMessage],
    *,
    now_ms: int,
    is_batch: bool,
    if_version: int | None = None,
    idempotency_key: str | None = None,
) -> tuple[AppendMessages, list[PreparedMessage]]:
    """The command for one append request, and its prepared messages."""
    prepared = prepare_messages(messages, now_ms=now_ms)
    command = AppendMessages(
        conversation_id=conversation_id,
        messages=tuple(message.stored for message in prepared),
        token_counts=tuple(message.token_count for message in prepared),
        # Only a keyed append is ever compared with a retry: skip the hash otherwise.
        request_digest=(
            b"" if idempotency_key is None else request_digest(prepared, is_batch=is_batch)
        ),
        now_ms=now_ms,
        is_batch=is_batch,
        if_version=if_version,
        idempotency_key=idempotency_key,
    )
    return command, prepared
