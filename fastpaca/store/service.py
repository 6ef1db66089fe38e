"""The conversation API the HTTP layer calls, as a protocol.

Two implementations: ``store.runtime.ConversationRuntime`` (a node running
alone, every group local) and ``cluster.routing.RoutedConversations`` (a
clustered node, which runs each call at its group's leader). This module only
names the calls; it holds no behaviour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from fastpaca.store.messages import NewMessage
from fastpaca.store.reads import ConversationView, StoredMessage
from fastpaca.store.results import AppendApplied, ConversationApplied

__all__ = ["ConversationService"]


class ConversationService(Protocol):
    def group_of(self, conversation_id: str) -> int: ...

    async def upsert(
        self, conversation_id: str, metadata: dict[str, Any] | None
    ) -> ConversationApplied: ...

    async def tombstone(self, conversation_id: str) -> None: ...

    async def append(
        self,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        is_batch: bool,
        if_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> AppendApplied: ...

    async def get(self, conversation_id: str) -> ConversationView: ...

    async def tail(
        self, conversation_id: str, *, limit: int, offset: int
    ) -> list[StoredMessage]: ...

    async def replay(
        self, conversation_id: str, *, from_seq: int, limit: int
    ) -> list[StoredMessage]: ...
