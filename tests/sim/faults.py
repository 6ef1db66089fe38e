"""The fault schedule: partitions, crashes, pauses and link blips during the safety phase.

Owns *when* and *where* faults strike; the network and the simulator carry
them out. Draws only from the simulator's rng. A crash is either immediate
(between iterations) or planned for a point inside the node's next iteration
(before its write, after the write, after sending), which is where a driver
is most fragile. Usually at most a minority of nodes is down at once; some
seeds allow more, up to a full outage: crashes lose only unsynced writes, so
the cluster must still recover once restarted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .simulator import Simulator

__all__ = ["FaultSchedule"]


class FaultSchedule:
    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._params = sim.params

    def start(self) -> None:
        if self._params.partition_interval_ms:
            self._next(self._params.partition_interval_ms, "partition", self._partition)
        if self._params.crash_interval_ms:
            self._next(self._params.crash_interval_ms, "crash", self._crash)
        if self._params.pause_interval_ms:
            self._next(self._params.pause_interval_ms, "pause", self._pause)
        if self._params.blip_interval_ms:
            self._next(self._params.blip_interval_ms, "blip", self._blip)

    def _next(self, mean_ms: int, label: str, action: object) -> None:
        assert callable(action)
        delay_ms = self._sim.rng.randint(mean_ms // 2, mean_ms * 3 // 2)
        self._sim.queue.schedule(delay_ms, f"fault {label}", action)

    def downtime_ms(self) -> int:
        return self._sim.rng.randint(5, self._params.downtime_ms_max)

    # --- partitions ------------------------------------------------------------

    def _partition(self) -> None:
        sim = self._sim
        if sim.phase != "safety":
            return
        rng = sim.rng
        nodes = list(self._params.node_ids)
        kind = rng.choice(("isolate", "isolate_one_way", "split", "links"))
        if kind == "isolate":
            cut = sim.network.split([rng.choice(nodes)], one_way=False)
        elif kind == "isolate_one_way":
            cut = sim.network.split([rng.choice(nodes)], one_way=True)
        elif kind == "split":
            side = rng.sample(nodes, rng.randint(1, len(nodes) // 2))
            cut = sim.network.split(side, one_way=rng.random() < 0.3)
        else:
            pairs = [(a, b) for a in nodes for b in nodes if a != b]
            cut = rng.sample(pairs, rng.randint(1, len(pairs) // 2))
            sim.network.block(cut)
        sim.note(f"partition {kind}: {sorted(cut)}")
        self._report_cut(sorted(cut))
        heal_ms = rng.randint(20, self._params.partition_duration_ms_max)
        sim.queue.schedule(heal_ms, "fault heal", self._heal)

    def _report_cut(self, cut: list[tuple[str, str]]) -> None:
        """A cut connection is (sometimes) noticed by both of its ends."""
        pairs = sorted({(min(a, b), max(a, b)) for a, b in cut})
        for a, b in pairs:
            if self._sim.rng.random() < self._params.link_down_rate:
                self._sim.report_link_down(a, b, self._sim.rng.randint(0, 50))
                self._sim.report_link_down(b, a, self._sim.rng.randint(0, 50))

    def _heal(self) -> None:
        if self._sim.phase != "safety":
            return
        self._sim.network.heal()
        self._next(self._params.partition_interval_ms, "partition", self._partition)

    # --- crashes -----------------------------------------------------------------

    def _crash(self) -> None:
        sim = self._sim
        if sim.phase != "safety":
            return
        self._next(self._params.crash_interval_ms, "crash", self._crash)
        up = sim.up_nodes()
        down = len(self._params.node_ids) - len(up)
        if down >= self._params.max_down or not up:
            return
        victim = sim.rng.choice(up)
        if sim.rng.random() < 0.3:
            sim.crash(victim, "immediate")
            return
        slot = sim.slots[victim]
        slot.crash_at = sim.rng.choice(self._params.crash_points)
        sim.note(f"crash planned on {victim} at {slot.crash_at}")
        sim.wake(victim)

    # --- link blips ------------------------------------------------------------------

    def _blip(self) -> None:
        """A connection between two nodes drops and is redialed at once:
        both ends get the down callback, the network itself loses nothing."""
        sim = self._sim
        if sim.phase != "safety":
            return
        self._next(self._params.blip_interval_ms, "blip", self._blip)
        a, b = sim.rng.sample(sorted(sim.slots), 2)
        sim.note(f"link blip {a}-{b}")
        sim.report_link_down(a, b, sim.rng.randint(0, 3))
        sim.report_link_down(b, a, sim.rng.randint(0, 3))

    # --- pauses --------------------------------------------------------------------

    def _pause(self) -> None:
        sim = self._sim
        if sim.phase != "safety":
            return
        self._next(self._params.pause_interval_ms, "pause", self._pause)
        victim = sim.rng.choice(sorted(sim.slots))
        sim.pause(victim)
        pause_ms = sim.rng.randint(10, self._params.pause_ms_max)
        sim.queue.schedule(pause_ms, f"fault resume {victim}", lambda: sim.resume(victim))
