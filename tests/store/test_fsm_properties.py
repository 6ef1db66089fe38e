"""Property tests: any command sequence keeps the state machine's rules.

Commands are drawn at random and applied in random-sized groups of entries per
WriteBatch on a real LevelDB. A plain reference model predicts every result;
afterwards the stored messages are checked to be gap-free and complete.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field

import orjson
from fsm_harness import FsmHarness
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastpaca.raft.kv import LevelDBKV
from fastpaca.store.commands import Command, TombstoneConversation, UpsertConversation
from fastpaca.store.messages import NewMessage, build_append
from fastpaca.store.results import AppendApplied, ConversationApplied, Rejected, RejectReason

CONVERSATIONS = ("a", "b", "c")
KEYS = ("k1", "k2", "k3", "k4")


@dataclass
class ModelConversation:
    version: int = 0
    messages: list[str] = field(default_factory=list)
    tombstoned: bool = False
    keys: dict[str, tuple[tuple[str, ...], bool, int, int]] = field(default_factory=dict)
    """key -> (texts, is_batch, first_seq, version)"""


@dataclass(frozen=True)
class Append:
    conversation_id: str
    texts: tuple[str, ...]
    is_batch: bool
    key: str | None
    if_version: int | None


Op = Append | TombstoneConversation | UpsertConversation

texts = st.lists(st.sampled_from(["x", "yy", "zzzz", "héllo"]), min_size=1, max_size=4)
appends = st.builds(
    lambda cid, ts, single, key, guard: Append(
        cid, tuple(ts[:1]) if single else tuple(ts), not single, key, guard
    ),
    st.sampled_from(CONVERSATIONS),
    texts,
    st.booleans(),
    st.none() | st.sampled_from(KEYS),
    st.none() | st.integers(min_value=0, max_value=8),
)
ops = st.one_of(
    *[appends] * 6,
    st.builds(
        lambda cid: UpsertConversation(conversation_id=cid, metadata_json=None, now_ms=1),
        st.sampled_from(CONVERSATIONS),
    ),
    st.builds(
        lambda cid: TombstoneConversation(conversation_id=cid, now_ms=2),
        st.sampled_from(CONVERSATIONS),
    ),
)


def to_command(op: Op) -> Command:
    if not isinstance(op, Append):
        return op
    messages = [
        NewMessage(role="user", parts=[{"type": "text", "text": t}], metadata={}) for t in op.texts
    ]
    command, _ = build_append(
        op.conversation_id,
        messages,
        now_ms=5,
        is_batch=op.is_batch,
        if_version=op.if_version,
        idempotency_key=op.key,
    )
    return command


def expected_append(model: dict[str, ModelConversation], op: Append) -> object:
    conv = model.get(op.conversation_id)
    if conv is None:
        return RejectReason.NOT_FOUND
    if conv.tombstoned:
        return RejectReason.TOMBSTONED
    if op.key is not None and op.key in conv.keys:
        texts_, is_batch, first_seq, version = conv.keys[op.key]
        if (texts_, is_batch) != (op.texts, op.is_batch):
            return RejectReason.IDEMPOTENCY_CONFLICT
        return ("deduped", [(first_seq + i, version) for i in range(len(texts_))])
    if op.if_version is not None and op.if_version != conv.version:
        return RejectReason.VERSION_MISMATCH
    conv.version += 1
    first_seq = len(conv.messages) + 1
    conv.messages.extend(op.texts)
    if op.key is not None:
        conv.keys[op.key] = (op.texts, op.is_batch, first_seq, conv.version)
    return ("appended", [(first_seq + i, conv.version) for i in range(len(op.texts))])


def expected(model: dict[str, ModelConversation], op: Op) -> object:
    if isinstance(op, Append):
        return expected_append(model, op)
    conv = model.get(op.conversation_id)
    if isinstance(op, UpsertConversation):
        if conv is None:
            model[op.conversation_id] = ModelConversation()
            return "created"
        return RejectReason.TOMBSTONED if conv.tombstoned else "updated"
    if conv is None:
        return RejectReason.NOT_FOUND
    conv.tombstoned = True
    return "tombstoned"


def observed(result: object) -> object:
    if isinstance(result, Rejected):
        return result.reason
    if isinstance(result, AppendApplied):
        kind = "deduped" if result.deduped else "appended"
        return (kind, [(item.seq, item.version) for item in result.items])
    if isinstance(result, ConversationApplied):
        return "created" if result.created else "updated"
    return "tombstoned"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(ops, min_size=5, max_size=60),
    cuts=st.lists(st.integers(1, 6), min_size=60, max_size=60),
)
def test_any_command_sequence_matches_the_model(ops: list[Op], cuts: list[int]) -> None:
    # "a" and "b" exist from the start so most appends get past the 404;
    # "c" only exists if an upsert is drawn.
    setup = [UpsertConversation(conversation_id=cid, metadata_json=None, now_ms=1) for cid in "ab"]
    ops = [*setup, *ops]
    with tempfile.TemporaryDirectory() as tmp:
        kv = LevelDBKV(tmp)
        try:
            harness = FsmHarness(kv)
            model: dict[str, ModelConversation] = {}
            position = 0
            for cut in cuts:
                chunk = ops[position : position + cut]
                position += cut
                if not chunk:
                    break
                results = harness.apply(*(to_command(op) for op in chunk))
                for op, result in zip(chunk, results, strict=True):
                    assert observed(result) == expected(model, op), op
            check_stored_state(harness, model)
        finally:
            kv.close()


def check_stored_state(harness: FsmHarness, model: dict[str, ModelConversation]) -> None:
    for cid in CONVERSATIONS:
        view = harness.reader.conversation(0, cid)
        conv = model.get(cid)
        if conv is None:
            assert view is None
            continue
        assert view is not None
        assert (view.state.version, view.state.last_seq, view.state.tombstoned) == (
            conv.version,
            len(conv.messages),
            conv.tombstoned,
        )
        stored = harness.reader.replay(0, cid, view.state.last_seq, from_seq=1, limit=10_000)
        # Gap-free: exactly seq 1..last_seq, holding the accepted texts in order.
        assert [m.seq for m in stored] == list(range(1, len(conv.messages) + 1))
        assert [orjson.loads(m.body)["parts"][0]["text"] for m in stored] == conv.messages


@settings(max_examples=25, deadline=None)
@given(
    window=st.integers(min_value=1, max_value=5),
    key_ids=st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=60),
)
def test_keys_of_the_latest_window_appends_always_dedupe(window: int, key_ids: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        kv = LevelDBKV(tmp)
        try:
            harness = FsmHarness(kv, window=window)
            harness.apply_one(UpsertConversation(conversation_id="a", metadata_json=None, now_ms=1))
            recent: list[str] = []  # keys of accepted appends, newest last
            for key_id in key_ids:
                key = f"k{key_id}"
                result = harness.apply_one(to_command(Append("a", ("m",), False, key, None)))
                assert isinstance(result, AppendApplied)
                if key in recent[-window:]:
                    assert result.deduped, (key, recent[-window:])
                if not result.deduped:
                    recent.append(key)
            view = harness.reader.conversation(0, "a")
            assert view is not None and view.state.version == len(recent)
        finally:
            kv.close()
