"""The simulator: one seed, one execution of N nodes x G Raft groups.

Owns simulated time and the run's shape: the event loop, node lifecycles
(start, crash, pause, restart) and the two phases (safety with faults on,
then liveness with everything healed). The network, faults, workload,
checker and convergence checks live in their own modules; a *level* supplies
the node software (``level1.py`` bare cores, ``level2.py`` real NodeHosts).

Everything random comes from ``self.rng`` = ``random.Random(seed)``, drawn in
event order, so a seed replays exactly; ``Trace`` fingerprints the run.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastpaca.raft.messages import Entry, EntryType

from .checker import InvariantChecker
from .convergence import check_final_state, convergence_problem
from .disk import DiskFault
from .events import EventQueue
from .faults import FaultSchedule
from .network import SimNetwork
from .params import SimParams, draw_params
from .process import NodeProcess, ProcessCrashed
from .trace import Trace
from .workload import Workload

__all__ = ["Level", "NodeSlot", "SimResult", "SimulationFailure", "Simulator"]

CONVERGE_CHECK_MS = 50
DEFAULT_SAFETY_MS = 2_000
LINK_DOWN_MS_MAX = 5
"""A killed process's connections close at once: its peers hear of it
within a few milliseconds (each at its own moment)."""


class _LinkDown:
    """Held for a paused process in place of a payload: a peer-down callback."""


LINK_DOWN = _LinkDown()


class SimulationFailure(AssertionError):
    """A seed broke an invariant or failed to converge."""


@dataclass(slots=True)
class NodeSlot:
    """A simulated machine: durable state that outlives its processes."""

    node_id: str
    tick_ms: int
    durable: object
    process: NodeProcess | None = None
    generation: int = 0
    """Bumped on crash so events scheduled for a dead process do nothing."""
    crash_at: str | None = None
    iteration_scheduled: bool = False
    crashes: int = 0
    paused: bool = False
    """A paused process keeps its state but runs nothing; input waits."""
    held: list[tuple[str, object]] = field(default_factory=list)


class Level(Protocol):
    name: str

    def new_durable(self, node_id: str) -> object: ...

    def start(self, slot: NodeSlot) -> NodeProcess: ...

    def on_crash(self, slot: NodeSlot) -> None:
        """Apply the crash to the durable state (lose unsynced writes)."""
        ...

    def disable_faults(self) -> None: ...

    def reference_state(self, group: int, log: list[Entry]) -> tuple[object, dict[int, object]]:
        """Fold the committed ``log`` through a fresh state machine: the state
        every converged replica must hold, and each entry's result by index."""
        ...

    def close(self) -> None: ...


@dataclass(slots=True)
class SimResult:
    seed: int
    level: str
    digest: str
    converged_at_ms: int
    stats: dict[str, int] = field(default_factory=dict)


class Simulator:
    def __init__(
        self,
        seed: int,
        level_factory: Callable[[Simulator], Level],
        *,
        safety_ms: int = DEFAULT_SAFETY_MS,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """``overrides`` replaces drawn parameters (tests that need, say, a
        crash-heavy run); the draws still happen, so the rest stay the same."""
        self.seed = seed
        self.rng = random.Random(seed)
        params = draw_params(seed, self.rng, safety_ms=safety_ms)
        self.params: SimParams = dataclasses.replace(params, **(overrides or {}))
        self.queue = EventQueue()
        self.checker = InvariantChecker()
        self.trace = Trace()
        self.network = SimNetwork(self.params, self.rng, self.queue, self._deliver)
        node_ids = self.params.node_ids  # 3 or 5, or 1 for a lone node's runs
        self.placement = {
            group: tuple(sorted(self.rng.sample(node_ids, min(3, len(node_ids)))))
            for group in range(self.params.group_count)
        }
        self.phase = "safety"
        self.level = level_factory(self)
        self.slots = {
            node_id: NodeSlot(node_id, tick_ms, self.level.new_durable(node_id))
            for node_id, tick_ms in zip(
                self.params.node_ids, self.params.tick_ms_by_node, strict=True
            )
        }
        self.hosting: dict[str, dict[int, tuple[str, ...]]] = {n: {} for n in self.slots}
        self.workload = Workload(self)
        self.faults = FaultSchedule(self)

    # --- node lifecycle ------------------------------------------------------

    def process(self, node_id: str) -> NodeProcess | None:
        return self.slots[node_id].process

    def up_nodes(self) -> list[str]:
        return [n for n, slot in self.slots.items() if slot.process is not None]

    def note(self, line: str) -> None:
        self.trace.record(self.queue.now_ms, line)

    def _boot(self) -> None:
        for node_id, slot in self.slots.items():
            self._start(slot)
            for group, replicas in self.placement.items():
                if node_id in replicas:
                    self.ensure_group(node_id, group, replicas)
            self.wake(node_id)

    def ensure_group(self, node_id: str, group: int, voters: tuple[str, ...]) -> None:
        """Have ``node_id`` host ``group``, and again after every restart: the
        cluster layer re-asserts placement, since a joiner that has received
        nothing yet (or a bootstrap whose write was lost) left no trace on disk."""
        self.hosting[node_id].setdefault(group, voters)
        process = self.slots[node_id].process
        assert process is not None
        process.ensure_group(group, voters)
        self.wake(node_id)

    def _start(self, slot: NodeSlot) -> None:
        slot.process = self.level.start(slot)
        slot.iteration_scheduled = False
        self._schedule_tick(slot, slot.generation)

    def remove_group(self, node_id: str, group: int) -> None:
        """``node_id`` stops hosting ``group`` and deletes its replica."""
        self.note(f"remove group {group} from {node_id}")
        del self.hosting[node_id][group]
        process = self.slots[node_id].process
        assert process is not None
        process.remove_group(group)
        self.checker.reset_applied(node_id, group, 0)
        self.wake(node_id)

    def crash(self, node_id: str, reason: str) -> None:
        slot = self.slots[node_id]
        if slot.process is None:
            return
        self.note(f"crash {node_id} ({reason})")
        slot.process = None
        slot.paused = False
        slot.held.clear()
        slot.generation += 1
        slot.crash_at = None
        slot.crashes += 1
        self.level.on_crash(slot)
        for peer in self.up_nodes():
            self.report_link_down(peer, node_id, self.rng.randint(0, LINK_DOWN_MS_MAX))
        downtime_ms = 0 if self.phase != "safety" else self.faults.downtime_ms()
        self.queue.schedule(downtime_ms, f"restart {node_id}", lambda: self.restart(node_id))

    def restart(self, node_id: str) -> None:
        slot = self.slots[node_id]
        if slot.process is not None:
            return
        self.note(f"restart {node_id}")
        self._start(slot)
        for group, voters in sorted(self.hosting[node_id].items()):
            self.ensure_group(node_id, group, voters)
        self.wake(node_id)

    def report_link_down(self, node_id: str, peer: str, delay_ms: int) -> None:
        """In ``delay_ms``, tell ``node_id``'s process (if still the same one)
        that its connection to ``peer`` went down."""
        slot = self.slots[node_id]
        generation = slot.generation

        def report() -> None:
            process = slot.process
            if process is None or slot.generation != generation:
                return
            if slot.paused:  # the callback runs when the process does
                slot.held.append((peer, LINK_DOWN))
                return
            process.peer_down(peer)
            self.wake(node_id)

        self.queue.schedule(delay_ms, f"link down {node_id}->{peer}", report)

    def pause(self, node_id: str) -> None:
        slot = self.slots[node_id]
        if slot.process is not None and not slot.paused:
            self.note(f"pause {node_id}")
            slot.paused = True

    def resume(self, node_id: str) -> None:
        """Run a paused process again: it sees what arrived meanwhile, late."""
        slot = self.slots[node_id]
        if not slot.paused:
            return
        self.note(f"resume {node_id}")
        slot.paused = False
        process = slot.process
        assert process is not None
        held, slot.held = slot.held, []
        for sender, payload in held:
            if payload is LINK_DOWN:
                process.peer_down(sender)
            else:
                process.receive(sender, payload)
        self.wake(node_id)

    def wake(self, node_id: str) -> None:
        """The node has work: run an iteration soon (coalescing inputs)."""
        slot = self.slots[node_id]
        if slot.process is None or slot.iteration_scheduled:
            return
        slot.iteration_scheduled = True
        generation = slot.generation
        self.queue.schedule(1, f"iter {node_id}", lambda: self._iterate(slot, generation))

    def _iterate(self, slot: NodeSlot, generation: int) -> None:
        process = slot.process
        if process is None or slot.generation != generation:
            return
        slot.iteration_scheduled = False
        if slot.paused:
            return  # resume() wakes it
        node_id = slot.node_id

        def send(peer: str, payload: object) -> bool:
            if self.slots[peer].process is None:
                return False  # the connection to a crashed node is down
            return self.network.send(node_id, peer, payload)

        try:
            more = process.iterate(send, slot.crash_at)
        except ProcessCrashed:
            self.crash(node_id, f"planned at {slot.crash_at}")
            return
        except DiskFault:
            self.crash(node_id, "disk write failed")
            return
        if more:
            self.wake(node_id)

    def _schedule_tick(self, slot: NodeSlot, generation: int) -> None:
        def tick() -> None:
            process = slot.process
            if process is None or slot.generation != generation:
                return
            if not slot.paused:  # a paused process misses its timer ticks
                process.tick()
                self.wake(slot.node_id)
            self._schedule_tick(slot, generation)

        self.queue.schedule(slot.tick_ms, f"tick {slot.node_id}", tick)

    def _deliver(self, sender: str, receiver: str, payload: object) -> None:
        slot = self.slots[receiver]
        process = slot.process
        if process is None:
            return
        if slot.paused:
            slot.held.append((sender, payload))
            return
        process.receive(sender, payload)
        self.wake(receiver)

    # --- running -------------------------------------------------------------

    def _run_until(self, deadline_ms: int) -> None:
        while (popped := self.queue.pop_until(deadline_ms)) is not None:
            label, action = popped
            self.trace.record(self.queue.now_ms, label)
            action()

    def run(self) -> SimResult:
        try:
            return self._run()
        except Exception as exc:  # an invariant, or a crash of the code under test
            raise SimulationFailure(self.failure_report(f"{type(exc).__name__}: {exc}")) from exc
        finally:
            self.level.close()

    def failure_report(self, problem: str) -> str:
        storage = f"{self.params.storage} storage, " if self.level.name == "host" else ""
        env = ""
        if self.params.safety_ms != DEFAULT_SAFETY_MS:
            env = f"FASTPACA_SIM_SAFETY_MS={self.params.safety_ms} "
        return (
            f"seed {self.seed} ({self.level.name} level, {storage}"
            f"{len(self.params.node_ids)} nodes, {self.params.group_count} groups) "
            f"at {self.queue.now_ms} ms: {problem}\n"
            f"--- last events ---\n{self.trace.tail()}\n"
            f"reproduce: {env}pytest tests/sim --seed={self.seed}"
        )

    def _run(self) -> SimResult:
        self._boot()
        self.workload.start()
        self.faults.start()
        self._run_until(self.params.safety_ms)
        self._enter_liveness()
        deadline_ms = self.queue.now_ms + self.params.liveness_ms_max
        while True:
            self._run_until(self.queue.now_ms + CONVERGE_CHECK_MS)
            problem = convergence_problem(self)
            if problem is None:
                break
            if self.queue.now_ms >= deadline_ms:
                raise SimulationFailure(f"no convergence within liveness window: {problem}")
        check_final_state(self)
        return SimResult(
            seed=self.seed,
            level=self.level.name,
            digest=self.trace.digest(),
            converged_at_ms=self.queue.now_ms,
            stats=self._stats(),
        )

    def _enter_liveness(self) -> None:
        self.phase = "liveness"
        self.note("liveness: heal network, restart nodes, faults off")
        self.network.heal()
        self.network.faults_enabled = False
        self.level.disable_faults()
        for node_id, slot in self.slots.items():
            slot.crash_at = None
            if slot.process is None:
                self.restart(node_id)
            self.resume(node_id)

    def _stats(self) -> dict[str, int]:
        net = self.network.stats
        return {
            "events": self.trace.lines,
            "checks": self.checker.checks,
            "acked": len(self.checker.acked),
            "committed": len(self.checker.committed),
            "crashes": sum(slot.crashes for slot in self.slots.values()),
            "sent": net.sent,
            "dropped": net.dropped + net.cut,
            "terms": len(self.checker.leaders),
            "snapshots": self.checker.snapshots_installed,
            "reads": self.checker.reads_served,
            "conf_changes": sum(
                1
                for c in self.checker.committed.values()
                if c.type is EntryType.CONF_CHANGE and c.term > 1
            ),
            "transfers": self.workload.transfers,
        }
