"""Replayed requests: a captured signed request has its effect at most once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import auth, codec, protocol
from engine.errors import ERROR_CODES
from engine.replay_guard import ReplayGuard
from tests.support.harness import EngineHarness


async def send(nc: Any, subject: str, body: bytes, headers: dict[str, str]) -> Any:
    msg = await nc.request(subject, body, timeout=10, headers=headers)
    return codec.unpack(msg.data)


def code(reply: Any) -> str | None:
    return reply["error"]["code"] if isinstance(reply, dict) and "error" in reply else None


async def count_type(engine: EngineHarness, type_: str) -> int:
    page = await (await engine.admin()).pull(0, limit=5000)
    return sum(1 for e in page.events if e["type"] == type_)


async def test_a_captured_fresh_number_request_renumbers_once(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    await (await engine.admin()).set_mode("centralized")
    doc = uuid.uuid4()
    first = await dev.client.next_numbers([("invoice", doc)])
    body = codec.pack({"items": [{"kind": "invoice", "doc_id": str(doc), "fresh": True}]})
    captured = auth.sign(dev.device_id, dev.secret, protocol.NUMBERS, body)
    reply = await send(dev.client.nc, protocol.NUMBERS, body, captured)
    assert reply["numbers"] == [first[0] + 1]
    for _ in range(20):
        again = await send(dev.client.nc, protocol.NUMBERS, body, captured)
        assert code(again) == "replayed", again
    assert await count_type(engine, "document.number_assigned") == 2
    # The same request signed afresh (a new nonce) is a new request.
    assert await dev.client.next_numbers([("invoice", doc)], fresh=True) == [first[0] + 2]


async def test_a_captured_enroll_makes_one_device(engine: EngineHarness) -> None:
    admin = await engine.admin()
    body = codec.pack({"user": "mallory", "name": None})
    assert engine.core.admin_secret is not None
    captured = auth.sign(
        protocol.ADMIN_DEVICE, engine.core.admin_secret, protocol.ADMIN_ENROLL, body
    )
    before = len(engine.core.state.devices)
    assert "device_id" in await send(admin.nc, protocol.ADMIN_ENROLL, body, captured)
    for _ in range(4):
        assert code(await send(admin.nc, protocol.ADMIN_ENROLL, body, captured)) == "replayed"
    assert len(engine.core.state.devices) == before + 1
    assert ERROR_CODES["replayed"] == 409


async def test_pushes_stay_idempotent_and_nonces_are_signed(engine: EngineHarness) -> None:
    dev = await engine.device("alice")
    body = codec.pack({"events": [dev.created().to_wire()]})
    captured = auth.sign(dev.device_id, dev.secret, protocol.PUSH, body)
    first = await send(dev.client.nc, protocol.PUSH, body, captured)
    again = await send(dev.client.nc, protocol.PUSH, body, captured)
    assert first["results"][0]["duplicate"] is False
    assert again["results"][0]["duplicate"] is True  # same event twice = once
    assert again["results"][0]["position"] == first["results"][0]["position"]
    # A nonce is required, and it is covered by the signature.
    no_nonce = {k: v for k, v in captured.items() if k != auth.HDR_NONCE}
    assert code(await send(dev.client.nc, protocol.PUSH, body, no_nonce)) == "unauthorized"
    swapped = {**captured, auth.HDR_NONCE: auth.new_nonce()}
    assert code(await send(dev.client.nc, protocol.PUSH, body, swapped)) == "unauthorized"
    bad = {**captured, auth.HDR_NONCE: "short"}
    assert code(await send(dev.client.nc, protocol.PUSH, body, bad)) == "unauthorized"


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    plan=st.lists(
        st.tuples(st.sampled_from(["fresh", "plain", "enroll"]), st.integers(1, 4)),
        min_size=1,
        max_size=6,
    ),
    order=st.randoms(use_true_random=False),
)
async def test_generated_replays_have_their_effect_once(
    engine: EngineHarness, plan: list[tuple[str, int]], order: Any
) -> None:
    """Captured requests, each resent 1-4 times in shuffled order: each takes effect once."""
    if not hasattr(engine, "_replay_dev"):
        engine._replay_dev = await engine.device("replayer")  # type: ignore[attr-defined]
        engine._replay_admin = await engine.admin()  # type: ignore[attr-defined]
        await engine._replay_admin.set_mode("centralized")  # type: ignore[attr-defined]
    dev = engine._replay_dev  # type: ignore[attr-defined]
    admin = engine._replay_admin  # type: ignore[attr-defined]
    assert engine.core.admin_secret is not None
    numbered_before = await count_type(engine, "document.number_assigned")
    devices_before = len(engine.core.state.devices)
    sends: list[tuple[int, Any, str, bytes, dict[str, str]]] = []
    for i, (what, copies) in enumerate(plan):
        if what == "enroll":
            body = codec.pack({"user": f"u{i}"})
            who, secret, subject, nc = (
                protocol.ADMIN_DEVICE,
                engine.core.admin_secret,
                protocol.ADMIN_ENROLL,
                admin.nc,
            )
        else:
            item = {"kind": "invoice", "doc_id": str(uuid.uuid4()), "fresh": what == "fresh"}
            body = codec.pack({"items": [item]})
            who, secret, subject, nc = dev.device_id, dev.secret, protocol.NUMBERS, dev.client.nc
        headers = auth.sign(who, secret, subject, body)
        sends += [(i, nc, subject, body, headers)] * copies
    order.shuffle(sends)
    accepted: dict[int, int] = {}
    for i, nc, subject, body, headers in sends:
        reply = await send(nc, subject, body, headers)
        if code(reply) is None:
            accepted[i] = accepted.get(i, 0) + 1
        else:
            assert code(reply) == "replayed", reply
    assert accepted == dict.fromkeys(range(len(plan)), 1)
    enrolls = sum(1 for what, _ in plan if what == "enroll")
    assert len(engine.core.state.devices) == devices_before + enrolls
    numbered = await count_type(engine, "document.number_assigned")
    assert numbered == numbered_before + len(plan) - enrolls


def test_the_guard_forgets_after_the_window_and_is_bounded() -> None:
    guard = ReplayGuard(per_device=3, window=300)
    now = 1_000_000.0

    def hdr(nonce: str, ts: float = now) -> dict[str, str]:
        return {auth.HDR_NONCE: nonce, auth.HDR_TIME: str(int(ts))}

    guard.check(protocol.NUMBERS, hdr("a" * 16), "dev-1", now=now)
    with pytest.raises(Exception, match="replayed"):
        guard.check(protocol.NUMBERS, hdr("a" * 16), "dev-1", now=now + 299)
    guard.check(protocol.NUMBERS, hdr("a" * 16), "dev-2", now=now)  # another device's nonce
    guard.check(protocol.PUSH, hdr("a" * 16), "dev-1", now=now)  # pushes are not guarded
    guard.check(protocol.NUMBERS, hdr("b" * 16), "dev-1", now=now)
    guard.check(protocol.NUMBERS, hdr("c" * 16), "dev-1", now=now)
    with pytest.raises(Exception, match="limit"):
        guard.check(protocol.NUMBERS, hdr("d" * 16), "dev-1", now=now)
    # Past the window the signature's time refuses a copy; the guard forgets it.
    guard.check(protocol.NUMBERS, hdr("e" * 16, now + 302), "dev-1", now=now + 302)
    assert len(guard) == 1  # only dev-1's "e" is left


async def test_a_copy_after_a_kill9_restart_is_still_refused(
    engine_process: Any, nats_server: Any
) -> None:
    """The nonce is stored with the request's effect: a restart (even kill -9)
    does not open the freshness window to a captured copy again."""
    from engine.client import EngineClient
    from engine.protocol import ADMIN_DEVICE

    engine_process.start()
    admin = await EngineClient.connect(
        nats_server.url, ADMIN_DEVICE, engine_process.admin_secret, timeout=5
    )
    await admin.set_mode("centralized")
    cred = await admin.enroll("alice")
    secret = bytes.fromhex(cred.secret)
    dev = await EngineClient.connect(nats_server.url, cred.device_id, secret, timeout=5)
    doc = uuid.uuid4()
    body = codec.pack({"items": [{"kind": "invoice", "doc_id": str(doc), "fresh": True}]})
    captured = auth.sign(cred.device_id, secret, protocol.NUMBERS, body)
    enroll_body = codec.pack({"user": "mallory", "name": None})
    secret_admin = engine_process.admin_secret
    enroll = auth.sign(ADMIN_DEVICE, secret_admin, protocol.ADMIN_ENROLL, enroll_body)
    try:
        assert (await send(dev.nc, protocol.NUMBERS, body, captured))["numbers"] == [1]
        assert "device_id" in await send(admin.nc, protocol.ADMIN_ENROLL, enroll_body, enroll)
        engine_process.kill9()
        engine_process.start()
        assert code(await send(dev.nc, protocol.NUMBERS, body, captured)) == "replayed"
        assert code(await send(admin.nc, protocol.ADMIN_ENROLL, enroll_body, enroll)) == "replayed"
        # A fresh signature is a new request: the device carries on.
        again = auth.sign(cred.device_id, secret, protocol.NUMBERS, body)
        assert (await send(dev.nc, protocol.NUMBERS, body, again))["numbers"] == [2]
        page = await admin.pull(0, limit=5000)
        users = [e["data"]["user"] for e in page.events if e["type"] == "settings.user_enrolled"]
        assert users.count("mallory") == 1
        numbered = [e for e in page.events if e["type"] == "document.number_assigned"]
        assert [e["data"]["number"] for e in numbered] == [1, 2]
    finally:
        await dev.close()
        await admin.close()
