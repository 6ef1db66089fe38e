"""The peer handshake: mutual HMAC challenge-response over a shared secret.

Owns the bytes of the four handshake messages and the proofs inside them. It
does no IO (``transport_ws.py`` moves the messages) and never sees a socket.

The exchange, one websocket binary message each::

    client -> server  HELLO      magic, client nonce, client id
    server -> client  CHALLENGE  magic, server nonce, server id, server proof
    client -> server  PROOF      magic, client proof
    server -> client  ACCEPT     magic            (or a close with a reason code)

A proof is ``HMAC-SHA256(secret, role | client id | server id | client nonce |
server nonce)`` with the role (``server``/``client``) and both ids
length-prefixed, so:

* the secret never crosses the wire, only MACs over fresh random nonces;
* each side proves knowledge of the secret (the server first, so a client
  never sends a MAC to an impostor);
* both node ids are bound in, so a proof cannot be replayed under another
  identity, and the role tag stops a server proof being reflected back as a
  client proof;
* nonces are 32 random bytes per connection (``secrets``), so a recorded
  handshake is useless on the next connection.

Every comparison of a proof is constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

__all__ = [
    "NONCE_BYTES",
    "PROOF_BYTES",
    "Challenge",
    "HandshakeError",
    "Hello",
    "client_proof",
    "decode_accept",
    "decode_challenge",
    "decode_hello",
    "decode_proof",
    "encode_accept",
    "encode_challenge",
    "encode_hello",
    "encode_proof",
    "new_nonce",
    "server_proof",
    "verify_proof",
]

_MAGIC = b"FPC1"
_HELLO, _CHALLENGE, _PROOF, _ACCEPT = 1, 2, 3, 4
_DOMAIN = b"fastpaca-cluster-auth-v1"
NONCE_BYTES = 32
PROOF_BYTES = 32
_NODE_ID_BYTES_MAX = 255


class HandshakeError(Exception):
    """Raised when a handshake message is malformed or a proof does not verify."""


@dataclass(frozen=True, slots=True)
class Hello:
    client_id: str
    client_nonce: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    server_id: str
    server_nonce: bytes
    server_proof: bytes


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_BYTES)


def _mac(
    secret: bytes,
    role: bytes,
    client_id: str,
    server_id: str,
    client_nonce: bytes,
    server_nonce: bytes,
) -> bytes:
    message = b"".join(
        (
            _DOMAIN,
            _length_prefixed(role),
            _length_prefixed(client_id.encode()),
            _length_prefixed(server_id.encode()),
            client_nonce,
            server_nonce,
        )
    )
    return hmac.new(secret, message, hashlib.sha256).digest()


def server_proof(
    secret: bytes, client_id: str, server_id: str, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    return _mac(secret, b"server", client_id, server_id, client_nonce, server_nonce)


def client_proof(
    secret: bytes, client_id: str, server_id: str, client_nonce: bytes, server_nonce: bytes
) -> bytes:
    return _mac(secret, b"client", client_id, server_id, client_nonce, server_nonce)


def verify_proof(expected: bytes, received: bytes) -> None:
    """Raise HandshakeError unless ``received`` equals ``expected`` (constant time)."""
    if not hmac.compare_digest(expected, received):
        raise HandshakeError("proof does not verify (wrong secret?)")


# --- message codec ---------------------------------------------------------------


def encode_hello(hello: Hello) -> bytes:
    return _header(_HELLO) + hello.client_nonce + _encode_node_id(hello.client_id)


def decode_hello(data: bytes) -> Hello:
    body = _strip_header(data, _HELLO)
    nonce, rest = _take(body, NONCE_BYTES, "client nonce")
    client_id, rest = _decode_node_id(rest)
    _expect_end(rest)
    return Hello(client_id=client_id, client_nonce=nonce)


def encode_challenge(challenge: Challenge) -> bytes:
    return (
        _header(_CHALLENGE)
        + challenge.server_nonce
        + _encode_node_id(challenge.server_id)
        + challenge.server_proof
    )


def decode_challenge(data: bytes) -> Challenge:
    body = _strip_header(data, _CHALLENGE)
    nonce, rest = _take(body, NONCE_BYTES, "server nonce")
    server_id, rest = _decode_node_id(rest)
    proof, rest = _take(rest, PROOF_BYTES, "server proof")
    _expect_end(rest)
    return Challenge(server_id=server_id, server_nonce=nonce, server_proof=proof)


def encode_proof(proof: bytes) -> bytes:
    return _header(_PROOF) + proof


def decode_proof(data: bytes) -> bytes:
    proof, rest = _take(_strip_header(data, _PROOF), PROOF_BYTES, "client proof")
    _expect_end(rest)
    return proof


def encode_accept() -> bytes:
    return _header(_ACCEPT)


def decode_accept(data: bytes) -> None:
    _expect_end(_strip_header(data, _ACCEPT))


# --- helpers ---------------------------------------------------------------------


def _header(kind: int) -> bytes:
    return _MAGIC + bytes((kind,))


def _strip_header(data: bytes, kind: int) -> bytes:
    if data[: len(_MAGIC)] != _MAGIC or len(data) <= len(_MAGIC):
        raise HandshakeError("not a fastpaca cluster handshake")
    if data[len(_MAGIC)] != kind:
        raise HandshakeError(f"expected handshake message {kind}, got {data[len(_MAGIC)]}")
    return data[len(_MAGIC) + 1 :]


def _take(data: bytes, size: int, what: str) -> tuple[bytes, bytes]:
    if len(data) < size:
        raise HandshakeError(f"truncated {what}")
    return data[:size], data[size:]


def _expect_end(rest: bytes) -> None:
    if rest:
        raise HandshakeError(f"{len(rest)} trailing bytes in handshake message")


def _length_prefixed(value: bytes) -> bytes:
    return struct.pack(">H", len(value)) + value


def _encode_node_id(node_id: str) -> bytes:
    raw = node_id.encode()
    if not 0 < len(raw) <= _NODE_ID_BYTES_MAX:
        raise ValueError(f"node id must be 1..{_NODE_ID_BYTES_MAX} UTF-8 bytes: {node_id!r}")
    return bytes((len(raw),)) + raw


def _decode_node_id(data: bytes) -> tuple[str, bytes]:
    if not data:
        raise HandshakeError("missing node id")
    size = data[0]
    raw, rest = _take(data[1:], size, "node id")
    if size == 0:
        raise HandshakeError("empty node id")
    try:
        return raw.decode(), rest
    except UnicodeDecodeError as exc:
        raise HandshakeError("node id is not UTF-8") from exc
