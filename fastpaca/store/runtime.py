"""The conversation API of one node: placement, propose, await, read.

Owns the path from a validated request to a result: the conversation's group
(a stable hash), the command carrying every time-dependent decision, the
proposal through the Raft engine and the translation of the state machine's
refusals into the domain errors of ``fastpaca/errors.py``. Reads pass a
linearizable read barrier first, then read LevelDB directly; with the archive
on, the part of a page the state machine trimmed is read back from it
(DESIGN section 1). It knows nothing of HTTP and decides nothing the state
machine decides.

Retries: a proposal the engine refused outright (``NotLeader``,
``ProposalDropped``) never entered the log, so it is retried until the request
deadline. After ``LeadershipLost`` or ``ProposalTimeout`` the outcome is
unknown; only commands whose repetition is harmless are retried (appends with
an idempotency key, upserts, tombstones). An append without a key answers
``Unavailable`` instead of risking a duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import orjson

from fastpaca.cluster.placement import group_for_conversation
from fastpaca.errors import (
    ConversationNotFound,
    ConversationTombstoned,
    IdempotencyConflict,
    InvariantViolation,
    LeadershipLost,
    NotLeader,
    ProposalDropped,
    ProposalTimeout,
    SequenceConflict,
    Unavailable,
)
from fastpaca.store.commands import (
    AppendMessages,
    Command,
    TombstoneConversation,
    UpsertConversation,
    encode_command,
)
from fastpaca.store.messages import NewMessage, PreparedMessage, build_append
from fastpaca.store.reads import (
    ConversationView,
    StoredMessage,
    StoreReader,
    replay_bounds,
    tail_bounds,
)
from fastpaca.store.results import (
    AppendApplied,
    ConversationApplied,
    Rejected,
    RejectReason,
    TombstoneApplied,
)

__all__ = [
    "AppendObserver",
    "ArchiveReader",
    "ConversationRuntime",
    "RaftEngine",
    "wall_clock_ms",
]

_RETRY_PAUSE_S = 0.02
_log = logging.getLogger(__name__)


class RaftEngine(Protocol):
    """The part of ``raft.driver.RaftDriver`` the runtime proposes and reads through."""

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float) -> Any: ...

    async def read_barrier(self, group_id: int, *, timeout_s: float) -> None: ...


class AppendObserver(Protocol):
    """Told about every append this node acknowledged (metrics)."""

    def appended(self, messages: Sequence[PreparedMessage]) -> None: ...


class ArchiveReader(Protocol):
    """Where messages trimmed from the Raft state are read back from."""

    async def fetch(self, conversation_id: str, lo_seq: int, hi_seq: int) -> list[StoredMessage]:
        """Archived messages with ``lo_seq <= seq <= hi_seq``, ascending.
        Raises ``Unavailable`` when the archive cannot answer."""
        ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ConversationRuntime:
    """The conversation API of a node whose groups are all local (the
    ``store.service.ConversationService`` of a node running alone). Every
    method raises the domain errors of ``fastpaca/errors.py``; ``Unavailable``
    once the request deadline passes without a leader."""

    def __init__(
        self,
        *,
        engine: RaftEngine,
        reader: StoreReader,
        group_count: int,
        request_timeout_s: float,
        clock_ms: Callable[[], int] = wall_clock_ms,
        observer: AppendObserver | None = None,
        archive: ArchiveReader | None = None,
    ) -> None:
        self._engine = engine
        self._reader = reader
        self._group_count = group_count
        self._timeout_s = request_timeout_s
        self._clock_ms = clock_ms
        self._observer = observer
        self._archive = archive

    def group_of(self, conversation_id: str) -> int:
        return group_for_conversation(conversation_id, self._group_count)

    async def upsert(
        self,
        conversation_id: str,
        metadata: dict[str, Any] | None,
        *,
        timeout_s: float | None = None,
    ) -> ConversationApplied:
        """Create, or update (metadata given: replaced; omitted: kept)."""
        meta = None if metadata is None else orjson.dumps(metadata)
        command = UpsertConversation(
            conversation_id=conversation_id, metadata_json=meta, now_ms=self._clock_ms()
        )
        result = await self._propose(conversation_id, command, timeout_s)
        if not isinstance(result, ConversationApplied):
            raise InvariantViolation(f"upsert answered with {result!r}")
        return result

    async def tombstone(self, conversation_id: str, *, timeout_s: float | None = None) -> None:
        command = TombstoneConversation(conversation_id=conversation_id, now_ms=self._clock_ms())
        result = await self._propose(conversation_id, command, timeout_s)
        if not isinstance(result, TombstoneApplied):
            raise InvariantViolation(f"tombstone answered with {result!r}")
        _log.info(
            "conversation tombstoned",
            extra={"type": "conversation.tombstoned", "conversation_id": conversation_id},
        )

    async def append(
        self,
        conversation_id: str,
        messages: Sequence[NewMessage],
        *,
        is_batch: bool,
        if_version: int | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
    ) -> AppendApplied:
        """``timeout_s`` (default: the request timeout) bounds the whole call,
        retries included; past it, ``Unavailable``. A caller with its own
        deadline passes what is left of it rather than wrapping the call in
        ``asyncio.timeout`` (a timer and a cancellation per append)."""
        command, prepared = build_append(
            conversation_id,
            messages,
            now_ms=self._clock_ms(),
            is_batch=is_batch,
            if_version=if_version,
            idempotency_key=idempotency_key,
        )
        result = await self._propose(conversation_id, command, timeout_s)
        if not isinstance(result, AppendApplied):
            raise InvariantViolation(f"append answered with {result!r}")
        if not result.deduped and self._observer is not None:
            self._observer.appended(prepared)
        if _log.isEnabledFor(logging.DEBUG):  # per append: only when asked for
            _log.debug(
                "appended",
                extra={
                    "type": "conversation.appended",
                    "conversation_id": conversation_id,
                    "seq": result.items[0].seq,
                    "count": len(result.items),
                    "version": result.items[0].version,
                    "deduped": result.deduped,
                },
            )
        return result

    async def get(self, conversation_id: str) -> ConversationView:
        group_id = await self._barrier(conversation_id)
        view = self._reader.conversation(group_id, conversation_id)
        if view is None:
            raise ConversationNotFound(f"Conversation {conversation_id!r} not found")
        return view

    async def tail(self, conversation_id: str, *, limit: int, offset: int) -> list[StoredMessage]:
        group_id, last_seq = await self._last_seq(conversation_id)
        page = self._reader.tail(group_id, conversation_id, last_seq, limit=limit, offset=offset)
        if self._archive is None:
            return page
        lo_seq, hi_seq = tail_bounds(last_seq, limit=limit, offset=offset)
        return await self._read_through(conversation_id, page, lo_seq, hi_seq)

    async def replay(
        self, conversation_id: str, *, from_seq: int, limit: int
    ) -> list[StoredMessage]:
        group_id, last_seq = await self._last_seq(conversation_id)
        page = self._reader.replay(
            group_id, conversation_id, last_seq, from_seq=from_seq, limit=limit
        )
        if self._archive is None:
            return page
        lo_seq, hi_seq = replay_bounds(last_seq, from_seq=from_seq, limit=limit)
        return await self._read_through(conversation_id, page, lo_seq, hi_seq)

    async def _read_through(
        self, conversation_id: str, page: list[StoredMessage], lo_seq: int, hi_seq: int
    ) -> list[StoredMessage]:
        """``page`` completed with the archived messages it lacks at its start.

        Trimming removes a prefix and only below ``archived_seq``, so what
        LevelDB lacks of ``[lo_seq, hi_seq]`` is exactly ``[lo_seq, first
        local seq)``, and the archive held it before it was trimmed. A page
        that LevelDB answers whole costs nothing extra."""
        assert self._archive is not None
        first_local = page[0].seq if page else hi_seq + 1
        if first_local <= lo_seq:
            return page
        older = await self._archive.fetch(conversation_id, lo_seq, first_local - 1)
        expected = first_local - lo_seq
        if len(older) != expected or (older and older[0].seq != lo_seq):
            _log.error(
                "archive is missing trimmed messages",
                extra={"type": "archive.missing_rows", "conversation_id": conversation_id,
                       "seq": lo_seq, "expected": expected, "found": len(older)},
            )  # fmt: skip
            raise Unavailable(
                f"messages {lo_seq}..{first_local - 1} of {conversation_id!r} were trimmed "
                "and the archive does not return them"
            )
        return older + page

    async def _last_seq(self, conversation_id: str) -> tuple[int, int]:
        """The conversation's group and last seq, after the read barrier
        (message reads need no metadata: one LevelDB get, not two)."""
        group_id = await self._barrier(conversation_id)
        state = self._reader.state(group_id, conversation_id)
        if state is None:
            raise ConversationNotFound(f"Conversation {conversation_id!r} not found")
        return group_id, state.last_seq

    async def _barrier(self, conversation_id: str) -> int:
        group_id = self.group_of(conversation_id)
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise Unavailable(f"no leader for group {group_id} in time")
            try:
                await self._engine.read_barrier(group_id, timeout_s=remaining)
                return group_id
            except (NotLeader, ProposalDropped, LeadershipLost):
                await asyncio.sleep(_RETRY_PAUSE_S)
            except ProposalTimeout as exc:
                raise Unavailable(f"read of group {group_id} timed out") from exc

    async def _propose(
        self, conversation_id: str, command: Command, timeout_s: float | None = None
    ) -> Any:
        group_id = self.group_of(conversation_id)
        data = encode_command(command)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout_s if timeout_s is None else timeout_s)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"no leader for group {group_id} in time")
            try:
                result = await self._engine.propose(group_id, data, timeout_s=remaining)
            except (NotLeader, ProposalDropped):
                await asyncio.sleep(_RETRY_PAUSE_S)
                continue
            except (LeadershipLost, ProposalTimeout) as exc:
                if _is_safe_to_repeat(command):
                    await asyncio.sleep(_RETRY_PAUSE_S)
                    continue
                raise Unavailable(
                    "the write's outcome is unknown (leader change or timeout); "
                    "retry with an idempotency key"
                ) from exc
            if isinstance(result, Rejected):
                raise _domain_error(conversation_id, result)
            return result


def _is_safe_to_repeat(command: Command) -> bool:
    if isinstance(command, AppendMessages):
        return command.idempotency_key is not None
    return True


def _domain_error(conversation_id: str, rejected: Rejected) -> Exception:
    match rejected.reason:
        case RejectReason.NOT_FOUND:
            return ConversationNotFound(f"Conversation {conversation_id!r} not found")
        case RejectReason.TOMBSTONED:
            return ConversationTombstoned(f"Conversation {conversation_id!r} is tombstoned")
        case RejectReason.VERSION_MISMATCH:
            return SequenceConflict(rejected.current_version)
        case RejectReason.IDEMPOTENCY_CONFLICT:
            return IdempotencyConflict("Idempotency key was already used with a different message")
        case RejectReason.BAD_COMMAND:
            return InvariantViolation(f"state machine refused a command: {rejected.detail}")
