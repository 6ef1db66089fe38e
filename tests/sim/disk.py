"""Simulated disk: one node's KV, with crash semantics and injected faults.

Owns durability. The durable store is a real ``MemoryKV`` or a real
``LevelDBKV`` in a temp dir; writes made with ``sync=False`` sit in a volatile
overlay (visible to reads, as the page cache would make them) until the next
synced write, and a crash throws the overlay away. Injected faults: a write
may fail (the node must then crash), and — only to prove the checker works —
``lie_about_sync`` is the chance that a synced write is acknowledged but left
in the volatile overlay, as a disk with a lying write cache would. It must not
know what the keys mean.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from functools import partial

from fastpaca.raft.kv import KV, KVView, LevelDBKV, MemoryKV, WriteBatch

__all__ = ["DiskFault", "SimDisk"]


class DiskFault(OSError):
    """An injected write failure: the write did not happen."""


class SimDisk:
    """Implements the ``KV`` protocol for the node that owns it."""

    def __init__(
        self,
        *,
        storage: str,
        directory: str,
        rng: random.Random,
        write_fault_rate: float,
        lie_about_sync: float = 0.0,
    ) -> None:
        self._storage = storage
        self._path = os.path.join(directory, "kv")
        self._rng = rng
        self.write_fault_rate = write_fault_rate
        self.lie_about_sync = lie_about_sync
        self._memory = MemoryKV()
        self._durable: KV = self._open()
        self._overlay = WriteBatch(self._durable)
        self.writes = 0
        self.lost_writes = 0

    def _open(self) -> KV:
        if self._storage == "leveldb":
            return LevelDBKV(self._path)
        assert self._storage == "memory", self._storage
        return self._memory

    # --- crash model -------------------------------------------------------

    def crash(self) -> None:
        """Lose every write not yet synced and drop the open handle."""
        self.lost_writes += len(self._overlay)
        self._durable.close()
        self._durable = self._open()
        self._overlay = WriteBatch(self._durable)

    # --- KV protocol -------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        return self._overlay.get(key)

    def iterate(
        self, start: bytes, stop: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        # Materialise: callers may write while iterating a range they read.
        return iter(list(self._overlay.iterate(start, stop, reverse=reverse)))

    def seal(self, batch: WriteBatch, *, sync: bool) -> Callable[[], None]:
        return partial(self.write, batch, sync=sync)

    def write(self, batch: WriteBatch, *, sync: bool) -> None:
        if self.write_fault_rate and self._rng.random() < self.write_fault_rate:
            raise DiskFault("injected write failure")
        self.writes += 1
        for key, value in batch.items():
            if value is None:
                self._overlay.delete(key)
            else:
                self._overlay.put(key, value)
        lying = self.lie_about_sync > 0 and self._rng.random() < self.lie_about_sync
        if sync and not lying:
            # No real fsync: the simulated crash closes and reopens the store,
            # which keeps whatever reached it; what a crash loses is decided
            # here (the overlay), and fsync would only cost time.
            self._durable.write(self._overlay, sync=False)
            self._overlay = WriteBatch(self._durable)

    def snapshot(self) -> KVView:
        view = WriteBatch(self._durable.snapshot())
        for key, value in self._overlay.items():
            if value is None:
                view.delete(key)
            else:
                view.put(key, value)
        return view

    def close(self) -> None:
        """A clean shutdown keeps every write, synced or not."""
        if self._overlay:
            self._durable.write(self._overlay, sync=False)
            self._overlay = WriteBatch(self._durable)
        self._durable.close()
