"""Editions on a running engine (real nats-server, real SQLite): limits,
registration over NATS, what happens to stored data at a limit, the CLI."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.structs import asdict

from engine import codec, license, protocol
from engine.cli import main
from engine.errors import SynvoiceError
from engine.events import new_event
from engine.schema.common import Line
from engine.schema.documents import LinesChanged
from tests.support.harness import DeviceCreds, EngineHarness
from tests.support.security import MakeEngine, Vendor


async def refused(coro: Any, code: str, match: str = "") -> SynvoiceError:
    with pytest.raises(SynvoiceError) as e:
        await coro
    assert e.value.code == code, e.value
    assert match in e.value.message, e.value.message
    return e.value


async def test_unregistered_server_runs_the_trial(make_engine: MakeEngine) -> None:
    eng = await make_engine()
    st = await (await eng.admin()).status()
    assert st.edition == "trial" and st.edition_source == "trial"
    assert asdict(st.limits) == {"users": 3, "devices": 5, "data_bytes": 200 * 1024 * 1024}
    assert asdict(st.usage) == {"users": 0, "devices": 0, "data_bytes": 0}
    for user in ("a", "b", "c"):
        await eng.device(user)
    await refused(eng.device("d"), "limit", "3 users")


async def test_single_user_then_five_users(make_engine: MakeEngine, vendor: Vendor) -> None:
    eng = await make_engine()
    admin = await eng.admin()
    r = await admin.register(vendor.issue("single", "Acme Ltd"))
    assert r.changed and r.edition == "single" and r.edition_licensee == "Acme Ltd"
    alice = [await eng.device("alice", f"device {i}") for i in range(5)]
    head = eng.core.log.head
    err = await refused(eng.device("alice"), "limit", "allows 5 active devices")
    assert "register a larger edition" in err.message
    await refused(eng.device("bob"), "limit", "allows 1 user")
    assert eng.core.log.head == head  # a refusal appends nothing
    st = await admin.status()
    assert asdict(st.usage) == {"users": 1, "devices": 5, "data_bytes": st.data_bytes}

    # Revoking a device frees its place.
    await admin.revoke(alice[0].device_id)
    await eng.device("alice")
    await refused(eng.device("alice"), "limit")

    # Upgrade: the 2nd user and more devices are accepted; nothing stored changed.
    r = await admin.register(vendor.issue("five", "Acme Ltd"))
    assert r.edition == "five" and r.limits.users == 5
    bob = await eng.device("bob")
    await eng.device("alice")
    for user in ("carol", "dave", "erin"):
        await eng.device(user)
    await refused(eng.device("frank"), "limit", "allows 5 users")
    push = await bob.client.push([bob.created()])
    assert push.results[0].position == eng.core.log.head

    # The registrations are in the log, without the key itself.
    page = await alice[1].client.pull(0)
    regs = [e for e in page.events if e["type"] == "settings.registered"]
    assert [e["data"]["edition"] for e in regs] == ["single", "five"]
    assert regs[1]["data"]["previous"] == "single"
    assert "svk1." not in json.dumps(page.events, default=str)


async def test_registering_the_same_key_twice_appends_once(
    make_engine: MakeEngine, vendor: Vendor
) -> None:
    eng = await make_engine()
    admin = await eng.admin()
    key = vendor.issue("single")
    assert (await admin.register(key)).changed
    head = eng.core.log.head
    assert not (await admin.register(key)).changed
    assert eng.core.log.head == head


def _altered(key: str, **changes: Any) -> str:
    body, sig = key[len(license.PREFIX) :].split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    return f"{license.PREFIX}{new}.{sig}"


async def test_forged_keys_are_refused(make_engine: MakeEngine, vendor: Vendor) -> None:
    eng = await make_engine()
    admin = await eng.admin()
    await admin.register(vendor.issue("single"))
    head = eng.core.log.head
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    impostor = license.issue(Ed25519PrivateKey.generate(), "site", "Mallory")
    altered = _altered(vendor.issue("single"), edition="site")
    more_users = _altered(vendor.issue("single"), max_users=1000)
    for key in (impostor, altered, more_users):
        await refused(admin.register(key), "bad_key", "not genuine")
    await refused(admin.register("svk1.garbage"), "bad_key")
    await refused(admin.register("not a key"), "bad_key", "not a Synvoice registration key")
    assert eng.core.log.head == head
    assert (await admin.status()).edition == "single"
    # Only the admin credential may register.
    dev = await eng.device("alice")
    await refused(dev.client.register(vendor.issue("site")), "forbidden")


def _big_change(dev: DeviceCreds, doc_id: Any, n: int) -> Any:
    dev.seq += 1
    lines = [Line(description="x" * 200, quantity=1, unit_price=n, tax_rate=0)]
    return new_event(
        "document.lines_changed",
        LinesChanged(lines=lines),
        device_id=dev.device_id,
        user=dev.user,
        device_seq=dev.seq,
        doc_id=doc_id,
        kind="invoice",
    )


async def test_data_limit_refuses_new_data_and_keeps_everything(
    make_engine: MakeEngine, vendor: Vendor
) -> None:
    eng = await make_engine()
    await (await eng.admin()).register(vendor.issue("single", max_data_bytes=6000))
    dev = await eng.device("alice")
    created = dev.created()
    await dev.client.push([created])
    accepted: list[Any] = []
    with pytest.raises(SynvoiceError) as e:
        for n in range(100):
            ev = _big_change(dev, created.doc_id, n)
            await dev.client.push([ev])
            accepted.append(ev)
    assert e.value.code == "limit" and "Nothing was appended" in e.value.message
    assert e.value.details is None or isinstance(e.value.details, dict)
    assert accepted, "some pushes fit before the limit"
    head = eng.core.log.head
    # Reads keep working: pull, status; a retry of stored events is still acknowledged.
    page = await dev.client.pull(0)
    ids = {ev["event_id"] for ev in page.events}
    assert {str(ev.event_id) for ev in [created, *accepted]} <= ids
    again = await dev.client.push([created, *accepted[-2:]])
    assert all(r.duplicate for r in again.results)
    st = await dev.client.status()
    assert st.usage.data_bytes <= st.limits.data_bytes == 6000
    assert eng.core.log.head == head
    # Verified intact, and an upgrade lets the refused push in.
    assert (await eng.core.log.verify())[1] is None
    await (await eng.admin()).register(vendor.issue("five"))
    await dev.client.push([_big_change(dev, created.doc_id, 999)])
    assert eng.core.log.head == head + 2  # the registration, then the push


async def test_configured_key_and_restart(
    make_engine: MakeEngine, vendor: Vendor, tmp_path: Path
) -> None:
    eng = await make_engine(vendor.issue("five", "Config Co"))
    st = await (await eng.admin()).status()
    assert (st.edition, st.edition_source, st.edition_licensee) == (
        "five",
        "config",
        "Config Co",
    )
    assert eng.core.log.head == 0  # a configured key is not written to the log
    await eng.close()
    await eng.server.stop()  # one engine per broker at a time

    # A registered key survives a restart (it is in the state snapshot and the log).
    trial = await make_engine()
    await (await trial.admin()).register(vendor.issue("single"))
    data = trial.server.config.data_dir
    await trial.close()
    await trial.server.stop()
    again = await make_engine(data_dir=data)
    assert (await (await again.admin()).status()).edition == "single"


async def test_bad_configured_key_stops_the_engine(make_engine: MakeEngine, vendor: Vendor) -> None:
    with pytest.raises(SynvoiceError, match="SYNVOICE_LICENSE_KEY"):
        await make_engine(_altered(vendor.issue("single"), edition="site"))


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_cli_vendor_register_status(
    make_engine: MakeEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "vendor"
    assert await _cli("vendor", "keygen", "--out", str(keys)) == 0
    public = (keys / license.PUBLIC_FILE).read_text().strip()
    capsys.readouterr()
    assert (
        await _cli(
            "vendor",
            "issue",
            "--private-key",
            str(keys / license.PRIVATE_FILE),
            "--edition",
            "single",
            "--licensee",
            "Acme Ltd",
            "--expires",
            "2099-12-31",
        )
        == 0
    )
    key = capsys.readouterr().out.strip()
    assert key.startswith(license.PREFIX)

    eng = await make_engine(vendor_public_key=public)  # trial; trusts the new vendor key
    data = str(eng.server.config.data_dir)
    assert await _cli("register", key, "--data", data) == 0
    out = capsys.readouterr().out
    assert "registered: Single User edition for Acme Ltd" in out and "2099-12-31" in out
    assert await _cli("register", key + "x", "--data", data) == 1
    assert "not genuine" in capsys.readouterr().err
    assert await _cli("status", "--data", data) == 0
    out = capsys.readouterr().out
    assert "Single User, registered to Acme Ltd" in out and "devices 0 / 5" in out
    assert await _cli("status", "--data", data, "--json") == 0
    st = json.loads(capsys.readouterr().out)
    assert st["limits"]["devices"] == 5 and st["usage"]["devices"] == 0
    assert await _cli("vendor", "show", key, "--public-key", str(keys / license.PUBLIC_FILE)) == 0
    assert json.loads(capsys.readouterr().out)["genuine"] is True


def test_status_rows_render_unlimited() -> None:
    from engine.cli import _edition_rows

    rows = dict(
        _edition_rows(
            {
                "edition": "site",
                "edition_title": "Site",
                "limits": {"users": None, "devices": None, "data_bytes": None},
                "usage": {"users": 2, "devices": 3, "data_bytes": 10},
            }
        )
    )
    assert rows["usage / limits"] == (
        "users 2 / unlimited, devices 3 / unlimited, data 10 bytes / unlimited"
    )
    assert codec.unpack(codec.pack(rows)) == rows


async def test_fixture_engines_run_the_site_edition(engine: EngineHarness) -> None:
    st = await (await engine.admin()).status()
    assert st.edition == "site" and st.limits.devices is None


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text(max_size=30)
    | st.binary(max_size=30),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    subject=st.sampled_from([protocol.ADMIN_REGISTER, protocol.ADMIN_INTEGRATION]),
    body=st.dictionaries(st.sampled_from(["key", "action", "name"]), _values, max_size=3)
    | st.dictionaries(
        st.just("key"),
        st.text(max_size=200).map(lambda t: license.PREFIX + t),
        min_size=1,
    ),
)
async def test_garbage_admin_requests_get_structured_errors(
    engine: EngineHarness, subject: str, body: dict[str, Any]
) -> None:
    admin = await engine.admin()
    head = engine.core.log.head
    try:
        await admin.request(subject, body)
    except SynvoiceError as exc:
        assert exc.code in ("bad_request", "bad_key", "schema", "not_found"), exc
        assert engine.core.log.head == head
    else:  # only a well-formed integration request may succeed
        assert subject == protocol.ADMIN_INTEGRATION and body.get("action") in ("add", "list")
    await admin.close()
    engine.clients.remove(admin)


async def test_a_device_over_the_data_limit_still_pulls_everyone_elses_work(
    make_engine: MakeEngine, vendor: Vendor, tmp_path: Path
) -> None:
    from devices.agent import DeviceAgent
    from tests.support.devices import FAST, enroll_token

    eng = await make_engine()
    admin = await eng.admin()
    await admin.register(vendor.issue("single", max_data_bytes=20_000))
    a = await DeviceAgent.init(
        tmp_path / "a", await enroll_token(admin, eng.url, "alice"), background=False, **FAST
    )
    b = await DeviceAgent.init(
        tmp_path / "b", await enroll_token(admin, eng.url, "alice"), background=False, **FAST
    )
    try:
        for agent in (a, b):
            assert await agent.connect(timeout=5)
            await agent.sync()
        await b.create("invoice", "Small Ltd")
        await b.sync()
        big = [Line(description="x" * 1000, quantity=1, unit_price=1)] * 28
        await a.create("invoice", "Big Ltd", big)
        with pytest.raises(SynvoiceError) as err:
            await a.sync()
        assert err.value.code == "limit"
        assert a.pending_count() == 1  # kept, pushed once the limit allows it
        names = {d.customer["name"] for d in a.documents() if d.customer}
        assert names == {"Big Ltd", "Small Ltd"}  # b's invoice was pulled all the same
    finally:
        await a.close()
        await b.close()
