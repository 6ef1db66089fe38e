"""Smoke test of the one-file binary: it must run the whole product, not only `version`.

    .venv/bin/python packaging/smoke.py [dist/fastpaca] [--no-cluster]

Only the *server* is the frozen binary. It is copied into an empty temp dir
and started there with an environment holding nothing but PATH=/usr/bin:/bin
and the settings of each scenario (what `env -i` gives), so neither the
source tree nor the virtualenv can leak into it. This checker itself runs
with the venv's Python (it uses aiohttp as its HTTP and websocket client).

Scenarios, each on free loopback ports with its own data dir:

- one node, defaults: create, append, tail, replay, /metrics,
  /v1/openapi.json, a websocket join that receives the live `message` push,
  `fastpaca healthcheck` (0 when ready, 1 against a dead port), SIGTERM -> 0;
- FASTPACA_PUBSUB_ADAPTER=redis against a throwaway redis-server: the push
  reaches the socket through Redis (the node subscribes to the channel);
- FASTPACA_ARCHIVER_ENABLED=true with an unreachable Postgres: the node
  starts, serves appends and reads, logs `archive.unreachable`;
- `fastpaca migrate`: malformed URL -> exit 2, unreachable -> exit 1, one
  line each;
- three nodes from CLUSTER_NODES and a secret: one append through each node,
  pushed to a socket on another node.

Every server process is also checked from the outside: the C extensions the
lazy imports would otherwise quietly do without (uvloop, aiohttp's parser,
plyvel, orjson, asyncpg) must be mapped from the binary's own extraction
dir, and nothing may be mapped from the source tree. Exit 0 when all pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
CLEAN_PATH = "/usr/bin:/bin"
READY_TIMEOUT_S = 60.0
PUSH_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 20.0
SECRET = "smoke-cluster-secret"

# Shared objects the frozen server must have loaded from its bundle. Each is
# imported lazily or has a pure-Python fallback, so a build that lost one
# would still start, just slower or without a feature.
NATIVE_ALWAYS = (
    "uvloop/loop.cpython",
    "aiohttp/_http_parser.cpython",
    "plyvel/_plyvel.cpython",
    "orjson/orjson.cpython",
)
NATIVE_ARCHIVE = ("asyncpg/protocol/protocol.cpython",)


class SmokeFailure(Exception):
    pass


# Every server started, so that whatever fails, none outlives the run.
STARTED: list[Node] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def step(text: str) -> None:
    print(f"  ok  {text}", flush=True)


def require(condition: bool, text: str) -> None:
    if not condition:
        raise SmokeFailure(text)


class Node:
    """One `fastpaca serve` process of the binary, logging into its own file."""

    def __init__(
        self, binary: Path, root: Path, name: str, env: dict[str, str], port: int = 0
    ) -> None:
        self.binary = binary
        self.name = name
        self.port = port or free_port()
        self.cwd = root / name
        self.cwd.mkdir()
        self.log_path = root / f"{name}.log"
        self.env = {
            "PATH": CLEAN_PATH,
            "PORT": str(self.port),
            "FASTPACA_BIND": "127.0.0.1",
            "FASTPACA_RAFT_DATA_DIR": str(self.cwd / "data"),
            "LOG_LEVEL": "info",
            # The onefile bootloader unpacks itself under TMPDIR and removes that
            # copy only on a clean exit; kept under our temp dir, a server killed
            # after a failure leaves nothing behind in /tmp.
            "TMPDIR": str(root),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        STARTED.append(self)
        with open(self.log_path, "wb") as log:
            # Its own session: the bootloader forks the Python process that serves,
            # and a kill must reach both (SIGTERM alone is forwarded by the bootloader).
            self.process = subprocess.Popen(
                [str(self.binary), "serve"],
                env=self.env,
                cwd=self.cwd,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(self, http: aiohttp.ClientSession) -> float:
        started = time.monotonic()
        deadline = started + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            require(self.alive(), f"{self.name} exited before ready")
            try:
                async with http.get(f"{self.url}/health/ready") as response:
                    if response.status == 200 and (await response.json())["status"] == "ok":
                        return time.monotonic() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise SmokeFailure(f"{self.name} not ready within {READY_TIMEOUT_S:.0f} s")

    def server_pids(self) -> list[int]:
        """The onefile bootloader and the Python process it forks."""
        assert self.process is not None
        pids = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # Field 4 (after the parenthesised command, which may hold spaces) is the ppid.
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def mapped_files(self) -> set[str]:
        files: set[str] = set()
        for pid in self.server_pids():
            try:
                maps = Path(f"/proc/{pid}/maps").read_text()
            except OSError:
                continue
            for line in maps.splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[5].startswith("/"):
                    files.add(fields[5])
        return files

    def check_native(self, expected: Iterable[str]) -> None:
        files = self.mapped_files()
        leaked = sorted(f for f in files if f.startswith(str(REPO) + "/"))
        require(not leaked, f"{self.name} maps files from the source tree: {leaked}")
        # libpython and every extension module come out of the bundle, not the machine.
        foreign = sorted(f for f in files if "python" in f and "/_MEI" not in f)
        require(not foreign, f"{self.name} maps Python files from the machine: {foreign}")
        for name in expected:
            hits = [f for f in files if name in f]
            require(bool(hits), f"{self.name} did not load {name}*.so")
            require(
                all("/_MEI" in f for f in hits),
                f"{self.name} loaded {name} from outside its bundle: {hits}",
            )

    def stop(self) -> int:
        """SIGTERM, then the exit code (kill -9 after a deadline counts as a failure)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise SmokeFailure(
                f"{self.name} did not exit within {STOP_TIMEOUT_S:.0f} s of SIGTERM"
            ) from None

    def kill(self) -> None:
        """SIGKILL the whole process group, the bootloader's child included."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def check_log_clean(self) -> None:
        text = self.log()
        for marker in ("Traceback", "ModuleNotFoundError", "ImportError", "No module named"):
            require(marker not in text, f"{self.name} log has {marker!r}")
        for line in text.splitlines():
            try:
                level = json.loads(line).get("level")
            except ValueError:
                raise SmokeFailure(f"{self.name} logged a line that is not JSON: {line}") from None
            require(level not in ("error", "critical"), f"{self.name} logged an error: {line}")


def run_cli(binary: Path, cwd: Path, args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    done = subprocess.run(
        [str(binary), *args],
        env={"PATH": CLEAN_PATH, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


# --- the HTTP API and the stream -------------------------------------------------------------


async def put_conversation(http: aiohttp.ClientSession, base: str, cid: str) -> None:
    async with http.put(
        f"{base}/v1/conversations/{cid}", json={"metadata": {"smoke": True}}
    ) as response:
        body = await response.json()
        require(response.status in (200, 201), f"create {cid}: {response.status} {body}")
        require(body["id"] == cid, f"create {cid}: {body}")


async def append(http: aiohttp.ClientSession, base: str, cid: str, text: str) -> int:
    message = {"role": "user", "parts": [{"type": "text", "text": text}]}
    async with http.post(
        f"{base}/v1/conversations/{cid}/messages", json={"message": message}
    ) as response:
        body = await response.json()
        require(response.status in (200, 201), f"append to {cid}: {response.status} {body}")
        seq: int = body["seq"]
        return seq


async def get_json(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        require(response.status == 200, f"GET {url}: {response.status} {await response.text()}")
        return await response.json()


async def read_texts(http: aiohttp.ClientSession, base: str, cid: str) -> tuple[list[str], ...]:
    tail = await get_json(http, f"{base}/v1/conversations/{cid}/tail?limit=100")
    replay = await get_json(http, f"{base}/v1/conversations/{cid}/messages?from=1&limit=100")
    return tuple([m["parts"][0]["text"] for m in page["messages"]] for page in (tail, replay))


class Stream:
    """A Phoenix Channels v2 client on one socket, joined to one conversation."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, topic: str) -> None:
        self.ws = ws
        self.topic = topic

    @classmethod
    async def join(cls, http: aiohttp.ClientSession, base: str, cid: str) -> Stream:
        url = base.replace("http://", "ws://") + "/socket/websocket?vsn=2.0.0"
        ws = await http.ws_connect(url)
        stream = cls(ws, f"conversation:{cid}")
        await ws.send_json(["1", "1", stream.topic, "phx_join", {}])
        reply = await stream._next()
        require(
            reply[1] == "1" and reply[3] == "phx_reply" and reply[4]["status"] == "ok",
            f"join {stream.topic}: {reply}",
        )
        return stream

    async def _next(self) -> list[Any]:
        message = await self.ws.receive(timeout=PUSH_TIMEOUT_S)
        require(message.type == aiohttp.WSMsgType.TEXT, f"socket got {message.type}: {message}")
        frame: list[Any] = message.json()
        return frame

    async def expect_message(self, seq: int, text: str) -> None:
        deadline = time.monotonic() + PUSH_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                frame = await self._next()
            except TimeoutError:
                break
            if frame[2] == self.topic and frame[3] == "message":
                payload = frame[4]
                require(
                    payload["seq"] == seq and payload["message"]["parts"][0]["text"] == text,
                    f"push {payload} is not seq {seq} {text!r}",
                )
                return
        raise SmokeFailure(f"no `message` push for seq {seq} on {self.topic}")

    async def close(self) -> None:
        await self.ws.close()


async def stream_roundtrip(
    http: aiohttp.ClientSession, socket_base: str, append_base: str, cid: str, text: str
) -> int:
    """Join on one node, append (maybe through another), and see the live push."""
    stream = await Stream.join(http, socket_base, cid)
    try:
        seq = await append(http, append_base, cid, text)
        await stream.expect_message(seq, text)
    finally:
        await stream.close()
    return seq


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise SmokeFailure(f"/metrics has no {name}")


# --- scenarios --------------------------------------------------------------------------------


async def single_node(binary: Path, root: Path, http: aiohttp.ClientSession) -> None:
    node = Node(binary, root, "single", {})
    node.start()
    try:
        took = await node.wait_ready(http)
        step(f"serve: /health/ready ok after {took:.1f} s")
        cid = "smoke-1"
        await put_conversation(http, node.url, cid)
        seqs = [await append(http, node.url, cid, f"hello {i}") for i in (1, 2)]
        require(seqs == [1, 2], f"seqs {seqs}")
        tail, replay = await read_texts(http, node.url, cid)
        require(tail == replay == ["hello 1", "hello 2"], f"tail {tail}, replay {replay}")
        step("create, append x2, tail, replay")
        seq = await stream_roundtrip(http, node.url, node.url, cid, "live one")
        require(seq == 3, f"live append got seq {seq}")
        step("websocket join on /socket/websocket?vsn=2.0.0, live `message` push received")
        async with http.get(f"{node.url}/metrics") as response:
            metrics = await response.text()
        require(response.status == 200, f"/metrics {response.status}")
        require(metric(metrics, "fastpaca_raft_leaders") > 0, "no leaders in /metrics")
        require(metric(metrics, "fastpaca_stream_pushes_total") >= 1, "no push counted")
        step("/metrics (prometheus text, raft and stream series)")
        spec = await get_json(http, f"{node.url}/v1/openapi.json")
        require(spec["openapi"].startswith("3.1"), f"openapi {spec.get('openapi')}")
        require(any("/messages" in path for path in spec["paths"]), "openapi lacks paths")
        step(f"/v1/openapi.json (OpenAPI {spec['openapi']}, {len(spec['paths'])} paths)")
        env = {"PORT": str(node.port), "FASTPACA_BIND": "127.0.0.1"}
        code, out, err = run_cli(binary, node.cwd, ["healthcheck"], env)
        require(code == 0, f"healthcheck exit {code}: {out}{err}")
        code, out, err = run_cli(binary, node.cwd, ["healthcheck"], {"PORT": str(free_port())})
        require(code == 1, f"healthcheck against a dead port exit {code}: {out}{err}")
        step("`fastpaca healthcheck` exit 0 (and 1 against a dead port)")
        node.check_native(NATIVE_ALWAYS)
        step("uvloop, aiohttp parser, plyvel, orjson loaded from the bundle")
    except BaseException:
        node.kill()
        print(node.log()[-4000:], file=sys.stderr)
        raise
    code = node.stop()
    require(code == 0, f"SIGTERM exit {code}")
    node.check_log_clean()
    step("SIGTERM -> exit 0, no error or traceback in the log")


async def redis_adapter(binary: Path, root: Path, http: aiohttp.ClientSession) -> None:
    redis_bin = shutil.which("redis-server")
    require(redis_bin is not None, "redis-server is not installed (apt-get install redis-server)")
    assert redis_bin is not None
    redis_port = free_port()
    redis_dir = root / "redis-server"
    redis_dir.mkdir()
    with open(root / "redis.log", "wb") as log:
        redis = subprocess.Popen(
            [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(redis_dir)],
            stdout=log, stderr=log,
        )  # fmt: skip
    node = Node(
        binary,
        root,
        "redis",
        {
            "FASTPACA_PUBSUB_ADAPTER": "redis",
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis_port),
        },
    )
    try:
        await wait_redis(redis, redis_port)
        node.start()
        took = await node.wait_ready(http)
        cid = "smoke-redis"
        await put_conversation(http, node.url, cid)
        stream = await Stream.join(http, node.url, cid)
        try:
            channel = f"fastpaca:conversation:{cid}"
            await poll(
                lambda: redis_has_subscriber(redis_port, channel),
                f"the node never subscribed to {channel}",
            )
            # Our own subscriber sees what the node publishes for other nodes.
            reader, writer = await asyncio.open_connection("127.0.0.1", redis_port)
            try:
                writer.write(f"SUBSCRIBE {channel}\r\n".encode())
                await writer.drain()
                await read_until(reader, b"subscribe")
                seq = await append(http, node.url, cid, "via redis")
                await stream.expect_message(seq, "via redis")
                await read_until(reader, b"via redis")
            finally:
                writer.close()
        finally:
            await stream.close()

        async def forwarded_counted() -> bool:
            # Counted once the publish call returns, which may be after Redis delivered it.
            async with http.get(f"{node.url}/metrics") as response:
                metrics = await response.text()
            return metric(metrics, "fastpaca_pubsub_events_forwarded_total") >= 1

        await poll(forwarded_counted, "no event counted as published to Redis")
        node.check_native(NATIVE_ALWAYS)
        code = node.stop()
        require(code == 0, f"SIGTERM exit {code}")
        node.check_log_clean()
        step(
            f"FASTPACA_PUBSUB_ADAPTER=redis: ready in {took:.1f} s, subscribed to {channel}, "
            "the event published to Redis (seen by a second subscriber), push received, SIGTERM -> 0"
        )
    except BaseException:
        node.kill()
        print(node.log()[-4000:], file=sys.stderr)
        raise
    finally:
        redis.terminate()
        redis.wait()


async def wait_redis(redis: subprocess.Popen[bytes], port: int) -> None:
    async def pong() -> bool:
        require(redis.poll() is None, "redis-server exited")
        return await redis_command(port, b"PING\r\n") == b"+PONG\r\n"

    await poll(pong, "redis-server did not answer")


async def redis_has_subscriber(port: int, channel: str) -> bool:
    reply = await redis_command(port, f"PUBSUB NUMSUB {channel}\r\n".encode())
    # *2 $len channel :count -> the count is the last line.
    return reply.rstrip().rsplit(b"\r\n", 1)[-1] not in (b":0", b"")


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    seen = b""
    deadline = time.monotonic() + PUSH_TIMEOUT_S
    while marker not in seen:
        left = deadline - time.monotonic()
        require(left > 0, f"redis subscriber never saw {marker!r}")
        try:
            chunk = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            continue
        require(chunk != b"", "redis closed the subscriber connection")
        seen += chunk


async def redis_command(port: int, command: bytes) -> bytes:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return b""
    try:
        writer.write(command)
        await writer.drain()
        return await asyncio.wait_for(reader.read(4096), 2.0)
    finally:
        writer.close()


async def poll(check: Callable[[], Awaitable[bool]], failure: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise SmokeFailure(failure)


async def archive_unreachable(binary: Path, root: Path, http: aiohttp.ClientSession) -> None:
    # A port nothing listens on: the archive's connects are refused at once.
    password = "smoke-pw-not-printed"
    url = f"postgresql://fastpaca:{password}@127.0.0.1:{free_port()}/fastpaca"
    node = Node(
        binary,
        root,
        "archive",
        {
            "FASTPACA_ARCHIVER_ENABLED": "true",
            "DATABASE_URL": url,
            "FASTPACA_ARCHIVE_FLUSH_INTERVAL_MS": "200",
        },
    )
    node.start()
    try:
        took = await node.wait_ready(http)
        cid = "smoke-archive"
        await put_conversation(http, node.url, cid)
        seqs = [await append(http, node.url, cid, f"kept {i}") for i in (1, 2)]
        tail, replay = await read_texts(http, node.url, cid)
        require(tail == replay == ["kept 1", "kept 2"], f"tail {tail}, replay {replay}")

        async def unreachable_logged() -> bool:
            return '"archive.unreachable"' in node.log()

        await poll(unreachable_logged, "no archive.unreachable warning logged")

        async def rows_pending() -> bool:
            # The gauge is set by each flush (every 200 ms here), which fails.
            async with http.get(f"{node.url}/metrics") as response:
                metrics = await response.text()
            return metric(metrics, "fastpaca_archive_pending_rows") >= len(seqs)

        await poll(rows_pending, "the unarchived rows are never counted as pending")
        node.check_native((*NATIVE_ALWAYS, *NATIVE_ARCHIVE))
        code = node.stop()
        require(code == 0, f"SIGTERM exit {code}")
        node.check_log_clean()
        require(password not in node.log(), "the database password was logged")
        step(
            f"FASTPACA_ARCHIVER_ENABLED=true, Postgres unreachable: ready in {took:.1f} s, "
            "appends and reads served, archive.unreachable logged, rows pending, asyncpg "
            "loaded, password not logged, SIGTERM -> 0"
        )
    except BaseException:
        node.kill()
        print(node.log()[-4000:], file=sys.stderr)
        raise


def migrate(binary: Path, root: Path) -> None:
    cwd = root / "migrate"
    cwd.mkdir()
    code, out, err = run_cli(binary, cwd, ["migrate"], {"DATABASE_URL": "not-a-url"})
    lines = err.strip().splitlines()
    require(
        code == 2 and len(lines) == 1 and not out, f"malformed URL: exit {code} {out!r} {err!r}"
    )
    require("not-a-url" not in err, "the URL was printed")
    step(f"`fastpaca migrate` malformed URL: exit 2, one line: {lines[0]}")
    url = f"postgresql://fastpaca:pw@127.0.0.1:{free_port()}/fastpaca"
    code, out, err = run_cli(binary, cwd, ["migrate"], {"DATABASE_URL": url})
    lines = err.strip().splitlines()
    require(code == 1 and len(lines) == 1, f"unreachable: exit {code} {out!r} {err!r}")
    step("`fastpaca migrate` unreachable Postgres: exit 1, one line")


async def cluster(binary: Path, root: Path, http: aiohttp.ClientSession) -> None:
    ports = [free_port() for _ in range(3)]
    members = ",".join(f"n{i}@127.0.0.1:{port}" for i, port in enumerate(ports, 1))
    nodes = []
    for i, port in enumerate(ports, 1):
        node = Node(
            binary,
            root,
            f"n{i}",
            {"CLUSTER_NODES": members, "NODE_NAME": f"n{i}", "FASTPACA_CLUSTER_SECRET": SECRET},
            port=port,
        )
        nodes.append(node)
    try:
        for node in nodes:
            node.start()
        took = max(await asyncio.gather(*(node.wait_ready(http) for node in nodes)))
        cid = "smoke-cluster"
        await put_conversation(http, nodes[0].url, cid)
        # Each append goes through another node than the one holding the socket,
        # so the push crosses the peer links (the cluster pub/sub adapter).
        for i, node in enumerate(nodes):
            watcher = nodes[(i + 1) % 3]
            await stream_roundtrip(http, watcher.url, node.url, cid, f"through {node.name}")
        expected = [f"through {node.name}" for node in nodes]
        for node in nodes:
            tail, replay = await read_texts(http, node.url, cid)
            require(tail == replay == expected, f"{node.name} reads {tail} / {replay}")
        for node in nodes:
            node.check_native(NATIVE_ALWAYS)
        codes = [node.stop() for node in nodes]
        require(codes == [0, 0, 0], f"SIGTERM exits {codes}")
        for node in nodes:
            node.check_log_clean()
        step(
            f"3-node cluster: ready in {took:.1f} s, one append through each node pushed to a "
            "socket on another, same history read on all three, SIGTERM -> 0 x3"
        )
    except BaseException:
        for node in nodes:
            node.kill()
            print(f"--- {node.name}\n{node.log()[-2000:]}", file=sys.stderr)
        raise


async def run(binary: Path, with_cluster: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="fastpaca-smoke-") as tmp:
        root = Path(tmp)
        # A copy in a fresh dir: nothing next to the binary but what it brings.
        local = root / "bin" / "fastpaca"
        local.parent.mkdir()
        shutil.copy2(binary, local)
        code, out, err = run_cli(local, root, ["version"], {})
        # The version comes from the package metadata the spec must bundle; without
        # it the CLI falls back to a constant that would go stale on the next release.
        with open(REPO / "pyproject.toml", "rb") as project:
            version = tomllib.load(project)["project"]["version"]
        require(code == 0 and out == f"fastpaca {version}\n", f"version: {code} {out!r} {err!r}")
        step(f"`{out.strip()}` from an empty dir with PATH={CLEAN_PATH} only")
        timeout = aiohttp.ClientTimeout(total=30)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as http:
                await single_node(local, root, http)
                await redis_adapter(local, root, http)
                await archive_unreachable(local, root, http)
                migrate(local, root)
                if with_cluster:
                    await cluster(local, root, http)
        finally:
            for node in STARTED:
                node.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default=str(REPO / "dist" / "fastpaca"))
    parser.add_argument("--no-cluster", action="store_true", help="skip the 3-node scenario")
    args = parser.parse_args()
    binary = Path(args.binary).resolve()
    if not os.access(binary, os.X_OK):
        print(f"smoke: {binary} is not an executable; run packaging/build.sh", file=sys.stderr)
        return 2
    print(f"smoke-testing {binary}", flush=True)
    started = time.monotonic()
    try:
        asyncio.run(run(binary, with_cluster=not args.no_cluster))
    except SmokeFailure as exc:
        print(f"smoke FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"smoke passed in {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
