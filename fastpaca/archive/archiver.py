"""The archiver: copies the committed messages of the groups this node leads
to Postgres, then acknowledges them through Raft.

Owns what is pending and the flush loop (DESIGN section 4). Every
``FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS`` it finds the conversations with
``seq > archived_seq`` in the groups this node leads, reads their messages
from LevelDB, inserts them in batches of ``FASTPACA_ARCHIVE_BATCH_SIZE`` rows
(``ON CONFLICT DO NOTHING``) and proposes ``AckArchived(conversation,
upto_seq)``; applying that ack moves ``archived_seq`` and trims the Raft state
(``store/fsm.py``). It never writes LevelDB itself.

What is pending is derived from replicated state only. The in-memory set of
dirty conversations is a cache: effects of applied appends add to it, and it
is rebuilt by a scan of the group's conversations whenever this node starts
leading a group (a new term, which also covers start-up and a leadership lost
and regained between two flushes). A crash or a leader change therefore
loses nothing: the next leader finds ``seq > archived_seq`` in its state and
copies again; rows already in Postgres are skipped by their primary key.
Postgres being down only stops the copy: appends never wait for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fastpaca.archive.postgres import (
    ArchiveDataError,
    ArchiveRow,
    ArchiveUnavailable,
    PostgresArchive,
    row_from_stored,
)
from fastpaca.errors import FastpacaError
from fastpaca.observability.metrics import Metrics
from fastpaca.raft.driver import RaftDriver
from fastpaca.store.commands import AckArchived, encode_command
from fastpaca.store.effects import Appended, Effect
from fastpaca.store.reads import StoreReader
from fastpaca.store.results import ArchiveAcked
from fastpaca.store.runtime import RaftEngine

__all__ = ["Archiver", "DriverLeadership", "Leadership"]

_log = logging.getLogger(__name__)

SCAN_YIELD_EVERY = 2_000
"""Conversations read between two yields to the event loop while rebuilding
the pending set of a newly led group, so a large group does not stall requests."""
COLLECT_YIELD_EVERY = 500
"""Conversation states read from LevelDB between two yields while collecting
what is pending (twice per flush, over every dirty conversation): a backlog of
many conversations must not hold the event loop for the whole pass."""


class Leadership(Protocol):
    def led_groups(self) -> dict[int, int]:
        """Group id -> current term, for every group this node leads now."""
        ...


class DriverLeadership:
    """``Leadership`` read from the Raft driver's host (same event loop)."""

    def __init__(self, driver: RaftDriver) -> None:
        self._driver = driver

    def led_groups(self) -> dict[int, int]:
        host = self._driver.host
        return {g: host.core(g).term for g in host.group_ids() if host.is_leader(g)}


@dataclass(slots=True)
class _Pending:
    group_id: int
    conversation_id: str
    next_seq: int
    """The first seq not archived yet (``archived_seq + 1``)."""
    upto_seq: int
    """The last seq to archive in this flush (``last_seq`` when it began)."""


@dataclass(slots=True)
class _Span:
    pending: _Pending
    rows: list[ArchiveRow]

    @property
    def upto_seq(self) -> int:
        return self.rows[-1].seq


class Archiver:
    """One node's archiver. ``on_effects`` is an ``EffectSink``; ``run`` is
    the loop (cancel it to stop); ``flush`` is one pass, for tests."""

    def __init__(
        self,
        *,
        store: PostgresArchive,
        reader: StoreReader,
        engine: RaftEngine,
        leadership: Leadership,
        metrics: Metrics,
        flush_interval_s: float,
        batch_size: int,
        tail_keep: int,
        propose_timeout_s: float,
    ) -> None:
        self._store = store
        self._reader = reader
        self._engine = engine
        self._leadership = leadership
        self._metrics = metrics
        self._interval_s = flush_interval_s
        self._batch_size = batch_size
        self._tail_keep = tail_keep
        self._propose_timeout_s = propose_timeout_s
        self._dirty: dict[int, set[str]] = {}
        self._terms: dict[int, int] = {}
        self._blocked: dict[tuple[int, str], int] = {}
        """Conversations stopped at a row Postgres refuses (its seq), until a new term."""
        self._schema_ready = False
        self._reachable = True
        metrics.archive_tail_size.set(0)

    # --- effects (inside the Raft driver's iteration: must stay cheap) ---------------

    def on_effects(self, group_id: int, effects: Sequence[Effect]) -> None:
        dirty = self._dirty.get(group_id)
        if dirty is None:
            dirty = self._dirty[group_id] = set()
        for effect in effects:
            if type(effect) is Appended:
                dirty.add(effect.conversation_id)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.flush()
                self._set_reachable(None)
            except ArchiveUnavailable as exc:
                self._set_reachable(exc)
            except Exception:
                _log.exception("archive flush failed", extra={"type": "archive.flush_error"})
            await asyncio.sleep(self._interval_s)

    async def ensure_schema(self) -> None:
        """Run the migration once per process. Raises ``ArchiveUnavailable``."""
        if not self._schema_ready:
            await self._store.migrate()
            self._schema_ready = True
            _log.info("archive schema ready", extra={"type": "archive.schema_ready"})

    async def flush(self) -> None:
        """Archive what is pending now; the lag series are updated even when
        Postgres is down. Raises ``ArchiveUnavailable``."""
        await self._refresh_leadership()
        pending = await self._collect_pending()
        if not pending:
            return
        started = time.perf_counter()
        try:
            await self.ensure_schema()
            await self._archive(pending)
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self._metrics.archive_flush_duration_ms.observe(duration_ms)
            task = asyncio.current_task()
            if task is None or not task.cancelling():  # stopping: no second pass
                await self._collect_pending()

    # --- what is pending ----------------------------------------------------------------

    async def _refresh_leadership(self) -> None:
        led = self._leadership.led_groups()
        for group_id in [g for g in self._dirty if g not in led]:
            del self._dirty[group_id]  # effects recorded while following
        self._blocked = {
            key: seq
            for key, seq in self._blocked.items()
            if led.get(key[0]) == self._terms.get(key[0])
        }
        for group_id, term in sorted(led.items()):
            if self._terms.get(group_id) != term:
                found = await self._scan(group_id)
                self._dirty.setdefault(group_id, set()).update(found)
        self._terms = led

    async def _scan(self, group_id: int) -> list[str]:
        """Conversations of the group with messages not archived yet."""
        found = []
        for count, (conversation_id, state) in enumerate(
            self._reader.conversation_states(group_id), 1
        ):
            if state.last_seq > state.archived_seq:
                found.append(conversation_id)
            if count % SCAN_YIELD_EVERY == 0:
                await asyncio.sleep(0)
        return found

    async def _collect_pending(self) -> list[_Pending]:
        """What the led groups still have to archive, oldest backlog first;
        forgets conversations that are done and updates the pending series.
        Yields to the event loop every ``COLLECT_YIELD_EVERY`` reads."""
        pending: list[_Pending] = []
        lags: list[tuple[int, str]] = []
        reads = 0
        for group_id in sorted(self._dirty):
            dirty = self._dirty.get(group_id)
            if dirty is None:  # dropped while we yielded
                continue
            for conversation_id in sorted(dirty):
                reads += 1
                if reads % COLLECT_YIELD_EVERY == 0:
                    await asyncio.sleep(0)
                # The read and the discard below happen with no yield between
                # them: an append applied meanwhile cannot be forgotten.
                state = self._reader.state(group_id, conversation_id)
                if state is None or state.last_seq <= state.archived_seq:
                    dirty.discard(conversation_id)
                    continue
                lags.append((state.last_seq - state.archived_seq, conversation_id))
                if (group_id, conversation_id) not in self._blocked:
                    pending.append(
                        _Pending(group_id, conversation_id, state.archived_seq + 1, state.last_seq)
                    )
        self._metrics.archive_pending(lags)
        pending.sort(key=lambda item: item.upto_seq - item.next_seq, reverse=True)
        return pending

    # --- copying ------------------------------------------------------------------------

    async def _archive(self, pending: list[_Pending]) -> None:
        queue = deque(pending)
        lost_groups: set[int] = set()
        tail_size = 0
        while queue:
            spans = self._take_batch(queue, lost_groups)
            if not spans:
                continue
            try:
                await self._insert([row for span in spans for row in span.rows])
            except ArchiveDataError:
                spans = await self._insert_each(spans)
            acked = await self._ack(spans, lost_groups)
            for span in acked:
                last_seq = span.pending.upto_seq
                trimmed_upto = max(0, min(span.upto_seq, last_seq - self._tail_keep))
                tail_size = max(tail_size, last_seq - trimmed_upto)
        self._metrics.archive_tail_size.set(tail_size)

    def _take_batch(self, queue: deque[_Pending], lost_groups: set[int]) -> list[_Span]:
        """Up to ``batch_size`` rows from the front of the queue, read from
        LevelDB; a conversation larger than what is left stays queued."""
        spans: list[_Span] = []
        budget = self._batch_size
        while queue and budget > 0:
            item = queue[0]
            if item.group_id in lost_groups:
                queue.popleft()
                continue
            count = min(budget, item.upto_seq - item.next_seq + 1)
            if count <= 0:  # stopped at a refused row by ``_insert_each``
                queue.popleft()
                continue
            messages = self._reader.replay(
                item.group_id, item.conversation_id, item.upto_seq,
                from_seq=item.next_seq, limit=count,
            )  # fmt: skip
            if len(messages) != count or messages[0].seq != item.next_seq:
                # Trimming never passes archived_seq, so this is a broken invariant;
                # skip the conversation rather than ack what was not copied.
                _log.error(
                    "archive: messages missing from the state",
                    extra={"type": "archive.state_gap", "conversation_id": item.conversation_id,
                           "seq": item.next_seq, "expected": count, "found": len(messages)},
                )  # fmt: skip
                queue.popleft()
                continue
            spans.append(_Span(item, [row_from_stored(item.conversation_id, m) for m in messages]))
            item.next_seq += count
            budget -= count
            if item.next_seq > item.upto_seq:
                queue.popleft()
        return spans

    async def _insert(self, rows: list[ArchiveRow]) -> None:
        metrics = self._metrics
        metrics.archive_attempted.inc(len(rows))
        metrics.archive_bytes_attempted.inc(sum(row.size_bytes for row in rows))
        inserted = await self._store.insert(rows)
        metrics.archive_inserted.inc(len(inserted))
        sizes = {(row.conversation_id, row.seq): row.size_bytes for row in rows}
        metrics.archive_bytes_inserted.inc(sum(sizes[key] for key in inserted))

    async def _insert_each(self, spans: list[_Span]) -> list[_Span]:
        """After Postgres refused a batch for its content: insert conversation
        by conversation, and row by row where that fails, so every row before
        the refused one is archived and acknowledged. The conversation then
        waits at that row (its lag grows, an error is logged) until a new term."""
        kept: list[_Span] = []
        for span in spans:
            try:
                await self._insert(span.rows)
                kept.append(span)
                continue
            except ArchiveDataError:
                pass
            good: list[ArchiveRow] = []
            for row in span.rows:
                try:
                    await self._insert([row])
                except ArchiveDataError as exc:
                    item = span.pending
                    self._blocked[(item.group_id, item.conversation_id)] = row.seq
                    item.upto_seq = row.seq - 1  # stop this conversation in this flush
                    _log.error(
                        "archive: Postgres refuses a message; the conversation's archive "
                        "waits at it",
                        extra={"type": "archive.row_refused", "conversation_id": row.conversation_id,
                               "seq": row.seq, "error": str(exc)},
                    )  # fmt: skip
                    break
                good.append(row)
            if good:
                kept.append(_Span(span.pending, good))
        return kept

    async def _ack(self, spans: list[_Span], lost_groups: set[int]) -> list[_Span]:
        """Propose one ``AckArchived`` per span, all at once; returns the spans
        whose ack applied. A refused proposal (leadership moved) drops the
        group from this flush: its next leader copies again."""
        acked: list[_Span] = []

        async def ack(span: _Span) -> None:
            item = span.pending
            command = AckArchived(
                conversation_id=item.conversation_id,
                upto_seq=span.upto_seq,
                tail_keep=self._tail_keep,
            )
            try:
                result = await self._engine.propose(
                    item.group_id, encode_command(command), timeout_s=self._propose_timeout_s
                )
            except FastpacaError as exc:
                lost_groups.add(item.group_id)
                _log.info(
                    "archive ack not applied",
                    extra={"type": "archive.ack_failed", "conversation_id": item.conversation_id,
                           "group_id": item.group_id, "error": type(exc).__name__},
                )  # fmt: skip
                return
            if isinstance(result, ArchiveAcked):
                self._metrics.archive_trimmed.inc(result.trimmed)
                acked.append(span)

        async with asyncio.TaskGroup() as tasks:
            for span in spans:
                tasks.create_task(ack(span))
        return acked

    def _set_reachable(self, error: ArchiveUnavailable | None) -> None:
        """Log once per change, not once per flush, while Postgres is down."""
        if error is None and not self._reachable:
            _log.info("archive reachable again", extra={"type": "archive.reachable"})
        elif error is not None and self._reachable:
            _log.warning(
                "archive unreachable; appends continue, the copy retries every flush",
                extra={"type": "archive.unreachable", "error": str(error)},
            )
        self._reachable = error is None
