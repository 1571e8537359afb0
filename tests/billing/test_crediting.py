"""The credit-note arithmetic of ``engine.crediting``, without a server."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.crediting import covers, credited_lines, credited_summary, excess, plan_credit


def ln(desc: str, qty: str = "1", price: str = "10") -> dict[str, Any]:
    return {"description": desc, "quantity": qty, "unit_price": price, "tax_rate": "0"}


A, B, C = ln("a"), ln("b"), ln("c")


def test_nothing_credited_plans_every_line() -> None:
    assert plan_credit([A, B, C], []).lines == [0, 1, 2]
    assert credited_lines([A, B, C], []) == []


def test_partial_then_the_rest() -> None:
    assert plan_credit([A, B, C], [[B]]).lines == [0, 2]
    assert plan_credit([A, B, C], [[B], [A, C]]).lines == []
    assert credited_lines([A, B, C], [[B]]) == [2]


def test_a_chosen_line_already_credited_names_its_credit_note() -> None:
    plan = plan_credit([A, B, C], [[A], [B]], [1, 2])
    assert plan.lines == [1, 2] and plan.over == {1: 1}


def test_equal_lines_are_one_content_counted_twice() -> None:
    # Line 3 equals line 1: its credit covers line 1, and line 3 is still free.
    inv = [A, B, A]
    assert covers(inv, [[A]]) == [0, None, None]
    assert plan_credit(inv, [[A]], [0]).over == {}  # the other copy of A is left
    assert plan_credit(inv, [[A], [A]], [2]).over == {2: 1}
    assert plan_credit(inv, [[A]], [0, 2]).over == {2: 0}  # only one copy left


def test_a_forced_second_credit_covers_nothing_more() -> None:
    assert covers([A, B], [[A], [A], [A, B]]) == [0, 2]
    assert plan_credit([A, B], [[A], [A]]).lines == [1]


def test_lines_edited_away_from_the_invoice_match_nothing() -> None:
    assert covers([A], [[ln("a", price="11")]]) == [None]


def test_summary() -> None:
    assert credited_summary([], 3) == "credited: none of 3 lines"
    assert credited_summary([2], 3) == "credited: line 2 of 3"
    assert credited_summary([1, 2], 3) == "credited: lines 1, 2 of 3"
    assert credited_summary([1, 2, 3], 3) == "credited: lines 1, 2, 3 of 3 (fully)"


# Few distinct contents, so invoices often repeat a line.
lines_st = st.lists(st.sampled_from([A, B, C, ln("a", "2")]), min_size=1, max_size=6)
# A request: None (the rest) or chosen positions, taken modulo the invoice's length.
request_st = st.one_of(st.none(), st.lists(st.integers(0, 20), min_size=1, max_size=6))


def _key(line: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(line.items()))


@settings(max_examples=300, deadline=None)
@given(invoice=lines_st, requests=st.lists(request_st, max_size=8))
def test_crediting_never_exceeds_the_invoice(
    invoice: list[dict[str, Any]], requests: list[list[int] | None]
) -> None:
    """However the partial credits are chosen, refusals keep every content's credited
    count within the invoice's, and a last "the rest" credits exactly what is left."""
    credited: list[list[dict[str, Any]]] = []
    for req in requests:
        wanted = None if req is None else list(dict.fromkeys(n % len(invoice) for n in req))
        plan = plan_credit(invoice, credited, wanted)
        if plan.lines and not plan.over:  # what credit() would create without --force
            credited.append([invoice[p] for p in plan.lines])
        for pos, note in plan.over.items():
            assert 0 <= note < len(credited)
            assert any(line == invoice[pos] for line in credited[note])
    made = Counter(_key(x) for note in credited for x in note)
    held = Counter(_key(x) for x in invoice)
    assert made <= held
    cover = covers(invoice, credited)
    assert sum(c is not None for c in cover) == made.total()
    rest = plan_credit(invoice, credited).lines
    assert Counter(_key(invoice[p]) for p in rest) == held - made
    assert plan_credit(invoice, [*credited, [invoice[p] for p in rest]]).lines == []


@settings(max_examples=200, deadline=None)
@given(invoice=lines_st, forced=st.lists(st.lists(st.integers(0, 20), max_size=6), max_size=6))
def test_forced_credits_cover_each_line_at_most_once(
    invoice: list[dict[str, Any]], forced: list[list[int]]
) -> None:
    credited = [[invoice[n % len(invoice)] for n in note] for note in forced]
    cover = covers(invoice, credited)
    made = Counter(_key(x) for note in credited for x in note)
    held = Counter(_key(x) for x in invoice)
    assert sum(c is not None for c in cover) == sum((made & held).values())
    # What the projections report: the lines beyond the invoice, per credit note.
    over = excess(invoice, credited)
    assert sum(over) == made.total() - sum((made & held).values())
    assert all(0 <= n <= len(note) for n, note in zip(over, credited, strict=True))


def test_excess_names_the_credit_note_that_credits_twice() -> None:
    assert excess([A, B, C], [[B], [A, C]]) == [0, 0]
    assert excess([A, B, C], [[B], [B]]) == [0, 1]
    assert excess([A, A], [[A], [A, A]]) == [0, 1]
    assert excess([A], [[ln("never on the invoice")]]) == [1]
