"""Audit reports over a views file: one dict for ``--json``, rich tables for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from projections.store import ViewStore

SECTIONS = ("duplicates", "gaps", "unassigned", "renumberings", "conflicts", "credit_notes")


def collect(store: ViewStore, kind: str | None = None) -> dict[str, Any]:
    """Every audit finding in the views, plus what identifies them (checkpoint, digest)."""
    position, last_hash = store.checkpoint()
    return {
        "position": position,
        "last_hash": last_hash.hex(),
        "digest": store.digest(),
        "counts": store.counts(),
        "duplicates": store.duplicates(kind),
        "gaps": store.gaps(kind),
        "unassigned": store.unassigned(kind),
        "renumberings": store.renumberings(kind),
        "conflicts": store.conflicts(),
        "credit_notes": store.credit_notes() if kind in (None, "invoice", "credit_note") else [],
    }


_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "duplicates": (
        ("kind", "kind"),
        ("period", "period"),
        ("number", "number"),
        ("display_number", "shown as"),
        ("doc_id", "document"),
        ("status", "status"),
        ("user", "user"),
        ("device_id", "device"),
        ("customer", "customer"),
        ("total", "total"),
        ("last_position", "last pos."),
    ),
    "gaps": (
        ("kind", "kind"),
        ("period", "period"),
        ("series", "series"),
        ("epoch", "epoch"),
        ("first", "first missing"),
        ("last", "last missing"),
        ("step", "step"),
        ("missing", "missing"),
    ),
    "unassigned": (
        ("kind", "kind"),
        ("doc_id", "document"),
        ("status", "status"),
        ("user", "user"),
        ("device_id", "device"),
        ("customer", "customer"),
        ("total", "total"),
        ("created_at", "created (device time)"),
    ),
    "renumberings": (
        ("position", "position"),
        ("kind", "kind"),
        ("doc_id", "document"),
        ("old_number", "from"),
        ("new_number", "to"),
        ("source", "source"),
        ("user", "user"),
        ("device_id", "device"),
        ("committed_at", "committed"),
    ),
    "conflicts": (
        ("position", "position"),
        ("doc_id", "document"),
        ("field", "field"),
        ("kind", "kind"),
        ("winner", "kept event"),
        ("loser", "overridden event"),
    ),
    "credit_notes": (
        ("number", "credit note"),
        ("invoice_number", "for invoice"),
        ("credits", "invoice document"),
        ("status", "status"),
        ("customer", "customer"),
        ("total", "total"),
        ("currency", "currency"),
        ("over_lines", "lines credited twice"),
    ),
    "history": (
        ("position", "position"),
        ("type", "event"),
        ("user", "user"),
        ("device_id", "device"),
        ("device_time", "device time"),
        ("committed_at", "committed"),
        ("summary", "what"),
    ),
}

# Shown only where some row has one: periods exist only for resetting patterns.
_ONLY_IF_SET = frozenset({"period", "over_lines"})

_TITLES = {
    "duplicates": "Duplicate numbers",
    "gaps": "Gaps in number series",
    "unassigned": "Documents without a number",
    "renumberings": "Renumberings",
    "conflicts": "Concurrent-edit conflicts",
    "credit_notes": "Credit notes and the invoices they correct",
    "history": "History",
}


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def table(section: str, rows: Sequence[dict[str, Any]], limit: int | None = None) -> Table:
    shown = rows if limit is None else rows[:limit]
    title = f"{_TITLES[section]} ({len(rows)})"
    if section == "duplicates":  # a row per holder: say how many numbers too
        held = {(r.get("kind"), r.get("period"), r.get("number")) for r in rows}
        title = f"{_TITLES[section]} ({len(held)} held by {len(rows)} documents)"
    if len(shown) < len(rows):
        title += f", first {len(shown)} shown"
    t = Table(title=title, title_justify="left")
    cols = tuple(
        (key, header)
        for key, header in _COLUMNS[section]
        if key not in _ONLY_IF_SET or any(r.get(key) for r in shown)
    )
    for _, header in cols:
        t.add_column(header, overflow="fold")
    for r in shown:
        t.add_row(*(_cell(r.get(key)) for key, _ in cols))
    return t


def print_section(
    console: Console, section: str, rows: Sequence[dict[str, Any]], limit: int | None = None
) -> None:
    if not rows:
        console.print(f"[green]{_TITLES[section]}: none[/green]")
        return
    console.print(table(section, rows, limit))


def print_report(console: Console, rep: dict[str, Any], limit: int | None = 50) -> None:
    for section in SECTIONS:
        print_section(console, section, rep[section], limit)
    c = rep["counts"]
    console.print(
        f"views at position {rep['position']}: {c['documents']} documents, "
        f"{c['duplicate_numbers']} duplicate numbers, {c['missing_numbers']} missing numbers, "
        f"{c['unassigned']} unassigned, {c['renumberings']} renumberings, "
        f"{c['conflicts']} conflicts"
    )
    over = [r for r in rep["credit_notes"] if r.get("over_lines")]
    if over:
        console.print(
            f"[yellow]{len(over)} credit note(s) credit lines their invoice has no more "
            "of (credited twice)[/yellow]"
        )
    console.print(f"digest {rep['digest']}")
