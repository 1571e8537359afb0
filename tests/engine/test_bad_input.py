"""Bad input on the wire: structured errors, nothing appended, the engine keeps serving."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import msgpack
import nats
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import auth, codec, protocol
from engine.errors import ERROR_CODES, SynvoiceError
from tests.support.harness import EngineHarness

ENDPOINTS = [
    protocol.PUSH,
    protocol.PULL,
    protocol.NUMBERS,
    protocol.STATUS,
    protocol.ADMIN_ENROLL,
    protocol.ADMIN_REVOKE,
    protocol.ADMIN_MODE,
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8))
    | st.builds(msgpack.Timestamp, st.integers(0, 2**32 - 1), st.integers(0, 999_999_999)),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)


def event_like() -> st.SearchStrategy[dict[str, Any]]:
    """Maps that look like events with some fields wrong or missing."""
    return st.fixed_dictionaries(
        {},
        optional={
            "event_id": st.one_of(st.uuids().map(str), st.text(max_size=10), st.integers(0, 9)),
            "type": st.sampled_from(
                ["document.created", "document.issued", "settings.user_mode_set", "x", ""]
            ),
            "doc_id": st.one_of(st.uuids().map(str), st.none(), st.integers(0, 9)),
            "kind": st.sampled_from(["invoice", "quote", "receipt", None]),
            "device_id": st.text(max_size=10),
            "user": st.text(max_size=10),
            "device_seq": st.integers(min_value=-(2**63), max_value=2**64 - 1),
            "device_time": st.text(max_size=30),
            "data": msgpack_values,
            "position": st.integers(0, 9),
        },
    )


async def raw_request(nc: Any, subject: str, body: bytes, headers: dict[str, str] | None) -> Any:
    msg = await nc.request(subject, body, timeout=10, headers=headers)
    return msg, codec.unpack(msg.data)


def assert_error(reply: Any) -> str:
    assert isinstance(reply, dict) and "error" in reply, reply
    code = reply["error"]["code"]
    assert code in ERROR_CODES
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    return str(code)


async def test_unsigned_and_forged_requests_are_refused(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    nc = dev.client.nc
    body = codec.pack({"events": [dev.created().to_wire()]})
    # no headers
    msg, reply = await raw_request(nc, protocol.PUSH, body, None)
    assert assert_error(reply) == "unauthorized"
    assert msg.headers["Nats-Service-Error-Code"] == "401"
    # wrong secret
    bad = auth.sign(dev.device_id, b"x" * 32, protocol.PUSH, body)
    _, reply = await raw_request(nc, protocol.PUSH, body, bad)
    assert assert_error(reply) == "unauthorized"
    # signature for another body (tampered in transit)
    good = auth.sign(dev.device_id, dev.secret, protocol.PUSH, body)
    _, reply = await raw_request(nc, protocol.PUSH, body + b"\x00", good)
    assert assert_error(reply) == "unauthorized"
    # unknown device (asking for its reply in that device's inbox, as the engine requires)
    other = await nats.connect(engine.url, inbox_prefix="_INBOX.dev-nobody")
    try:
        _, reply = await raw_request(
            other, protocol.PUSH, body, auth.sign("dev-nobody", dev.secret, protocol.PUSH, body)
        )
    finally:
        await other.close()
    assert assert_error(reply) == "unauthorized"
    assert engine.core.log.head == 2  # only the enrollment events


async def test_event_claiming_another_device_or_user(engine: EngineHarness) -> None:
    alice = await engine.device("alice")
    bob = await engine.device("bob")
    head = engine.core.log.head
    ev = bob.created()
    try:
        await alice.client.push([ev])
        raise AssertionError("accepted a forged device")
    except SynvoiceError as err:
        assert err.code == "forbidden"
    wire = alice.created().to_wire()
    wire["user"] = "bob"
    try:
        await alice.client.push([wire])
        raise AssertionError("accepted a forged user")
    except SynvoiceError as err:
        assert err.code == "forbidden"
    # engine-only event types cannot be pushed
    wire = alice.created().to_wire()
    wire.update(type="settings.user_mode_set", data={"mode": "single"}, doc_id=None, kind=None)
    try:
        await alice.client.push([wire])
        raise AssertionError("accepted an engine event from a device")
    except SynvoiceError as err:
        assert err.code == "forbidden"
    assert engine.core.log.head == head


async def test_revoked_device_is_refused_at_once(engine: EngineHarness) -> None:
    admin = await engine.admin()
    dev = await engine.device("alice")
    await dev.client.push([dev.created()])
    await admin.revoke(dev.device_id)
    try:
        await dev.client.push([dev.created()])
        raise AssertionError("revoked device accepted")
    except SynvoiceError as err:
        assert err.code == "revoked"


async def test_device_cannot_use_admin_endpoints(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    try:
        await dev.client.enroll("mallory")
        raise AssertionError("device enrolled a user")
    except SynvoiceError as err:
        assert err.code == "forbidden"


async def test_oversized_request_and_event(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    head = engine.core.log.head
    big = dev.created().to_wire()
    big["data"]["notes"] = "x" * 70_000  # over the 64 KiB event limit
    try:
        await dev.client.push([big])
        raise AssertionError("accepted an oversized event")
    except SynvoiceError as err:
        assert err.code == "too_large"
    many = [dev.created().to_wire() for _ in range(engine.core.config.max_batch_events + 1)]
    try:
        await dev.client.push(many)
        raise AssertionError("accepted an oversized batch")
    except SynvoiceError as err:
        assert err.code == "too_large"
    assert engine.core.log.head == head


async def test_one_bad_event_refuses_the_whole_batch(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    head = engine.core.log.head
    bad = dev.created().to_wire()
    bad["data"]["number"] = "seven"
    try:
        await dev.client.push([dev.created(), bad, dev.created()])
        raise AssertionError("accepted a bad event")
    except SynvoiceError as err:
        assert err.code == "schema"
        assert err.message.startswith("event 1:")
        assert err.details
    assert engine.core.log.head == head


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    subject=st.sampled_from(ENDPOINTS),
    body=st.one_of(
        st.binary(max_size=200),
        msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True)),
        st.lists(event_like(), max_size=3).map(
            lambda evs: msgpack.packb({"events": evs}, use_bin_type=True)
        ),
        st.dictionaries(
            st.sampled_from(["after", "limit", "items", "user", "mode", "device_id", "events"]),
            msgpack_values,
        ).map(lambda d: msgpack.packb(d, use_bin_type=True)),
    ),
    signed=st.booleans(),
)
async def test_generated_garbage_gets_structured_errors(
    engine: EngineHarness, subject: str, body: bytes, signed: bool
) -> None:
    if not hasattr(engine, "_garbage_dev"):
        engine._garbage_dev = await engine.device("fuzz")  # type: ignore[attr-defined]
        await (await engine.admin()).set_mode("centralized")
    dev = engine._garbage_dev  # type: ignore[attr-defined]
    head = engine.core.log.head
    headers = auth.sign(dev.device_id, dev.secret, subject, body) if signed else None
    _, reply = await raw_request(dev.client.nc, subject, body, headers)
    if isinstance(reply, dict) and "error" in reply:
        assert_error(reply)
        assert engine.core.log.head == head  # a refusal appends nothing
    else:
        # accepted: only requests that are valid for a device may succeed
        assert signed
        assert subject in (protocol.PULL, protocol.STATUS, protocol.PUSH, protocol.NUMBERS)
    # the engine still appends good events after every piece of garbage
    ok = await dev.client.push([dev.created()])
    assert ok.results[0].duplicate is False


async def test_pull_argument_errors(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    for bad in ({"after": -1}, {"after": "x"}, {"limit": 0}, {"after": True}):
        try:
            await dev.client.request(protocol.PULL, bad)
            raise AssertionError(f"accepted {bad}")
        except SynvoiceError as err:
            assert err.code == "bad_request"
    try:
        await dev.client.request(protocol.NUMBERS, {"items": [{"kind": "invoice", "doc_id": "x"}]})
        raise AssertionError("accepted bad doc id")
    except SynvoiceError as err:
        assert err.code == "schema"
    assert (await dev.client.next_numbers([("invoice", uuid.uuid4())])) == [1]


async def test_no_engine_gives_unavailable(nats_server: Any) -> None:
    from engine.client import EngineClient

    c = await EngineClient.connect(nats_server.url, "dev-x", b"s" * 32, timeout=1)
    try:
        await c.status()
        raise AssertionError("no engine but a reply")
    except SynvoiceError as err:
        assert err.code == "unavailable"
    finally:
        await c.close()
    # plain nats client sanity: the broker itself is up
    nc = await nats.connect(nats_server.url)
    await nc.close()


async def test_extension_values_and_absurd_times_get_the_right_refusal(
    engine: EngineHarness,
) -> None:
    dev = await engine.device("alice")
    nc = dev.client.nc
    head = engine.core.log.head
    for odd in (msgpack.Timestamp(1, 0), msgpack.ExtType(5, b"x")):
        ev = dev.created().to_wire()
        ev["data"]["notes"] = odd
        body = msgpack.packb({"events": [ev]}, use_bin_type=True)
        _, reply = await raw_request(
            nc, protocol.PUSH, body, auth.sign(dev.device_id, dev.secret, protocol.PUSH, body)
        )
        assert assert_error(reply) == "schema"
    body = codec.pack({})
    for t in ("9" * 400, "-" + "9" * 30, "1e9", ""):
        headers = {auth.HDR_DEVICE: dev.device_id, auth.HDR_TIME: t or " ", auth.HDR_SIG: "00"}
        _, reply = await raw_request(nc, protocol.STATUS, body, headers)
        assert assert_error(reply) == "unauthorized"
    assert engine.core.log.head == head
    assert (await dev.client.push([dev.created()])).results[0].duplicate is False


async def test_a_made_up_server_number_is_refused(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    head = engine.core.log.head
    with pytest.raises(SynvoiceError) as err:
        await dev.client.push([dev.created(number=2**53, number_source="server")])
    assert err.value.code == "schema" and "never handed out" in err.value.message
    assert engine.core.log.head == head
    # a number the server did hand out is accepted with source 'server'
    (n,) = await dev.client.next_numbers([("invoice", uuid.uuid4())])
    ok = await dev.client.push([dev.created(number=n, number_source="server")])
    assert ok.results[0].duplicate is False
    assert engine.core.state.counters["invoice"].last == n


async def test_a_reply_subject_outside_the_inboxes_is_not_answered(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    await dev.client.push([dev.created()])
    assert engine.server.publisher is not None
    await engine.server.publisher.drain()
    nc = dev.client.nc
    js = nc.jetstream()
    before = (await js.stream_info(protocol.STREAM)).state.messages
    body = codec.pack({})
    for reply in ("synvoice.v1.log.invoice.document.created", "$JS.API.STREAM.NAMES", "_INBOX.>"):
        headers = auth.sign(dev.device_id, dev.secret, protocol.STATUS, body)
        await nc.publish(protocol.STATUS, body, reply=reply, headers=headers)
    await nc.flush()
    await asyncio.sleep(0.3)
    assert (await js.stream_info(protocol.STREAM)).state.messages == before
    assert (await dev.client.status()).head == engine.core.log.head  # still serving
