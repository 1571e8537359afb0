"""The console's pure parts, without a server: accounts, sign-in limits, metrics,
the documents list's SQL (on a real views file), form parsing."""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from starlette.datastructures import FormData

from devices.console import parse_number, rules_from_form
from engine.cli import main
from engine.console.app import FormError, gap_key
from engine.console.metrics import refusal, render
from engine.console.screens import qr_data_uri
from engine.console.users import SigninLimiter, Users
from engine.errors import SynvoiceError
from engine.metrics import RequestMetrics
from projections.console import Views, list_query, parse_filters, ranges
from projections.store import ViewStore


def test_accounts_hash_check_and_sessions_end_on_change(tmp_path: Path) -> None:
    users = Users(tmp_path / "console" / "users.json")
    first = users.first_start()
    assert first is not None and first[0] == "operator" and len(first[1]) >= 12
    assert users.first_start() is None  # printed once
    assert stat.S_IMODE(users.path.stat().st_mode) == 0o600
    assert first[1] not in users.path.read_text()  # a hash, never the password
    acc = users.check("operator", first[1])
    assert acc is not None and acc.role == "operator"
    assert users.check("operator", "wrong") is None
    assert users.check("nobody", first[1]) is None
    again = users.set_password("operator", "a new password")
    assert again.gen != acc.gen  # sessions signed with the old gen end
    with pytest.raises(SynvoiceError):
        users.set_password("Bad Name", "long enough pw")
    with pytest.raises(SynvoiceError):
        users.set_password("short", "1234")
    with pytest.raises(SynvoiceError):
        users.set_password("x", "long enough pw", role="root")


def test_passwd_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("read only please\n"))
    rc = main(
        [
            "console",
            "passwd",
            "bob",
            "--role",
            "auditor",
            "--password-stdin",
            "--data",
            str(tmp_path),
        ]
    )
    assert rc == 0
    acc = Users(tmp_path / "console" / "users.json").check("bob", "read only please")
    assert acc is not None and acc.role == "auditor"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["console", "passwd", "bob", "--password-stdin", "--data", str(tmp_path)]) == 1


def test_signin_limiter() -> None:
    lim = SigninLimiter(attempts=5, window=60)
    keys = ["user:eve", "addr:127.0.0.1"]
    for i in range(5):
        assert lim.wait(keys, now=100.0 + i) == 0
        lim.failed(keys, now=100.0 + i)
    assert lim.wait(keys, now=105.0) > 0
    assert lim.wait(["user:operator", "addr:127.0.0.1"], now=105.0) == 0  # others still may
    assert lim.wait(keys, now=161.0) == 0  # the window passed


def test_metrics_render_is_valid_openmetrics() -> None:
    m = RequestMetrics()
    m.observe("synvoice.v1.push", 0.003)
    m.observe("synvoice.v1.push", 0.2, "schema")
    status: dict[str, Any] = {
        "head": 42,
        "published": 40,
        "counters": {"invoice": 7},
        "documents": 9,
        "views": {"position": 41, "behind": 1},
        "metrics": msgspec.to_builtins(m.snapshot()),  # as the status reply carries it
    }
    text = render(status).decode()
    assert text.endswith("# EOF\n")
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    assert fams["synvoice_events_appended"].samples[0].value == 42
    assert fams["synvoice_publisher_lag_events"].samples[0].value == 2
    assert fams["synvoice_views_lag_events"].samples[0].value == 1
    refusals = {s.labels["code"]: s.value for s in fams["synvoice_refusals"].samples}
    assert refusals == {"schema": 1}
    count = [s for s in fams["synvoice_request_seconds"].samples if s.name.endswith("_count")]
    assert count[0].value == 2
    down = render(None).decode()
    assert "synvoice_engine_up 0" in down


def test_metrics_need_loopback_or_the_bearer_token() -> None:
    assert refusal("127.0.0.1", "", None) is None
    assert refusal("::1", "", None) is None and refusal("localhost", "", None) is None
    status, why = refusal("0.0.0.0", "", None) or (0, "")
    assert status == 403 and "SYNVOICE_CONSOLE_METRICS_TOKEN" in why
    assert refusal("10.0.0.5", "s3cret", "Bearer s3cret") is None
    for bad in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "bearer s3cret", "s3cret"):
        assert (refusal("10.0.0.5", "s3cret", bad) or (0, ""))[0] == 401, bad
    # A token is asked on loopback too, once it is set.
    assert (refusal("127.0.0.1", "s3cret", None) or (0, ""))[0] == 401


def test_ranges_and_filters() -> None:
    assert ranges([7, 1, 2, 3, 3, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert ranges([]) == []
    with pytest.raises(FormError):
        parse_filters({"kind": "receipt"})
    for bad_number in ("12; DROP TABLE documents", "¹", "١٢"):  # digits int() refuses
        with pytest.raises(FormError):
            parse_filters({"number": bad_number})
    assert parse_filters({"unassigned": "1"})["unassigned"] == "1"
    assert gap_key("invoice", "*", 3, 5) == "invoice:*:3:5"
    assert qr_data_uri("svd1.token").startswith("data:image/svg+xml")


@settings(max_examples=60, deadline=None)
@given(
    q=st.text(max_size=30),
    customer=st.text(max_size=30),
    user=st.text(max_size=10),
    before=st.one_of(st.none(), st.integers(min_value=-(2**62), max_value=2**62)),
)
def test_list_query_takes_any_text(
    tmp_path_factory: Any, q: str, customer: str, user: str, before: int | None
) -> None:
    """Hostile search text is data, never SQL: every query runs and pages."""
    path = tmp_path_factory.getbasetemp() / "views.sqlite"
    if not path.exists():
        ViewStore.open(path).close()
    f = parse_filters({"q": q, "customer": customer, "user": user})
    where, _page, _args = list_query(f, before)
    assert "?" in where or where == "created = 1"
    page = Views(path).page(f, before)
    assert page["rows"] == [] and page["total"] == 0


def test_form_parsing() -> None:
    assert parse_number("12") == 12
    for bad in ("0", "-1", "1.5", "abc", "", "9" * 20, "¹", "١٢"):
        with pytest.raises(FormError):
            parse_number(bad)
    rules = rules_from_form(
        FormData({"stages": "Closed/Won, Won", "period": "2011-11", "approved": "yes"})
    )
    assert rules.stages == ["Closed/Won", "Won"] and rules.approved is True
    with pytest.raises(FormError, match="period"):
        rules_from_form(FormData({"period": "2011-13"}))
    with pytest.raises(FormError):
        rules_from_form(FormData({"close_from": "2011-12-01", "close_to": "2011-11-01"}))
