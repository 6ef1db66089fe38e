"""The loop-side series of ``Metrics`` render exactly as prometheus_client's own would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from fastpaca.observability import metrics as metrics_module
from fastpaca.observability.metrics import Metrics
from fastpaca.store.messages import PreparedMessage


def _series(text: str, name: str) -> set[str]:
    return {line for line in text.splitlines() if line.startswith(name) and "_created" not in line}


def _message(role: str, tokens: int) -> PreparedMessage:
    return PreparedMessage(role=role, token_count=tokens, canonical=b"{}", stored=b"{}")


def test_request_and_message_series_match_prometheus_client_for_the_same_samples() -> None:
    # Values on, between, below and above the bucket bounds.
    durations = [0.0, 0.0005, 0.0007, 0.001, 0.0025, 0.3, 2.5, 2.6, 40.0]
    tokens = [0, 1, 16, 17, 65536, 70000]
    ours = Metrics()
    for tokens_count in tokens:
        ours.appended([_message("user", tokens_count)])
    ours.appended([_message("tool", 3)], source="ws")
    for duration in durations:
        ours.observe_request("/v1/conversations/{id}/messages", "POST", 201, duration)
    ours.observe_request("/health/live", "GET", 200, 0.002)

    registry = CollectorRegistry()
    appended = Counter("fastpaca_messages_append", "x", ["role", "source"], registry=registry)
    token_count = Histogram(
        "fastpaca_messages_token_count", "x",
        buckets=metrics_module._TOKEN_BUCKETS, registry=registry,
    )  # fmt: skip
    request_duration = Histogram(
        "fastpaca_http_request_duration_seconds", "x", ["route", "method", "status"],
        buckets=metrics_module._LATENCY_BUCKETS_S, registry=registry,
    )  # fmt: skip
    for tokens_count in tokens:
        appended.labels("user", "http").inc()
        token_count.observe(tokens_count)
    appended.labels("tool", "ws").inc()
    token_count.observe(3)
    for duration in durations:
        request_duration.labels("/v1/conversations/{id}/messages", "POST", "201").observe(duration)
    request_duration.labels("/health/live", "GET", "200").observe(0.002)

    rendered, reference = ours.render().decode(), generate_latest(registry).decode()
    for name in (
        "fastpaca_messages_append_total",
        "fastpaca_messages_token_count_",
        "fastpaca_http_request_duration_seconds_",
    ):
        assert _series(rendered, name) == _series(reference, name)
        assert _series(rendered, name)  # and there is something to compare
