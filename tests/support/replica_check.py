"""Read conversations straight out of stopped nodes' LevelDB directories.

Used after a cluster test or soak to check that every replica of a group
holds the same messages, independently of the HTTP path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from fastpaca.cluster.placement import group_for_conversation
from fastpaca.raft.kv import LevelDBKV
from fastpaca.store.reads import StoreReader

__all__ = ["read_replicas"]


def read_replicas(
    data_dirs: Iterable[Path], conversation_ids: Iterable[str], *, group_count: int
) -> dict[str, list[list[str]]]:
    """Conversation → the text of its messages (first part), one list per node
    that holds a replica of the conversation's group."""
    cids = list(conversation_ids)
    replicas: dict[str, list[list[str]]] = {cid: [] for cid in cids}
    for data_dir in data_dirs:
        kv = LevelDBKV(str(data_dir / "leveldb"))
        try:
            reader = StoreReader(kv)
            for cid in cids:
                group_id = group_for_conversation(cid, group_count)
                view = reader.conversation(group_id, cid)
                if view is None:
                    continue
                last_seq = view.state.last_seq
                stored = reader.replay(group_id, cid, last_seq, from_seq=1, limit=last_seq + 1)
                assert [m.seq for m in stored] == list(range(1, last_seq + 1)), data_dir
                replicas[cid].append([orjson.loads(m.body)["parts"][0]["text"] for m in stored])
        finally:
            kv.close()
    return replicas
