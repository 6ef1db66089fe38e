"""The ``fastpaca`` command line: serve (default), version, healthcheck, migrate.

Owns argument parsing, exit codes and the one-line start-up error contract:
a bad configuration prints exactly one line on stderr naming the variable and
exits 2, never a traceback. It builds nothing itself: ``app.serve`` runs the
node.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

import orjson

from fastpaca.config import Settings, load_settings
from fastpaca.errors import ConfigError, NodeFailed
from fastpaca.observability.logging import configure_logging
from fastpaca.version import __version__

__all__ = ["EXIT_CONFIG", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
HEALTHCHECK_TIMEOUT_S = 3.0

_log = logging.getLogger("fastpaca")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastpaca",
        description="Message backend for AI agents. Configured through environment variables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run a node (the default)")
    commands.add_parser("version", help="print the version")
    commands.add_parser("healthcheck", help="exit 0 when this node's /health/ready is ok")
    commands.add_parser("migrate", help="create the Postgres archive schema")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = args.command or "serve"
    if command == "version":
        print(f"fastpaca {__version__}")
        return EXIT_OK
    try:
        settings = load_settings()
    except ConfigError as exc:
        return _config_error(exc)
    if command == "healthcheck":
        return _healthcheck(settings)
    if command == "migrate":
        return _migrate(settings)
    return _serve(settings)


def _config_error(exc: ConfigError) -> int:
    print(f"fastpaca: configuration error: {exc}", file=sys.stderr, flush=True)
    return EXIT_CONFIG


def _serve(settings: Settings) -> int:
    from fastpaca.app import serve  # the server's imports are not needed by other commands

    configure_logging(settings.log_level)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings))
    except ConfigError as exc:
        return _config_error(exc)
    except NodeFailed as exc:  # its traceback was logged when it happened
        _log.critical(
            "node stopped after a fatal error; restart it once the cause is fixed: %s",
            exc,
            extra={"type": "server.failed"},
        )
        return EXIT_FAILURE
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return EXIT_FAILURE
    except Exception:
        _log.critical("node crashed", exc_info=True, extra={"type": "server.crashed"})
        return EXIT_FAILURE
    return EXIT_OK


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed: it roughly halves the event loop's and the
    sockets' share of each request. The default loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _healthcheck(settings: Settings) -> int:
    host = settings.bind
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    url = f"http://{host}:{settings.port}/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=HEALTHCHECK_TIMEOUT_S) as response:
            body = orjson.loads(response.read())
            is_ready = response.status == 200 and body.get("status") == "ok"
    except urllib.error.HTTPError as exc:
        print(f"not ready: {exc.code} {exc.read().decode(errors='replace')}", file=sys.stderr)
        return EXIT_FAILURE
    except (OSError, ValueError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print("ready" if is_ready else f"not ready: {body}")
    return EXIT_OK if is_ready else EXIT_FAILURE


def _migrate(settings: Settings) -> int:
    """Create the archive schema (idempotent). Runs whenever a database URL
    is set, so the schema can be made before the archive is switched on."""
    from fastpaca.archive.postgres import ArchiveUnavailable, PostgresArchive, archive_url

    if settings.archive_database_url is None and not settings.archiver_enabled:
        print(
            "archive not enabled (FASTPACA_ARCHIVER_ENABLED=false, no DATABASE_URL): nothing to migrate"
        )
        return EXIT_OK
    try:
        url = archive_url(settings)
    except ConfigError as exc:
        return _config_error(exc)

    async def migrate() -> None:
        store = PostgresArchive(url, pool_size=1)
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()

    try:
        asyncio.run(migrate())
    except ArchiveUnavailable as exc:
        print(f"fastpaca: migrate failed: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILURE
    print("archive schema ready (table messages)")
    return EXIT_OK
