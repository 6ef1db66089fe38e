"""Bytes of one peer-link websocket message: a run of (channel, payload) records.

After the handshake every binary websocket message on ``/internal/cluster`` is
a concatenation of records::

    channel: u8 | payload length: u32 big-endian | payload

The writer packs as many queued records as fit in one message (coalescing);
the reader splits them back. A message that does not split exactly is
malformed and the caller closes the connection. Owns only this layout: no IO,
no queues, no dispatch.
"""

from __future__ import annotations

import struct
from collections import deque

__all__ = ["RECORD_HEADER_BYTES", "MalformedFrame", "decode_records", "take_records"]

_RECORD_HEADER = struct.Struct(">BI")
RECORD_HEADER_BYTES = _RECORD_HEADER.size


class MalformedFrame(Exception):
    """Raised when a websocket message does not split into whole records."""


def take_records(queue: deque[tuple[int, bytes]], frame_bytes_max: int) -> tuple[bytes, int, int]:
    """Pop records from the front of ``queue`` into one message.

    Takes at least one record (a payload bigger than ``frame_bytes_max`` goes
    alone) and then more while the message stays within ``frame_bytes_max``.
    Returns ``(message, records taken, payload bytes taken)``; the queue must
    not be empty.
    """
    parts: list[bytes] = []
    frame_bytes = 0
    payload_bytes = 0
    while queue:
        channel, payload = queue[0]
        record_bytes = RECORD_HEADER_BYTES + len(payload)
        if parts and frame_bytes + record_bytes > frame_bytes_max:
            break
        queue.popleft()
        parts.append(_RECORD_HEADER.pack(channel, len(payload)))
        parts.append(payload)
        frame_bytes += record_bytes
        payload_bytes += len(payload)
    return b"".join(parts), len(parts) // 2, payload_bytes


def decode_records(message: bytes) -> list[tuple[int, bytes]]:
    """Split ``message`` into its records, in order; raise MalformedFrame if it
    is empty, truncated, or has trailing bytes."""
    if not message:
        raise MalformedFrame("empty frame")
    records: list[tuple[int, bytes]] = []
    view = memoryview(message)
    offset = 0
    while offset < len(message):
        if len(message) - offset < RECORD_HEADER_BYTES:
            raise MalformedFrame(f"truncated record header at byte {offset}")
        channel, size = _RECORD_HEADER.unpack_from(message, offset)
        start = offset + RECORD_HEADER_BYTES
        end = start + size
        if end > len(message):
            raise MalformedFrame(f"record at byte {offset} claims {size} bytes past the end")
        records.append((channel, bytes(view[start:end])))
        offset = end
    return records
