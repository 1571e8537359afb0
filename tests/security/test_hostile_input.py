"""Hostile input: deep nesting, wrong types, foreign reply subjects, request floods
(real broker and engine; the limits' pure parts without one)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import msgpack
import nats
import pytest

from engine import auth, codec, fastparse, protocol
from engine.errors import SynvoiceError
from engine.events import parse_event
from engine.limits import Admission, ByteBudget
from engine.schema.registry import REGISTRY
from tests.support.harness import EngineHarness, running_engine

DEEP = 1000


def deep_msgpack(key: str, depth: int = DEEP) -> bytes:
    """{key: [[[...nil...]]]} nested ``depth`` levels (built by hand: packers refuse)."""
    k = key.encode()
    return b"\x81" + bytes([0xA0 | len(k)]) + k + b"\x91" * depth + b"\xc0"


async def signed(nc: Any, who: str, secret: bytes, subject: str, body: bytes) -> Any:
    msg = await nc.request(subject, body, timeout=10, headers=auth.sign(who, secret, subject, body))
    return codec.unpack(msg.data)


async def test_deep_nesting_is_bad_request_on_every_subject(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    admin = await engine.admin()
    await admin.set_mode("centralized")
    assert engine.core.admin_secret is not None
    head = engine.core.log.head
    for subject, key in [
        (protocol.PUSH, "events"),
        (protocol.PULL, "after"),
        (protocol.NUMBERS, "items"),
        (protocol.STATUS, "x"),
    ]:
        reply = await signed(dev.client.nc, dev.device_id, dev.secret, subject, deep_msgpack(key))
        assert reply["error"]["code"] == "bad_request", (subject, reply)
    for subject in (protocol.ADMIN_ENROLL, protocol.ADMIN_MODE, protocol.ADMIN_INTEGRATION):
        body = deep_msgpack("user")
        reply = await signed(admin.nc, "admin", engine.core.admin_secret, subject, body)
        assert reply["error"]["code"] == "bad_request", (subject, reply)
    # Deep inside an event's data, on the push path.
    ev = dev.created().to_wire()
    event = codec.pack({k: v for k, v in ev.items() if k != "data"})  # a fixmap: add "data"
    event = bytes([event[0] + 1]) + event[1:] + b"\xa4data" + deep_msgpack("notes")
    body = b"\x81\xa6events\x91" + event
    reply = await signed(dev.client.nc, dev.device_id, dev.secret, protocol.PUSH, body)
    assert reply["error"]["code"] == "bad_request", reply
    assert engine.core.log.head == head
    assert (await dev.client.status()).head == engine.core.log.head  # still serving


async def test_deep_nesting_is_bad_request_at_the_billing_intake(engine: EngineHarness) -> None:
    nc = await nats.connect(engine.url)
    try:
        for body in (b"[" * 5000 + b"]" * 5000, b'{"sales": ' + b"[" * 900 + b"]" * 900 + b"}"):
            reply = json.loads((await nc.request(protocol.BILLING_SALES_IN, body, timeout=10)).data)
            assert reply["error"]["code"] == "bad_request", reply
        raw = (await nc.request(protocol.BILLING_SALES_IN, deep_msgpack("sales"), timeout=10)).data
        assert msgpack.unpackb(raw)["error"]["code"] == "bad_request"
    finally:
        await nc.close()


def _created(dev_id: str = "dev-1", **over: Any) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "document.created",
        "schema_version": REGISTRY["document.created"].schema_version,
        "doc_id": str(uuid.uuid4()),
        "kind": "invoice",
        "device_id": dev_id,
        "user": "alice",
        "device_seq": 1,
        "device_time": "2026-01-02T03:04:05+00:00",
        "seen_position": 0,
        "data": {
            "number": 7,
            "customer": {"name": "Acme"},
            "lines": [{"description": "x", "quantity": "2", "unit_price": "1.50"}],
        },
    }
    for k, v in over.items():
        if k.startswith("data."):
            ev["data"][k[5:]] = v
        else:
            ev[k] = v
    return ev


WRONG_TYPES: list[dict[str, Any]] = [
    {"data.number": "7"},
    {"data.number": 7.0},
    {"data.number": True},
    {"schema_version": True},
    {"schema_version": "1"},
    {"seen_position": True},
    {"seen_position": 1.0},
    {"device_seq": "1"},
]


@pytest.mark.parametrize("over", WRONG_TYPES)
def test_wrong_types_are_schema_errors_on_both_paths(over: dict[str, Any]) -> None:
    ev = _created(**over)
    assert fastparse.parse_pushed(codec.pack(ev)) is None  # the fast path never vouches
    with pytest.raises(SynvoiceError) as e:
        parse_event(ev)
    assert e.value.code == "schema"


def test_decimals_as_strings_and_numbers_stay_accepted() -> None:
    ok = _created()
    assert fastparse.parse_pushed(codec.pack(ok)) is not None
    assert parse_event(ok).data["number"] == 7
    numbers_as_decimals: dict[str, Any] = {
        "data.lines": [{"description": "x", "quantity": 2, "unit_price": 1.5}]
    }
    lax = _created(**numbers_as_decimals)
    assert parse_event(lax).data["lines"][0]["quantity"] == "2"


async def test_wrong_types_are_refused_on_the_wire(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    head = engine.core.log.head
    for over in WRONG_TYPES:
        ev = _created(dev.device_id, **over)
        with pytest.raises(SynvoiceError) as e:
            await dev.client.push([ev])
        assert e.value.code == "schema", over
    assert engine.core.log.head == head
    await dev.client.push([_created(dev.device_id)])  # the same event, well typed


async def test_flags_are_booleans_not_truthy_values(engine: EngineHarness) -> None:
    """ "fresh": "false" is truthy: read with bool() it renumbered a document."""
    dev = await engine.device("alice")
    admin = await engine.admin()
    await admin.set_mode("centralized")
    doc = str(uuid.uuid4())
    assert engine.core.admin_secret is not None
    first = await signed(
        dev.client.nc, dev.device_id, dev.secret, protocol.NUMBERS,
        codec.pack({"items": [{"kind": "invoice", "doc_id": doc}]}),
    )  # fmt: skip
    head = engine.core.log.head
    cases: list[tuple[str, str, bytes, bytes]] = [
        (dev.device_id, protocol.NUMBERS, dev.secret,
         codec.pack({"items": [{"kind": "invoice", "doc_id": doc, "fresh": "false"}]})),
        (dev.device_id, protocol.NUMBERS, dev.secret,
         codec.pack({"items": [{"kind": "invoice", "doc_id": doc, "fresh": 1}]})),
        (dev.device_id, protocol.PULL, dev.secret, codec.pack({"after": 0, "hashes": "yes"})),
        (protocol.ADMIN_DEVICE, protocol.ADMIN_MODE, engine.core.admin_secret,
         codec.pack({"mode": "single", "force": "no"})),
    ]  # fmt: skip
    for who, subject, secret, body in cases:
        nc = admin.nc if who == protocol.ADMIN_DEVICE else dev.client.nc
        reply = await signed(nc, who, secret, subject, body)
        assert reply["error"]["code"] == "bad_request", (subject, reply)
        assert "must be true or false" in reply["error"]["message"]
    assert engine.core.log.head == head  # nothing renumbered, no mode set
    again = await dev.client.next_numbers([("invoice", uuid.UUID(doc))])
    assert again == first["numbers"]


async def test_replies_go_only_to_the_callers_inbox(engine: EngineHarness) -> None:
    alice = await engine.device("alice")
    bob = await engine.device("bob")
    await (await engine.admin()).set_mode("centralized")
    spy = await nats.connect(engine.url)  # a plain broker: anyone may listen
    got: list[str] = []

    async def keep(msg: Any) -> None:
        got.append(msg.subject)

    await spy.subscribe(f"_INBOX.{bob.device_id}.>", cb=keep)
    await spy.subscribe("synvoice.v1.log.>", cb=keep)
    await spy.flush()
    body = codec.pack({"items": [{"kind": "invoice", "doc_id": str(uuid.uuid4())}]})
    last = engine.core.state.counters["invoice"].last
    for reply in (f"_INBOX.{bob.device_id}.x.1", "synvoice.v1.log.invoice.document.created"):
        headers = auth.sign(alice.device_id, alice.secret, protocol.NUMBERS, body)
        await alice.client.nc.publish(protocol.NUMBERS, body, reply=reply, headers=headers)
    await alice.client.nc.flush()
    await asyncio.sleep(0.5)
    assert got == []
    assert engine.core.state.counters["invoice"].last == last  # not handled either
    # In its own inbox alice is answered as always.
    assert (await alice.client.next_numbers([("invoice", uuid.uuid4())])) == [last + 1]
    await spy.close()


async def test_a_device_over_its_requests_in_flight_gets_limit(
    tmp_path: Any, nats_server: Any
) -> None:
    async with running_engine(
        tmp_path / "data", nats_server.url, live_views=False, limit_per_device=4
    ) as eng:
        greedy = await eng.device("greedy")
        other = await eng.device("other")
        await greedy.client.push([greedy.created() for _ in range(50)])
        results = await asyncio.gather(
            *(greedy.client.pull(0, hashes=True) for _ in range(40)), return_exceptions=True
        )
        refused = [r for r in results if isinstance(r, SynvoiceError)]
        assert refused and all(r.code == "limit" for r in refused)
        assert "in flight" in refused[0].message
        assert len(refused) < 40  # the first ones were served
        assert (await other.client.status()).head == eng.core.log.head
        assert (await greedy.client.status()).head == eng.core.log.head  # and again later


def test_admission_counts_per_device_and_in_all() -> None:
    a = Admission(per_device=2, per_device_bytes=100, max_bytes=150)
    a.admit("d1", 10)
    a.admit("d1", 10)
    with pytest.raises(SynvoiceError, match="in flight"):
        a.admit("d1", 1)
    a.admit("d2", 130)  # a device's first request is admitted whatever its size
    with pytest.raises(SynvoiceError, match="busy"):
        a.admit("d3", 1)  # but not over the bytes in flight in all
    a.release("d2", 130)
    a.admit("d3", 1)
    with pytest.raises(SynvoiceError) as e:
        a.admit("d3", 100)  # over the device's bytes
    assert e.value.code == "limit"
    for d, n in (("d1", 10), ("d1", 10), ("d3", 1)):
        a.release(d, n)
    assert a.in_flight == 0 and a.bytes == 0


async def test_byte_budget_holds_at_most_its_total() -> None:
    budget = ByteBudget(10)
    held = 0
    peak = 0

    async def use(size: int) -> None:
        nonlocal held, peak
        async with budget.hold(size):
            held += min(size, 10)
            peak = max(peak, held)
            await asyncio.sleep(0.01)
            held -= min(size, 10)

    await asyncio.gather(*(use(s) for s in (4, 4, 4, 50, 2, 6)))
    assert peak <= 10 and budget.free == 10
