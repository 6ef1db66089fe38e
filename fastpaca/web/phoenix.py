"""Phoenix Channels frames: decode what clients send, encode what we send.

Owns the two JSON serializers of the Phoenix wire protocol
(``/work/shared/PHOENIX_PROTOCOL.md``) and nothing else; ``web/socket.py``
decides what the frames mean.

- ``vsn=2.0.0`` (what the official JS client speaks): every text frame is a
  five-element array ``[join_ref, ref, topic, event, payload]``.
- ``vsn=1.0.0`` (or no ``vsn``, as the Elixir server assumes): JSON objects
  ``{"topic", "event", "payload", "ref", "join_ref"}``. We write ``join_ref``
  into v1 frames too: the old v1 JS client reads it to drop outdated pushes,
  and other clients ignore the extra key.

Refs are opaque: the JS client compares them with ``===``, so a ref is echoed
as the exact JSON value received (a string, normally; an integer or null is
accepted and echoed as such). Payloads the server sends are pre-encoded JSON
objects spliced into the frame, so a stream event fanned out to many sockets
is never decoded or re-encoded. Binary (serializer v2 binary layout) frames
are not supported: the stream never sends them and refuses them inbound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

__all__ = [
    "V1",
    "V2",
    "Frame",
    "FrameError",
    "Ref",
    "Serializer",
    "serializer_for",
]

Ref = str | int | None
"""A ``join_ref`` or ``ref`` exactly as the client sent it."""


@dataclass(slots=True, frozen=True)
class Frame:
    """One decoded client frame."""

    join_ref: Ref
    ref: Ref
    topic: str
    event: str
    payload: dict[str, Any]


class FrameError(Exception):
    """The frame is not a Phoenix frame. Carries what could be read of it,
    so the error reply can still reach the push that sent it."""

    def __init__(
        self, reason: str, *, join_ref: Ref = None, ref: Ref = None, topic: str = "phoenix"
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.join_ref = join_ref
        self.ref = ref
        self.topic = topic


class Serializer(Protocol):
    vsn: str

    def decode(self, data: str) -> Frame:
        """Raises ``FrameError``."""
        ...

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: bytes) -> bytes:
        """A ``phx_reply``; ``response`` is an encoded JSON object."""
        ...

    def push_head(self, join_ref: Ref, topic: str) -> bytes:
        """The constant start of every push of one channel (computed once per join)."""
        ...

    def push(self, head: bytes, event: str, payload: bytes) -> bytes:
        """A server push (``ref`` null); ``payload`` is an encoded JSON object."""
        ...


def _check_ref(value: object, name: str) -> Ref:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise FrameError(f"{name} must be a string or null")


def _json(value: object) -> bytes:
    return orjson.dumps(value)


def _parse(data: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"frame is not valid JSON: {exc}") from None


def _check_fields(join_ref: Ref, ref: Ref, topic: object, event: object, payload: object) -> Frame:
    if not isinstance(topic, str) or not topic:
        raise FrameError("topic must be a non-empty string", join_ref=join_ref, ref=ref)
    if not isinstance(event, str) or not event:
        raise FrameError(
            "event must be a non-empty string", join_ref=join_ref, ref=ref, topic=topic
        )
    if not isinstance(payload, dict):
        raise FrameError("payload must be a JSON object", join_ref=join_ref, ref=ref, topic=topic)
    return Frame(join_ref, ref, topic, event, payload)


class _V2:
    vsn = "2.0.0"

    def decode(self, data: str) -> Frame:
        value = _parse(data)
        if not isinstance(value, list) or len(value) != 5:
            raise FrameError("frame must be a JSON array [join_ref, ref, topic, event, payload]")
        join_ref = _check_ref(value[0], "join_ref")
        ref = _check_ref(value[1], "ref")
        return _check_fields(join_ref, ref, value[2], value[3], value[4])

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: bytes) -> bytes:
        return b'[%b,%b,%b,"phx_reply",{"status":%b,"response":%b}]' % (
            _json(join_ref),
            _json(ref),
            _json(topic),
            _json(status),
            response,
        )

    def push_head(self, join_ref: Ref, topic: str) -> bytes:
        return b"[%b,null,%b," % (_json(join_ref), _json(topic))

    def push(self, head: bytes, event: str, payload: bytes) -> bytes:
        return b"%b%b,%b]" % (head, _json(event), payload)


class _V1:
    vsn = "1.0.0"

    def decode(self, data: str) -> Frame:
        value = _parse(data)
        if not isinstance(value, dict):
            raise FrameError('frame must be a JSON object {"topic","event","payload","ref"}')
        join_ref = _check_ref(value.get("join_ref"), "join_ref")
        ref = _check_ref(value.get("ref"), "ref")
        return _check_fields(
            join_ref, ref, value.get("topic"), value.get("event"), value.get("payload")
        )

    def reply(self, join_ref: Ref, ref: Ref, topic: str, status: str, response: bytes) -> bytes:
        return (
            b'{"topic":%b,"event":"phx_reply","ref":%b,"join_ref":%b,'
            b'"payload":{"status":%b,"response":%b}}'
        ) % (_json(topic), _json(ref), _json(join_ref), _json(status), response)

    def push_head(self, join_ref: Ref, topic: str) -> bytes:
        return b'{"topic":%b,"ref":null,"join_ref":%b,' % (_json(topic), _json(join_ref))

    def push(self, head: bytes, event: str, payload: bytes) -> bytes:
        return b'%b"event":%b,"payload":%b}' % (head, _json(event), payload)


V1: Serializer = _V1()
V2: Serializer = _V2()


def serializer_for(vsn: str | None) -> Serializer | None:
    """The serializer a ``vsn`` query parameter selects; None for one we do
    not speak. No ``vsn`` means 1.0.0, as the Elixir server reads it."""
    if vsn is None or vsn == "1.0.0" or vsn.startswith("1."):
        return V1
    if vsn == "2.0.0" or vsn.startswith("2."):
        return V2
    return None
