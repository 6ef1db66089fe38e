"""HTTP benchmark: fastpaca on one node against two baselines, same client.

Starts each server as its own process on loopback and drives it with wrk
(64 connections, 1,000 conversations, ~300-byte messages): an unmeasured
warm-up of appends (--warmup seconds, the same for every server), then
measured runs, appends only and 80% appends mixed with 20% tail reads.

The measured runs are interleaved: all servers stay up, and each of
--rounds rounds runs every server once per mix (--seconds each), in an order
that rotates between rounds. A shared machine's speed drifts by 10-30%
within a minute; measured one after the other, each server would meet a
different machine. Each round's ratios compare servers measured seconds
apart, and the printed figures are medians over the rounds (with the
range of the per-round ratios).

Prints appends/s, p50/p99/p999 latency and server RSS per server and mix,
then the ratios fastpaca/bare and fastpaca/redis. Finally loads --messages
messages over 10,000 conversations into fastpaca (batch appends), reports
its RSS, kills it with SIGKILL and times its restart.

Servers:
  fastpaca  `python -m fastpaca serve` on a fresh LevelDB dir (fsync on)
  bare      aiohttp doing the same JSON parse and reply, storing nothing
  redis     aiohttp doing XADD per conversation on redis-server with
            appendonly yes + appendfsync always

Needs wrk and redis-server (Debian packages; `make bench` installs them).
Client and servers share this machine, so compare the ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout_s}s")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@contextmanager
def process(
    args: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def server(kind: str, workdir: Path) -> Iterator[tuple[int, int]]:
    """Start one server; yields (http port, pid of the process holding the data)."""
    port = free_port()
    if kind == "fastpaca":
        env = {
            "PORT": str(port),
            "FASTPACA_BIND": "127.0.0.1",
            "FASTPACA_RAFT_DATA_DIR": str(workdir / "raft"),
            "LOG_LEVEL": "warning",
        }
        with process([sys.executable, "-m", "fastpaca", "serve"], env) as proc:
            wait_for_port(port)
            yield port, proc.pid
    elif kind == "bare":
        with process(
            [sys.executable, str(HERE / "baselines" / "bare_server.py"), str(port)]
        ) as proc:
            wait_for_port(port)
            yield port, proc.pid
    elif kind == "redis":
        redis_port = free_port()
        redis_args = [
            shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
            "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
            "--appendonly", "yes", "--appendfsync", "always",
        ]  # fmt: skip
        with (
            process(redis_args),
            process(
                [
                    sys.executable,
                    str(HERE / "baselines" / "redis_server.py"),
                    str(port),
                    str(redis_port),
                ]
            ) as proc,
        ):
            wait_for_port(redis_port)
            wait_for_port(port)
            yield port, proc.pid
    else:
        raise ValueError(kind)


async def create_conversations(port: int, count: int, prefix: str) -> None:
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        sem = asyncio.Semaphore(32)

        async def put(i: int) -> None:
            async with sem, session.put(f"/v1/conversations/{prefix}-{i}", json={}) as resp:
                if resp.status not in (200, 201):
                    raise RuntimeError(f"PUT {prefix}-{i}: {resp.status} {await resp.text()}")

        await asyncio.gather(*(put(i) for i in range(1, count + 1)))


async def await_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        while time.monotonic() < deadline:
            try:
                async with session.get("/health/ready") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("server never became ready")


def run_wrk(port: int, *, seconds: int, connections: int, append_pct: int, conversations: int,
            prefix: str, ids_file: Path | None = None) -> dict[str, float]:  # fmt: skip
    """``ids_file``: write to the ids listed in it instead of ``prefix-1..conversations``."""
    env = {**os.environ, "CONVERSATIONS": str(conversations), "APPEND_PCT": str(append_pct),
           "CONV_PREFIX": prefix}  # fmt: skip
    if ids_file is not None:
        env["IDS_FILE"] = str(ids_file)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s",
         str(HERE / "wrk_mix.lua"), f"http://127.0.0.1:{port}"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("{"))
    result: dict[str, float] = json.loads(line)
    result["appends_per_s"] = result["appends"] / result["duration_s"]
    return result


async def load_messages(port: int, *, messages: int, conversations: int, batch: int) -> float:
    """Append ``messages`` messages over ``conversations`` conversations in batches."""
    text = "y" * 240
    started = time.perf_counter()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:
        await create_conversations(port, conversations, "mem")
        sem = asyncio.Semaphore(16)
        body = {"messages": [{"role": "user", "parts": [{"type": "text", "text": text}]}] * batch}

        async def post(i: int) -> None:
            async with (
                sem,
                session.post(
                    f"/v1/conversations/mem-{i % conversations + 1}/messages", json=body
                ) as resp,
            ):
                if resp.status != 201:
                    raise RuntimeError(f"batch append: {resp.status} {await resp.text()}")

        await asyncio.gather(*(post(i) for i in range(messages // batch)))
    return time.perf_counter() - started


def fmt(result: dict[str, float], rss: float) -> str:
    return (
        f"{result['appends_per_s']:>10.0f} appends/s  {result['requests'] / result['duration_s']:>8.0f} req/s"
        f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
        f"  p999 {result['p999_ms']:6.2f} ms  errors {int(result['errors'] + result['socket_errors'])}"
        f"  rss {rss:6.1f} MB"
    )


def median_result(results: list[dict[str, float]]) -> dict[str, float]:
    """Field by field, the median over rounds."""
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=4, help="per server, mix and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--warmup", type=int, default=3, help="seconds of unmeasured appends per server first"
    )
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=1_000_000, help="0 skips the memory phase")
    parser.add_argument("--servers", default="fastpaca,bare,redis")
    args = parser.parse_args()
    for tool in ("wrk", "redis-server"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: run `make bench`, which installs it")

    kinds = args.servers.split(",")
    mixes = (100, 80)
    rounds: dict[tuple[str, int], list[dict[str, float]]] = {
        (kind, pct): [] for kind in kinds for pct in mixes
    }
    with ExitStack() as stack:
        running: dict[str, tuple[int, int, Path]] = {}
        for kind in kinds:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"bench-{kind}-")))
            port, pid = stack.enter_context(server(kind, tmp))
            running[kind] = (port, pid, tmp)
            if kind == "fastpaca":
                asyncio.run(await_ready(port))
            asyncio.run(create_conversations(port, args.conversations, "bench"))
            if args.warmup:  # every server alike: first requests run colder
                run_wrk(port, seconds=args.warmup, connections=args.connections,
                        append_pct=100, conversations=args.conversations,
                        prefix="bench")  # fmt: skip
        for round_no in range(args.rounds):
            order = kinds[round_no % len(kinds) :] + kinds[: round_no % len(kinds)]
            for kind in order:
                port = running[kind][0]
                for pct in mixes:
                    result = run_wrk(port, seconds=args.seconds, connections=args.connections,
                                     append_pct=pct, conversations=args.conversations,
                                     prefix="bench")  # fmt: skip
                    rounds[(kind, pct)].append(result)
            print(f"round {round_no + 1}/{args.rounds}: "
                  + "  ".join(f"{kind} {rounds[(kind, 100)][-1]['appends_per_s']:.0f}/s"
                              for kind in order), flush=True)  # fmt: skip
        for kind in kinds:
            for pct in mixes:
                result = median_result(rounds[(kind, pct)])
                print(f"{kind:9s} {pct:3d}% appends: {fmt(result, rss_mb(running[kind][1]))}",
                      flush=True)  # fmt: skip
        if "fastpaca" in kinds and args.messages:
            port, pid, tmp = running["fastpaca"]
            elapsed = asyncio.run(
                load_messages(port, messages=args.messages, conversations=10_000, batch=100)
            )
            print(
                f"fastpaca  loaded {args.messages} messages over 10000 conversations in"
                f" {elapsed:.1f} s ({args.messages / elapsed:.0f} msg/s):"
                f" rss {rss_mb(pid):.1f} MB",
                flush=True,
            )
            os.kill(pid, signal.SIGKILL)  # the restart below starts from a crash
            started = time.monotonic()
            with server("fastpaca", tmp) as (port, pid):
                asyncio.run(await_ready(port, timeout_s=120))
                print(
                    f"fastpaca  restart after kill -9 with those messages stored: ready in"
                    f" {time.monotonic() - started:.1f} s, rss {rss_mb(pid):.1f} MB",
                    flush=True,
                )
    if "fastpaca" in kinds:
        for other in ("bare", "redis"):
            if other in kinds:
                for pct in mixes:
                    per_round = [
                        ours["appends_per_s"] / theirs["appends_per_s"]
                        for ours, theirs in zip(
                            rounds[("fastpaca", pct)], rounds[(other, pct)], strict=True
                        )
                    ]
                    print(
                        f"ratio fastpaca/{other} appends/s at {pct}% appends:"
                        f" {statistics.median(per_round):.2f}"
                        f" (rounds {min(per_round):.2f}-{max(per_round):.2f})"
                    )


if __name__ == "__main__":
    main()
