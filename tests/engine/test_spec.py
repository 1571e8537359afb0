"""The wire spec (engine/asyncapi.json): generated from the code, valid, and true.

- the checked-in file is what the generator makes from the code now;
- every schema in it is a valid JSON Schema (draft-07, the AsyncAPI Schema
  Object's base) and the document validates against the official AsyncAPI 3.0.0
  JSON Schema (npm package @asyncapi/specs, installed in tests/node);
- events the code makes, of every type and schema version, validate against it,
  and whatever ``parse_event`` accepts from generated input does too (in the
  canonical form the engine stores).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

from engine import codec, spec
from engine.errors import SynvoiceError
from engine.events import new_event, parse_event
from engine.schema import billing, documents
from engine.schema import settings as settings_schema
from engine.schema.common import Customer, Line
from engine.schema.registry import REGISTRY
from tests.engine.test_fastparse import _envelope
from tests.support.spec import NODE_DIR, check, document, need_node, valid

_LINES = [Line(description="Consulting", quantity="2", unit_price="99.50", tax_rate="20")]
_CUSTOMER = Customer(name="Acme Ltd", email="ap@acme.test")
_UUID = uuid.UUID("00000000-0000-4000-8000-000000000001")

# One payload per event type: a new type without a sample here fails the test below.
SAMPLES: dict[str, Any] = {
    "document.created": documents.DocumentCreated(
        number=7, customer=_CUSTOMER, lines=_LINES, issue_date=date(2026, 1, 31)
    ),
    "document.customer_changed": documents.CustomerChanged(customer=_CUSTOMER),
    "document.lines_changed": documents.LinesChanged(lines=_LINES),
    "document.dates_changed": documents.DatesChanged(due_date=date(2026, 2, 28)),
    "document.number_assigned": documents.NumberAssigned(number=3, source="server"),
    "document.issued": documents.Issued(),
    "document.voided": documents.Voided(reason="typo"),
    "document.converted": documents.Converted(invoice_id=_UUID),
    "numbering.gap_explained": documents.GapExplained(
        kind="invoice", first=4, last=6, reason="paper forms spoiled"
    ),
    "settings.user_mode_set": settings_schema.UserModeSet(mode="centralized"),
    "settings.user_enrolled": settings_schema.UserEnrolled(user="alice", slot=1),
    "settings.device_enrolled": settings_schema.DeviceEnrolled(device_id="dev-1", user="alice"),
    "settings.device_revoked": settings_schema.DeviceRevoked(device_id="dev-1"),
    "settings.registered": settings_schema.Registered(
        edition="site",
        licensee="Acme",
        issued=date(2026, 1, 1),
        key_id="ab",
        fingerprint="0" * 64,
    ),
    "settings.integration_added": settings_schema.IntegrationAdded(
        name="erp", credential_id="0" * 32
    ),
    "settings.integration_removed": settings_schema.IntegrationRemoved(name="erp"),
    "settings.seller_set": settings_schema.SellerSet(
        legal_name="Muster GmbH", country="DE", vat_id="DE123456788", iban="DE89370400440532013000"
    ),
    "settings.log_rolled_back": settings_schema.LogRolledBack(
        after=10, skipped_to=14, reason="restored a backup"
    ),
    "numbering.epoch_opened": settings_schema.EpochOpened(
        kind="invoice", epoch=1, start=1, increment=2, slots={"alice": 1, "bob": 2}, end=200
    ),
    "numbering.epoch_extended": settings_schema.EpochExtended(kind="invoice", epoch=1, end=300),
    "settings.team_size_set": settings_schema.TeamSizeSet(size=3, previous=2),
    "settings.number_pattern_set": settings_schema.NumberPatternSet(
        kind="invoice",
        pattern="INV-{YYYY}-{SEQ:4}",
        reset="yearly",
        tz="Europe/Berlin",
        since=datetime(2026, 1, 1, tzinfo=UTC),
    ),
    "sale.recorded": billing.SaleRecorded(
        sale_id="OPP-1", customer=_CUSTOMER, lines=_LINES, stage="Closed/Won"
    ),
    "billing.scenario_saved": billing.ScenarioSaved(
        name="November", rules=billing.ScenarioRules(stages=["Closed/Won"], period="2011-11")
    ),
    "billing.scenario_deleted": billing.ScenarioDeleted(name="November"),
    "billing.invoice_processed": billing.InvoiceProcessed(
        sale_id="OPP-1",
        doc_id=_UUID,
        number=1,
        action="email",
        channel="email",
        total="238.80",
        currency="USD",
    ),
    "billing.delivery_failed": billing.DeliveryFailed(
        sale_id="OPP-1", action="email", step="deliver", reason="bounced"
    ),
}
# Older schema versions, as devices of that time wrote them.
OLD_SAMPLES: dict[tuple[str, int], dict[str, Any]] = {
    ("document.created", 1): {"number": 4, "customer_name": "Acme", "lines": []},
}


def _event(type_: str, payload: Any, position: int | None = None) -> dict[str, Any]:
    doc = REGISTRY[type_].document
    ev = new_event(
        type_,
        payload,
        device_id="dev-1",
        user="alice",
        device_seq=1,
        doc_id=_UUID if doc else None,
        kind="invoice" if doc else None,
    ).to_wire()
    if position is not None:
        ev["position"] = position
        ev["committed_at"] = "2026-01-01T00:00:00+00:00"
    return ev


def test_the_checked_in_spec_is_what_the_code_generates() -> None:
    assert spec.spec_path().read_text(encoding="utf-8") == spec.render(), (
        "engine/asyncapi.json differs from the code: run "
        "`synvoice spec --out engine/asyncapi.json` and commit it"
    )


def test_every_schema_is_a_valid_json_schema() -> None:
    schemas = document()["components"]["schemas"]
    for name, schema in schemas.items():
        jsonschema.Draft7Validator.check_schema(schema)  # raises SchemaError, naming it
        assert name
    for name, msg in document()["components"]["messages"].items():
        for part in ("payload", "headers"):
            if part in msg:
                jsonschema.Draft7Validator.check_schema(msg[part])
                ref = msg[part]["$ref"].rsplit("/", 1)[-1]
                assert ref in schemas, f"message {name} {part} -> {ref}"


def test_the_document_validates_against_the_official_asyncapi_schema() -> None:
    need_node()  # the official schema comes from npm (@asyncapi/specs)
    official = json.loads(
        (NODE_DIR / "node_modules/@asyncapi/specs/schemas/3.0.0-without-$id.json").read_text()
    )
    errors = list(jsonschema.Draft7Validator(official).iter_errors(document()))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors[:5]]


def test_every_type_and_version_is_in_the_spec() -> None:
    schemas = document()["components"]["schemas"]
    assert set(SAMPLES) == set(REGISTRY), "add a sample payload for each new event type"
    for type_, s in REGISTRY.items():
        for v in range(1, s.schema_version + 1):
            assert f"Event_{type_.replace('.', '_')}_v{v}" in schemas
    assert set(document()["channels"]["log"]["parameters"]["type"]["enum"]) == set(REGISTRY)


@pytest.mark.parametrize("type_", sorted(SAMPLES))
def test_events_of_every_type_validate(type_: str) -> None:
    ev = _event(type_, SAMPLES[type_])
    parse_event(ev)  # the engine accepts it ...
    check("Event", ev)  # ... and so does the spec
    stored = _event(type_, SAMPLES[type_], position=5)
    check("StoredEvent", stored)
    check("StoredEvent", codec.unpack(codec.pack(stored)))  # msgpack round trip
    assert not valid("StoredEvent", ev), "a stored event has a position"
    if REGISTRY[type_].origin == "device":
        check("PushedEvent", ev)
        check("PushRequest", {"events": [ev]})
    assert not valid("PushedEvent", stored)


@pytest.mark.parametrize(("key", "data"), sorted(OLD_SAMPLES.items()))
def test_old_schema_versions_validate_and_upcast(key: tuple[str, int], data: Any) -> None:
    type_, version = key
    ev = {**_event(type_, SAMPLES[type_]), "schema_version": version, "data": data}
    check("Event", ev)
    REGISTRY[type_].old_models[version].model_validate(data)
    current = parse_event(ev)  # upcast into the current version
    assert current.schema_version == REGISTRY[type_].schema_version
    check("Event", current.to_wire())


@pytest.mark.parametrize(
    "over",
    [
        {"type": "document.nope"},
        {"kind": "receipt"},
        {"data": {"number": -1}},
        {"data": {"surprise": 1}},
        {"schema_version": 3},
        {"device_seq": -1},
        {"doc_id": None},
    ],
)
def test_invalid_events_are_invalid_in_the_spec_too(over: dict[str, Any]) -> None:
    ev = {**_event("document.created", SAMPLES["document.created"]), **over}
    with pytest.raises(SynvoiceError):
        parse_event(ev)
    assert not valid("Event", ev)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_envelope)
def test_what_the_engine_accepts_the_spec_accepts(raw: dict[str, Any]) -> None:
    # As stored: the engine's validation is lax about some input types (e.g. a
    # boolean for an integer) and stores the canonical value, which the spec gives.
    try:
        ev = parse_event(raw)
    except SynvoiceError:
        return
    check("PushedEvent", ev.to_wire())


def test_spec_check_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from engine.cli import main

    stale = tmp_path / "asyncapi.json"
    stale.write_text("{}\n")
    assert main(["spec", "--check", "--out", str(stale)]) == 1
    assert "differs from the code" in capsys.readouterr().err
    assert main(["spec", "--out", str(stale)]) == 0
    assert main(["spec", "--check", "--out", str(stale)]) == 0


def test_messages_round_trip() -> None:
    examples = {
        "PullRequest": {"after": 0, "limit": 10, "hashes": True},
        "NumbersRequest": {"items": [{"kind": "invoice", "doc_id": str(_UUID)}]},
        "NumbersReply": {"numbers": [1]},
        "PushReply": {
            "results": [{"event_id": str(_UUID), "position": 1, "duplicate": False}],
            "head": 1,
        },
        "ErrorReply": SynvoiceError("schema", "bad", [{"loc": "x", "msg": "y"}]).to_wire(),
        "HeadNotice": {"head": 3},
        "ModeRequest": {"mode": "single", "force": True},
        "EnrollRequest": {"user": "alice", "name": "laptop"},
        "RevokeRequest": {"device_id": "dev-1"},
        "RegisterRequest": {"key": "svk1.x"},
        "IntegrationRequest": {"action": "add", "name": "erp"},
        "StatusRequest": {},
    }
    for name, value in examples.items():
        check(name, codec.unpack(codec.pack(value)))
    assert not valid("NumbersRequest", {"items": []})
    assert not valid("PullRequest", {"after": -1})
    assert not valid("ErrorReply", {"error": {"code": "nope", "message": "x"}})


def test_every_endpoint_is_in_the_spec_with_its_metadata() -> None:
    from engine.core.routes import ROUTES

    ops = document()["operations"]
    for name, subject in ((r.name, r.subject) for r in ROUTES):
        assert document()["channels"][name]["address"] == subject
        meta = spec.endpoint_metadata(name)
        assert meta["operation"] == f"#/operations/{name}" and name in ops
        for key in ("request", "reply", "error"):
            assert meta[key].rsplit("/", 1)[-1] in document()["components"]["messages"]
