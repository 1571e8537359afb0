"""Checks of a seller's or customer's details beyond their shape. Pure: no I/O.

The event schemas check the shape (two capital letters, an IBAN's pattern);
an e-invoice with the country "XX" or an IBAN with wrong check digits still
passes the XSD, and a tax office or a bank refuses it later. The registries'
libraries know the real rules: ISO 3166-1 countries (``pycountry``), IBAN
check digits, BIC format and EU VAT numbers (``python-stdnum``); e-mail
addresses are checked as the mail delivery checks them.
"""

from __future__ import annotations

import pycountry
from stdnum import bic as _bic
from stdnum import iban as _iban
from stdnum.eu import vat as _vat

from devices.billing.delivery import check_address


def party_problems(
    who: str,
    *,
    country: str | None = None,
    email: str | None = None,
    vat_id: str | None = None,
    iban: str | None = None,
    bic: str | None = None,
) -> list[str]:
    """Why these details cannot go on an invoice (empty: they can); ``who`` names
    the party in the messages ("seller", "customer")."""
    out: list[str] = []
    if country and pycountry.countries.get(alpha_2=country) is None:
        out.append(f"{who} country {country!r} is not an ISO 3166-1 code (e.g. DE, FR, JP)")
    if email and (why := check_address(email)) is not None:
        out.append(f"{who} {why}")
    # EU numbers carry a check digit; others (CH, GB, NO, ...) are taken as given.
    if vat_id and vat_id[:2].lower() in _vat.MEMBER_STATES and not _vat.is_valid(vat_id):
        out.append(f"{who} VAT id {vat_id!r} fails its check digits (a typo?)")
    if iban and not _iban.is_valid(iban):
        out.append(f"{who} IBAN {iban!r} fails its check digits (a typo?)")
    if bic and not _bic.is_valid(bic):
        out.append(f"{who} BIC {bic!r} is not a valid BIC")
    return out
