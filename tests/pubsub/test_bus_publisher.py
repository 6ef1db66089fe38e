"""The local bus and the publisher that feeds it from applied effects."""

from __future__ import annotations

import orjson

from fastpaca.pubsub.bus import LocalBus, StreamEvent
from fastpaca.pubsub.publisher import StreamPublisher, event_for
from fastpaca.store.effects import Appended, Tombstoned

STORED = b'{"inserted_at":"2026-02-02T12:00:00Z","role":"user","parts":[{"type":"text","text":"hi"}],"metadata":{},"token_count":1}'


def test_appended_becomes_the_design_message_payload() -> None:
    event = event_for(Appended(conversation_id="c1", seq=7, version=5, message=STORED))
    assert (event.conversation_id, event.kind, event.seq) == ("c1", "message", 7)
    payload = orjson.loads(event.payload)
    assert payload == {
        "type": "message",
        "seq": 7,
        "version": 5,
        "message": orjson.loads(STORED),
    }


def test_tombstone_payload() -> None:
    event = event_for(Tombstoned(conversation_id="c1"))
    assert (event.kind, event.seq, orjson.loads(event.payload)) == (
        "tombstone",
        None,
        {"type": "tombstone"},
    )


def test_bus_delivers_only_to_the_conversations_subscribers_until_closed() -> None:
    bus = LocalBus()
    got: dict[str, list[int | None]] = {"a": [], "b": []}
    sub_a = bus.subscribe("c1", lambda e: got["a"].append(e.seq))
    bus.subscribe("c2", lambda e: got["b"].append(e.seq))
    publish = StreamPublisher(bus)
    publish(0, [Appended(conversation_id="c1", seq=1, version=1, message=STORED)])
    publish(0, [Appended(conversation_id="c2", seq=1, version=1, message=STORED)])
    sub_a.close()
    sub_a.close()  # idempotent
    publish(0, [Appended(conversation_id="c1", seq=2, version=2, message=STORED)])
    assert got == {"a": [1], "b": [1]}
    assert bus.subscriber_count() == 1


def test_interest_fires_on_first_subscriber_and_last_leaver() -> None:
    bus = LocalBus()
    changes: list[tuple[str, bool]] = []
    bus.on_interest(lambda cid, interested: changes.append((cid, interested)))
    first = bus.subscribe("c1", lambda e: None)
    second = bus.subscribe("c1", lambda e: None)
    first.close()
    assert changes == [("c1", True)]
    second.close()
    assert changes == [("c1", True), ("c1", False)]
    assert list(bus.interests()) == []


def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    bus = LocalBus()
    got: list[StreamEvent] = []

    def broken(event: StreamEvent) -> None:
        raise RuntimeError("boom")

    bus.subscribe("c1", broken)
    bus.subscribe("c1", got.append)
    assert bus.publish(event_for(Tombstoned(conversation_id="c1"))) == 1
    assert len(got) == 1


def test_publisher_skips_groups_it_must_not_publish() -> None:
    bus = LocalBus()
    got: list[StreamEvent] = []
    bus.subscribe("c1", got.append)
    publish = StreamPublisher(bus, should_publish=lambda group_id: group_id == 1)
    publish(0, [Tombstoned(conversation_id="c1")])
    publish(1, [Tombstoned(conversation_id="c1")])
    assert len(got) == 1
