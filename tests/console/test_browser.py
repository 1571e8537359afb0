"""The web console in real headless Chromium against a real engine and broker.

One engine, its console process, an SMTP sink and chromium are started once for
the module (they take most of the time); the tests walk through the screens:
sign-in and refusals, the office's day (devices, numbers), and the Invoice
Manager wizard of seed 002. Screenshots land in test-artifacts/console/.
"""

from __future__ import annotations

import io
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from pypdf import PdfReader

from devices.agent import DeviceAgent
from engine.console.supervise import console_process
from engine.natsproc import NatsServer, free_port
from tests.billing.test_seed_example import seed_rows
from tests.support.billing import Inbox, billing_home, write_sales_csv
from tests.support.console import (
    AUDITOR,
    OPERATOR,
    ConsoleStack,
    browser,
    console_stack,
    shot,
    sign_in,
)
from tests.support.harness import wait_for

pytestmark = [
    pytest.mark.skipif(
        not Path("/usr/bin/chromium").exists(),
        reason="Debian chromium missing (make test installs it)",
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


@dataclass
class Env:
    stack: ConsoleStack
    browser: Any
    inbox: Inbox
    tmp: Path


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("console")
    nats = NatsServer(tmp / "nats").start()
    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    smtp_env = {"SYNVOICE_SMTP_HOST": "127.0.0.1", "SYNVOICE_SMTP_PORT": str(port)}
    try:
        async with console_stack(tmp / "data", nats.url, smtp_env) as stack, browser() as b:
            yield Env(stack, b, inbox, tmp)
    finally:
        smtp.stop()
        nats.stop()


async def go(page: Any, selector: str) -> None:
    """Click what loads a page (a link, a form's button) and wait for that page."""
    async with page.expect_navigation():
        await page.click(selector)


async def text(page: Any, selector: str) -> str:
    return str(await page.inner_text(selector))


async def test_signed_out_wrong_password_and_rate_limit(env: Env) -> None:
    stack, b = env.stack, env.browser
    # --- signed out: pages send to the sign-in, changes are refused -------------------
    anon = await b.new_context()
    page = await anon.new_page()
    await page.goto(stack.at("/documents"))
    assert "/signin" in page.url
    r = await anon.request.post(stack.at("/devices/enroll"), form={"user": "eve"})
    assert r.status == 403
    # --- a wrong password is refused, then rate-limited -------------------------------
    for _ in range(5):
        await page.fill("input[name=user]", "mallory")
        await page.fill("input[name=password]", "guess-guess")
        await go(page, "button[type=submit]")
        assert "Wrong user name or password" in await text(page, ".error")
    await page.fill("input[name=user]", "mallory")
    await page.fill("input[name=password]", "guess-guess")
    await go(page, "button[type=submit]")
    assert "Too many failed sign-ins" in await text(page, ".error")
    await shot(page, "signin-rate-limited")
    await anon.close()


async def test_office_day(env: Env) -> None:
    stack, b, tmp_path = env.stack, env.browser, env.tmp
    ctx = await b.new_context()
    page = await ctx.new_page()
    await sign_in(page, stack)
    cookie = next(c for c in await ctx.cookies() if c["name"] == "synvoice_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # --- CSRF: a signed-in request without the form's token changes nothing ------------
    r = await ctx.request.post(stack.at("/devices/enroll"), form={"user": "eve"})
    assert r.status == 403 and "security token" in await r.text()
    st = await (await stack.engine.admin()).status()
    assert not any(d.user == "eve" for d in st.devices.values())

    # --- settings: the user mode, once, with the warning --------------------------------
    await go(page, "nav >> text=Settings")
    await page.select_option("select[name=mode]", "centralized")
    await go(page, "form[action='/settings/mode'] button")
    assert "Tick the box" in await text(page, ".flash-error")  # nothing changed
    await page.check("input[name=confirm]")
    await page.select_option("select[name=mode]", "centralized")
    await go(page, "form[action='/settings/mode'] button")
    assert await text(page, "#mode") == "centralized"
    await shot(page, "settings")

    # --- enroll a device and see it ---------------------------------------------------
    await go(page, "nav >> text=Devices")
    await page.fill("input[name=user]", "alice")
    await page.fill("input[name=name]", "tablet")
    await go(page, "form[action='/devices/enroll'] button")
    token = await page.input_value("#token")
    assert await page.locator("img.qr").count() == 1
    await shot(page, "devices-enrolled")
    assert "alice" in await text(page, "#devices")
    await page.fill("input[name=user]", "Bad User!")
    await page.evaluate("document.querySelector('input[name=user]').removeAttribute('pattern')")
    await go(page, "form[action='/devices/enroll'] button")
    await page.wait_for_selector(".flash-error")  # a clear message, nothing made

    # --- a document made offline has number 0; Assign Number gives it one -------------
    agent = await DeviceAgent.init(tmp_path / "alice", token)
    try:
        doc = await agent.create(
            "invoice", "Offline Co", [{"description": "Work", "quantity": 1, "unit_price": 100}]
        )
        assert doc.number == 0
        assert await agent.connect(10)
        await agent.sync()
        await page.goto(stack.at("/documents?unassigned=1"))
        row = page.locator(f"tr[data-doc='{doc.doc_id}']")
        await row.wait_for(timeout=10_000)  # live: it may arrive after the page loaded
        assert (await row.locator(".number").inner_text()).strip() == "0"
        await shot(page, "documents")
        await row.locator(".number a").click()
        await go(page, "#assign-one button")

        async def numbered() -> bool:  # live: the views may catch up after the redirect
            shown = page.locator("#doc-number")
            return await shown.count() == 1 and (await shown.inner_text()).strip() != "0"

        await wait_for(numbered, timeout=10, interval=0.2)
        assigned = int((await text(page, "#doc-number")).strip())
        assert assigned >= 1
        await shot(page, "document")

        # --- a duplicate appears in the banner; renumbering resolves it -----------------
        dup = await agent.create(
            "invoice",
            "Twin Ltd",
            [{"description": "Work", "quantity": 1, "unit_price": 5}],
            number=assigned,
            force=True,  # a duplicate on purpose
        )
        await agent.sync()
        await page.goto(stack.at("/documents"))
        await wait_for_banner(page, stack, present=True)
        assert "held twice" in await text(page, "#numbers-banner")
        await go(page, ".banner a")
        await shot(page, "numbers")
        await go(page, f"a.resolve[href^='/documents/{dup.doc_id}']")
        await page.fill("#renumber input[name=number]", str(assigned))
        await go(page, "#renumber button")
        await page.wait_for_selector("#preview")
        assert await page.locator("#in-use").count() == 1  # the preview warns: in use
        await page.goto(stack.at(f"/documents/{dup.doc_id}"))
        await page.fill("#renumber input[name=number]", str(assigned + 1))
        await go(page, "#renumber button")
        await page.wait_for_selector("#preview")
        assert await page.locator("#in-use").count() == 0
        await shot(page, "renumber-preview")
        await go(page, "#confirm-renumber")
        await page.wait_for_url(re.compile(f".*/documents/{dup.doc_id}$"))
        await wait_for_banner(page, stack, present=False)
        assert (await text(page, "#doc-number")).strip() == str(assigned + 1)
        assert "number_assigned" in await text(page, "#history")
        # --- a gap: reported in ranges, marked explained ---------------------------------
        await agent.create(
            "invoice",
            "Far Ahead",
            [{"description": "W", "quantity": 1, "unit_price": 1}],
            number=assigned + 5,
        )
        await agent.sync()

        async def gap_shown() -> bool:
            await page.goto(stack.at("/numbers"))
            return await page.locator("#gaps form.explain").count() == 1

        await wait_for(gap_shown, timeout=15, interval=0.3)
        assert "missing" in await text(page, "#numbers-banner")
        await page.fill("#gaps input[name=reason]", "paper forms spoiled")
        await go(page, "#gaps form.explain button")
        assert await page.locator(".flash-error").count() == 0, await text(page, ".flash-error")
        assert "explained: paper forms spoiled" in await text(page, "#gaps")
        assert await page.locator("#numbers-banner").count() == 0
        # An invoice names its seller: without a profile the PDF is refused, saying why.
        pdf = await ctx.request.get(stack.at(f"/actions/pdf/{dup.doc_id}"))
        assert pdf.status == 409 and "seller" in await pdf.text()
        # The seed's Settings: the seller profile, set on its page (bad input: a message).
        await page.goto(stack.at("/seller"))
        assert await page.locator("#no-seller").count() == 1
        await page.fill("#seller-legal_name", "Console Test GmbH")
        await page.fill("#seller-country", "DE")
        await page.fill("#seller-iban", "not an iban")
        await go(page, "#save-seller")
        assert "iban" in (await text(page, ".flash-error")).lower()
        await page.goto(stack.at("/seller"))
        assert await page.locator("#no-seller").count() == 1  # nothing was recorded
        await page.fill("#seller-legal_name", "Console Test GmbH")
        await page.fill("#seller-country", "DE")
        await page.fill("#seller-iban", "DE89370400440532013000")
        await go(page, "#save-seller")
        assert "Seller profile saved" in await text(page, ".flash-ok")
        await shot(page, "seller")

        async def pdf_served() -> bool:
            nonlocal pdf
            pdf = await ctx.request.get(stack.at(f"/actions/pdf/{dup.doc_id}"))
            return pdf.headers["content-type"] == "application/pdf"

        await wait_for(pdf_served, timeout=15, interval=0.3)
        body = pdf_text(await pdf.body())
        assert "Twin Ltd" in body and "Console Test GmbH" in body
    finally:
        await agent.close()

    # --- the other screens -------------------------------------------------------------
    for path, name in (
        ("/", "dashboard"),
        ("/integrations", "integrations"),
        ("/audit", "audit"),
    ):
        await page.goto(stack.at(path))
        await shot(page, name)
    await go(page, "form[action='/audit/verify'] button")
    assert "Intact" in await text(page, "#chain-result")
    csv = await ctx.request.get(stack.at("/audit/documents.csv"))
    assert csv.status == 200 and (await csv.text()).startswith("doc_id,")
    await page.goto(stack.at("/integrations"))
    await page.fill("input[name=name]", "erp")
    await go(page, "form[action='/integrations/add'] button")
    assert await page.locator("#integration-password").count() == 1
    metrics = await ctx.request.get(stack.at("/metrics"))
    body = await metrics.text()
    for name in (
        "synvoice_events_appended_total",
        "synvoice_request_seconds_bucket",
        "synvoice_views_lag_events",
    ):
        assert name in body

    # --- garbage in any form: a message, nothing changed, the server keeps serving ------
    csrf = str(await page.get_attribute("body", "data-csrf"))
    head = (await (await stack.engine.admin()).status()).head
    for path, form in (
        ("/actions/renumber", {"doc_id": "not-a-uuid", "number": "x"}),
        ("/actions/renumber", {"doc_id": str(dup.doc_id), "number": "-5"}),
        ("/actions/assign", {"doc_id": "00000000-0000-0000-0000-000000000000"}),
        ("/actions/explain-gap", {"kind": "receipt", "first": "a", "last": "", "reason": ""}),
        ("/devices/revoke", {"device_id": "dev-nope"}),
        ("/settings/mode", {"mode": "chaos", "confirm": "yes"}),
        ("/settings/register", {"key": "svk1.garbage"}),
        ("/billing/process", {"scenario": "nope", "action_all": "fax"}),
        ("/integrations/add", {"name": "Bad Name!"}),
    ):
        r = await ctx.request.post(stack.at(path), form={"csrf": csrf, "back": "/", **form})
        assert r.status == 200 and "flash-error" in await r.text(), (path, await r.text())
    assert (await (await stack.engine.admin()).status()).head == head
    await page.goto(stack.at("/"))
    assert "dev-nope" in await text(page, "#recent-errors")

    # --- an auditor reads but changes nothing --------------------------------------------
    actx = await b.new_context()
    apage = await actx.new_page()
    await sign_in(apage, stack, AUDITOR)
    await apage.goto(stack.at("/documents"))
    assert await apage.locator("#assign-all").count() == 0
    csrf = await apage.get_attribute("body", "data-csrf")
    r = await actx.request.post(stack.at("/actions/assign"), form={"csrf": str(csrf)})
    assert r.status == 403 and "read-only" in await r.text()
    await actx.close()
    assert OPERATOR[0] == "operator"


async def wait_for_banner(page: Any, stack: Any, present: bool) -> None:
    async def seen() -> bool:
        await page.reload()
        shown = page.locator("#numbers-banner")
        held = await shown.count() > 0 and "held twice" in await shown.inner_text()
        return held == present

    await wait_for(seen, timeout=15, interval=0.3)


def pdf_text(body: bytes) -> str:
    return "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages)


async def test_invoice_manager_wizard(env: Env) -> None:
    stack, b, inbox, tmp_path = env.stack, env.browser, env.inbox, env.tmp
    seller = await billing_home(stack.engine, tmp_path / "crm")
    csv = write_sales_csv(tmp_path / "opportunities.csv", seed_rows())
    assert (await seller.json("import", str(csv)))["recorded"] == 37
    ctx = await b.new_context()
    page = await ctx.new_page()
    await sign_in(page, stack)
    # step 1: a billing scenario and its rules
    await go(page, "nav >> text=Invoice Manager")
    await page.fill("#scenario-form input[name=name]", "November 2011")
    await page.fill("#scenario-form input[name=stages]", "Closed/Won")
    await page.fill("#scenario-form input[name=period]", "2011-13")
    await go(page, "#save-next")
    assert "period" in await text(page, ".flash-error")  # bad rule: nothing saved
    await page.fill("#scenario-form input[name=name]", "November 2011")
    await page.fill("#scenario-form input[name=period]", "2011-11")
    await page.select_option("#scenario-form select[name=approved]", "yes")
    await shot(page, "billing-step1")
    await go(page, "#save-next")
    # step 2: the thirty sales, Not Done
    await page.wait_for_selector("#sales")
    assert (await page.locator("#sales tr[data-sale]").count()) == 30
    assert set(await page.locator("#sales td.status").all_inner_texts()) == {"Not Done"}
    await page.select_option("#action-all", "email")
    await shot(page, "billing-step2")
    await go(page, "#process")

    async def all_processed() -> bool:
        statuses = await page.locator("#sales td.status").all_inner_texts()
        return len(statuses) == 30 and set(statuses) == {"Processed"}

    await wait_for(all_processed, timeout=40, interval=0.3)  # live, no reload
    await shot(page, "billing-processed")
    assert set(await page.locator("#sales td.channel").all_inner_texts()) >= {"email"} or True
    channels = await page.locator("#sales td.channel").all_inner_texts()
    assert all(c.startswith("email") for c in channels)
    links = await page.locator("#sales a.pdf").all()
    assert len(links) == 30
    href = await links[0].get_attribute("href")
    r = await ctx.request.get(stack.at(str(href)))
    assert r.headers["content-type"] == "application/pdf"
    assert (await r.body()).startswith(b"%PDF") and "Invoice" in pdf_text(await r.body())
    assert len(inbox.messages) == 30


async def test_console_restarted_when_it_dies(env: Env) -> None:
    """The engine's supervisor starts a killed console again, on the same address."""
    proc = console_process(env.stack.engine.server)
    assert proc is not None and proc.pid is not None
    old_pid, starts = proc.pid, proc.starts
    os.kill(old_pid, signal.SIGKILL)  # only the console process this test's engine started
    await wait_for(lambda: proc.starts > starts and proc.pid != old_pid, timeout=20)

    async def answers() -> bool:
        try:
            r = await env.browser.new_context()
            try:
                resp = await r.request.get(env.stack.at("/ping"))
                return bool(resp.status == 200)
            finally:
                await r.close()
        except Exception:
            return False

    await wait_for(answers, timeout=30, interval=0.3)
