"""Batch billing with the seller profile, Unicode text and Factur-X output."""

# ruff: noqa: RUF001

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader

from devices.agent import DeviceAgent
from devices.billing.home import BillingHome
from devices.seller import merged, push_seller
from tests.billing.test_process import sale, setup, statuses
from tests.support.billing import Billing
from tests.support.einvoice import all_errors
from tests.support.pdftext import pdf_text


async def test_facturx_run_prints_the_seller_and_fails_unprintable_text(
    billing: Billing, tmp_path: Path
) -> None:
    b = billing
    agent = await DeviceAgent.open(BillingHome(b.home).agent_home, background=False)
    try:
        assert await agent.connect(timeout=10)
        await agent.sync()
        profile = merged(
            None,
            {
                "legal_name": "Kognoz S.A.",
                "country": "UY",
                "vat_id": "UY217654320018",
                "address": "18 de Julio 959\nMontevideo",
            },
        )
        await push_seller(agent, profile)
    finally:
        await agent.close()
    sales = [
        sale("JP1", customer={"name": "株式会社テスト", "email": "ap@jp.example"}),
        sale("RU1", customer={"name": "ООО «Ромашка»", "email": "ap@ru.example"}),
        sale("EMO", title="Party 🎉"),
    ]
    await setup(b, tmp_path, sales)
    rc, _, err = await b.cli("process", "nov", "--action", "create", "--einvoice", "facturx")
    assert rc == 2, err
    st = await statuses(b)
    assert st["EMO"]["status"] == "Failed" and st["EMO"]["failed_step"] == "render"
    assert "U+1F389" in st["EMO"]["reason"]
    for sid, name in (("JP1", "株式会社テスト"), ("RU1", "ООО «Ромашка»")):
        assert st[sid]["status"] == "Processed"
        pdf = Path(st[sid]["pdf"]).read_bytes()
        text = pdf_text(pdf)
        assert name in text and "Kognoz S.A." in text and "VAT ID UY217654320018" in text
        xml = PdfReader(io.BytesIO(pdf)).attachments["factur-x.xml"][0]
        assert all_errors(xml) == []
