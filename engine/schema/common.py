"""Values every event schema shares: kinds, modes, names, customers, lines, totals."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

# A credit note corrects an issued invoice (EN 16931 type code 381); its own series.
Kind = Literal["invoice", "quote", "estimate", "credit_note"]
KINDS: tuple[str, ...] = get_args(Kind)
UserMode = Literal["single", "centralized", "distributed"]
USER_MODES: tuple[str, ...] = get_args(UserMode)
NumberSource = Literal["device", "server", "manual"]
MAX_NUMBER = 2**53  # document numbers stay exact in JSON and JavaScript
Status = Literal["draft", "issued", "void", "converted"]

# The engine authors settings/numbering events under this device id.
ENGINE_DEVICE = "engine"

NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"

# Counts, numbers and flags are strict: "7", 7.0 or true for a number (or 1 for a
# flag) is a schema error, not coerced and stored. (Decimals stay lax: lines carry
# them as strings by design.)
Int = StrictInt
Bool = StrictBool


class Model(BaseModel):
    """Frozen, no unknown fields: the base of every payload."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- value objects -----------------------------------------------------------------


class Customer(Model):
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    address: str | None = Field(default=None, max_length=1000)
    tax_id: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")  # ISO 3166-1 alpha-2


_Money = Decimal


class Line(Model):
    description: str = Field(min_length=1, max_length=1000)
    quantity: Decimal = Field(ge=Decimal("-1e9"), le=Decimal("1e9"), decimal_places=6)
    unit_price: Decimal = Field(ge=Decimal("-1e12"), le=Decimal("1e12"), decimal_places=6)
    tax_rate: Decimal = Field(default=Decimal(0), ge=0, le=100, decimal_places=4)  # percent

    @property
    def net(self) -> Decimal:
        return self.quantity * self.unit_price

    @property
    def tax(self) -> Decimal:
        return self.net * self.tax_rate / Decimal(100)


def totals(lines: list[Line]) -> tuple[Decimal, Decimal, Decimal]:
    """(net, tax, gross) rounded to cents; used by device views, projections and PDFs."""
    cent = Decimal("0.01")
    net = sum((ln.net for ln in lines), Decimal(0)).quantize(cent)
    tax = sum((ln.tax for ln in lines), Decimal(0)).quantize(cent)
    return net, tax, net + tax
