"""The spec against a real engine (embedded broker with its generated users):
every reply and every stored and streamed event validates, devices and
integrations discover the engine through $SRV, and its endpoints point to the spec."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client

from engine import auth, codec, protocol, spec
from engine.enrollment import Enrollment, parse_token
from engine.messages import EnrollReply, IntegrationCredentials
from tests.support.harness import DeviceCreds, EngineHarness
from tests.support.spec import check, embedded_engine


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[EngineHarness]:
    async with embedded_engine(tmp_path / "data") as h:
        yield h


async def _raw(
    nc: Client, device: str, secret: bytes, subject: str, body: dict[str, Any]
) -> tuple[Any, dict[str, str]]:
    data = codec.pack(body)
    msg = await nc.request(
        subject, data, timeout=10, headers=auth.sign(device, secret, subject, data)
    )
    return codec.unpack(msg.data), dict(msg.headers or {})


async def test_replies_and_events_validate_against_the_spec(secure: EngineHarness) -> None:
    admin = await secure.admin()
    anc, asecret = admin.nc, admin.secret

    async def call(subject: str, body: dict[str, Any], schema: str) -> Any:
        reply, headers = await _raw(anc, protocol.ADMIN_DEVICE, asecret, subject, body)
        check("ErrorReply" if "error" in reply else schema, reply)
        if "error" in reply:
            check("ErrorReplyHeaders", headers)
        return reply

    await call(protocol.ADMIN_MODE, {"mode": "centralized"}, "ModeReply")
    enrolled = await call(protocol.ADMIN_ENROLL, {"user": "alice", "name": "laptop"}, "EnrollReply")
    token = Enrollment.from_reply(secure.url, msgspec.convert(enrolled, EnrollReply)).token()
    fields = codec.unpack(__import__("base64").urlsafe_b64decode(token[5:] + "=="))
    check("EnrollmentTokenV2", fields)
    dev = parse_token(token)
    nc = await nats.connect(dev.url, **dev.nats_options())
    try:

        async def dcall(subject: str, body: dict[str, Any], schema: str) -> Any:
            reply, _ = await _raw(nc, dev.device_id, dev.secret, subject, body)
            check("ErrorReply" if "error" in reply else schema, reply)
            return reply

        creds = DeviceCreds(dev.device_id, dev.user, dev.secret, admin)
        created = creds.created()
        doc = str(created.doc_id)
        check("PushRequest", {"events": [created.to_wire()]})
        await dcall(protocol.PUSH, {"events": [created.to_wire()]}, "PushReply")
        numbers = await dcall(
            protocol.NUMBERS, {"items": [{"kind": "invoice", "doc_id": doc}]}, "NumbersReply"
        )
        assert numbers["numbers"] == [1]
        page = await dcall(protocol.PULL, {"after": 0, "hashes": True}, "PullReply")
        assert len(page["events"]) == page["head"] and page["head"] >= 4
        for ev in page["events"]:
            check("StoredEvent", ev)
        await dcall(protocol.STATUS, {}, "StatusReply")
        # Refusals are ErrorReply too.
        bad = await dcall(protocol.NUMBERS, {"items": []}, "NumbersReply")
        assert bad["error"]["code"] == "bad_request"
        # Distributed mode: the pull opens numbering epochs, the status lists them.
        await call(protocol.ADMIN_MODE, {"mode": "distributed", "force": True}, "ModeReply")
        await dcall(protocol.PULL, {"after": page["head"]}, "PullReply")
        st = await dcall(protocol.STATUS, {}, "StatusReply")
        assert st["epochs"]["invoice"] and st["mode"] == "distributed"
    finally:
        await nc.close()
    conflict = await call(protocol.ADMIN_MODE, {"mode": "single"}, "ModeReply")
    assert conflict["error"]["code"] == "conflict"
    await call(protocol.ADMIN_INTEGRATION, {"action": "add", "name": "erp"}, "IntegrationReply")
    await call(protocol.ADMIN_INTEGRATION, {"action": "list"}, "IntegrationReply")
    await call(protocol.ADMIN_REVOKE, {"device_id": dev.device_id}, "RevokeReply")
    await call(protocol.ADMIN_REGISTER, {"key": "svk1.nope"}, "RegisterReply")
    await call(protocol.ADMIN_ENROLL, {"user": "bad user!"}, "EnrollReply")

    # The stream: every message's headers and body as the spec says.
    assert secure.server.publisher is not None
    await secure.server.publisher.drain()
    js = anc.jetstream()
    sub = await js.subscribe(protocol.LOG_SUBJECTS, ordered_consumer=True)
    seen = 0
    head = secure.core.log.head
    while seen < head:
        msg = await sub.next_msg(timeout=5)
        check("StreamHeaders", dict(msg.headers or {}))
        body = codec.unpack(msg.data)
        check("StoredEvent", body)
        assert int((msg.headers or {})[protocol.HDR_POSITION]) == body["position"]
        seen += 1
    await sub.unsubscribe()


async def _discover(nc: Client) -> None:
    ping = json.loads((await nc.request(f"$SRV.PING.{protocol.SERVICE_NAME}", b"", timeout=5)).data)
    assert ping["name"] == protocol.SERVICE_NAME
    assert ping["metadata"] == spec.SERVICE_METADATA
    info = json.loads((await nc.request(f"$SRV.INFO.{protocol.SERVICE_NAME}", b"", timeout=5)).data)
    eps = {e["name"]: e for e in info["endpoints"]}
    assert eps["push"]["subject"] == protocol.PUSH
    for name, ep in eps.items():
        assert ep["metadata"] == spec.endpoint_metadata(name)
    stats = json.loads((await nc.request("$SRV.STATS", b"", timeout=5)).data)
    assert stats["name"] == protocol.SERVICE_NAME
    instance = f"$SRV.PING.{protocol.SERVICE_NAME}.{ping['id']}"
    assert json.loads((await nc.request(instance, b"", timeout=5)).data)["id"] == ping["id"]


async def test_devices_and_integrations_discover_the_engine(secure: EngineHarness) -> None:
    admin = await secure.admin()
    enrolled = await admin.enroll("alice")
    dev = Enrollment.from_reply(secure.url, enrolled)
    nc = await nats.connect(dev.url, **dev.nats_options())
    cred = await admin.integration("add", "erp")
    assert isinstance(cred, IntegrationCredentials)
    inc = await nats.connect(
        secure.url, user=cred.user, password=cred.password, inbox_prefix=cred.inbox_prefix
    )
    try:
        await _discover(nc)
        await _discover(inc)
        # A discovery request whose reply subject is not an inbox gets no answer:
        # the engine would publish it with its own rights (here: into the stream).
        js = admin.nc.jetstream()
        before = (await js.stream_info(protocol.STREAM)).state.messages
        target = protocol.log_subject("invoice", "document.created")
        await nc.publish(f"$SRV.INFO.{protocol.SERVICE_NAME}", b"", reply=target)
        await nc.flush()
        await asyncio.sleep(0.3)
        assert (await js.stream_info(protocol.STREAM)).state.messages == before
    finally:
        await nc.close()
        await inc.close()


def test_token_show_prints_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    e = Enrollment(
        url="nats://127.0.0.1:4222",
        device_id="dev-0123456789ab",
        secret=bytes(range(32)),
        user="alice",
        slot=1,
        broker_auth=True,
    )
    assert main(["token", "show", e.token(), "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["broker_user"] == "dev-0123456789ab"
    assert shown["inbox_prefix"] == "_INBOX.dev-0123456789ab"
    assert shown["format"] == "svd2" and shown["v"] == 2
    assert bytes(range(32)).hex() not in out and e.fields()["broker_password"] not in out
    # Version 1 still reads, with the documented derivation.
    old = parse_token("svd1." + e.token()[5:])  # fields of v2 under v1: broker_auth absent
    assert old.device_id == e.device_id and not old.broker_auth
    assert main(["token", "show", "svd2.garbage"]) == 1
    assert "damaged" in capsys.readouterr().err
    assert parse_token(e.token()) == e
    assert e.nats_options()["password"] == e.fields()["broker_password"]
    assert str(uuid.UUID(int=0))
