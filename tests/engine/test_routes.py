"""The routing table and the typed messages: one table for the core and the service,
and the wire keys of today's maps (broker-free)."""

from __future__ import annotations

import msgspec

from engine import codec, messages, protocol
from engine.core.routes import ADMIN_PREFIX, BY_SUBJECT, ROUTES


def test_every_subject_has_one_route_and_admin_means_the_admin_subjects() -> None:
    subjects = [
        v
        for k, v in vars(protocol).items()
        if k.isupper() and isinstance(v, str) and v.startswith(protocol.PREFIX + ".")
    ]
    served = {s for s in subjects if s.startswith((ADMIN_PREFIX, f"{protocol.PREFIX}.events."))}
    served |= {protocol.NUMBERS, protocol.STATUS}
    assert {r.subject for r in ROUTES} == served
    assert len(BY_SUBJECT) == len(ROUTES) == len({r.name for r in ROUTES})
    for r in ROUTES:
        assert r.admin == r.subject.startswith(ADMIN_PREFIX), r.name
        assert issubclass(r.request, msgspec.Struct)
        assert r.request in messages.REQUESTS


def test_optional_keys_are_absent_and_nullable_ones_present() -> None:
    def wire(msg: msgspec.Struct) -> object:
        return codec.unpack(messages.encode(msg))

    assert wire(messages.ModeReply("single", changed=False)) == {
        "mode": "single",
        "changed": False,
    }
    enrolled = messages.EnrollReply(
        device_id="dev-1", secret="ab", user="u", slot=1, broker_auth=False, tls_ca=None
    )
    assert wire(enrolled) == {
        "device_id": "dev-1",
        "secret": "ab",
        "user": "u",
        "slot": 1,
        "broker_auth": False,
        "tls_ca": None,
    }
    warned = msgspec.structs.replace(enrolled, broker_warning="not reloaded")
    assert wire(warned) == {**wire(enrolled), "broker_warning": "not reloaded"}  # type: ignore[dict-item]
    assert wire(messages.ErrorReply(messages.ErrorBody("schema", "bad"))) == {
        "error": {"code": "schema", "message": "bad"}
    }
    page = messages.PullReply(head=3, more=False, events=[])
    assert wire(page) == {"head": 3, "more": False, "events": []}
