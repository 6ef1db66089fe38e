"""EffectHub: effects wait for the driver's word that their apply is durable."""

from __future__ import annotations

from collections.abc import Sequence

from fastpaca.store.effects import Appended, Effect, EffectHub, Tombstoned


def test_effects_are_held_until_released_then_delivered_in_apply_order() -> None:
    hub = EffectHub()
    got: list[tuple[int, list[Effect]]] = []
    hub.add_listener(lambda group, effects: got.append((group, list(effects))))
    first = Appended(conversation_id="c", seq=1, version=1, message=b"{}")
    second = Tombstoned(conversation_id="d")
    hub(3, [first])
    hub(7, [second])
    assert got == []  # applied, not yet known durable
    hub.release()
    assert got == [(3, [first]), (7, [second])]
    hub.release()  # nothing new: nothing delivered twice
    assert len(got) == 2


def test_a_failing_listener_does_not_stop_the_others() -> None:
    hub = EffectHub()
    got: list[int] = []

    def broken(_group: int, _effects: Sequence[Effect]) -> None:
        raise RuntimeError("listener bug")

    hub.add_listener(broken)
    hub.add_listener(lambda group, _effects: got.append(group))
    hub(1, [Tombstoned(conversation_id="c")])
    hub.release()
    assert got == [1]
