"""How much of an invoice its credit notes already credit (pure: no I/O).

Devices use it to refuse a second credit of a line; the projections to report
credit notes that credit more than their invoice holds (made offline on two
devices, or forced).

A credit note's lines are copies of the invoice's line dicts, so lines are
matched by content, as a multiset: an invoice with two equal lines is fully
credited only by two credited copies of that line. Equal lines cannot be told
apart, so crediting line 3 when its equal line 1 is already credited is fine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

LineDict = Mapping[str, Any]


def covers(invoice: Sequence[LineDict], credited: Sequence[Sequence[LineDict]]) -> list[int | None]:
    """For each invoice line, the index in ``credited`` of the credit note that
    covers it, or None.

    Credit notes are taken in order (oldest first). Each of their lines covers the
    first equal invoice line not covered yet; a line with nothing left to cover
    (a forced second credit) covers nothing, so no line is ever covered twice."""
    cover: list[int | None] = [None] * len(invoice)
    for note, lines in enumerate(credited):
        for ln in lines:
            for pos, inv_ln in enumerate(invoice):
                if cover[pos] is None and inv_ln == ln:
                    cover[pos] = note
                    break
    return cover


@dataclass(frozen=True)
class CreditPlan:
    """What a new credit note would credit (0-based invoice lines), and the asked-for
    lines already credited, each with the index of a credit note that credited it."""

    lines: list[int]
    over: dict[int, int] = field(default_factory=dict)


def plan_credit(
    invoice: Sequence[LineDict],
    credited: Sequence[Sequence[LineDict]],
    wanted: Sequence[int] | None = None,
) -> CreditPlan:
    """Plan a credit note of ``invoice`` given the earlier ones' lines ``credited``.

    ``wanted`` None: every line not credited yet (none left: an empty plan).
    Otherwise the given 0-based lines (distinct, in range); those whose content
    has no uncredited copy left are in ``over``."""
    cover = covers(invoice, credited)
    free = [pos for pos, c in enumerate(cover) if c is None]
    if wanted is None:
        return CreditPlan(free)
    over: dict[int, int] = {}
    for pos in wanted:
        same = [f for f in free if invoice[f] == invoice[pos]]
        if same:
            free.remove(pos if pos in same else same[0])
            continue
        # More asked than left of this content, so pos or an equal line is covered.
        note = cover[pos]
        if note is None:
            note = next(
                c for q, c in enumerate(cover) if c is not None and invoice[q] == invoice[pos]
            )
        over[pos] = note
    return CreditPlan(list(wanted), over)


def credited_lines(
    invoice: Sequence[LineDict], credited: Sequence[Sequence[LineDict]]
) -> list[int]:
    """The invoice's credited lines, 1-based."""
    return [pos + 1 for pos, c in enumerate(covers(invoice, credited)) if c is not None]


def excess(invoice: Sequence[LineDict], credited: Sequence[Sequence[LineDict]]) -> list[int]:
    """How many lines of each credit note credit nothing left on the invoice: a
    line credited twice (forced, or by two devices offline), or one the invoice
    never had. All zeros when the credit notes stay within the invoice."""
    left = list(invoice)
    out: list[int] = []
    for lines in credited:
        over = 0
        for ln in lines:
            if ln in left:
                left.remove(ln)
            else:
                over += 1
        out.append(over)
    return out


def credited_summary(done: Sequence[int], total: int) -> str:
    """ "credited: lines 1, 2 of 3" for ``device show`` and ``device credit``."""
    if not done:
        return f"credited: none of {total} lines"
    word = "line" if len(done) == 1 else "lines"
    full = " (fully)" if len(done) == total else ""
    return f"credited: {word} {', '.join(map(str, done))} of {total}{full}"
