"""Data-driven interaction scripts for the Raft core (after etcd's rafttest).

A script in ``testdata/*.txt`` is a list of blocks::

    # a comment
    <command> <args...>
    ----
    <expected transcript, no blank lines>

Commands drive a harness ``Network`` step by step and print what happened:
each Ready (hard state, entries, committed entries, messages, read states),
each delivered message, node status. ``test_core_interaction.py`` compares
transcripts; with ``--rewrite`` it writes the actual ones back for review as
a diff.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fastpaca.errors import FastpacaError
from fastpaca.raft.messages import ConfChange, ConfChangeOp, Entry, EntryType, Message
from fastpaca.raft.ready import Ready
from tests.raft.harness import Network

SEPARATOR = "----"


@dataclass
class Block:
    comments: list[str]
    command: str
    expected: str


def parse_script(path: Path) -> tuple[list[Block], list[str]]:
    """Blocks of a script, and the comment lines after the last block."""
    blocks: list[Block] = []
    comments: list[str] = []
    lines = path.read_text().splitlines()
    position = 0
    while position < len(lines):
        line = lines[position]
        position += 1
        if not line.strip() or line.startswith("#"):
            if line.startswith("#"):
                comments.append(line)
            continue
        if position >= len(lines) or lines[position] != SEPARATOR:
            raise ValueError(f"{path}:{position}: expected {SEPARATOR!r} after {line!r}")
        position += 1
        output: list[str] = []
        while position < len(lines) and lines[position].strip():
            output.append(lines[position])
            position += 1
        blocks.append(Block(comments=comments, command=line, expected="\n".join(output)))
        comments = []
    return blocks, comments


def render_script(blocks: list[Block], actual: list[str], trailing: list[str]) -> str:
    parts: list[str] = []
    for block, output in zip(blocks, actual, strict=True):
        parts.append("\n".join([*block.comments, block.command, SEPARATOR, output]))
    text = "\n\n".join(parts) + "\n"
    if trailing:
        text += "\n" + "\n".join(trailing) + "\n"
    return text


# --- formatting -------------------------------------------------------------------------


def format_entry(entry: Entry) -> str:
    kind = "conf" if entry.type is EntryType.CONF_CHANGE else "normal"
    return f"{entry.term}/{entry.index} {kind} {entry.data.decode(errors='replace')!r}"


def format_message(msg: Message) -> str:
    fields = [f"{msg.sender}->{msg.to} {msg.type.name}", f"term={msg.term}"]
    for name in ("log_term", "index", "commit", "reject_hint"):
        value = getattr(msg, name)
        if value:
            fields.append(f"{name}={value}")
    if msg.reject:
        fields.append("rejected")
    if msg.context:
        fields.append(f"context={msg.context.decode(errors='replace')}")
    if msg.entries:
        fields.append("entries=[" + ", ".join(format_entry(e) for e in msg.entries) + "]")
    if msg.snapshot is not None:
        fields.append(f"snapshot={msg.snapshot.index}/{msg.snapshot.term}")
    return " ".join(fields)


def format_ready(node_id: str, rd: Ready) -> list[str]:
    lines = [f"> {node_id} handling Ready"]
    if rd.soft_state is not None:
        lines.append(f"  Lead:{rd.soft_state.leader_id} State:{rd.soft_state.role.name}")
    if rd.hard_state is not None:
        hs = rd.hard_state
        lines.append(f"  HardState Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}")
    if rd.snapshot is not None:
        lines.append(f"  Snapshot Index:{rd.snapshot.index} Term:{rd.snapshot.term}")
    if rd.entries:
        lines.append("  Entries:")
        lines.extend(f"    {format_entry(e)}" for e in rd.entries)
    if rd.committed_entries:
        lines.append("  CommittedEntries:")
        lines.extend(f"    {format_entry(e)}" for e in rd.committed_entries)
    if rd.messages:
        lines.append("  Messages:")
        lines.extend(f"    {format_message(m)}" for m in rd.messages)
    if rd.read_states:
        lines.append("  ReadStates:")
        lines.extend(f"    index={rs.index} context={rs.context.decode()}" for rs in rd.read_states)
    if rd.must_sync:
        lines.append("  MustSync")
    return lines


# --- the environment --------------------------------------------------------------------


class InteractionEnv:
    def __init__(self) -> None:
        self._net: Network | None = None
        self._handlers: dict[str, Callable[[list[str], dict[str, str]], list[str]]] = {
            "add-nodes": self._add_nodes,
            "campaign": self._campaign,
            "propose": self._propose,
            "propose-conf-change": self._propose_conf_change,
            "read-index": self._read_index,
            "transfer-leadership": self._transfer_leadership,
            "tick": self._tick,
            "process-ready": self._process_ready,
            "deliver-msgs": self._deliver_msgs,
            "stabilize": self._stabilize,
            "isolate": self._isolate,
            "heal": self._heal,
            "leader-unreachable": self._leader_unreachable,
            "compact": self._compact,
            "status": self._status,
            "log": self._log,
        }

    @property
    def net(self) -> Network:
        assert self._net is not None, "add-nodes first"
        return self._net

    def run(self, command: str) -> str:
        name, *words = command.split()
        positional = [w for w in words if "=" not in w]
        options = dict(w.split("=", 1) for w in words if "=" in w)
        try:
            lines = self._handlers[name](positional, options)
        except FastpacaError as exc:
            lines = [f"error: {type(exc).__name__}: {exc}"]
        return "\n".join(lines) if lines else "ok"

    def _add_nodes(self, ids: list[str], options: dict[str, str]) -> list[str]:
        learners = [x for x in options.get("learners", "").split(",") if x]
        flags = {
            key.replace("-", "_"): value == "true"
            for key, value in options.items()
            if key in ("pre-vote", "check-quorum")
        }
        self._net = Network(ids, learners=learners, seed=int(options.get("seed", "1")), **flags)
        return []

    def _campaign(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        self.net[ids[0]].campaign()
        return []

    def _propose(self, args: list[str], _options: dict[str, str]) -> list[str]:
        index, term = self.net[args[0]].propose(" ".join(args[1:]).encode())
        return [f"index={index} term={term}"]

    def _propose_conf_change(self, args: list[str], _options: dict[str, str]) -> list[str]:
        op = ConfChangeOp[args[1].upper().replace("-", "_")]
        index, term = self.net[args[0]].propose_conf_change(ConfChange(op=op, node_id=args[2]))
        return [f"index={index} term={term}"]

    def _read_index(self, args: list[str], _options: dict[str, str]) -> list[str]:
        self.net[args[0]].read_index(args[1].encode())
        return []

    def _transfer_leadership(self, args: list[str], _options: dict[str, str]) -> list[str]:
        self.net[args[0]].transfer_leadership(args[1])
        return []

    def _tick(self, ids: list[str], options: dict[str, str]) -> list[str]:
        for _ in range(int(options.get("n", "1"))):
            for node_id in ids or list(self.net.replicas):
                self.net[node_id].tick()
        return []

    def _process_ready(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        lines: list[str] = []
        for node_id in ids or list(self.net.replicas):
            rd = self.net.process_ready(node_id)
            if rd is not None:
                lines.extend(format_ready(node_id, rd))
        return lines

    def _deliver_msgs(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        targets = set(ids or self.net.replicas)
        lines = [
            f"{format_message(m)}{' DROPPED' if self._is_cut(m) else ''}"
            for m in self.net.queue
            if m.to in targets
        ]
        self.net.deliver(only=lambda m: m.to in targets)
        return lines

    def _is_cut(self, msg: Message) -> bool:
        return (msg.sender, msg.to) in self.net.cut

    def _stabilize(self, ids: list[str], options: dict[str, str]) -> list[str]:
        lines: list[str] = []
        for _ in range(100):
            ready_lines = self._process_ready(ids, options)
            deliver_lines = self._deliver_msgs(ids, options)
            if not ready_lines and not deliver_lines:
                return lines
            lines.extend(ready_lines)
            lines.extend(deliver_lines)
        raise AssertionError("did not stabilize")

    def _isolate(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        self.net.isolate(ids[0])
        return []

    def _heal(self, _ids: list[str], _options: dict[str, str]) -> list[str]:
        self.net.heal()
        return []

    def _leader_unreachable(self, args: list[str], _options: dict[str, str]) -> list[str]:
        """``leader-unreachable b a``: b's IO layer saw its link to a drop."""
        self.net[args[0]].leader_unreachable(args[1])
        return []

    def _compact(self, args: list[str], _options: dict[str, str]) -> list[str]:
        self.net.compact(args[0], int(args[1]))
        return []

    def _status(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        lines = []
        for node_id in ids or list(self.net.replicas):
            node = self.net[node_id]
            lines.append(
                f"{node_id}: {node.role.name} term={node.term} lead={node.leader_id} "
                f"commit={node.commit_index} applied={node.applied_index} "
                f"log=[{node.first_index}, {node.last_index}]"
            )
            if node.is_leader:
                for peer in sorted(node.conf_state.voters + node.conf_state.learners):
                    progress = node.progress(peer)
                    assert progress is not None
                    lines.append(
                        f"  {peer}: {progress.state.name} match={progress.match} next={progress.next}"
                    )
        return lines

    def _log(self, ids: list[str], _options: dict[str, str]) -> list[str]:
        node = self.net[ids[0]]
        return [format_entry(e) for e in node.log_entries(node.first_index, node.last_index + 1)]
