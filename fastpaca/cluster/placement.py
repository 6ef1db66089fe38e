"""Where things live: conversation → Raft group, and group → replica nodes.

Both mappings are pure functions of their inputs so every node computes the
same answer with no coordination:

* a conversation's group is a stable hash of its id modulo the group count
  (BLAKE2b, never Python's ``hash()``, which is salted per process);
* a group's replicas are the ``replication`` nodes with the highest
  rendezvous (highest-random-weight) score for that group, so adding or
  removing one node moves only the groups that node wins or loses.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable

__all__ = ["REPLICATION_FACTOR", "group_for_conversation", "rendezvous_replicas"]

REPLICATION_FACTOR = 3


def group_for_conversation(conversation_id: str, group_count: int) -> int:
    digest = hashlib.blake2b(conversation_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % group_count


def _score(group_id: int, node_id: str) -> int:
    key = f"{group_id}\x00{node_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def rendezvous_replicas(
    group_id: int, node_ids: Iterable[str], *, replication: int = REPLICATION_FACTOR
) -> list[str]:
    """The nodes that should host ``group_id``, best first, at most ``replication``.

    Ties (astronomically unlikely) break by node id so the order is total.
    """
    return list(_ranked(group_id, frozenset(node_ids))[:replication])


@functools.lru_cache(maxsize=4096)
def _ranked(group_id: int, node_ids: frozenset[str]) -> tuple[str, ...]:
    # Cached: the coordinator ranks every group's nodes several times a
    # second, and the set of nodes rarely changes; hashing and sorting were
    # most of what an idle coordinator spent planning.
    return tuple(sorted(node_ids, key=lambda node: (-_score(group_id, node), node)))
