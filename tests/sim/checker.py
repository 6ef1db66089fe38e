"""The invariant checker: an observer outside the system under test.

Owns the global truth the Raft safety properties are checked against. Node
drivers report what they see (a leader elected, entries persisted, a commit
index, entries applied, a proposal acknowledged); every report is checked at
once and the first broken rule raises :class:`InvariantViolation`. It keeps its
own record, never reads node state, and must not influence the run (no rng).

Checked:
* election safety — at most one leader per (group, term);
* log matching — an (index, term) names one entry and one predecessor term
  across every node's persisted log, which by induction makes equal
  (index, term) imply equal prefixes;
* leader completeness — a new leader's log holds every entry committed in an
  earlier term (checked when it wins);
* commit stability — once any node commits (group, index) it is that
  (term, data) forever, on every node;
* state machine safety — each replica applies a contiguous run of indexes and
  the entry at an index is the committed one; a proposal's data (unique per
  proposal) is applied at one index only;
* linearizable reads — a confirmed read index covers every write that was
  acknowledged before the read was asked;
* durability of acknowledgements — checked at convergence by
  :meth:`acked_beyond` and the simulator's final state comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from fastpaca.raft.messages import Entry, EntryType

__all__ = ["InvariantChecker", "InvariantViolation"]


class InvariantViolation(AssertionError):
    """A Raft safety property was broken; the message says which and where."""


@dataclass(frozen=True, slots=True)
class _Committed:
    term: int
    type: EntryType
    data: bytes


@dataclass(slots=True)
class InvariantChecker:
    leaders: dict[tuple[int, int], str] = field(default_factory=dict)
    """(group, term) → the one leader of that term."""
    log_entries: dict[tuple[int, int, int], tuple[EntryType, bytes, int]] = field(
        default_factory=dict
    )
    """(group, index, term) → (type, data, term of index - 1), across all logs."""
    committed: dict[tuple[int, int], _Committed] = field(default_factory=dict)
    committed_upto: dict[int, int] = field(default_factory=dict)
    commit_term_bound: dict[tuple[int, int], int] = field(default_factory=dict)
    """(group, index) → a term by which the entry was known to be committed."""
    applied_index: dict[tuple[str, int], int] = field(default_factory=dict)
    data_index: dict[tuple[int, bytes], int] = field(default_factory=dict)
    acked: dict[tuple[int, bytes], int] = field(default_factory=dict)
    """(group, data) → index of every proposal whose proposer was told success."""
    ack_results: dict[tuple[int, int], object] = field(default_factory=dict)
    max_acked_index: dict[int, int] = field(default_factory=dict)
    read_floor: dict[tuple[int, bytes], int] = field(default_factory=dict)
    """(group, read context) → highest acked index when the read was asked."""
    checks: int = 0
    snapshots_installed: int = 0
    reads_served: int = 0

    def _fail(self, rule: str, detail: str) -> NoReturn:
        raise InvariantViolation(f"{rule}: {detail}")

    # --- elections ---------------------------------------------------------

    def observe_leader(self, node: str, group: int, term: int) -> None:
        self.checks += 1
        known = self.leaders.setdefault((group, term), node)
        if known != node:
            self._fail("election safety", f"group {group} term {term}: {known} and {node} lead")

    def check_leader_completeness(
        self,
        node: str,
        group: int,
        term: int,
        log: tuple[int, int, Callable[[int], int]],
    ) -> None:
        """The leader of ``term`` holds every entry committed in an earlier
        term (§5.4). ``log`` is (first index, last index, term of an index) of
        its log; entries below the first index are in its snapshot. Only
        entries known to be committed before ``term`` count: a leader seen
        late (it was paused) may trail commits made in later terms."""
        first, last, term_at = log
        upto = self.committed_upto.get(group, 0)
        for index in range(max(first, 1), upto + 1):
            known = self.committed.get((group, index))
            if known is None or self.commit_term_bound[(group, index)] >= term:
                continue
            self.checks += 1
            mine = term_at(index) if index <= last else None
            if mine != known.term:
                self._fail(
                    "leader completeness",
                    f"group {group}: {node} leads term {term} with term {mine} at "
                    f"{index}, committed {known}",
                )

    # --- persisted logs ----------------------------------------------------

    def observe_persisted(
        self, node: str, group: int, entries: Iterable[Entry], prev_term: int
    ) -> None:
        """``entries`` were just made durable on ``node`` right after an entry
        of term ``prev_term`` (0 at the start of the log)."""
        for entry in entries:
            self.checks += 1
            mine = (entry.type, entry.data, prev_term)
            known = self.log_entries.setdefault((group, entry.index, entry.term), mine)
            if known != mine:
                self._fail(
                    "log matching",
                    f"group {group} index {entry.index} term {entry.term} on {node}: "
                    f"{mine!r} but elsewhere {known!r}",
                )
            prev_term = entry.term

    # --- commits and applies -----------------------------------------------

    def observe_committed(self, node: str, group: int, entry: Entry, term: int) -> None:
        """``node``, now in ``term``, knows ``entry`` is committed; so it was
        committed in ``term`` or earlier."""
        self.checks += 1
        mine = _Committed(entry.term, entry.type, entry.data)
        key = (group, entry.index)
        known = self.committed.setdefault(key, mine)
        self.commit_term_bound[key] = min(self.commit_term_bound.get(key, term), term)
        if entry.index > self.committed_upto.get(group, 0):
            self.committed_upto[group] = entry.index
        if known != mine:
            self._fail(
                "commit stability",
                f"group {group} index {entry.index} on {node}: {mine} but committed {known}",
            )

    def reset_applied(self, node: str, group: int, applied_index: int) -> None:
        """The node (re)started, or restored a snapshot, at ``applied_index``."""
        self.applied_index[(node, group)] = applied_index

    def observe_snapshot_installed(self, node: str, group: int, index: int) -> None:
        self.snapshots_installed += 1
        self.reset_applied(node, group, index)

    def observe_applied(self, node: str, group: int, entries: Iterable[Entry], term: int) -> None:
        """``node``, now in ``term``, applied ``entries`` (so they are committed)."""
        for entry in entries:
            last = self.applied_index.get((node, group), 0)
            if entry.index != last + 1:
                self._fail(
                    "apply order",
                    f"group {group} on {node}: applied {entry.index} after {last}",
                )
            self.applied_index[(node, group)] = entry.index
            self.observe_committed(node, group, entry, term)
            if entry.type is EntryType.NORMAL and entry.data:
                at = self.data_index.setdefault((group, entry.data), entry.index)
                if at != entry.index:
                    self._fail(
                        "exactly once",
                        f"group {group}: {entry.data!r} applied at {at} and {entry.index}",
                    )

    def observe_ack(self, group: int, data: bytes, index: int, result: object = None) -> None:
        """The proposer of ``data`` was told its entry at ``index`` was applied,
        with the state machine's ``result``."""
        self.checks += 1
        self.ack_results[(group, index)] = result
        committed = self.committed.get((group, index))
        if committed is None or committed.data != data:
            self._fail(
                "acknowledgement", f"group {group}: acked {data!r} at {index}, log has {committed}"
            )
        self.acked[(group, data)] = index
        self.max_acked_index[group] = max(self.max_acked_index.get(group, 0), index)

    # --- linearizable reads ------------------------------------------------

    def observe_read_requested(self, group: int, context: bytes) -> None:
        self.read_floor[(group, context)] = self.max_acked_index.get(group, 0)

    def observe_read_served(self, node: str, group: int, context: bytes, index: int) -> None:
        """A read index was confirmed: it must cover every write acknowledged
        before the read was asked, or the read could miss it."""
        self.checks += 1
        self.reads_served += 1
        floor = self.read_floor.get((group, context))
        if floor is not None and index < floor:
            self._fail(
                "linearizable read",
                f"group {group} read {context!r} on {node} at index {index} < acked {floor}",
            )

    # --- convergence -------------------------------------------------------

    def committed_log(self, group: int, upto: int) -> list[Entry]:
        """The group's committed entries ``1..upto`` as the checker saw them."""
        log = []
        for index in range(1, upto + 1):
            entry = self.committed.get((group, index))
            if entry is None:
                self._fail("observation gap", f"group {group}: index {index} committed unseen")
            log.append(Entry(index=index, term=entry.term, type=entry.type, data=entry.data))
        return log

    def acked_beyond(self, group: int, applied_index: int) -> list[bytes]:
        """Acknowledged proposals of ``group`` above ``applied_index``: a
        converged replica at that index has lost them."""
        return sorted(
            data for (g, data), index in self.acked.items() if g == group and index > applied_index
        )
