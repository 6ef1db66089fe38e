"""A minimal Phoenix Channels client for the tests: raw frames, both
serializers, and waits with deadlines (never sleeps)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class In:
    """One frame from the server, serializer-neutral."""

    join_ref: Any
    ref: Any
    topic: str
    event: str
    payload: Any


class PhoenixClient:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, v1: bool = False) -> None:
        self.ws = ws
        self.v1 = v1
        self._ref = 0

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(self, join_ref: Any, ref: Any, topic: str, event: str, payload: Any) -> None:
        if self.v1:
            frame: Any = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                frame["join_ref"] = join_ref
        else:
            frame = [join_ref, ref, topic, event, payload]
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def recv(self, timeout_s: float = TIMEOUT_S) -> In:
        message = await self.ws.receive(timeout=timeout_s)
        assert message.type is aiohttp.WSMsgType.TEXT, message
        value = orjson.loads(message.data)
        if self.v1:
            assert isinstance(value, dict), value
            return In(value.get("join_ref"), value["ref"], value["topic"], value["event"],
                      value["payload"])  # fmt: skip
        assert isinstance(value, list) and len(value) == 5, value
        return In(*value)

    async def request(
        self, topic: str, event: str, payload: Any, *, join_ref: Any = None
    ) -> tuple[str, In]:
        """Send a frame with a fresh ref and wait for its reply (pushes that
        arrive first are skipped: callers that care use ``recv``)."""
        ref = self.next_ref()
        await self.send(join_ref, ref, topic, event, payload)
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                frame = await self.recv()
                if frame.event == "phx_reply" and frame.ref == ref:
                    return ref, frame

    async def join(self, topic: str, params: Any = None) -> tuple[str, In]:
        """``phx_join`` as the JS client sends it (join_ref == ref); returns
        (join_ref, reply). Nothing is skipped: the reply must come first."""
        ref = self.next_ref()
        await self.send(ref, ref, topic, "phx_join", {} if params is None else params)
        reply = await self.recv()
        assert (reply.event, reply.ref, reply.topic) == ("phx_reply", ref, topic), reply
        return ref, reply

    async def pushes(self, count: int, timeout_s: float = TIMEOUT_S) -> list[In]:
        frames = []
        async with asyncio.timeout(timeout_s):
            while len(frames) < count:
                frames.append(await self.recv(timeout_s))
        return frames

    async def barrier(self) -> list[In]:
        """Send a leave of a topic never joined and return every frame that
        arrives before its reply: the server queues that reply behind
        everything it had queued by then, so it is all here (a deterministic
        "nothing else came"). Not a heartbeat: its reply jumps the queue."""
        ref = self.next_ref()
        await self.send(None, ref, "barrier:never-joined", "phx_leave", {})
        before = []
        async with asyncio.timeout(TIMEOUT_S):
            while True:
                frame = await self.recv()
                if frame.event == "phx_reply" and frame.ref == ref:
                    return before
                before.append(frame)
