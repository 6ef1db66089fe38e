"""Throwaway PostgreSQL servers for tests: ``initdb`` into a temp dir, then
``postgres`` on a free loopback port with its socket in that dir.

Never touches the machine's own cluster (port 5432, /var/run/postgresql).
The server binaries come from Debian's ``postgresql`` package, which keeps
them off PATH under ``/usr/lib/postgresql/<version>/bin``. PostgreSQL refuses
to run as root, so under root the server runs as the ``postgres`` user (or
``nobody``) over a directory chowned to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["PostgresServer", "postgres_bin_dir"]

SUPERUSER = "postgres"


def postgres_bin_dir() -> Path:
    """The newest installed server's bin directory; fails loudly (never a
    skip) when the package is missing, naming what installs it."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin "
            "(install Debian's 'postgresql' package: `make system-deps`)"
        )
    return Path(found[-1]).parent


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresServer:
    """One server; ``start``/``stop`` may be repeated (same data, same port)."""

    def __init__(self) -> None:
        self.bin_dir = postgres_bin_dir()
        self.user = _run_as()
        # Not under pytest's tmp_path: its root is 0700 to root, which the
        # unprivileged server user could not traverse.
        self.root = Path(tempfile.mkdtemp(prefix="fastpaca-pg-"))
        self.data_dir = self.root / "data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._initdb()

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _popen_user(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _initdb(self) -> None:
        done = subprocess.run(
            [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
             "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            cwd=self.root, capture_output=True, check=False, **self._popen_user(),  # type: ignore[call-overload]
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')}")

    def start(self, timeout_s: float = 20.0) -> None:
        assert not self.is_running()
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        if self.user is not None:
            os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
             # Throwaway data: durability only costs test time here.
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            cwd=self.root, stdout=log, stderr=log, **self._popen_user(),  # type: ignore[call-overload]
        )  # fmt: skip
        log.close()
        self._wait_accepting(timeout_s)

    def _wait_accepting(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log_path.read_text()[-3000:]}")
            ready = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", SUPERUSER, "-t", "1"],
                check=False,
            )  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"postgres not accepting in {timeout_s} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Fast shutdown (SIGINT: abort sessions, then exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(2)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; returns its unaligned, tuples-only output."""
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
             "-c", sql],
            capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
