"""The CLI as a user runs it: ``python -m fastpaca <command>`` in a subprocess."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from aiohttp.test_utils import TestServer

from fastpaca.app import create_app
from fastpaca.config import Settings
from fastpaca.raft.driver import DriverConfig
from fastpaca.version import __version__

REPO = Path(__file__).resolve().parent.parent


def _env(**values: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
    return {**keep, "PYTHONPATH": str(REPO), **values}


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastpaca", *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )


def test_version() -> None:
    done = run_cli("version")
    assert done.returncode == 0 and done.stdout.strip() == f"fastpaca {__version__}"


def test_bad_config_exits_2_with_one_line_for_every_command() -> None:
    for command in ("serve", "healthcheck", "migrate"):
        done = run_cli(command, PORT="not-a-port")
        assert done.returncode == 2, command
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "PORT=not-a-port" in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def test_serve_refuses_the_archive_without_a_database_url(tmp_path: Path) -> None:
    # Starting without it would silently skip what the operator asked for.
    done = run_cli("serve", FASTPACA_RAFT_DATA_DIR=str(tmp_path), FASTPACA_ARCHIVER_ENABLED="true")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "DATABASE_URL: required" in lines[0], done.stderr
    assert not any(tmp_path.iterdir()), "refused before touching the data dir"


def test_migrate_without_archive_says_so() -> None:
    done = run_cli("migrate")
    assert done.returncode == 0 and "not enabled" in done.stdout


def test_healthcheck_fails_when_nothing_listens(unused_tcp_port: int) -> None:
    done = run_cli("healthcheck", PORT=str(unused_tcp_port), FASTPACA_BIND="127.0.0.1")
    assert done.returncode == 1 and "not ready" in done.stderr


async def test_healthcheck_passes_against_a_ready_node(tmp_path: Path) -> None:
    settings = Settings(FASTPACA_RAFT_DATA_DIR=str(tmp_path / "data"), FASTPACA_RAFT_GROUPS=2)
    app = create_app(settings, driver_config=DriverConfig(tick_interval_ms=10))
    async with TestServer(app, host="127.0.0.1") as server:

        async def healthcheck() -> int:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fastpaca", "healthcheck",
                env=_env(PORT=str(server.port), FASTPACA_BIND="0.0.0.0"),
                cwd=REPO,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            return await process.wait()

        async with asyncio.timeout(20):
            while await healthcheck() != 0:
                await asyncio.sleep(0.1)
