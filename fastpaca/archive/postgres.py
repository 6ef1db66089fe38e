"""The Postgres side of the archive: schema, idempotent inserts, read-back.

Owns the SQL (DESIGN section 4), the asyncpg pool and the translation between
a stored message (the bytes the state machine keeps) and a ``messages`` row.
Inserts are ``ON CONFLICT DO NOTHING`` on ``(conversation_id, seq)``, so a
batch written twice (a crash before the ack, a new leader) changes nothing.
It decides nothing about what to archive (``archiver.py`` does) and never
touches Raft state.

The pool is created without connections (``min_size=0``): a node starts and
serves while Postgres is down, and a connection is made when a flush or a
read-through needs one. Every call is bounded by a timeout and raises
``ArchiveUnavailable`` when Postgres cannot be reached, so callers decide how
to degrade (the archiver retries, a read answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from fastpaca.config import Settings
from fastpaca.errors import ConfigError, FastpacaError, Unavailable
from fastpaca.store.messages import NewMessage, prepare_messages
from fastpaca.store.reads import StoredMessage

__all__ = [
    "SCHEMA_STATEMENTS",
    "ArchiveDataError",
    "ArchiveRow",
    "ArchiveUnavailable",
    "PostgresArchive",
    "archive_url",
    "check_database_url",
    "row_from_stored",
    "stored_from_record",
]

_log = logging.getLogger(__name__)

SCHEMA_STATEMENTS = (
    """CREATE TABLE IF NOT EXISTS messages (
        conversation_id text NOT NULL,
        seq bigint NOT NULL,
        role text NOT NULL,
        parts jsonb NOT NULL,
        metadata jsonb NOT NULL,
        token_count integer NOT NULL,
        inserted_at timestamptz NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    )""",
    """CREATE INDEX IF NOT EXISTS messages_conversation_inserted_at_idx
        ON messages (conversation_id, inserted_at)""",
)
"""DESIGN section 4; every statement is idempotent, so ``migrate`` may run at
every start and on every node at once."""

_MIGRATE_LOCK_KEY = 0x66617374_70616361  # "fastpaca": serializes concurrent migrations

_INSERT = """
INSERT INTO messages (conversation_id, seq, role, parts, metadata, token_count, inserted_at)
SELECT c, s, r, p::jsonb, m::jsonb, t, i
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[],
            $6::integer[], $7::timestamptz[]) AS x(c, s, r, p, m, t, i)
ON CONFLICT (conversation_id, seq) DO NOTHING
RETURNING conversation_id, seq
"""

_SELECT = """
SELECT seq, role, parts::text, metadata::text, token_count, inserted_at
FROM messages
WHERE conversation_id = $1 AND seq >= $2 AND seq <= $3
ORDER BY seq
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CONNECT_TIMEOUT_S = 5.0


class ArchiveUnavailable(Unavailable):
    """Raised when Postgres cannot be reached or a statement timed out; a
    read that needed the archive then answers 503 like any unavailable read."""


class ArchiveDataError(FastpacaError):
    """Raised when Postgres refuses a row for its content (e.g. a JSON string
    holding U+0000, which ``jsonb`` cannot store, or a ``token_count`` above
    the ``integer`` column's 2^31-1). Retrying the same row cannot succeed."""


def check_database_url(url: str | None, *, variable: str = "DATABASE_URL") -> str:
    """The URL when it is usable as an asyncpg DSN, else ``ConfigError``.

    Only the form is checked (scheme, port): whether the server answers is
    not a configuration question, and a node starts while it does not."""
    if not url:
        raise ConfigError(
            f"{variable}: required when FASTPACA_ARCHIVER_ENABLED=true "
            "(expected postgresql://user:password@host:port/database)"
        )
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("postgres", "postgresql"):
        # Never echo the value: it usually carries a password.
        raise ConfigError(
            f"{variable}: invalid value: expected postgresql://user:password@host:port/database"
        )
    return url


def archive_url(settings: Settings) -> str:
    """The archive's URL from ``DATABASE_URL`` (preferred) or
    ``FASTPACA_POSTGRES_URL``, checked; ``ConfigError`` naming the one used."""
    variable = (
        "FASTPACA_POSTGRES_URL"
        if settings.database_url is None and settings.postgres_url is not None
        else "DATABASE_URL"
    )
    return check_database_url(settings.archive_database_url, variable=variable)


@dataclass(slots=True, kw_only=True)
class ArchiveRow:
    conversation_id: str
    seq: int
    role: str
    parts_json: str
    metadata_json: str
    token_count: int
    inserted_at: datetime
    size_bytes: int
    """Bytes of the stored message: what ``..._bytes_*_total`` count."""


def row_from_stored(conversation_id: str, message: StoredMessage) -> ArchiveRow:
    body: dict[str, Any] = orjson.loads(message.body)
    return ArchiveRow(
        conversation_id=conversation_id,
        seq=message.seq,
        role=body["role"],
        parts_json=orjson.dumps(body["parts"]).decode(),
        metadata_json=orjson.dumps(body["metadata"]).decode(),
        token_count=body["token_count"],
        inserted_at=datetime.fromisoformat(body["inserted_at"]),
        size_bytes=len(message.body),
    )


def stored_from_record(
    seq: int, role: str, parts_json: str, metadata_json: str, token_count: int, at: datetime
) -> StoredMessage:
    """The stored bytes of an archived message, built by the same code that
    built them at append time (sorted keys, the same timestamp format), so a
    read through the archive answers exactly what LevelDB answered."""
    epoch_ms = (at - _EPOCH) // timedelta(milliseconds=1)
    message = NewMessage(
        role=role,
        parts=orjson.loads(parts_json),
        metadata=orjson.loads(metadata_json),
        token_count=token_count,
    )
    (prepared,) = prepare_messages([message], now_ms=epoch_ms)
    return StoredMessage(seq=seq, body=prepared.stored)


class PostgresArchive:
    """The asyncpg pool and the three statements the node runs."""

    def __init__(self, url: str, *, pool_size: int, statement_timeout_s: float = 10.0) -> None:
        self._url = url
        self._pool_size = pool_size
        self._timeout_s = statement_timeout_s
        self._pool: Any = None

    async def open(self) -> None:
        """Create the pool; makes no connection yet (``min_size=0``)."""
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=0,
            max_size=self._pool_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=self._timeout_s,
        )

    async def close(self) -> None:
        if self._pool is not None:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    await self._pool.close()
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    async def migrate(self) -> None:
        """Create the table and index if absent. An advisory lock keeps two
        nodes migrating at once from racing on ``CREATE ... IF NOT EXISTS``."""

        async def run(connection: Any) -> None:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK_KEY)
                for statement in SCHEMA_STATEMENTS:
                    await connection.execute(statement)

        await self._with_connection(run)

    async def insert(self, rows: Sequence[ArchiveRow]) -> list[tuple[str, int]]:
        """Insert ``rows`` in one statement; returns the keys of those that
        were new (the others were archived before)."""
        if not rows:
            return []

        async def run(connection: Any) -> list[tuple[str, int]]:
            records = await connection.fetch(
                _INSERT,
                [row.conversation_id for row in rows],
                [row.seq for row in rows],
                [row.role for row in rows],
                [row.parts_json for row in rows],
                [row.metadata_json for row in rows],
                [row.token_count for row in rows],
                [row.inserted_at for row in rows],
            )
            return [(record[0], record[1]) for record in records]

        result: list[tuple[str, int]] = await self._with_connection(run)
        return result

    async def fetch(self, conversation_id: str, lo_seq: int, hi_seq: int) -> list[StoredMessage]:
        """Archived messages with ``lo_seq <= seq <= hi_seq``, ascending."""

        async def run(connection: Any) -> list[StoredMessage]:
            records = await connection.fetch(_SELECT, conversation_id, lo_seq, hi_seq)
            return [stored_from_record(*record) for record in records]

        messages: list[StoredMessage] = await self._with_connection(run)
        return messages

    async def _with_connection(self, run: Any) -> Any:
        if self._pool is None:
            raise ArchiveUnavailable("the archive is not open")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as connection:
                return await run(connection)
        except (asyncpg.DataError, ValueError) as exc:
            # ValueError: asyncpg's client-side DataError (a value its codec
            # cannot encode, e.g. an integer out of int32 range).
            raise ArchiveDataError(f"{type(exc).__name__}: {exc}") from exc
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ArchiveUnavailable(f"postgres: {type(exc).__name__}: {exc}") from exc
