"""Duplicates and gaps over number series: pure functions, no I/O."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from engine.numbering import Epoch
from projections.numbers import SHARED, Gap, duplicate_groups, find_gaps
from projections.numindex import NumberIndex


def missing(gaps: list[Gap]) -> set[int]:
    return {n for g in gaps for n in range(g.first, g.last + 1, g.step)}


def test_no_numbers_no_gaps() -> None:
    assert find_gaps("invoice", []) == []
    assert find_gaps("invoice", [0, 0]) == []


def test_skipped_numbers_are_gaps_in_one_range_each() -> None:
    gaps = find_gaps("invoice", [1, 2, 5, 9, 9])
    assert gaps == [
        Gap("invoice", SHARED, 0, 0, 3, 4, 1, 2),
        Gap("invoice", SHARED, 0, 0, 6, 8, 1, 3),
    ]


def test_a_series_starting_above_one_has_a_leading_gap() -> None:
    assert find_gaps("quote", [3]) == [Gap("quote", SHARED, 0, 0, 1, 2, 1, 2)]


def test_huge_hand_typed_number_is_one_gap_row_not_millions() -> None:
    gaps = find_gaps("invoice", [1, 2, 10**12])
    assert len(gaps) == 1 and gaps[0].missing == 10**12 - 3


def test_duplicate_groups_are_sorted_and_skip_zero() -> None:
    holders = {7: ["b", "a"], 0: ["x", "y"], 3: ["c"]}
    assert duplicate_groups(holders) == [(7, ["a", "b"])]


def test_distributed_gaps_are_per_user_and_exclude_runway_ahead() -> None:
    ep = Epoch(1, 1, 2, {"alice": 1, "bob": 2}, 200)
    # alice: 1, 3, 5(skip), 7 ; bob: 2, 4 (then nothing: runway ahead, no gap)
    gaps = find_gaps("invoice", [1, 3, 7, 2, 4], [ep])
    assert gaps == [Gap("invoice", "alice", 1, 1, 5, 5, 2, 1)]


def test_distributed_earlier_epoch_leftovers_are_gaps_once_the_user_moved_on() -> None:
    e1 = Epoch(1, 1, 2, {"alice": 1, "bob": 2}, 10)
    e2 = Epoch(2, 11, 3, {"alice": 1, "bob": 2, "carol": 3}, 40)
    # alice used 1, 3 in epoch 1 then 11 in epoch 2: 5, 7, 9 were skipped.
    gaps = find_gaps("invoice", [1, 3, 11, 2], [e1, e2])
    assert gaps == [Gap("invoice", "alice", 1, 1, 5, 9, 2, 3)]
    assert missing(gaps) == {5, 7, 9}


def test_numbers_before_the_first_epoch_form_the_shared_series() -> None:
    ep = Epoch(1, 10, 2, {"alice": 1, "bob": 2}, 50)
    gaps = find_gaps("invoice", [1, 2, 4, 10, 12], [ep])
    assert gaps == [Gap("invoice", SHARED, 0, 0, 3, 3, 1, 1)]


def test_capped_epoch_hands_later_numbers_to_the_shared_series() -> None:
    ep = Epoch(1, 1, 2, {"alice": 1, "bob": 2}, 200, cap=4)
    # after the switch to centralized at 4, 5.. are one shared series again
    gaps = find_gaps("invoice", [1, 2, 3, 4, 5, 8], [ep])
    assert gaps == [Gap("invoice", SHARED, 0, 0, 6, 7, 1, 2)]


@given(st.sets(st.integers(min_value=1, max_value=300), max_size=60))
def test_shared_gaps_and_used_numbers_partition_one_to_max(used: set[int]) -> None:
    gaps = find_gaps("invoice", sorted(used))
    gone = missing(gaps)
    assert not gone & used
    top = max(used, default=0)
    assert gone | used == set(range(1, top + 1))
    assert sum(g.missing for g in gaps) == len(gone)


@given(
    st.integers(min_value=1, max_value=4),
    st.sets(st.integers(min_value=1, max_value=120), max_size=40),
)
def test_distributed_gaps_are_owned_numbers_below_each_users_last(
    users: int, used: set[int]
) -> None:
    slots = {f"u{k}": k for k in range(1, users + 1)}
    ep = Epoch(1, 1, users, slots, 120)
    gaps = find_gaps("invoice", sorted(used), [ep])
    for g in gaps:
        assert g.series in slots and g.step == users
        for n in range(g.first, g.last + 1, g.step):
            assert n not in used
            assert (n - 1) % users + 1 == g.slot
            assert any(u > n and (u - 1) % users + 1 == g.slot for u in used)
    expected = {
        n
        for n in range(1, 121)
        if n not in used and any(u > n and (u - n) % users == 0 for u in used)
    }
    assert missing(gaps) == expected


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.one_of(st.integers(1, 60), st.integers(1, 10**6), st.integers(-3, 3)),
        ),
        max_size=200,
    )
)
def test_number_index_counts_like_a_counter(ops: list[tuple[bool, int]]) -> None:
    """Dense and sparse numbers (and a sparse number the dense range grows over)."""
    ix, ref = NumberIndex(["invoice"]), Counter[int]()
    for remove, n in ops:
        if n == 0:
            assert ix.add("invoice", 0) == 0
        elif remove and ref[n]:
            ref[n] -= 1
            assert ix.remove("invoice", n) == ref[n]
        else:
            ref[n] += 1
            assert ix.add("invoice", n) == ref[n]
    held = sorted(n for n, c in ref.items() if c)
    assert list(ix.numbers("invoice")) == held and ix.distinct("invoice") == len(held)
    assert list(ix.held_twice("invoice")) == sorted(n for n, c in ref.items() if c > 1)
    assert all(ix.count("invoice", n) == c for n, c in ref.items())
