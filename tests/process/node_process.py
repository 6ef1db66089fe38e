"""Runs the real ``python -m fastpaca serve`` as a child process for tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.limits import file_size_limit
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """One node on 127.0.0.1 with its data in ``data_dir``; restartable."""

    def __init__(self, data_dir: Path, log_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.port = free_port()
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, max_file_bytes: int | None = None) -> None:
        """``max_file_bytes``: no file of the process may grow past it
        (``file_size_limit``)."""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "PORT": str(self.port),
            "FASTPACA_BIND": "127.0.0.1",
            "FASTPACA_RAFT_DATA_DIR": str(self.data_dir),
            "FASTPACA_RAFT_GROUPS": "8",
            **self.env,
        }
        self.starts += 1
        log = open(self._log_path(), "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastpaca", "serve"],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=log,
            preexec_fn=file_size_limit(max_file_bytes),
        )
        log.close()

    def _log_path(self) -> Path:
        return self.log_dir / f"{self.data_dir.name}-{self.starts}.log"

    def log_text(self) -> str:
        return self._log_path().read_text()

    async def wait_ready(self, timeout_s: float = 15.0) -> float:
        """Seconds until /health/ready answered 200."""
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout_s:
                assert self.process is not None and self.process.poll() is None, self.log_text()
                try:
                    async with session.get(self.url + "/health/ready") as response:
                        if response.status == 200:
                            return time.monotonic() - started
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"node not ready in {timeout_s} s:\n{self.log_text()}")

    def signal(self, signum: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    async def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"node did not exit in {timeout_s} s")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
