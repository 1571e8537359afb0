"""Registration keys and edition limits: pure logic, no server."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import editions, license
from engine.errors import SynvoiceError
from tests.support.security import Vendor


def test_issue_and_verify_round_trip(vendor: Vendor) -> None:
    key = vendor.issue("single", "Acme Ltd", expires=date(2099, 1, 31))
    lic = license.verify(key, license.trusted_keys(vendor.public), today=date.today())
    assert (lic.edition, lic.licensee, lic.expires) == ("single", "Acme Ltd", date(2099, 1, 31))
    assert len(lic.fingerprint) == 64
    # Line breaks and spaces from an e-mail are tolerated.
    wrapped = "\n".join(key[i : i + 60] for i in range(0, len(key), 60))
    assert license.verify(wrapped, license.trusted_keys(vendor.public)).key_id == lic.key_id


def test_builtin_vendor_key_is_a_valid_public_key() -> None:
    assert len(license.trusted_keys()) == 1


def _bad(key: str, trusted: Sequence[object], match: str) -> None:
    with pytest.raises(SynvoiceError) as e:
        license.verify(key, list(trusted))  # type: ignore[arg-type]
    assert e.value.code == "bad_key"
    assert match in e.value.message


def test_altered_payload_is_refused(vendor: Vendor) -> None:
    key = vendor.issue("single")
    body, sig = key[len(license.PREFIX) :].split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["edition"] = "site"  # the classic upgrade-yourself attempt
    forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    _bad(f"{license.PREFIX}{forged_body}.{sig}", license.trusted_keys(vendor.public), "genuine")


def test_wrong_signer_is_refused(vendor: Vendor) -> None:
    other = Vendor.__new__(Vendor)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other.private = Ed25519PrivateKey.generate()
    key = other.issue("five")
    _bad(key, license.trusted_keys(vendor.public), "not genuine")
    _bad(key, license.trusted_keys(), "not genuine")  # nor by the built-in vendor key


def test_damaged_keys_are_refused(vendor: Vendor) -> None:
    trusted = license.trusted_keys(vendor.public)
    key = vendor.issue("single")
    _bad("hello", trusted, "not a Synvoice registration key")
    _bad(key[:-10], trusted, "genuine")  # truncated signature
    _bad(license.PREFIX + key[len(license.PREFIX) :].replace(".", ""), trusted, "damaged")
    _bad(key + ".x", trusted, "damaged")


def test_expired_key_is_refused_on_register(vendor: Vendor) -> None:
    key = vendor.issue("single", expires=date.today() - timedelta(days=1))
    with pytest.raises(SynvoiceError, match="expired"):
        license.verify(key, license.trusted_keys(vendor.public), today=date.today())


@given(st.text(max_size=300))
def test_garbage_never_crashes(text: str) -> None:
    trusted = license.trusted_keys()
    for candidate in (text, license.PREFIX + text, license.PREFIX + text + "." + text):
        with pytest.raises(SynvoiceError) as e:
            license.verify(candidate, trusted)
        assert e.value.code == "bad_key"


def test_keygen_writes_private_key_owner_only(tmp_path: object) -> None:
    from pathlib import Path

    out = Path(str(tmp_path)) / "vendor"
    priv, pub = license.keygen(out)
    assert priv.stat().st_mode & 0o777 == 0o600
    key = license.issue(license.load_private_key(priv), "five", "Beta GmbH")
    assert license.verify(key, license.trusted_keys(pub.read_text())).edition == "five"
    with pytest.raises(SynvoiceError, match="exists"):
        license.keygen(out)


# --- editions --------------------------------------------------------------------------


def _active(name: str, **over: int) -> editions.Active:
    reg = {"edition": name, "licensee": "x", **{f"max_{k}": v for k, v in over.items()}}
    return editions.resolve(reg, "registered", date.today())


def test_edition_table_matches_the_seed() -> None:
    single, five = editions.EDITIONS["single"].limits, editions.EDITIONS["five"].limits
    assert (single.users, single.devices, single.data_bytes) == (1, 5, 2 * editions.GB)
    assert (five.users, five.data_bytes) == (5, 10 * editions.GB)
    assert editions.resolve(None, "registered", date.today()).edition.name == "trial"


def test_enroll_limits() -> None:
    single = _active("single")
    editions.check_enroll(single, ["alice"] * 4, "alice")  # 5th device
    with pytest.raises(SynvoiceError, match="5 active devices"):
        editions.check_enroll(single, ["alice"] * 5, "alice")  # 6th device
    with pytest.raises(SynvoiceError, match="1 user") as e:
        editions.check_enroll(single, ["alice"], "bob")  # 2nd user
    assert e.value.code == "limit"
    editions.check_enroll(single, [], "bob")  # alice's devices all revoked: seat is free
    five = _active("five")
    editions.check_enroll(five, ["a", "b", "c", "d"], "e")
    with pytest.raises(SynvoiceError, match="5 users"):
        editions.check_enroll(five, ["a", "b", "c", "d", "e"], "f")
    editions.check_enroll(_active("site"), ["u"] * 10_000, "new")


def test_data_limit_and_overrides() -> None:
    tiny = _active("single", data_bytes=1000)
    assert tiny.limits.data_bytes == 1000 and tiny.limits.devices == 5
    editions.check_data(tiny, 900, 100)
    editions.check_data(tiny, 5000, 0)  # nothing new (a retry): always accepted
    with pytest.raises(SynvoiceError, match="Nothing was appended") as e:
        editions.check_data(tiny, 900, 101)
    assert e.value.details["limit_bytes"] == 1000


def test_expired_registration_falls_back_to_trial() -> None:
    reg = {"edition": "five", "licensee": "x", "expires": "2020-01-01"}
    active = editions.resolve(reg, "registered", date(2020, 1, 2))
    assert active.edition.name == "trial" and "expired" in (active.note or "")
    assert editions.resolve(reg, "registered", date(2020, 1, 1)).edition.name == "five"


@pytest.mark.parametrize(
    ("text", "n"), [("4096", 4096), ("2GB", 2 * editions.GB), ("1.5 mb", 3 * editions.MB // 2)]
)
def test_parse_bytes(text: str, n: int) -> None:
    assert editions.parse_bytes(text) == n
    assert editions.human_bytes(n)


def test_enrollment_tokens_old_and_new() -> None:
    import base64 as b64

    from engine import brokerauth, codec
    from engine.enrollment import Enrollment, parse_token

    fields = {"url": "nats://h", "device_id": "dev-1", "secret": b"s" * 32, "user": "a", "slot": 1}
    old = "svd1." + b64.urlsafe_b64encode(codec.pack(fields)).decode().rstrip("=")
    e = parse_token(old)
    assert not e.broker_auth and e.nats_options() == {"inbox_prefix": "_INBOX.dev-1"}
    new = Enrollment("nats://h:4222", "dev-2", b"k" * 32, "b", 2, broker_auth=True)
    opts = parse_token(new.token()).nats_options()
    assert opts["user"] == "dev-2" and opts["password"] == brokerauth.device_password(b"k" * 32)
    assert brokerauth.inbox_prefix("dev 3") is None  # never a prefix that is not one token
