"""Real ``python -m fastpaca serve`` clusters on loopback, for tests and benches.

``LocalCluster`` starts nodes named ``n1``, ``n2``, ... on free ports with
their own data directories, all sharing one ``CLUSTER_NODES`` list and secret;
nodes can be killed (-9), stopped (SIGTERM), restarted and added. The HTTP
helpers speak the public API only.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.limits import file_size_limit
from tests.support.ports import free_port

REPO = Path(__file__).resolve().parents[2]
SECRET = "test-cluster-secret"


class ClusterNodeProcess:
    def __init__(self, name: str, port: int, data_dir: Path, log_dir: Path, host: str) -> None:
        self.name = name
        self.port = port
        self.host = host
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.env: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def entry(self) -> str:
        return f"{self.name}@{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, env: dict[str, str], *, max_file_bytes: int | None = None) -> None:
        """``max_file_bytes``: no file of the process may grow past it
        (``file_size_limit``)."""
        assert not self.is_running()
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(REPO),
            "PORT": str(self.port),
            "FASTPACA_BIND": self.host,
            "FASTPACA_RAFT_DATA_DIR": str(self.data_dir),
            **env,
        }
        self.env = full_env
        self.starts += 1
        with open(self.log_path(), "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fastpaca", "serve"],
                env=full_env,
                cwd=REPO,
                stdout=log,
                stderr=log,
                preexec_fn=file_size_limit(max_file_bytes),
            )

    def log_path(self, start: int | None = None) -> Path:
        return self.log_dir / f"{self.name}-{start or self.starts}.log"

    def log_text(self) -> str:
        return self.log_path().read_text(errors="replace")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.is_running():
            assert self.process is not None
            self.process.kill()
            self.process.wait()

    def terminate(self) -> None:
        if self.is_running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait_exit(self, timeout_s: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)


class LocalCluster:
    def __init__(
        self,
        workdir: Path,
        size: int,
        *,
        groups: int = 8,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.workdir = workdir
        self.groups = groups
        self.extra_env = dict(env or {})
        self.nodes: list[ClusterNodeProcess] = []
        for _ in range(size):
            self.add_node(host=host)

    def add_node(self, *, host: str = "127.0.0.1") -> ClusterNodeProcess:
        name = f"n{len(self.nodes) + 1}"
        node = ClusterNodeProcess(
            name, free_port(), self.workdir / f"data-{name}", self.workdir, host
        )
        self.nodes.append(node)
        return node

    def cluster_nodes(self) -> str:
        return ",".join(node.entry for node in self.nodes)

    def env_for(self, node: ClusterNodeProcess) -> dict[str, str]:
        return {
            "NODE_NAME": node.entry,
            "CLUSTER_NODES": self.cluster_nodes(),
            "FASTPACA_CLUSTER_SECRET": SECRET,
            "FASTPACA_RAFT_GROUPS": str(self.groups),
            **self.extra_env,
        }

    def start(self, node: ClusterNodeProcess, *, max_file_bytes: int | None = None) -> None:
        node.start(self.env_for(node), max_file_bytes=max_file_bytes)

    def start_all(self) -> None:
        for node in self.nodes:
            self.start(node)

    def running(self) -> list[ClusterNodeProcess]:
        return [node for node in self.nodes if node.is_running()]

    def stop_all(self) -> None:
        for node in self.nodes:
            node.kill()

    async def wait_ready(
        self, nodes: Iterable[ClusterNodeProcess] | None = None, timeout_s: float = 30.0
    ) -> None:
        await asyncio.gather(*(wait_ready(n, timeout_s) for n in (nodes or self.running())))


async def wait_ready(node: ClusterNodeProcess, timeout_s: float = 30.0) -> float:
    started = time.monotonic()
    reason = ""
    async with aiohttp.ClientSession() as session:
        while time.monotonic() - started < timeout_s:
            if not node.is_running():
                raise AssertionError(f"{node.name} exited:\n{node.log_text()[-3000:]}")
            try:
                async with session.get(node.url + "/health/ready") as response:
                    if response.status == 200:
                        return time.monotonic() - started
                    reason = await response.text()
            except aiohttp.ClientError as exc:
                reason = repr(exc)
            await asyncio.sleep(0.1)
    raise AssertionError(
        f"{node.name} not ready in {timeout_s} s ({reason}):\n{node.log_text()[-3000:]}"
    )


def message(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


async def history(session: aiohttp.ClientSession, url: str, cid: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        query = f"?from={len(messages) + 1}&limit=1000"
        async with session.get(f"{url}/v1/conversations/{cid}/messages{query}") as response:
            assert response.status == 200, await response.text()
            page = (await response.json())["messages"]
        if not page:
            return messages
        messages.extend(page)


async def metric(session: aiohttp.ClientSession, url: str, name: str) -> float:
    """Sum of every sample of ``name`` (any labels) on ``url``'s /metrics."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total
