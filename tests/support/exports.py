"""Test support: integrations' exports compared with the auditor's replay, document by document."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from engine.document import DocumentView
from engine.events import new_event
from engine.schema.common import Customer, Line
from engine.schema.documents import CustomerChanged, LinesChanged
from projections.replay import replay_file
from projections.store import ViewStore
from tests.support.harness import DeviceCreds

# What an export keeps of each document (the replay's `documents` columns).
FIELDS = (
    "doc_id",
    "kind",
    "number",
    "number_source",
    "status",
    "customer",
    "currency",
    "net",
    "tax",
    "total",
    "issue_date",
    "due_date",
    "converted_from",
    "converted_to",
    "void_reason",
    "events",
    "last_position",
)


def replay_documents(log_path: Path, tmp: Path) -> dict[str, dict[str, Any]]:
    """The documents of a full replay of the log file (the auditor's views)."""
    views = tmp / f"replay-{uuid.uuid4().hex[:6]}.sqlite"
    replay_file(log_path, views, None)
    store = ViewStore.open(views)
    try:
        return {d["doc_id"]: {k: d[k] for k in FIELDS} for d in store.documents()}
    finally:
        store.close()


def export_row(v: DocumentView) -> dict[str, Any]:
    d = v.as_dict()
    d["customer"] = v.customer.get("name") if v.customer else None
    return {k: d[k] for k in FIELDS}


def diff(export: dict[str, dict[str, Any]], replay: dict[str, dict[str, Any]]) -> list[str]:
    """What differs, one line per document (empty: equal document for document)."""
    out = [f"{d}: missing from the export" for d in replay.keys() - export.keys()]
    out += [f"{d}: not in the replay" for d in export.keys() - replay.keys()]
    for d in sorted(export.keys() & replay.keys()):
        if export[d] != replay[d]:
            fields = [k for k in FIELDS if export[d].get(k) != replay[d].get(k)]
            out.append(f"{d}: {', '.join(fields)} differ")
    return out


def edits(dev: DeviceCreds, docs: list[uuid.UUID], tag: str, seen: int) -> list[Any]:
    """One lines edit and one customer edit per document, made after ``seen``."""
    out = []
    for i, doc in enumerate(docs):
        for type_, payload in (
            (
                "document.lines_changed",
                LinesChanged(
                    lines=[
                        Line(
                            description=f"{tag} work",
                            quantity=i % 7 + 1,
                            unit_price="19.99",
                            tax_rate="7.7",
                        )
                    ]
                ),
            ),
            ("document.customer_changed", CustomerChanged(customer=Customer(name=f"{tag} {i}"))),
        ):
            dev.seq += 1
            out.append(
                new_event(
                    type_,
                    payload,
                    device_id=dev.device_id,
                    user=dev.user,
                    device_seq=dev.seq,
                    doc_id=doc,
                    kind="invoice",
                    seen_position=seen,
                )
            )
    return out
