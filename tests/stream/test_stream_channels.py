"""The websocket stream against a real in-process node: joins, live pushes,
replay hand-over, gaps, slow consumers, refusals (DESIGN section 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from phoenix_client import In, PhoenixClient

from fastpaca.app import BUS_KEY, RUNTIME_KEY
from fastpaca.pubsub.bus import StreamEvent
from fastpaca.store.messages import NewMessage
from fastpaca.web.socket import STREAMS_KEY, StreamLimits

TOPIC = "conversation:c1"
Connect = Callable[..., Any]


async def create(node: TestClient, conversation_id: str = "c1") -> None:
    response = await node.put(f"/v1/conversations/{conversation_id}", json={})
    assert response.status in (200, 201)


def _message(text: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"type": "text", "text": text}]}


def _new(text: str) -> NewMessage:
    return NewMessage(role="user", parts=[{"type": "text", "text": text}], metadata={})


async def append(node: TestClient, text: str, conversation_id: str = "c1") -> int:
    response = await node.post(
        f"/v1/conversations/{conversation_id}/messages", json={"message": _message(text)}
    )
    assert response.status == 201, await response.text()
    seq: int = (await response.json())["seq"]
    return seq


async def append_batch(node: TestClient, count: int, conversation_id: str = "c1") -> None:
    body = {"messages": [_message(f"m{i}") for i in range(count)]}
    response = await node.post(f"/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status == 201, await response.text()


def crafted(seq: int, conversation_id: str = "c1", *, pad: int = 0) -> StreamEvent:
    """An event as a publisher would build it, for seqs the store never had."""
    message = {"role": "user", "parts": [{"type": "text", "text": "x" * pad}]}
    payload = b'{"type":"message","seq":%d,"version":%d,"message":%b}' % (
        seq,
        seq,
        orjson.dumps(message),
    )
    return StreamEvent(conversation_id=conversation_id, kind="message", seq=seq, payload=payload)


def seqs(frames: list[In]) -> list[int]:
    return [f.payload["seq"] for f in frames if f.event == "message"]


async def collect_through(client: PhoenixClient, last_seq: int) -> list[In]:
    """Every frame until the message ``last_seq`` (inclusive)."""
    frames: list[In] = []
    async with asyncio.timeout(10):
        while True:
            frame = await client.recv()
            frames.append(frame)
            if frame.event == "message" and frame.payload["seq"] == last_seq:
                return frames


# --- the protocol basics, both serializers ---------------------------------


@pytest.mark.parametrize("vsn", ["2.0.0", "1.0.0", None])
async def test_join_push_heartbeat_leave(node: TestClient, connect: Connect, vsn: str) -> None:
    await create(node)
    client: PhoenixClient = await connect(vsn=vsn)
    join_ref, reply = await client.join(TOPIC)
    if not client.v1:
        assert reply.join_ref == join_ref  # v1 frames carry it too, but v1 clients need not
    assert reply.payload == {
        "status": "ok",
        "response": {"last_seq": 0, "version": 0, "tombstoned": False},
    }

    seq = await append(node, "hello")
    [push] = await client.pushes(1)
    assert (push.join_ref, push.ref, push.topic, push.event) == (join_ref, None, TOPIC, "message")
    payload = push.payload
    assert (payload["type"], payload["seq"], payload["version"]) == ("message", seq, 1)
    assert payload["message"]["role"] == "user"
    assert payload["message"]["parts"] == [{"type": "text", "text": "hello"}]
    assert payload["message"]["token_count"] == 1

    ref, heartbeat = await client.request("phoenix", "heartbeat", {})
    assert (heartbeat.join_ref, heartbeat.ref, heartbeat.topic) == (None, ref, "phoenix")
    assert heartbeat.payload == {"status": "ok", "response": {}}

    ref, left = await client.request(TOPIC, "phx_leave", {}, join_ref=join_ref)
    assert (left.ref, left.topic, left.payload) == (ref, TOPIC, {"status": "ok", "response": {}})
    await append(node, "after leave")
    assert await client.barrier() == []  # no push once left


async def test_v2_frames_are_exact_arrays_with_string_refs(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    await client.ws.send_str('["7","7","conversation:c1","phx_join",{}]')
    raw = await client.ws.receive_str(timeout=5)
    assert raw == (
        '["7","7","conversation:c1","phx_reply",'
        '{"status":"ok","response":{"last_seq":0,"version":0,"tombstoned":false}}]'
    )
    await client.ws.send_str('[null,"8","phoenix","heartbeat",{}]')
    assert await client.ws.receive_str(timeout=5) == (
        '[null,"8","phoenix","phx_reply",{"status":"ok","response":{}}]'
    )


async def test_phoenix_subprotocol_is_selected_when_offered(
    node: TestClient, connect: Connect
) -> None:
    # What the JS client offers with its authToken option.
    client: PhoenixClient = await connect(protocols=("phoenix", "base64url.bearer.phx.dG9r"))
    assert client.ws.protocol == "phoenix"


async def test_tombstone_is_pushed_live(node: TestClient, connect: Connect) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, _ = await client.join(TOPIC)
    response = await node.delete("/v1/conversations/c1")
    assert response.status == 204
    [push] = await client.pushes(1)
    assert (push.join_ref, push.ref, push.event, push.payload) == (
        join_ref,
        None,
        "tombstone",
        {"type": "tombstone"},
    )
    await node.delete("/v1/conversations/c1")  # a repeated delete is no second tombstone push
    assert await client.barrier() == []


async def test_many_channels_per_socket(node: TestClient, connect: Connect) -> None:
    await create(node, "a")
    await create(node, "b")
    client: PhoenixClient = await connect()
    ref_a, _ = await client.join("conversation:a")
    ref_b, _ = await client.join("conversation:b")
    await append(node, "to a", "a")
    await append(node, "to b", "b")
    await append(node, "to a again", "a")
    frames = await client.pushes(3)
    assert [(f.topic, f.join_ref, f.payload["seq"]) for f in frames] == [
        ("conversation:a", ref_a, 1),
        ("conversation:b", ref_b, 1),
        ("conversation:a", ref_a, 2),
    ]


async def test_second_join_of_a_topic_replaces_the_first(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    first, _ = await client.join(TOPIC)
    ref = client.next_ref()
    await client.send(ref, ref, TOPIC, "phx_join", {})
    closed, reply = await client.pushes(2)
    # As Phoenix: phx_close for the old join (its join_ref), then the new join's reply.
    assert (closed.join_ref, closed.event, closed.payload) == (first, "phx_close", {})
    assert (reply.ref, reply.event, reply.payload["status"]) == (ref, "phx_reply", "ok")
    await append(node, "once")
    [push] = await client.pushes(1)
    assert push.join_ref == ref
    assert await client.barrier() == []  # one channel, one push


# --- from_seq: replay, then live, with no gap and no duplicate ---------------


async def test_from_seq_replays_then_continues_live(node: TestClient, connect: Connect) -> None:
    await create(node)
    await append_batch(node, 5)
    client: PhoenixClient = await connect()
    join_ref, reply = await client.join(TOPIC, {"from_seq": 2})
    assert reply.payload["response"]["last_seq"] == 5
    replayed = await client.pushes(4)
    assert seqs(replayed) == [2, 3, 4, 5]
    assert all(f.join_ref == join_ref and f.ref is None for f in replayed)
    assert replayed[0].payload["message"]["parts"] == [{"type": "text", "text": "m1"}]
    assert "version" not in replayed[0].payload  # not kept per message
    await append(node, "live")
    [live] = await client.pushes(1)
    assert (live.payload["seq"], live.payload["version"]) == (6, 2)


async def test_from_seq_as_an_integral_float_is_that_seq(
    node: TestClient, connect: Connect
) -> None:
    """JSON has only numbers: ``3.0`` is the integer 3 here as over HTTP."""
    await create(node)
    await append_batch(node, 4)
    client: PhoenixClient = await connect()
    _, reply = await client.join(TOPIC, {"from_seq": 3.0})
    assert reply.payload["status"] == "ok"
    assert seqs(await client.pushes(2)) == [3, 4]


async def test_from_seq_with_appends_during_every_replay_page(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends land between the join's read and each replay page (forced by
    appending from inside the replay), and more race it over HTTP: the
    client still sees every seq exactly once, in order."""
    await create(node)
    await append_batch(node, 40)
    node.app[STREAMS_KEY].limits = StreamLimits(replay_page=7)
    runtime = node.app[RUNTIME_KEY]
    real_replay = runtime.replay
    pages = 0
    last_page_read = asyncio.Event()

    async def replay_with_appends(conversation_id: str, *, from_seq: int, limit: int) -> Any:
        nonlocal pages
        pages += 1
        for i in range(3):  # applied (and published) before this page is read
            await runtime.append(conversation_id, [_new(f"p{pages}.{i}")], is_batch=False)
        page = await real_replay(conversation_id, from_seq=from_seq, limit=limit)
        # and after it: the last page's reaches the client only through the join's buffer
        await runtime.append(conversation_id, [_new(f"p{pages}.after")], is_batch=False)
        if len(page) < limit:
            last_page_read.set()  # the join goes live now: no more replay calls
        return page

    monkeypatch.setattr(runtime, "replay", replay_with_appends)
    client: PhoenixClient = await connect()

    async def http_appends() -> None:
        for i in range(20):
            await append(node, f"h{i}")

    racing = asyncio.create_task(http_appends())
    _, reply = await client.join(TOPIC, {"from_seq": 1})
    assert reply.payload["status"] == "ok"
    await racing
    async with asyncio.timeout(10):
        await last_page_read.wait()
    await append(node, "last")
    last_seq = (await (await node.get("/v1/conversations/c1")).json())["last_seq"]
    frames = await collect_through(client, last_seq)
    assert pages >= 6
    assert [f.event for f in frames if f.event != "message"] == []  # no gap
    assert seqs(frames) == list(range(1, last_seq + 1))
    assert await client.barrier() == []  # and nothing twice after the end


async def test_join_without_from_seq_is_live_from_the_next_seq(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    await append_batch(node, 3)
    client: PhoenixClient = await connect()
    await client.join(TOPIC)
    bus = node.app[BUS_KEY]
    bus.publish(crafted(3))  # a late duplicate of something before the join
    await append(node, "next")
    [push] = await client.pushes(1)
    assert push.payload["seq"] == 4


async def test_from_seq_beyond_the_end_waits_for_that_seq(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    await client.join(TOPIC, {"from_seq": 3})
    for text in ("one", "two", "three"):
        await append(node, text)
    [push] = await client.pushes(1)
    assert push.payload["seq"] == 3


async def test_tombstoned_conversation_join_replays_then_pushes_tombstone(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    await append_batch(node, 2)
    assert (await node.delete("/v1/conversations/c1")).status == 204
    client: PhoenixClient = await connect()
    _, reply = await client.join(TOPIC, {"from_seq": 1})
    assert reply.payload == {
        "status": "ok",
        "response": {"last_seq": 2, "version": 1, "tombstoned": True},
    }
    frames = await client.pushes(3)
    assert [f.event for f in frames] == ["message", "message", "tombstone"]
    assert await client.barrier() == []


# --- gaps and duplicates ----------------------------------------------------


async def test_a_hole_becomes_a_gap_push_and_duplicates_are_dropped(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, _ = await client.join(TOPIC)
    await append(node, "one")
    [first] = await client.pushes(1)
    assert first.payload["seq"] == 1
    bus = node.app[BUS_KEY]
    bus.publish(crafted(4))  # 2 and 3 never arrived
    bus.publish(crafted(3))  # late: the client was told to replay it
    bus.publish(crafted(4))  # twice
    bus.publish(crafted(1))
    gap, message = await client.pushes(2)
    assert (gap.join_ref, gap.ref, gap.event) == (join_ref, None, "gap")
    assert gap.payload == {"type": "gap", "expected": 2, "actual": 4}
    assert (message.event, message.payload["seq"]) == ("message", 4)
    assert await client.barrier() == []
    bus.publish(crafted(5))
    [next_one] = await client.pushes(1)
    assert next_one.payload["seq"] == 5


async def test_slow_consumer_drops_then_reports_one_gap(node: TestClient, connect: Connect) -> None:
    await create(node)
    node.app[STREAMS_KEY].limits = StreamLimits(send_queue_bytes=8 * 1024)
    client: PhoenixClient = await connect()
    await client.join(TOPIC)
    bus = node.app[BUS_KEY]
    for seq in range(1, 301):  # in one go: the writer gets no turn meanwhile
        bus.publish(crafted(seq, pad=200))
    frames = await client.barrier()
    got = seqs(frames)
    assert 1 < len(got) < 300, len(got)
    assert got == list(range(1, len(got) + 1))
    assert frames[-1].event == "gap"
    assert frames[-1].payload == {"type": "gap", "expected": len(got) + 1, "actual": 301}
    bus.publish(crafted(301))
    [after] = await client.pushes(1)
    assert after.payload["seq"] == 301
    metrics = await (await node.get("/metrics")).text()
    assert f"fastpaca_stream_dropped_total {300 - len(got)}.0" in metrics
    assert 'fastpaca_stream_pushes_total{kind="gap"} 1.0' in metrics


async def test_catch_up_buffer_overflow_is_re_read_not_lost(
    node: TestClient, connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live events that outgrow the join's buffer are thrown away and read
    from the store instead: still no gap."""
    await create(node)
    await append_batch(node, 10)
    node.app[STREAMS_KEY].limits = StreamLimits(replay_page=4, catch_up_buffer_bytes=600)
    runtime = node.app[RUNTIME_KEY]
    real_replay = runtime.replay
    bursts = 0

    async def replay_with_burst(conversation_id: str, *, from_seq: int, limit: int) -> Any:
        nonlocal bursts
        page = await real_replay(conversation_id, from_seq=from_seq, limit=limit)
        if len(page) < limit and not bursts:
            # The join would go live after this page: ten appends now (a few
            # KB of events) overflow its buffer, so it must read them instead.
            bursts += 1
            for i in range(10):
                await runtime.append(conversation_id, [_new(f"burst {i}")], is_batch=False)
        return page

    monkeypatch.setattr(runtime, "replay", replay_with_burst)
    client: PhoenixClient = await connect()
    await client.join(TOPIC, {"from_seq": 1})
    frames = await collect_through(client, 20)
    assert bursts == 1
    assert [f.event for f in frames if f.event != "message"] == []
    assert seqs(frames) == list(range(1, 21))
    assert await client.barrier() == []


# --- refusals: error replies, the socket stays usable ------------------------


@pytest.mark.parametrize(
    ("topic", "params", "reason"),
    [
        ("conversation:missing", {}, "conversation_not_found"),
        ("conversation:", {}, "invalid_conversation_id"),
        ("conversation:a/b", {}, "invalid_conversation_id"),
        ("conversation:a b", {}, "invalid_conversation_id"),
        ("conversation:a\u0001", {}, "invalid_conversation_id"),
        ("conversation:" + "x" * 257, {}, "invalid_conversation_id"),
        ("room:lobby", {}, "unmatched topic"),
        ("conversation", {}, "unmatched topic"),
        (TOPIC, {"from_seq": -1}, "invalid_params"),
        (TOPIC, {"from_seq": "1"}, "invalid_params"),
        (TOPIC, {"from_seq": 1.5}, "invalid_params"),
        (TOPIC, {"from_seq": True}, "invalid_params"),
        (TOPIC, {"from_seq": 2**63}, "invalid_params"),
        (TOPIC, {"last_seq": 0}, "invalid_params"),
    ],
)
async def test_bad_joins_get_error_replies(
    node: TestClient, connect: Connect, topic: str, params: dict[str, Any], reason: str
) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, reply = await client.join(topic, params)
    assert reply.join_ref == join_ref
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"] == reason
    assert reply.payload["response"]["message"]
    # Still usable: a good join on the same socket works and streams.
    await client.join(TOPIC)
    await append(node, "still here")
    [push] = await client.pushes(1)
    assert push.event == "message"


async def test_refused_join_leaves_no_subscriber(node: TestClient, connect: Connect) -> None:
    client: PhoenixClient = await connect()
    await client.join("conversation:missing")
    assert not node.app[BUS_KEY].has_subscribers("missing")


@pytest.mark.parametrize(
    ("frame", "topic", "ref"),
    [
        ("not json", "phoenix", None),
        ("{}", "phoenix", None),
        ("[1, 2, 3]", "phoenix", None),
        ('[null, "5", 42, "phx_join", {}]', "phoenix", "5"),
        ('[null, "5", "conversation:c1", "phx_join", []]', "conversation:c1", "5"),
        ('[null, "5", "conversation:c1", "", {}]', "conversation:c1", "5"),
        ('[{"a": 1}, "5", "conversation:c1", "phx_join", {}]', "phoenix", None),
        ("[]", "phoenix", None),
        ("null", "phoenix", None),
    ],
)
async def test_garbage_frames_get_error_replies(
    node: TestClient, connect: Connect, frame: str, topic: str, ref: str | None
) -> None:
    client: PhoenixClient = await connect()
    await client.ws.send_str(frame)
    reply = await client.recv()
    assert (reply.event, reply.topic, reply.ref) == ("phx_reply", topic, ref)
    assert reply.payload["status"] == "error"
    assert reply.payload["response"]["reason"] == "invalid_frame"
    assert await client.barrier() == []  # still answering


async def test_binary_frames_are_refused_not_fatal(node: TestClient, connect: Connect) -> None:
    client: PhoenixClient = await connect()
    await client.ws.send_bytes(b"\x00\x01\x02")
    reply = await client.recv()
    assert reply.payload["response"]["reason"] == "invalid_frame"
    assert await client.barrier() == []


async def test_events_other_than_join_and_leave(node: TestClient, connect: Connect) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    join_ref, _ = await client.join(TOPIC)
    _, pushed = await client.request(TOPIC, "shout", {"a": 1}, join_ref=join_ref)
    assert pushed.payload["status"] == "error"
    assert pushed.payload["response"]["reason"] == "unsupported_event"
    _, unjoined = await client.request("conversation:other", "shout", {})
    assert unjoined.payload["response"]["reason"] == "unmatched topic"
    _, phoenix = await client.request("phoenix", "phx_join", {})
    assert phoenix.payload["status"] == "error"
    _, leave = await client.request("conversation:other", "phx_leave", {})
    assert leave.payload == {"status": "ok", "response": {}}  # the JS client waits for ok


async def test_oversized_inbound_frame_closes_with_1009(node: TestClient, connect: Connect) -> None:
    client: PhoenixClient = await connect()
    await client.ws.send_str('[null,"1","phoenix","heartbeat",{"pad":"' + "x" * 70_000 + '"}]')
    message = await client.ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.MESSAGE_TOO_BIG


async def test_idle_socket_is_closed(node: TestClient, connect: Connect) -> None:
    node.app[STREAMS_KEY].limits = StreamLimits(idle_timeout_s=0.2)
    client: PhoenixClient = await connect()
    message = await client.ws.receive(timeout=5)
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.extra == "idle timeout"


async def test_upgrade_is_required_and_vsn_checked(node: TestClient) -> None:
    plain = await node.get("/socket/websocket?vsn=2.0.0")
    assert plain.status == 426
    assert (await plain.json())["error"] == "upgrade_required"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await node.ws_connect("/socket/websocket?vsn=3.0.0")
    assert refused.value.status == 400


async def test_stream_gauges(node: TestClient, connect: Connect) -> None:
    await create(node)
    client: PhoenixClient = await connect()
    await client.join(TOPIC)
    metrics = await (await node.get("/metrics")).text()
    assert "fastpaca_stream_sockets 1.0" in metrics
    assert "fastpaca_stream_subscribers 1.0" in metrics
    await client.ws.close()
    async with asyncio.timeout(5):
        while node.app[STREAMS_KEY].stats.sockets:
            await asyncio.sleep(0.01)
    assert node.app[STREAMS_KEY].stats.channels == 0
    assert not node.app[BUS_KEY].has_subscribers("c1")


async def test_shutdown_closes_sockets_with_1001(node: TestClient) -> None:
    await create(node)
    # Its own session: the test client's close would close its sockets itself.
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(node.make_url("/socket/websocket?vsn=2.0.0"))
        client = PhoenixClient(ws)
        await client.join(TOPIC)
        loop = asyncio.get_running_loop()
        started = loop.time()
        closing = asyncio.create_task(node.close())  # runner.cleanup: the on_shutdown hook
        message = await ws.receive(timeout=5)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (
            aiohttp.WSCloseCode.GOING_AWAY,
            "server shutting down",
        )
        await closing
        assert loop.time() - started < 1.0  # not aiohttp's 1 s straggler wait


async def test_tombstoned_conversation_join_without_from_seq(
    node: TestClient, connect: Connect
) -> None:
    await create(node)
    assert (await node.delete("/v1/conversations/c1")).status == 204
    client: PhoenixClient = await connect()
    join_ref, reply = await client.join(TOPIC)
    assert reply.payload["response"]["tombstoned"] is True
    [push] = await client.pushes(1)
    assert (push.join_ref, push.event, push.payload) == (
        join_ref,
        "tombstone",
        {"type": "tombstone"},
    )


async def test_client_that_sends_without_reading_is_closed(
    node: TestClient, connect: Connect
) -> None:
    node.app[STREAMS_KEY].limits = StreamLimits(send_queue_bytes=512, send_queue_hard_bytes=1024)
    client: PhoenixClient = await connect()
    # Client and server share this loop: all 300 arrive before the server's
    # writer gets a turn, so their replies pile up past the hard limit.
    for _ in range(300):
        await client.send(None, client.next_ref(), "phoenix", "heartbeat", {})
    async with asyncio.timeout(5):
        while True:
            message = await client.ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
    assert message.type is aiohttp.WSMsgType.CLOSE
    assert message.data == aiohttp.WSCloseCode.POLICY_VIOLATION
