"""``fastpaca migrate`` and the archive's start-up checks, as an operator runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.ports import free_port
from tests.support.postgres import PostgresServer

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return subprocess.run(
        [sys.executable, "-m", "fastpaca", *args],
        env={**keep, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_migrate_creates_the_schema_and_is_idempotent(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("archive_migrate")
    for _ in range(2):
        done = run_cli("migrate", DATABASE_URL=url)
        assert done.returncode == 0, done.stderr
        assert "schema ready" in done.stdout
    columns = pg_server.psql(
        "SELECT column_name || ':' || data_type FROM information_schema.columns "
        "WHERE table_name = 'messages' ORDER BY ordinal_position",
        "archive_migrate",
    ).split()
    assert columns == [
        "conversation_id:text", "seq:bigint", "role:text", "parts:jsonb", "metadata:jsonb",
        "token_count:integer", "inserted_at:timestamp", "with", "time", "zone",
    ]  # fmt: skip
    key = pg_server.psql(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'messages' ORDER BY indexname",
        "archive_migrate",
    )
    assert "(conversation_id, inserted_at)" in key and "(conversation_id, seq)" in key


def test_migrate_accepts_fastpaca_postgres_url(pg_server: PostgresServer) -> None:
    url = pg_server.create_database("archive_migrate_alt")
    done = run_cli("migrate", FASTPACA_POSTGRES_URL=url, FASTPACA_ARCHIVER_ENABLED="true")
    assert done.returncode == 0, done.stderr
    assert pg_server.psql("SELECT count(*) FROM messages", "archive_migrate_alt").strip() == "0"


def test_migrate_against_nothing_listening_fails_with_one_line() -> None:
    done = run_cli("migrate", DATABASE_URL=f"postgresql://u:secret@127.0.0.1:{free_port()}/db")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "migrate failed" in lines[0], done.stderr
    assert "secret" not in done.stderr


def test_a_missing_or_malformed_url_stops_the_start_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    cases = [
        ({}, "DATABASE_URL: required"),
        ({"DATABASE_URL": "mysql://u:secret@h/db"}, "DATABASE_URL: invalid value"),
        ({"DATABASE_URL": "postgresql://u:secret@h:port/db"}, "DATABASE_URL: invalid value"),
        ({"FASTPACA_POSTGRES_URL": "nonsense-secret"}, "FASTPACA_POSTGRES_URL: invalid value"),
    ]
    for env, expected in cases:
        for command in ("serve", "migrate"):
            done = run_cli(
                command,
                FASTPACA_ARCHIVER_ENABLED="true",
                FASTPACA_RAFT_DATA_DIR=str(data_dir),
                **env,
            )
            assert done.returncode == 2, (command, env, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and expected in lines[0], (command, done.stderr)
            assert "secret" not in done.stderr, "the URL's password is never printed"
            assert not data_dir.exists(), "refused before touching the data dir"
