"""Every Prometheus series of the node, defined once.

Owns metric names, labels and buckets (DESIGN section 6) on a registry of its
own (one per node object, so tests can run many). Subsystems receive the
``Metrics`` object and record into it; Raft series are read from the engine's
stats at scrape time. It serves nothing itself: ``web/rest.py`` renders
``/metrics``.
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fastpaca.pubsub.stats import PubSubStats
from fastpaca.raft.stats import LatencyHistogram, RaftStats
from fastpaca.store.messages import PreparedMessage

if TYPE_CHECKING:  # the cluster package imports the app's pieces; avoid a cycle
    from fastpaca.cluster.node import ClusterNumbers
    from fastpaca.web.socket import StreamStats

__all__ = ["ARCHIVE_LAG_SERIES_MAX", "CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_TOKEN_BUCKETS = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)
_FLUSH_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
ARCHIVE_LAG_SERIES_MAX = 20
"""Conversations with a ``fastpaca_archive_lag`` series: the most lagging ones."""


class Metrics:
    """The node's series. Record through the methods or the attributes;
    ``render`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        # The per-request and per-message series count in plain ints on the
        # event loop (their only writer) and become Prometheus families at
        # scrape time: prometheus_client's children take a lock per call,
        # ~3 us per append in all, 1% of a node's CPU per append.
        self._appended: dict[tuple[str, str], int] = {}
        """Messages appended by (role, source)."""
        self._token_counts = _Buckets(_TOKEN_BUCKETS)
        self._request_durations: dict[tuple[str, str, int], _Buckets] = {}
        """HTTP request durations by (route template, method, status)."""
        registry.register(_RequestCollector(self))
        self._define_archive_series()

    def _define_archive_series(self) -> None:
        # DESIGN section 6 archive series, recorded by ``archive/archiver.py``
        # (they stay at zero while the archive is off).
        registry = self.registry
        self.archive_pending_rows = Gauge(
            "fastpaca_archive_pending_rows",
            "Messages of the groups this node leads not yet archived (at the last flush).",
            registry=registry,
        )
        self.archive_pending_conversations = Gauge(
            "fastpaca_archive_pending_conversations",
            "Conversations of the groups this node leads with messages not yet archived.",
            registry=registry,
        )
        self.archive_flush_duration_ms = Histogram(
            "fastpaca_archive_flush_duration_ms",
            "Duration of one archive flush that had messages to copy, in milliseconds.",
            buckets=_FLUSH_BUCKETS_MS,
            registry=registry,
        )
        self.archive_attempted = Counter(
            "fastpaca_archive_attempted", "Rows the archiver tried to insert.", registry=registry
        )
        self.archive_inserted = Counter(
            "fastpaca_archive_inserted",
            "Rows the archiver inserted (rows already archived are not counted).",
            registry=registry,
        )
        self.archive_bytes_attempted = Counter(
            "fastpaca_archive_bytes_attempted", "Bytes the archiver tried to insert.",
            registry=registry,
        )  # fmt: skip
        self.archive_bytes_inserted = Counter(
            "fastpaca_archive_bytes_inserted", "Bytes the archiver inserted.", registry=registry
        )
        self.archive_lag = Gauge(
            "fastpaca_archive_lag",
            f"Messages not yet archived, for the {ARCHIVE_LAG_SERIES_MAX} conversations of "
            "this node's groups that lag most (other conversations have no series).",
            ["conversation_id"],
            registry=registry,
        )
        self.archive_tail_size = Gauge(
            "fastpaca_archive_tail_size",
            "Largest number of messages still in Raft state among the conversations "
            "archived in the last flush (FASTPACA_TAIL_KEEP plus what is not archived).",
            registry=registry,
        )
        self.archive_trimmed = Counter(
            "fastpaca_archive_trimmed",
            "Messages trimmed from Raft state by archive acks this node proposed.",
            registry=registry,
        )

    def archive_pending(self, lags: Sequence[tuple[int, str]]) -> None:
        """Set the pending series from ``(lag, conversation_id)`` of every
        conversation with unarchived messages. Only the ``ARCHIVE_LAG_SERIES_MAX``
        largest get a ``fastpaca_archive_lag`` series, so the label set stays
        bounded however many conversations lag."""
        self.archive_pending_rows.set(sum(lag for lag, _ in lags))
        self.archive_pending_conversations.set(len(lags))
        self.archive_lag.clear()
        for lag, conversation_id in heapq.nlargest(ARCHIVE_LAG_SERIES_MAX, lags):
            self.archive_lag.labels(conversation_id).set(lag)

    def appended(self, messages: Sequence[PreparedMessage], *, source: str = "http") -> None:
        appended, tokens = self._appended, self._token_counts
        for message in messages:
            key = (message.role, source)
            appended[key] = appended.get(key, 0) + 1
            tokens.observe(message.token_count)

    def observe_request(self, route: str, method: str, status: int, duration_s: float) -> None:
        key = (route, method, status)
        histogram = self._request_durations.get(key)
        if histogram is None:
            histogram = self._request_durations[key] = _Buckets(_LATENCY_BUCKETS_S)
        histogram.observe(duration_s)

    def watch_raft(self, stats: RaftStats) -> None:
        """Export the Raft series, read from the driver's ``stats`` on every scrape."""
        self.registry.register(_RaftCollector(stats))

    def watch_cluster(self, numbers: Callable[[], ClusterNumbers]) -> None:
        """Export the cluster series (peers, routing, per-peer transport), read
        from ``numbers()`` on every scrape."""
        self.registry.register(_ClusterCollector(numbers))

    def watch_pubsub(self, stats: PubSubStats) -> None:
        """Export the pub/sub adapter's series, read from ``stats`` on every scrape."""
        self.registry.register(_PubSubCollector(stats))

    def watch_streams(self, stats: Callable[[], StreamStats]) -> None:
        """Export the websocket stream series, read from ``stats()`` on every
        scrape (the sockets count in plain ints: no lock per push)."""
        self.registry.register(_StreamCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Buckets:
    """A histogram's raw counts: ``counts[i]`` holds the samples <=
    ``bounds[i]`` and above the previous bound; the last, those above all."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str]) -> None:
        family.add_metric(list(labels), _cumulative(self.bounds, self.counts), self.total)


def _cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Prometheus buckets (``le`` label, cumulative count) from raw counts,
    the last of which holds the samples above every bound."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        cumulative += count
        buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
    return buckets


class _ScrapeTimeCollector(Collector):
    """A collector whose series are read at scrape time: it describes
    nothing up front, so registering it reads nothing."""

    def describe(self) -> list[GaugeMetricFamily]:
        return []


class _RequestCollector(_ScrapeTimeCollector):
    """The per-message and per-request series, from ``Metrics``' plain counts."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        metrics = self._metrics
        appended = CounterMetricFamily(
            "fastpaca_messages_append",
            "Messages appended, by role and entry point.",
            labels=["role", "source"],
        )
        for (role, source), count in sorted(metrics._appended.items()):
            appended.add_metric([role, source], count)
        yield appended
        tokens = HistogramMetricFamily(
            "fastpaca_messages_token_count", "Token count of appended messages.", labels=[]
        )
        metrics._token_counts.add_to(tokens, [])
        yield tokens
        durations = HistogramMetricFamily(
            "fastpaca_http_request_duration_seconds",
            "HTTP request duration by route template, method and status.",
            labels=["route", "method", "status"],
        )
        for (route, method, status), histogram in sorted(metrics._request_durations.items()):
            histogram.add_to(durations, [route, method, str(status)])
        yield durations


class _RaftCollector(_ScrapeTimeCollector):
    def __init__(self, stats: RaftStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        stats = self._stats
        yield GaugeMetricFamily(
            "fastpaca_raft_groups_hosted", "Raft groups with a replica on this node.",
            value=stats.groups_hosted,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "fastpaca_raft_leaders", "Raft groups this node currently leads.",
            value=stats.leaders_held,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fastpaca_raft_term_changes", "Term changes seen by this node's groups.",
            value=stats.term_changes,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fastpaca_raft_leader_changes", "Leader or role changes of this node's groups.",
            value=stats.leader_changes,
        )  # fmt: skip
        dropped = CounterMetricFamily(
            "fastpaca_raft_proposals_dropped",
            "Proposals that did not apply: refused (not leader, dropped, overloaded), "
            "lost with leadership, or timed out.",
            labels=["reason"],
        )
        dropped.add_metric(["refused"], stats.proposals_rejected)
        dropped.add_metric(["leadership_lost"], stats.proposals_failed)
        dropped.add_metric(["timeout"], stats.proposals_timed_out)
        yield dropped
        yield CounterMetricFamily(
            "fastpaca_raft_proposals", "Proposals made on this node.", value=stats.proposals
        )
        yield CounterMetricFamily(
            "fastpaca_raft_iterations",
            "Driver iterations (one LevelDB batch each, synced or not).",
            value=stats.iterations,
        )
        yield CounterMetricFamily(
            "fastpaca_raft_synced_writes", "fsync'd LevelDB batch writes.",
            value=stats.synced_writes,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fastpaca_raft_messages_dropped", "Inbound Raft messages dropped as invalid.",
            value=stats.messages_dropped,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fastpaca_raft_snapshots_sent", "Snapshots this node sent to lagging replicas.",
            value=stats.snapshots_sent,
        )  # fmt: skip
        yield CounterMetricFamily(
            "fastpaca_raft_snapshots_installed", "Snapshots this node installed.",
            value=stats.snapshots_installed,
        )  # fmt: skip
        yield _latency_family(
            "fastpaca_raft_commit_latency_seconds",
            "Time from propose to apply of this node's proposals.",
            stats.commit_latency,
        )
        yield _latency_family(
            "fastpaca_raft_synced_write_seconds",
            "Time of each fsync'd LevelDB batch write, from the hand-off to the writer thread "
            "to the loop seeing it done: the disk's share of a write's latency.",
            stats.synced_write_latency,
        )


def _latency_family(
    name: str, help_text: str, histogram: LatencyHistogram
) -> HistogramMetricFamily:
    return HistogramMetricFamily(
        name,
        help_text,
        buckets=_cumulative(histogram.bounds_s, histogram.counts),
        sum_value=histogram.total_s,
    )


class _PubSubCollector(_ScrapeTimeCollector):
    _COUNTERS = {
        "events_published": "Stream events this node, as group leader, gave its own subscribers.",
        "events_forwarded": "Stream event copies sent to other nodes for their subscribers.",
        "events_received": "Stream events received from other nodes for this node's subscribers.",
        "events_dropped": "Stream event copies not sent (peer link down or full, broker down).",
        "frames_sent": "Pub/sub event frames sent.",
        "frames_received": "Pub/sub event frames received.",
        "interest_frames_sent": "Interest announcements sent to peers.",
        "interest_frames_received": "Interest announcements received from peers.",
        "malformed_frames": "Pub/sub frames dropped as malformed.",
        "loss_signals": (
            "Times a watched conversation's subscribers were told events may have been lost "
            "(peer link or leader change, Redis reconnect) and re-checked its last seq."
        ),
    }

    def __init__(self, stats: PubSubStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats
        for field, help_text in self._COUNTERS.items():
            yield CounterMetricFamily(
                f"fastpaca_pubsub_{field}", help_text, value=getattr(stats, field)
            )
        yield GaugeMetricFamily(
            "fastpaca_pubsub_remote_interests",
            "(conversation, node) pairs this node sends stream events to when it leads.",
            value=stats.remote_interests,
        )
        yield GaugeMetricFamily(
            "fastpaca_pubsub_local_interests",
            "Conversations with a stream subscriber on this node.",
            value=stats.local_interests,
        )


class _StreamCollector(_ScrapeTimeCollector):
    def __init__(self, stats: Callable[[], StreamStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats()
        yield GaugeMetricFamily(
            "fastpaca_stream_sockets", "Open websocket stream connections.", value=stats.sockets
        )
        yield GaugeMetricFamily(
            "fastpaca_stream_subscribers", "Joined conversation channels on this node.",
            value=stats.channels,
        )  # fmt: skip
        pushes = CounterMetricFamily(
            "fastpaca_stream_pushes",
            "Frames pushed to stream channels, by kind (live message, replayed message, "
            "tombstone, gap).",
            labels=["kind"],
        )
        for kind, count in stats.pushes.items():
            pushes.add_metric([kind], count)
        yield pushes
        yield CounterMetricFamily(
            "fastpaca_stream_dropped",
            "Live events dropped because a socket's send queue was full (reported as gaps).",
            value=stats.dropped,
        )
        yield CounterMetricFamily(
            "fastpaca_stream_bad_frames", "Inbound frames refused as not Phoenix frames.",
            value=stats.bad_frames,
        )  # fmt: skip


class _ClusterCollector(_ScrapeTimeCollector):
    def __init__(self, numbers: Callable[[], ClusterNumbers]) -> None:
        self._numbers = numbers

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        numbers = self._numbers()
        yield GaugeMetricFamily(
            "fastpaca_cluster_peers_connected", "Peers with an authenticated connection.",
            value=numbers.peers_connected,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "fastpaca_cluster_peers_known", "Other nodes this node knows of.",
            value=numbers.peers_known,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "fastpaca_cluster_coordinator", "1 while this node is the coordinator.",
            value=int(numbers.is_coordinator),
        )  # fmt: skip
        routing = numbers.routing
        yield CounterMetricFamily(
            "fastpaca_cluster_forwarded_requests",
            "Requests this node forwarded to another node's group leader.",
            value=routing.forwarded,
        )
        yield CounterMetricFamily(
            "fastpaca_cluster_served_for_peers",
            "Requests other nodes forwarded to this node as leader.",
            value=routing.served_for_peers,
        )
        yield CounterMetricFamily(
            "fastpaca_cluster_request_retries",
            "Request attempts retried after a redirect, a lost peer or a timeout.",
            value=routing.retries,
        )
        actions = CounterMetricFamily(
            "fastpaca_cluster_coordinator_actions",
            "Topology actions this node ran as coordinator.", labels=["outcome"],
        )  # fmt: skip
        actions.add_metric(["done"], numbers.coordinator_actions_done)
        actions.add_metric(["failed"], numbers.coordinator_actions_failed)
        yield actions
        yield from _transport_families(numbers)


def _transport_families(numbers: ClusterNumbers) -> Iterator[CounterMetricFamily]:
    stats = numbers.transport
    per_peer = {
        "frames_sent": "Websocket messages sent to the peer (each packs one or more payloads).",
        "frames_received": "Websocket messages received from the peer.",
        "messages_sent": "Payloads sent to the peer.",
        "bytes_sent": "Payload bytes sent to the peer.",
        "messages_received": "Payloads received from the peer.",
        "bytes_received": "Payload bytes received from the peer.",
        "drops": "Payloads not sent (peer down, queue full).",
        "connects": "Connections established with the peer.",
    }
    for field, help_text in per_peer.items():
        family = CounterMetricFamily(
            f"fastpaca_cluster_transport_{field}", help_text, labels=["peer"]
        )
        for peer, peer_stats in sorted(stats.peers.items()):
            family.add_metric([peer], getattr(peer_stats, field))
        yield family
    yield CounterMetricFamily(
        "fastpaca_cluster_transport_auth_failures",
        "Peer connections refused for failing the secret handshake.",
        value=stats.auth_failures,
    )
