"""The handshake messages and proofs (auth.py) and the record layout (frames.py)."""

from __future__ import annotations

from collections import deque

import pytest

from fastpaca.cluster import auth
from fastpaca.cluster.frames import MalformedFrame, decode_records, take_records

SECRET = b"s3cret"
CN, SN = b"c" * auth.NONCE_BYTES, b"s" * auth.NONCE_BYTES


def test_proofs_bind_role_ids_nonces_and_secret() -> None:
    base = auth.server_proof(SECRET, "a", "b", CN, SN)
    variants = [
        auth.client_proof(SECRET, "a", "b", CN, SN),  # role
        auth.server_proof(SECRET, "b", "a", CN, SN),  # ids swapped
        auth.server_proof(SECRET, "a", "bb", CN, SN),  # other id
        auth.server_proof(SECRET, "ab", "", CN, SN),  # same concatenation, other split
        auth.server_proof(SECRET, "a", "b", SN, CN),  # nonces
        auth.server_proof(b"other", "a", "b", CN, SN),  # secret
    ]
    assert len({base, *variants}) == len(variants) + 1
    auth.verify_proof(base, auth.server_proof(SECRET, "a", "b", CN, SN))
    with pytest.raises(auth.HandshakeError):
        auth.verify_proof(base, variants[0])


def test_nonces_are_fresh() -> None:
    assert len({auth.new_nonce() for _ in range(100)}) == 100


def test_handshake_messages_round_trip() -> None:
    hello = auth.Hello("node-1@10.0.0.1", CN)
    assert auth.decode_hello(auth.encode_hello(hello)) == hello
    challenge = auth.Challenge("n2", SN, b"p" * auth.PROOF_BYTES)
    assert auth.decode_challenge(auth.encode_challenge(challenge)) == challenge
    assert auth.decode_proof(auth.encode_proof(b"q" * 32)) == b"q" * 32
    auth.decode_accept(auth.encode_accept())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GET / HTTP/1.1\r\n",
        auth.encode_hello(auth.Hello("a", CN))[:-1],  # truncated id
        auth.encode_hello(auth.Hello("a", CN)) + b"x",  # trailing byte
        auth.encode_proof(b"q" * 32),  # wrong message kind
        b"FPC1\x01" + CN + b"\x00",  # empty id
        b"FPC1\x01" + CN + b"\x02\xff\xfe",  # not UTF-8
    ],
)
def test_malformed_hello_is_a_handshake_error(data: bytes) -> None:
    with pytest.raises(auth.HandshakeError):
        auth.decode_hello(data)


def test_records_round_trip_and_coalesce_up_to_the_frame_limit() -> None:
    queue = deque([(1, b"a" * 10), (2, b""), (3, b"c" * 10), (1, b"d" * 100)])
    frame, count, payload_bytes = take_records(queue, frame_bytes_max=40)
    assert (count, payload_bytes) == (3, 20)
    assert decode_records(frame) == [(1, b"a" * 10), (2, b""), (3, b"c" * 10)]
    # A payload larger than the limit still goes, alone.
    frame, count, _ = take_records(queue, frame_bytes_max=40)
    assert count == 1 and not queue
    assert decode_records(frame) == [(1, b"d" * 100)]


@pytest.mark.parametrize(
    "data", [b"", b"\x01\x00\x00", b"\x01\x00\x00\x00\x05abc", b"\x01\x00\x00\x00\x00z"]
)
def test_malformed_records_are_rejected(data: bytes) -> None:
    with pytest.raises(MalformedFrame):
        decode_records(data)
