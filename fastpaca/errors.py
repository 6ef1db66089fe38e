"""Domain errors: what can go wrong, named, with no knowledge of HTTP.

Every error a caller may want to react to is a class here, with a comment
saying when it is raised. ``web/errors.py`` maps them to HTTP statuses exactly
once. A broken invariant is not a domain error: it raises
``InvariantViolation`` (or fails an ``assert``) and crashes the node.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConversationNotFound",
    "ConversationTombstoned",
    "CorruptLogError",
    "FastpacaError",
    "IdempotencyConflict",
    "InvariantViolation",
    "LeadershipLost",
    "NodeFailed",
    "NotLeader",
    "Overloaded",
    "ProposalDropped",
    "ProposalTimeout",
    "RaftError",
    "SequenceConflict",
    "Unavailable",
    "ValidationError",
]


class FastpacaError(Exception):
    """Base of every expected, handled error."""


# --- Raft / availability -------------------------------------------------------


class RaftError(FastpacaError):
    """Base of errors raised by the Raft engine to proposers and readers."""


class NotLeader(RaftError):
    """Raised when a proposal or read reaches a replica that is not the group's
    leader. ``leader_hint`` is the leader this replica knows of, if any, so the
    caller can retry there."""

    def __init__(self, group_id: int, leader_hint: str | None) -> None:
        super().__init__(f"group {group_id}: not the leader (leader: {leader_hint or 'unknown'})")
        self.group_id = group_id
        self.leader_hint = leader_hint


class LeadershipLost(RaftError):
    """Raised to a pending proposal or read when this replica stopped being
    leader before it was applied. The outcome is unknown: the entry may still
    commit under the new leader, so retries must carry an idempotency key."""

    def __init__(self, group_id: int, leader_hint: str | None) -> None:
        super().__init__(
            f"group {group_id}: leadership lost (new leader: {leader_hint or 'unknown'})"
        )
        self.group_id = group_id
        self.leader_hint = leader_hint


class ProposalDropped(RaftError):
    """Raised when the core refuses a proposal outright, e.g. during a
    leadership transfer or while another membership change is pending."""


class ProposalTimeout(RaftError):
    """Raised when a proposal or read was not applied within its deadline.
    The outcome is unknown, as for ``LeadershipLost``."""


class Unavailable(FastpacaError):
    """Raised when a request cannot be served right now: no quorum, no leader
    in time, or the node is shutting down. Clients should retry later."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(FastpacaError):
    """Raised when the per-node rate limit or a bounded queue is exceeded."""


class CorruptLogError(FastpacaError):
    """Raised when a stored record fails its checksum or cannot be decoded.
    Names the group and index; the record is never applied."""

    def __init__(self, group_id: int, index: int, detail: str) -> None:
        super().__init__(f"corrupt raft record: group {group_id} index {index}: {detail}")
        self.group_id = group_id
        self.index = index


class InvariantViolation(Exception):
    """A programmer error (log gap, term going backwards). Never mapped to a
    4xx: the node crashes and Raft recovers. Deliberately not a FastpacaError."""


class NodeFailed(Exception):
    """The Raft engine stopped on an error it cannot get past in place: a
    LevelDB write failed (disk full, I/O error) or an invariant broke. The
    node then shuts down and its process exits 1, so that its supervisor
    restarts it from what is durable, rather than staying up and refusing
    every request. Deliberately not a FastpacaError: nothing handles it."""


# --- Conversations ------------------------------------------------------------


class ValidationError(FastpacaError):
    """Raised for input that breaks the API's rules. ``code`` is the DESIGN.md
    error code (``invalid_message``, ``invalid_query``, ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ConversationNotFound(FastpacaError):
    """Raised for any operation on a conversation that was never created."""


class ConversationTombstoned(FastpacaError):
    """Raised for a write to a tombstoned conversation."""


class SequenceConflict(FastpacaError):
    """Raised when ``if_version`` does not match the current version."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"Version mismatch (current: {current_version})")
        self.current_version = current_version


class IdempotencyConflict(FastpacaError):
    """Raised when an idempotency key is reused with a different message."""


class ConfigError(FastpacaError):
    """Raised for a bad configuration value; the CLI prints one line, exits 2."""
