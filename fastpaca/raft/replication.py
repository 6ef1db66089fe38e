"""Replication: moving the log from leader to followers, and commit.

The part of ``RaftNode`` that handles APPEND / HEARTBEAT / SNAPSHOT on the
follower side (conflict detection, reject hints, snapshot install) and their
answers on the leader side (progress PROBE / REPLICATE / SNAPSHOT, inflight
windows, commit by counting replicas of an entry of the current term,
heartbeats and check-quorum). It sends through the shared outbox and does no
IO.
"""

from __future__ import annotations

from typing import Final

from fastpaca.errors import InvariantViolation
from fastpaca.raft.messages import Message, MessageType, ReadState, SnapshotMeta
from fastpaca.raft.node_state import NodeState
from fastpaca.raft.progress import Progress, ProgressState
from fastpaca.raft.storage import CompactedError

__all__ = ["ReplicationMixin"]


COMMIT_ONLY: Final = b"commit"
"""Context of an empty APPEND sent only to carry a new commit index to a
follower in REPLICATE state (at every commit with ``prompt_commit_notice``,
else only for a committed membership change). Accepted, it needs no
APPEND_RESP: everything up to its ``index`` was sent before and is
acknowledged by the answers to those entries, and an empty APPEND adds
nothing in flight. Those answers were two of the eight messages an append
costs in a 3-replica group. A follower that rejects it still answers (it lost
entries: the leader must probe), and an acknowledgement of entries lost on
the way is still repaired (a heartbeat answer showing ``match < last index``
gets an ordinary, answered APPEND). Followers that predate this ignore the
context and answer as before."""


class ReplicationMixin(NodeState):
    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._config.election_timeout_ticks:
            self._election_elapsed = 0
            if self._config.check_quorum and not self._check_quorum_active():
                self._become_follower(self._term, None)
                return
            self._lead_transferee = None  # a transfer that took this long is abandoned
        if self._heartbeat_elapsed >= self._config.heartbeat_interval_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads.last_context() or b"")

    def _check_quorum_active(self) -> bool:
        self._tracker.progress[self._id].recent_active = True
        active = self._tracker.quorum_active()
        for node_id, progress in self._tracker.progress.items():
            progress.recent_active = node_id == self._id
        return active

    # --- follower side ----------------------------------------------------------------

    def _step_follower(self, msg: Message) -> None:
        match msg.type:
            case MessageType.APPEND | MessageType.HEARTBEAT | MessageType.SNAPSHOT:
                self._election_elapsed = 0
                self._leader_id = msg.sender
                self._handle_from_leader(msg)
            case MessageType.TIMEOUT_NOW:
                self._hup(pre_vote=False, transfer=True)
            case MessageType.READ_INDEX_RESP:
                if not msg.reject:
                    self._read_states.append(ReadState(index=msg.index, context=msg.context))
            case _:
                self._dropped += 1

    def _handle_from_leader(self, msg: Message) -> None:
        if msg.type is MessageType.APPEND:
            self._handle_append(msg)
        elif msg.type is MessageType.HEARTBEAT:
            self._handle_heartbeat(msg)
        else:
            self._handle_snapshot(msg)

    def _handle_append(self, msg: Message) -> None:
        if not _is_well_formed_append(msg):
            self._dropped += 1
            return
        if msg.index < self._log.committed:
            # Stale or duplicate: everything up to our commit already matches.
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.committed)
            return
        last_new = self._log.maybe_append(msg.index, msg.log_term, msg.commit, msg.entries)
        if last_new is not None:
            if msg.entries or msg.context != COMMIT_ONLY:
                self._send(MessageType.APPEND_RESP, msg.sender, index=last_new)
            return
        # Reject with a hint: the largest index whose term is <= the leader's
        # log_term, so the leader can skip a whole conflicting term at once.
        hint_index = min(msg.index, self._log.last_index())
        hint_index = self._log.find_conflict_by_term(hint_index, msg.log_term)
        self._send(
            MessageType.APPEND_RESP,
            msg.sender,
            index=msg.index,
            reject=True,
            reject_hint=hint_index,
            log_term=self._log.term_or_zero(hint_index),
        )

    def _handle_heartbeat(self, msg: Message) -> None:
        self._log.commit_to(min(msg.commit, self._log.last_index()))
        self._send(MessageType.HEARTBEAT_RESP, msg.sender, context=msg.context)

    def _handle_snapshot(self, msg: Message) -> None:
        meta = msg.snapshot
        if meta is None:
            self._dropped += 1
            return
        if self._restore(meta):
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.last_index())
        else:
            self._send(MessageType.APPEND_RESP, msg.sender, index=self._log.committed)

    def _restore(self, meta: SnapshotMeta) -> bool:
        """Install ``meta`` unless our log already covers it. A snapshot
        whose membership does not list us is installed too: it may predate
        our joining, which the entries after it will replay."""
        if meta.index <= self._log.committed:
            return False
        if self._log.match_term(meta.index, meta.term):
            self._log.commit_to(meta.index)  # we have it: fast-forward only
            return False
        self._log.restore(meta)
        self._tracker.set_conf(meta.conf_state, next_index=self._log.last_index() + 1)
        return True

    # --- leader side ------------------------------------------------------------------

    def _step_leader(self, msg: Message) -> None:
        progress = self._tracker.progress.get(msg.sender)
        if progress is None:
            self._dropped += 1
            return
        match msg.type:
            case MessageType.APPEND_RESP:
                progress.recent_active = True
                self._handle_append_response(msg, progress)
            case MessageType.HEARTBEAT_RESP:
                progress.recent_active = True
                self._handle_heartbeat_response(msg, progress)
            case MessageType.READ_INDEX:
                self._handle_read_index_request(msg)
            case _:
                self._dropped += 1

    def _handle_append_response(self, msg: Message, progress: Progress) -> None:
        if msg.reject:
            next_probe = msg.reject_hint
            if msg.log_term > 0:
                # Skip every entry of ours whose term is above the follower's
                # term at the hint: they cannot match.
                next_probe = self._log.find_conflict_by_term(msg.reject_hint, msg.log_term)
            if progress.maybe_decrease_to(msg.index, next_probe):
                if progress.state is ProgressState.REPLICATE:
                    progress.become_probe()
                self._maybe_send_append(msg.sender)
            return
        if not progress.maybe_update(msg.index) and not (
            progress.match == msg.index and progress.state is ProgressState.PROBE
        ):
            return
        if progress.state is ProgressState.PROBE:
            progress.become_replicate()
        elif progress.state is ProgressState.SNAPSHOT:
            # The follower installed a snapshot (maybe newer than ours): resume
            # from its match, through the log when it still has the next entry.
            progress.become_probe()
            if progress.match + 1 >= self._log.first_index():
                progress.become_replicate()
        else:
            progress.inflights.free_le(msg.index)
        if self._maybe_commit():
            self._commit_to_broadcast = True
        last_index = self._log.last_index()
        while progress.next <= last_index and self._maybe_send_append(
            msg.sender, send_if_empty=False
        ):
            pass  # fill the inflight window for a follower that is catching up
        if msg.sender == self._lead_transferee and progress.match == self._log.last_index():
            self._send(MessageType.TIMEOUT_NOW, msg.sender)

    def _handle_heartbeat_response(self, msg: Message, progress: Progress) -> None:
        progress.probe_sent = False
        if progress.state is ProgressState.REPLICATE and progress.inflights.is_full():
            progress.inflights.free_first_one()
        if progress.match < self._log.last_index():
            # Even an empty APPEND helps: a follower whose APPENDs were lost
            # rejects it, which sends it back to probing.
            self._maybe_send_append(msg.sender)
        if not msg.context or msg.sender not in self._tracker.voters:
            return
        acks = self._reads.ack(msg.context, msg.sender)
        if acks is not None and self._tracker.has_quorum(acks):
            for read in self._reads.release_through(msg.context):
                self._answer_read(read)

    def _maybe_commit(self) -> bool:
        """§5.4.2: commit the quorum index only if it is an entry of our term."""
        index = self._tracker.committed_index()
        if index <= self._log.committed or self._log.term_or_zero(index) != self._term:
            return False
        self._log.commit_to(index)
        if self._reads_waiting_commit:
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for read in waiting:
                read.index = self._log.committed
                self._start_read(read)
        return True

    def _maybe_send_append(
        self, to: str, *, send_if_empty: bool = True, commit_only: bool = False
    ) -> bool:
        """Send ``to`` the entries it lacks (or a snapshot); False if nothing
        went. ``commit_only``: the APPEND is sent to tell the commit index, so
        if it goes out empty to a follower we replicate to, it asks for no
        answer (``COMMIT_ONLY``)."""
        progress = self._tracker.progress[to]
        if progress.is_paused():
            return False
        prev_index = progress.next - 1
        last_index = self._log.last_index()
        try:
            prev_term = self._log.term(prev_index)
            entries = self._log.entries(progress.next, last_index + 1, self._config.max_msg_bytes)
        except CompactedError:
            return self._maybe_send_snapshot(to, progress)
        if not entries and not send_if_empty:
            return False
        quiet = (
            commit_only
            and not entries
            and progress.state is ProgressState.REPLICATE
            and self._lead_transferee is None
        )
        self._send(
            MessageType.APPEND,
            to,
            index=prev_index,
            log_term=prev_term,
            entries=tuple(entries),
            commit=self._log.committed,
            context=COMMIT_ONLY if quiet else b"",
        )
        progress.sent_entries(entries[-1].index if entries else None)
        return True

    def _maybe_send_snapshot(self, to: str, progress: Progress) -> bool:
        if not progress.recent_active:
            return False  # it may be down: do not stream a snapshot into the void
        meta = self._log.snapshot_meta()
        if meta.index == 0:
            raise InvariantViolation("log compacted but storage has no snapshot")
        self._send(MessageType.SNAPSHOT, to, snapshot=meta)
        progress.become_snapshot(meta.index)
        return True

    def _broadcast_append(self, *, send_if_empty: bool) -> None:
        """Entries to every follower; ``send_if_empty``: the commit index moved,
        so an APPEND goes even to followers with nothing new (commit-only)."""
        last_index = self._log.last_index()
        for node_id, progress in self._tracker.progress.items():
            if node_id != self._id and self._maybe_send_append(
                node_id, send_if_empty=send_if_empty, commit_only=send_if_empty
            ):
                # Several APPENDs when max_msg_bytes splits the batch, up to
                # the inflight window (pipelining); none once all went.
                while progress.next <= last_index and self._maybe_send_append(
                    node_id, send_if_empty=False
                ):
                    pass

    def _broadcast_heartbeat(self, context: bytes) -> None:
        for node_id, progress in self._tracker.progress.items():
            if node_id != self._id:
                # Never ahead of what the follower is known to hold.
                commit = min(progress.match, self._log.committed)
                self._send(MessageType.HEARTBEAT, node_id, commit=commit, context=context)


def _is_well_formed_append(msg: Message) -> bool:
    """Entries follow ``msg.index`` one by one, with terms never going back
    and never above the sender's term."""
    expected_index = msg.index + 1
    previous_term = msg.log_term
    if msg.index < 0 or previous_term > msg.term:
        return False
    for entry in msg.entries:
        if entry.index != expected_index or not previous_term <= entry.term <= msg.term:
            return False
        expected_index += 1
        previous_term = entry.term
    return True
