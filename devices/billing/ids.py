"""Deterministic ids: re-running anything billing does maps onto the same events.

* a sale version's event id depends on the sale id, its content and the version
  it replaces, so re-importing the same content is a duplicate the engine drops,
  while A -> B -> A still records the return to A;
* the invoice of a sale has doc id uuid5(sale id): a crash between creating the
  invoice and recording the outcome finds the same document (and the engine hands
  the same reserved number again) instead of making a second invoice;
* the processed event id depends on the sale id only: at most one per sale.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from pydantic import BaseModel

BILLING_NS = uuid.UUID("0b6f3c55-2f4e-4a59-9d8e-6a1f2c7b9e40")


def digest(model: BaseModel, exclude: set[str] | None = None) -> str:
    """A content hash of a payload (canonical JSON), ignoring ``exclude`` fields."""
    data: Any = model.model_dump(mode="json", exclude=exclude)
    raw = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def sale_event_id(sale_id: str, content: str, base: str | None) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"sale:{sale_id}:{content}:{base or ''}")


def scenario_event_id(name: str, content: str, base: str | None) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"scenario:{name.casefold()}:{content}:{base or ''}")


def scenario_deleted_id(name: str, base: str | None) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"scenario-deleted:{name.casefold()}:{base or ''}")


def invoice_doc_id(sale_id: str) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"invoice:{sale_id}")


def replacement_doc_id(sale_id: str, voided: uuid.UUID) -> uuid.UUID:
    """The next invoice of a sale whose invoice ``voided`` was voided (still deterministic)."""
    return uuid.uuid5(BILLING_NS, f"invoice:{sale_id}:after:{voided}")


def processed_event_id(sale_id: str) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"processed:{sale_id}")


def failed_event_id(sale_id: str, base: str | None, step: str, reason: str) -> uuid.UUID:
    return uuid.uuid5(BILLING_NS, f"failed:{sale_id}:{base or ''}:{step}:{reason}")


def safe_name(text: str) -> str:
    """A file-name-safe form of a sale id (ids may hold ':')."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-" else "_" for c in text)
