"""RaftDriver: the only async part of the Raft engine.

One task runs the loop: wake on the tick timer or on new work (proposals,
inbound frames), hand queued work to the synchronous ``NodeHost``, then
``prepare`` → write the batch (sealed into LevelDB's own batch on the loop;
a batch that needs an fsync is written in one dedicated writer thread, so the
loop keeps accepting proposals meanwhile: that is the group commit; one that
needs none is written on the loop, a thread hop costing more) → send
one frame per peer → ``finish`` → ``on_written`` (the state machine's
effects) → resolve futures. When that write committed entries by
itself (a leader whose own copy completed the quorum after its followers'),
an apply pass follows at once, with no new input: the same steps, usually
with an unsynced write, so those results are released after one fsync
instead of two. (A single-voter group needs no such pass: its entries commit
and apply in the write that persists them.)

Every call into the host happens on the loop task, between iterations: the
public methods only enqueue work and wake the loop. The futures owed to
callers live in ``waiters.py``; they never hang: their deadlines are checked
by a small task of their own (so a write stuck in the disk does not hold
them), an error in the loop fails every pending one with ``Unavailable`` and
tells ``on_failure`` callbacks, and ``stop`` does the same. This module does
no Raft logic and no encoding.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastpaca.cancellation import cancel_and_wait
from fastpaca.errors import (
    NotLeader,
    Overloaded,
    ProposalDropped,
    ProposalTimeout,
    Unavailable,
)
from fastpaca.raft.codec import CodecError, Frame, decode_frame
from fastpaca.raft.core import RaftConfig
from fastpaca.raft.host import HostConfig, IterationResult, NodeHost
from fastpaca.raft.kv import KV
from fastpaca.raft.messages import ConfChange, ConfState
from fastpaca.raft.ready import Role
from fastpaca.raft.statemachine import StateMachine
from fastpaca.raft.stats import RaftStats
from fastpaca.raft.transport import Channel, Transport
from fastpaca.raft.waiters import Waiters

__all__ = ["DriverConfig", "RaftDriver"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverConfig:
    tick_interval_ms: int = 50
    election_timeout_ticks: int = 20
    heartbeat_interval_ticks: int = 5
    """250 ms at the default tick: a quarter of the shortest (randomized)
    election timeout, so a follower campaigns only after missing 4-8 beats in
    a row, and check-quorum sees 4 rounds per window. Heartbeats are most of
    what an idle group costs (a message and an answer per follower per
    beat); 2 ticks cost 2.5x as much for no safety gain."""
    prompt_commit_notice: bool = False
    """Off: followers learn a new commit index from the next APPEND or
    heartbeat instead of an empty APPEND per commit (``RaftConfig``): about
    9% less CPU per append on a loaded 3-node cluster (four alternating
    pairs on F, every one in its favour)."""
    snapshot_chunk_bytes: int = 256 * 1024
    compact_threshold_entries: int = 20_000
    compact_keep_entries: int = 5_000
    write_in_thread: bool = True
    max_pending_proposals: int = 100_000
    stop_transfer_timeout_ms: int = 2_000
    """How long ``stop`` waits for its leaderships to move."""

    def raft_template(self, node_id: str) -> RaftConfig:
        """Every group's core settings on ``node_id`` (``NodeHost`` fills in the group)."""
        return RaftConfig(
            node_id=node_id,
            group_id=0,
            election_timeout_ticks=self.election_timeout_ticks,
            heartbeat_interval_ticks=self.heartbeat_interval_ticks,
            prompt_commit_notice=self.prompt_commit_notice,
        )

    def host_config(self) -> HostConfig:
        return HostConfig(
            snapshot_chunk_bytes=self.snapshot_chunk_bytes,
            compact_threshold_entries=self.compact_threshold_entries,
            compact_keep_entries=self.compact_keep_entries,
            snapshot_timeout_ticks=self.election_timeout_ticks * 10,
        )


class RaftDriver:
    def __init__(
        self,
        *,
        node_id: str,
        kv: KV,
        state_machine: StateMachine,
        transport: Transport,
        config: DriverConfig = DriverConfig(),
        rng_seed: int | None = None,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        """``on_written`` is called after every iteration whose write
        succeeded, before any proposal it settled is resolved: whatever the
        state machine's applies in it caused may be released then."""
        self._node_id = node_id
        self._on_written = on_written
        self._transport = transport
        self._config = config
        self._host = NodeHost(
            node_id,
            kv,
            state_machine,
            config.raft_template(node_id),
            random.Random(rng_seed),
            config.host_config(),
        )
        self.stats = RaftStats()
        self._ops: list[Callable[[], None]] = []
        self._proposals: list[tuple[int, bytes, asyncio.Future[Any], float]] = []
        self._tick_s = config.tick_interval_ms / 1000
        self._loop_or_none: asyncio.AbstractEventLoop | None = None
        self._inbox: list[tuple[str, Frame]] = []
        self._wake = asyncio.Event()
        self._waiters = Waiters(self.stats)
        self._read_seq = 0
        self._terms: dict[int, int] = {}
        self._led: set[int] = set()
        self._runner: asyncio.Task[None] | None = None
        self._deadlines: asyncio.Task[None] | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._write_started: float | None = None
        self._stopping = False
        self._failure: BaseException | None = None
        self._failure_callbacks: list[Callable[[Exception], None]] = []

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Open the groups on disk, subscribe to the transport, run the loop."""
        self._host.open_groups()
        self._transport.subscribe(Channel.RAFT, self._on_frame)
        self._transport.on_peer_state(self._on_peer_state)
        self._loop_or_none = asyncio.get_running_loop()
        if self._config.write_in_thread:
            self._writer = ThreadPoolExecutor(
                1,
                thread_name_prefix=f"raft-write-{self._node_id}",
            )
        self._runner = asyncio.create_task(self._supervise(), name=f"raft-{self._node_id}")
        self._deadlines = asyncio.create_task(
            self._expire_deadlines(), name=f"raft-deadlines-{self._node_id}"
        )

    async def stop(self, *, transfer_leadership: bool = True) -> None:
        """Hand over the groups this node leads (bounded wait), stop the loop,
        fail whatever is still pending with ``Unavailable``."""
        if self._runner is None:
            return
        if transfer_leadership and self._failure is None:
            await self._transfer_all_leaderships()
        self._stopping = True
        self._wake.set()
        try:
            await self._runner
        except Exception:
            pass  # already logged by the loop; its futures are failed below
        finally:
            self._runner = None
            if self._deadlines is not None:
                await cancel_and_wait([self._deadlines], what="raft deadlines")
                self._deadlines = None
            self._waiters.fail_all(Unavailable(f"raft on {self._node_id} is stopping"))
            if self._writer is not None:
                self._writer.shutdown(wait=True)

    # --- groups ---------------------------------------------------------------------

    def ensure_group(self, group_id: int, voters: Sequence[str]) -> None:
        """Host ``group_id``: bootstrap it with its *initial* ``voters`` (the
        same list on every initial member), or join it with ``()`` as a
        replica added later. See ``NodeHost.ensure_group``."""
        self._submit(lambda: self._host.ensure_group(group_id, list(voters)))

    def remove_group(self, group_id: int) -> None:
        def remove() -> None:
            self._host.remove_group(group_id)
            self._waiters.fail_group(group_id, Unavailable(f"group {group_id} left this node"))

        self._submit(remove)

    def leader_of(self, group_id: int) -> str | None:
        return self._host.leader_of(group_id)

    @property
    def failure(self) -> Exception | None:
        """The error that stopped the loop, if one did (then for good); a
        cancel is not one."""
        return self._failure if isinstance(self._failure, Exception) else None

    def write_running_s(self) -> float:
        """How long the write in progress has been running (0 when none):
        readiness turns this node away when its disk stops answering."""
        started = self._write_started
        if started is None or self._loop_or_none is None:
            return 0.0
        return self._loop_or_none.time() - started

    def on_failure(self, callback: Callable[[Exception], None]) -> None:
        """Call ``callback(error)`` once if the loop stops on an error. Its
        pending futures are failed first; a stop or cancel is not a failure."""
        self._failure_callbacks.append(callback)

    def is_leader(self, group_id: int) -> bool:
        return self._host.is_leader(group_id)

    def group_ids(self) -> list[int]:
        return self._host.group_ids()

    def led_group_ids(self) -> frozenset[int]:
        """The groups this node led as of its last iteration: a role change
        shows here once the iteration that surfaced it has finished. A set
        kept as roles change, so asking costs no pass over the groups."""
        return frozenset(self._led)

    @property
    def pending_proposals(self) -> int:
        """Proposals accepted by a core and not yet settled (back-pressure gauge)."""
        return self._waiters.proposal_count

    @property
    def host(self) -> NodeHost:
        """The synchronous host (read-only use: tests, metrics)."""
        return self._host

    # --- proposals and reads ----------------------------------------------------------

    async def propose(self, group_id: int, data: bytes, *, timeout_s: float) -> Any:
        """Resolve with the state machine's result for this entry once applied.
        ``NotLeader`` at once on a follower, ``LeadershipLost`` if leadership
        goes before it applies, ``ProposalTimeout`` after ``timeout_s`` (to
        within one tick). The hot path: no closure, no timer per call."""
        self._check_can_propose(group_id)
        loop = self._loop
        future: asyncio.Future[Any] = loop.create_future()
        now = loop.time()
        self._proposals.append((group_id, data, future, now))
        self._waiters.add_deadline(self._deadline_tick(now, timeout_s), group_id, future)
        self.stats.proposals += 1
        self._wake.set()
        return await future

    async def change_membership(
        self, group_id: int, cc: ConfChange, *, timeout_s: float
    ) -> ConfState:
        self._check_can_propose(group_id)
        future: asyncio.Future[Any] = self._loop.create_future()
        started = self._loop.time()

        def start_change() -> None:
            if future.done():
                return
            try:
                index, term = self._host.propose_conf_change(group_id, cc)
            except (NotLeader, ProposalDropped) as exc:
                future.set_exception(exc)
                return
            self._waiters.add_proposal(group_id, index, term, started, future)

        result = await self._submit_and_wait(start_change, future, group_id, timeout_s)
        assert isinstance(result, ConfState)
        return result

    async def read_barrier(self, group_id: int, *, timeout_s: float) -> None:
        """Return once this node's state machine reflects every write
        acknowledged before the call (ReadIndex, then wait for apply)."""
        self._check_running()
        if self._host.is_readable_at_once(group_id):
            # The only voter, all applied: no read index round, no iteration.
            self.stats.reads += 1
            return
        self._read_seq += 1
        context = b"%s:%d" % (self._node_id.encode(), self._read_seq)
        future: asyncio.Future[None] = self._loop.create_future()

        def start_read() -> None:
            if future.done():
                return
            try:
                self._host.read_index(group_id, context)
            except (NotLeader, ProposalDropped) as exc:
                future.set_exception(exc)
                return
            self._waiters.add_read(group_id, context, future)

        self.stats.reads += 1
        try:
            await self._submit_and_wait(start_read, future, group_id, timeout_s)
        finally:
            self._waiters.discard_read(context)

    async def transfer_leadership(self, group_id: int, to: str, *, timeout_s: float) -> None:
        self._check_running()
        future: asyncio.Future[None] = self._loop.create_future()

        def start_transfer() -> None:
            try:
                self._host.transfer_leadership(group_id, to)
            except (NotLeader, ProposalDropped) as exc:
                future.set_exception(exc)
                return
            self._waiters.add_leader_wait(group_id, to, future)

        await self._submit_and_wait(start_transfer, future, group_id, timeout_s)

    def _check_can_propose(self, group_id: int) -> None:
        self._check_running()
        if not self._host.is_leader(group_id):
            self.stats.proposals_rejected += 1
            raise NotLeader(group_id, self._host.leader_of(group_id))
        pending = self._waiters.proposal_count + len(self._proposals)
        if pending >= self._config.max_pending_proposals:
            self.stats.proposals_rejected += 1
            raise Overloaded(f"{pending} proposals pending on {self._node_id}")

    async def _submit_and_wait(
        self, op: Callable[[], None], future: asyncio.Future[Any], group_id: int, timeout_s: float
    ) -> Any:
        deadline = self._deadline_tick(self._loop.time(), timeout_s)
        self._waiters.add_deadline(deadline, group_id, future)
        self._submit(op)
        return await future

    def _deadline_tick(self, now: float, timeout_s: float) -> int:
        # Rounded up: a deadline never fires early.
        return int((now + timeout_s) / self._tick_s) + 1

    # --- the loop -------------------------------------------------------------------

    async def _supervise(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._run(), name=f"raft-loop-{self._node_id}")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        tick_s = self._config.tick_interval_ms / 1000
        next_tick = loop.time() + tick_s
        try:
            while not self._stopping:
                delay = next_tick - loop.time()
                if delay > 0 and not self._wake.is_set() and not self._host.has_work():
                    try:
                        async with asyncio.timeout(delay):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                self._wake.clear()
                now = loop.time()
                if now >= next_tick:
                    self._host.tick()
                    self._on_tick()
                    # Ticks are counted, not replayed: after a stall, one tick.
                    next_tick = max(next_tick + tick_s, now + tick_s / 2)
                self._drain()
                if self._host.has_work():
                    await self._iterate()
                # Let transport callbacks and proposers in even when the write
                # needed no thread hop (an iteration of messages only).
                await asyncio.sleep(0)
        except BaseException as exc:
            self._failure = exc
            if not isinstance(exc, asyncio.CancelledError):
                _log.exception("raft loop on %s failed; node unavailable", self._node_id)
            self._waiters.fail_all(Unavailable(f"raft on {self._node_id} failed: {exc!r}"))
            if isinstance(exc, Exception):
                for callback in self._failure_callbacks:
                    callback(exc)
            raise

    def _drain(self) -> None:
        inbox, self._inbox = self._inbox, []
        for peer, frame in inbox:
            self._host.receive_frame(peer, frame)
        ops, self._ops = self._ops, []
        for op in ops:
            op()
        proposals, self._proposals = self._proposals, []
        by_group: dict[int, list[tuple[bytes, asyncio.Future[Any], float]]] = {}
        for group_id, data, future, started in proposals:
            if not future.done():  # else timed out or cancelled while queued
                queued = by_group.get(group_id)
                if queued is None:
                    by_group[group_id] = [(data, future, started)]
                else:
                    queued.append((data, future, started))
        for group_id, queued in by_group.items():
            self._propose_queued(group_id, queued)

    def _propose_queued(
        self, group_id: int, queued: list[tuple[bytes, asyncio.Future[Any], float]]
    ) -> None:
        """One append for a group's queued proposals, in arrival order; one
        by one when the batch as a whole is refused (some may still fit)."""
        try:
            first, term = self._host.propose_many(group_id, [data for data, _, _ in queued])
        except (NotLeader, ProposalDropped):
            pass
        else:
            self._waiters.add_proposals(group_id, first, term, queued)
            return
        for data, future, started in queued:
            try:
                index, term = self._host.propose(group_id, data)
            except (NotLeader, ProposalDropped) as exc:
                self.stats.proposals_rejected += 1
                future.set_exception(exc)
                continue
            self._waiters.add_proposal(group_id, index, term, started, future)

    async def _iterate(self) -> None:
        await self._iterate_once()
        if self._host.has_apply_due():
            # Entries this write made durable are committed already (a
            # leader whose own copy completed the quorum, its followers
            # having answered first): apply them and release their results
            # now, in a pass that takes no new input, instead of one whole
            # iteration (and its fsync) later. Usually no fsync here: commit
            # index and state-machine writes only; a crash before this write
            # re-applies them from the durable log. (A group whose only voter
            # is this node needs no such pass: its entries commit and apply
            # in the write that persists them, see ``RaftNode.ready``.)
            await self._iterate_once()

    async def _iterate_once(self) -> None:
        iteration = self._host.prepare()
        unreachable = self._send(iteration.take_early_frames(), iteration.message_counts)
        try:
            # Only a synced write leaves the loop. An unsynced one (an apply
            # pass, a follower's commit-only iteration) ends in LevelDB's
            # memtable and the page cache: the thread hop, with its wake-ups
            # and GIL hand-overs, costs more than the loop would do meanwhile
            # (A/B of loaded 3-node clusters on machine K: ahead in 12 of 16
            # pairs, by less than the machine's drift). The price: when LevelDB stalls a write (a memtable
            # switch: tens of ms seen), an unsynced one holds the whole loop
            # that long, where a synced one holds only the iteration.
            if self._writer is not None and iteration.batch and iteration.must_sync:
                loop = asyncio.get_running_loop()
                iteration.seal()
                self._write_started = started = loop.time()
                try:
                    await loop.run_in_executor(self._writer, iteration.write)
                finally:
                    self._write_started = None
                self.stats.synced_write_latency.observe(loop.time() - started)
            else:
                iteration.write()
        except BaseException:
            self._host.abort(iteration)
            raise
        self.stats.iterations += 1
        self.stats.synced_writes += iteration.must_sync
        unreachable += self._send(iteration.frames(), iteration.message_counts)
        result = self._host.finish(iteration)
        for peer in sorted(set(unreachable)):
            self._host.peer_unreachable(peer)
        if self._on_written is not None:
            self._on_written()
        self._resolve(result)

    def _send(self, frames: dict[str, bytes], message_counts: dict[str, int]) -> list[str]:
        """Send each frame; the peers that could not take one."""
        unreachable = []
        stats = self.stats
        for peer, frame in frames.items():
            if self._transport.send(peer, Channel.RAFT, frame):
                stats.frames_sent[peer] += 1
                stats.bytes_sent[peer] += len(frame)
            else:
                stats.send_failures[peer] += 1
                unreachable.append(peer)
        for peer in frames:
            stats.messages_sent[peer] += message_counts.pop(peer, 0)
        return unreachable

    # --- resolving futures ------------------------------------------------------------

    def _resolve(self, result: IterationResult) -> None:
        now = asyncio.get_running_loop().time()
        host, waiters = self._host, self._waiters
        for batch in result.applied:
            group_id = batch.group_id
            waiters.on_applied(
                group_id,
                batch.entries,
                batch.results,
                now=now,
                applied_index=batch.entries[-1].index,
                leader_hint=host.leader_of(group_id),
            )
        for group_id, read_state in result.read_states:
            waiters.on_read_state(group_id, read_state, host.core(group_id).applied_index)
        for group_id, soft in result.soft_states:
            self._on_soft_state(group_id, soft.role, soft.leader_id)

    def _on_soft_state(self, group_id: int, role: Role, leader_id: str | None) -> None:
        self.stats.leader_changes += 1
        term = self._host.core(group_id).term
        if term != self._terms.get(group_id, term):
            self.stats.term_changes += 1
        self._terms[group_id] = term
        if role is Role.LEADER:
            self._led.add(group_id)
        else:
            self._led.discard(group_id)
        self.stats.leaders_held = len(self._led)
        self._waiters.on_leader_change(group_id, role is Role.LEADER, leader_id)

    async def _expire_deadlines(self) -> None:
        """Once per tick, fail the calls past their deadline. A task of its
        own, not part of the loop's tick: a write stuck in the disk holds the
        loop up, and its callers still get their timeout (then ``503``)
        instead of hanging until the disk answers."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._tick_s)
            now_tick = int(loop.time() / self._tick_s)
            self.stats.proposals_timed_out += self._waiters.expire(now_tick)

    def _on_tick(self) -> None:
        """Once per tick: stats that cost a pass over every group, and reads
        whose index a snapshot install (not an apply) reached."""
        host_stats = self._host.stats
        self.stats.messages_dropped = (
            self._host.dropped_by_cores
            + host_stats.dropped_unknown_group
            + host_stats.dropped_misaddressed
        )
        self.stats.snapshots_sent = host_stats.snapshots_sent
        self.stats.snapshots_installed = host_stats.snapshots_installed
        self.stats.groups_hosted = len(self._host.group_ids())
        self._led.intersection_update(self._host.group_ids())  # removed groups
        self.stats.leaders_held = len(self._led)
        for group_id in self._waiters.groups_with_reads():
            if self._host.has_group(group_id):
                applied = self._host.core(group_id).applied_index
                self._waiters.release_reads(group_id, applied)

    # --- transport callbacks ------------------------------------------------------------

    def _on_frame(self, peer: str, payload: bytes) -> None:
        try:
            frame = decode_frame(payload)
        except CodecError as exc:
            self.stats.malformed_frames += 1
            _log.warning("raft: malformed frame from %s, closing: %s", peer, exc)
            raise  # the transport closes this connection
        self._inbox.append((peer, frame))
        self._wake.set()

    def _on_peer_state(self, peer: str, connected: bool) -> None:
        if not connected:
            self._submit(lambda: self._peer_down(peer))

    def _peer_down(self, peer: str) -> None:
        """The connection to ``peer`` went down (its process most likely
        died): the followers of the groups it leads campaign within a few
        ticks instead of an election timeout (``RaftNode.leader_unreachable``);
        the groups we lead stop streaming to it and probe instead."""
        host = self._host
        for group_id in host.group_ids():
            host.core(group_id).leader_unreachable(peer)
        # Also marks every group for the next iteration, so the forgotten
        # leaders show up as soft-state changes at once.
        host.peer_unreachable(peer)

    # --- helpers ----------------------------------------------------------------------

    def _submit(self, op: Callable[[], None]) -> None:
        self._ops.append(op)
        self._wake.set()

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._loop_or_none is None:
            raise Unavailable(f"raft on {self._node_id} is not running")
        return self._loop_or_none

    def _check_running(self) -> None:
        if self._runner is None or self._stopping or self._failure is not None:
            raise Unavailable(f"raft on {self._node_id} is not running")

    async def _transfer_all_leaderships(self) -> None:
        connected = self._transport.connected_peers()
        transfers = []
        for group_id in self._host.group_ids():
            target = self._transfer_target(group_id, connected)
            if target is not None:
                transfers.append(self._try_transfer(group_id, target))
        if transfers:
            await asyncio.gather(*transfers)

    def _transfer_target(self, group_id: int, connected: frozenset[str]) -> str | None:
        """The most up-to-date connected voter, if this node leads ``group_id``."""
        if not self._host.is_leader(group_id):
            return None
        core = self._host.core(group_id)
        best: tuple[int, str] | None = None
        for voter in core.conf_state.voters:
            progress = core.progress(voter)
            if voter == self._node_id or voter not in connected or progress is None:
                continue
            if best is None or progress.match > best[0]:
                best = (progress.match, voter)
        return None if best is None else best[1]

    async def _try_transfer(self, group_id: int, target: str) -> None:
        timeout_s = self._config.stop_transfer_timeout_ms / 1000
        try:
            await self.transfer_leadership(group_id, target, timeout_s=timeout_s)
        except (ProposalTimeout, NotLeader, ProposalDropped, Unavailable) as exc:
            _log.info("raft group %d: leadership not handed to %s: %s", group_id, target, exc)
