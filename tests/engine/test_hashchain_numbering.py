"""Pure logic: the hash chain and the numbering rules."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.events import new_event
from engine.hashchain import GENESIS, ChainVerifier, link
from engine.numbering import (
    CentralCounter,
    Epoch,
    distributed_next,
    extension_needed,
    open_epoch,
    single_next,
)
from engine.schema.settings import UserModeSet
from engine.settings_fold import NumberingSettings
from engine.state import EngineState


def chain(bodies: list[bytes]) -> list[tuple[int, bytes, bytes]]:
    prev, out = GENESIS, []
    for i, b in enumerate(bodies, 1):
        prev = link(prev, b)
        out.append((i, b, prev))
    return out


def test_chain_verifies_and_names_altered_record() -> None:
    recs = chain([b"a", b"b", b"c", b"d"])
    v = ChainVerifier()
    assert all(v.feed(*r) is None for r in recs)
    bad = list(recs)
    bad[2] = (3, b"C", recs[2][2])
    v = ChainVerifier()
    breaks = [v.feed(*r) for r in bad]
    assert breaks[2] is not None and breaks[2].position == 3
    # a deleted record is a hole
    v = ChainVerifier()
    v.feed(*recs[0])
    br = v.feed(*recs[2])
    assert br is not None and br.position == 2


def test_single_user_numbers() -> None:
    assert single_next([]) == 1
    assert single_next([1, 2]) == 3


def test_central_counter_skips_taken() -> None:
    c = CentralCounter()
    c.observe(2, "manual")
    assert [c.next(), c.next(), c.next()] == [1, 3, 4]


def test_seed_distributed_examples() -> None:
    ep = open_epoch([], {"u1": 1, "u2": 2, "u3": 3}, runway=100)
    assert list(ep.numbers_for("u1"))[:5] == [1, 4, 7, 10, 13]
    assert list(ep.numbers_for("u2"))[:5] == [2, 5, 8, 11, 14]
    assert list(ep.numbers_for("u3"))[:5] == [3, 6, 9, 12, 15]
    two = open_epoch([], {"u1": 1, "u2": 2}, runway=100)
    assert list(two.numbers_for("u1"))[:5] == [1, 3, 5, 7, 9]
    assert distributed_next([ep], "u1", [1]) == 4
    assert distributed_next([ep], "u2", []) == 2


@given(
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=2, max_value=20),
    st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=8),
)
def test_distributed_never_collides_when_users_join(
    users: int, runway: int, uses: list[int]
) -> None:
    """Each user draws numbers in turn from the epochs they know; users join
    (closing the open epoch at its end) between draws. No number is drawn twice."""
    slots = {f"u{i}": i for i in range(1, users + 1)}
    epochs = [open_epoch([], slots, runway)]
    drawn: dict[str, list[int]] = {u: [] for u in slots}
    seen: set[int] = set()
    for round_, count in enumerate(uses):
        for u in list(drawn):
            for _ in range(count % 7):
                n = distributed_next(epochs, u, drawn[u])
                if n == 0:
                    # exhausted: the engine would extend the open epoch
                    new_end = extension_needed(epochs[-1], epochs[-1].end, runway)
                    assert new_end is not None
                    epochs[-1].end = new_end
                    continue
                assert n not in seen
                seen.add(n)
                drawn[u].append(n)
        # a user joins: new epoch after the current end
        new_user = f"j{round_}"
        slots[new_user] = len(slots) + 1
        drawn[new_user] = []
        epochs.append(open_epoch(epochs, slots, runway))


def test_extension_keeps_half_a_runway() -> None:
    ep = Epoch(epoch=1, start=1, increment=3, slots={"a": 1, "b": 2, "c": 3}, end=30)
    assert extension_needed(ep, 4, runway=10) is None
    assert extension_needed(ep, 19, runway=10) == 60


def test_engine_state_closes_epochs_on_leaving_distributed_and_loads_old_snapshots() -> None:
    st = EngineState(numbering=NumberingSettings("distributed", True, {"ann": 1}))
    st.epochs["invoice"] = [Epoch(1, 1, 1, {"ann": 1}, 8)]
    st.counters["invoice"].highest = 3
    ev = new_event(
        "settings.user_mode_set",
        UserModeSet(mode="centralized", previous="distributed", forced=True),
        device_id="engine",
        user="engine",
        device_seq=0,
    )
    st.apply(ev)
    assert st.epochs["invoice"][0].cap == 3
    snap = st.to_snapshot()
    assert EngineState.from_snapshot(snap).epochs["invoice"][0].cap == 3
    snap["epochs"] = {k: [e[:5] for e in eps] for k, eps in snap["epochs"].items()}
    assert EngineState.from_snapshot(snap).epochs["invoice"][0].cap is None
