"""LevelDBKV range reads on a real LevelDB, checked against MemoryKV (a
sorted dict, obviously right) forward and in reverse, live and through a
snapshot, with deletes in between so LevelDB skips tombstones too."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpaca.raft.kv import KVView, LevelDBKV, MemoryKV, WriteBatch

_KEYS = st.binary(min_size=1, max_size=3).map(lambda raw: bytes(b % 4 + 97 for b in raw))
"""Keys over a 4-letter alphabet: short, so bounds often equal stored keys."""


def _ranges(view: KVView, start: bytes, stop: bytes) -> tuple[list[bytes], list[bytes]]:
    forward = [key for key, _ in view.iterate(start, stop)]
    backward = [key for key, _ in view.iterate(start, stop, reverse=True)]
    return forward, backward


def test_reverse_range_whose_only_key_is_start(tmp_path: Path) -> None:
    # The shape plyvel got wrong: a group's log holding exactly one entry
    # above its snapshot base, read from the top to find the last index.
    kv = LevelDBKV(str(tmp_path / "db"))
    try:
        batch = WriteBatch(kv)
        for key in (b"a1", b"b5", b"c"):
            batch.put(key, key)
        kv.write(batch, sync=True)
        for view in (kv, kv.snapshot()):
            assert list(view.iterate(b"b5", b"b9", reverse=True)) == [(b"b5", b"b5")]
            assert list(view.iterate(b"b5", b"c", reverse=True)) == [(b"b5", b"b5")]
            assert list(view.iterate(b"a1", b"b5", reverse=True)) == [(b"a1", b"a1")]
            assert list(view.iterate(b"c", b"zz", reverse=True)) == [(b"c", b"c")]
            assert list(view.iterate(b"b6", b"b9", reverse=True)) == []
    finally:
        kv.close()


@settings(max_examples=80, deadline=None)
@given(
    puts=st.lists(_KEYS, max_size=12),
    deletes=st.lists(_KEYS, max_size=6),
    bounds=st.lists(st.tuples(_KEYS, _KEYS), min_size=1, max_size=8),
)
def test_leveldb_ranges_match_a_sorted_dict(
    puts: list[bytes], deletes: list[bytes], bounds: list[tuple[bytes, bytes]]
) -> None:
    with tempfile.TemporaryDirectory() as root:
        kv = LevelDBKV(str(Path(root) / "db"))
        try:
            model = MemoryKV()
            for store in (kv, model):
                batch = WriteBatch(store)
                for key in puts:
                    batch.put(key, key)
                store.write(batch, sync=False)
                batch = WriteBatch(store)  # a second write: real tombstones
                for key in deletes:
                    batch.delete(key)
                store.write(batch, sync=False)
            snapshot = kv.snapshot()
            for start, stop in bounds:
                expected = _ranges(model, start, stop)
                assert expected[1] == expected[0][::-1]
                assert _ranges(kv, start, stop) == expected
                assert _ranges(snapshot, start, stop) == expected
        finally:
            kv.close()


def test_a_sealed_write_lands_only_when_called_and_from_another_thread(tmp_path: Path) -> None:
    """The driver seals a batch on the loop and writes it in its writer
    thread: nothing lands before the call, puts and deletes land together."""
    kv = LevelDBKV(str(tmp_path / "db"))
    try:
        first = WriteBatch(kv)
        first.put(b"gone", b"1")
        kv.write(first, sync=False)
        batch = WriteBatch(kv)
        batch.put(b"a", b"x")
        batch.put(b"b", b"y")
        batch.delete(b"gone")
        write = kv.seal(batch, sync=True)
        assert kv.get(b"a") is None
        assert kv.get(b"gone") == b"1"
        worker = threading.Thread(target=write)
        worker.start()
        worker.join()
        assert [key for key, _ in kv.iterate(b"", b"\xff")] == [b"a", b"b"]
        assert kv.get(b"b") == b"y"
    finally:
        kv.close()
