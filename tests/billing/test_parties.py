"""Seller and customer details beyond their shape (``devices.parties``), no server."""

from __future__ import annotations

import pytest

from devices.commands import _customer
from devices.parties import party_problems
from devices.seller import merged
from engine.errors import SynvoiceError


def test_real_details_pass() -> None:
    assert (
        party_problems(
            "seller",
            country="DE",
            email="rechnung@beispiel.test",
            vat_id="DE123456788",
            iban="DE89370400440532013000",
            bic="COBADEFFXXX",
        )
        == []
    )
    assert party_problems("seller", vat_id="CHE123456789") == []  # not EU: as given


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("country", "XX", "not an ISO 3166-1 code"),
        ("email", "bad", "invalid e-mail address"),
        ("vat_id", "DE123456789", "VAT id 'DE123456789' fails its check digits"),
        ("iban", "DE89370400440532013001", "IBAN 'DE89370400440532013001' fails"),
        ("bic", "1234DEFF", "not a valid BIC"),
    ],
)
def test_the_seller_profile_refuses_what_a_tax_office_or_bank_would(
    field: str, value: str, says: str
) -> None:
    with pytest.raises(SynvoiceError) as e:
        merged(None, {"legal_name": "Beispiel GmbH", field: value})
    assert e.value.code == "bad_request" and says in e.value.message


def test_customers_need_a_real_country_and_address() -> None:
    assert _customer({"name": "Acme", "country": "JP", "email": "a@b.example"}) is not None
    for bad in ({"country": "XX"}, {"email": "notanemail"}):
        with pytest.raises(SynvoiceError) as e:
            _customer({"name": "Acme", **bad})
        assert e.value.code == "schema"
