"""Group snapshots stream the group's range; restore replaces it exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from fsm_harness import FsmHarness, append, text, upsert

from fastpaca.raft.codec import CodecError
from fastpaca.raft.kv import LevelDBKV, WriteBatch
from fastpaca.store import keys


def dump_group(kv: LevelDBKV, group_id: int) -> dict[bytes, bytes]:
    return dict(kv.iterate(*keys.group_range(group_id)))


def test_snapshot_restores_into_another_node(kv: LevelDBKV, tmp_path: Path) -> None:
    source = FsmHarness(kv, group_id=7)
    source.apply(upsert("a", {"m": 1}), upsert("b"))
    for n in range(50):
        source.apply(append(text(f"message {n}" * 5), cid="a", key=f"k{n}"))
    snapshot = source.fsm.snapshot(7)
    # Writes after the snapshot is taken are not in it.
    source.apply(append(text("late"), cid="b"))
    chunks = list(snapshot.chunks(256))
    assert len(chunks) > 5 and snapshot.applied_index == 52

    other_kv = LevelDBKV(str(tmp_path / "other"))
    try:
        target = FsmHarness(other_kv, group_id=7)
        target.apply(upsert("stale"))  # state the restore must throw away
        batch = WriteBatch(other_kv)
        target.fsm.restore(7, snapshot.applied_index, iter(chunks), batch)
        other_kv.write(batch, sync=True)
        restored = dump_group(other_kv, 7)
        assert target.reader.conversation(7, "stale") is None
        assert target.fsm.applied_index(7) == 52
        view = target.reader.conversation(7, "a")
        assert view is not None and view.state.last_seq == 50
        # Byte for byte the state as of the snapshot, applied index aside.
        expected = dict(snapshot.view.iterate(*keys.group_range(7)))
        assert expected.pop(keys.applied_index_key(7)) == restored.pop(keys.applied_index_key(7))
        assert restored == expected
    finally:
        other_kv.close()


def test_restore_stays_inside_its_group(kv: LevelDBKV) -> None:
    FsmHarness(kv, group_id=1).apply(upsert("a"), append(text("x"), cid="a"))
    neighbour = FsmHarness(kv, group_id=2)
    neighbour.apply(upsert("n"))
    before = dump_group(kv, 2)
    chunks = list(FsmHarness(kv, group_id=1).fsm.snapshot(1).chunks(1 << 20))
    batch = WriteBatch(kv)
    neighbour.fsm.restore(3, 9, chunks, batch)
    kv.write(batch, sync=True)
    assert dump_group(kv, 2) == before
    assert FsmHarness(kv, group_id=3).reader.conversation(3, "a") is not None


def test_truncated_chunk_is_refused(kv: LevelDBKV) -> None:
    harness = FsmHarness(kv)
    harness.apply(upsert("a"))
    (chunk,) = harness.fsm.snapshot(0).chunks(1 << 20)
    with pytest.raises(CodecError):
        harness.fsm.restore(0, 1, [chunk[:-3]], WriteBatch(kv))
