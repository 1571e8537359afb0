"""Two devices editing one document offline: both edits survive, the merge is
deterministic (log order, last write wins per field) and the conflict is visible."""

from __future__ import annotations

from engine.schema.common import Line
from tests.support.devices import Agents
from tests.support.harness import EngineHarness

L1 = [Line(description="Design", quantity=1, unit_price=100)]
LA = [Line(description="Design (from A)", quantity=2, unit_price=100)]
LB = [Line(description="Design (from B)", quantity=3, unit_price=100)]


async def test_concurrent_offline_edits_merge_deterministically(
    agents: Agents, engine: EngineHarness
) -> None:
    a = await agents.new("alice")
    b = await agents.new("bob")
    doc = await a.create("invoice", "Acme", L1)
    await a.sync()
    await b.sync()
    await a.disconnect()
    await b.disconnect()

    await a.edit_lines(doc.doc_id, LA)  # both change the lines …
    await a.edit_customer(doc.doc_id, "Acme Ltd (A)")  # … only A the customer
    await b.edit_lines(doc.doc_id, LB)
    await b.edit_dates(doc.doc_id, "2026-01-05", "2026-02-04")  # … only B the dates
    # offline each device sees its own edits
    assert a.document(doc.doc_id).lines[0]["description"] == "Design (from A)"
    assert b.document(doc.doc_id).lines[0]["description"] == "Design (from B)"

    await a.connect()
    await a.sync()  # A's edits reach the log first
    await b.connect()
    await b.sync()  # B's lines edit was made without seeing A's: a conflict
    await a.sync()

    va, vb = a.document(doc.doc_id), b.document(doc.doc_id)
    assert va.as_dict() == vb.as_dict()
    assert va.lines[0]["description"] == "Design (from B)"  # later in the log wins
    assert va.customer is not None and va.customer["name"] == "Acme Ltd (A)"  # both survive
    assert (va.issue_date, va.due_date) == ("2026-01-05", "2026-02-04")

    for dev in (a, b):
        cs = dev.conflicts(doc.doc_id)
        assert [(c.field, c.kind) for c in cs] == [("lines", "concurrent_edit")]
    history = await a.history(doc.doc_id)
    lines_events = [e for e in history if e.type == "document.lines_changed"]
    assert len(lines_events) == 2  # the overridden edit is kept in the log
    c = a.conflicts(doc.doc_id)[0]
    assert c.loser == str(lines_events[0].event_id) and c.winner == str(lines_events[1].event_id)

    # A device that replays the whole log from zero gets the same document and conflict.
    fresh = await agents.new("carol")
    assert fresh.document(doc.doc_id).as_dict() == va.as_dict()
    assert fresh.conflicts(doc.doc_id) == a.conflicts(doc.doc_id)
    # … and so does a device reopened from its own store.
    a2 = await agents.reopen(a)
    assert a2.document(doc.doc_id).as_dict() == va.as_dict()
    assert a2.conflicts(doc.doc_id) == fresh.conflicts(doc.doc_id)
    assert a2.status()["conflicts"] == 1
    # … and one whose stored views were made by another DocumentView shape re-folds.
    await a2.store.set_meta({"view_shape": "an older shape"})
    a3 = await agents.reopen(a2)
    assert a3.document(doc.doc_id).as_dict() == va.as_dict()
    assert a3.conflicts(doc.doc_id) == fresh.conflicts(doc.doc_id)


async def test_edit_of_an_invoice_issued_elsewhere_is_not_applied(
    agents: Agents, engine: EngineHarness
) -> None:
    a = await agents.new("alice")
    b = await agents.new("bob")
    doc = await a.create("invoice", "Acme", L1)
    await a.sync()
    await b.sync()
    await a.disconnect()
    await b.disconnect()
    await a.issue(doc.doc_id)
    await b.edit_lines(doc.doc_id, LB)  # B did not know it was issued
    for dev in (a, b):
        await dev.connect()
        await dev.sync()
    await a.sync()
    for dev in (a, b):
        v = dev.document(doc.doc_id)
        assert v.status == "issued" and v.lines[0]["description"] == "Design"
        assert [(c.field, c.kind) for c in dev.conflicts(doc.doc_id)] == [
            ("lines", "edit_after_issue")
        ]
    # locally, editing an issued invoice is refused outright
    try:
        await a.edit_lines(doc.doc_id, LA)
    except Exception as exc:
        assert "issued" in str(exc)
    else:
        raise AssertionError("edit of an issued invoice was accepted")
    voided = await b.void(doc.doc_id, "wrong customer")
    assert voided.status == "void" and voided.void_reason == "wrong customer"
