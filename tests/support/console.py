"""Test support for the web console: an engine whose supervisor runs the console
process, and Debian's chromium driven by Playwright (never a browser download)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.console.supervise import console_process
from engine.console.users import Users
from tests.support.harness import EngineHarness, running_engine

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
OPERATOR = ("operator", "correct horse battery")
AUDITOR = ("auditor", "read only please")


@dataclass
class ConsoleStack:
    engine: EngineHarness
    url: str
    data: Path

    def at(self, path: str) -> str:
        return self.url.rstrip("/") + path


@contextlib.asynccontextmanager
async def console_stack(
    data: Path, nats_url: str, env: dict[str, str] | None = None
) -> AsyncIterator[ConsoleStack]:
    """A real engine (live views on) with its supervised console on a free port."""
    Users(data / "console" / "users.json").set_password(*OPERATOR, role="operator")
    Users(data / "console" / "users.json").set_password(*AUDITOR, role="auditor")
    saved = dict(os.environ)
    os.environ.update({"SYNVOICE_CONSOLE": "1", "SYNVOICE_CONSOLE_PORT": "0", **(env or {})})
    try:
        async with running_engine(data, nats_url, live_views=True) as h:
            proc = console_process(h.server)
            assert proc is not None
            url = await proc.wait_ready(30)
            yield ConsoleStack(h, url, data)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--disable-dev-shm-usage",
            ],
        )
        try:
            yield b
        finally:
            await b.close()


async def sign_in(page: Any, stack: ConsoleStack, who: tuple[str, str] = OPERATOR) -> None:
    await page.goto(stack.at("/signin"))
    await page.fill("input[name=user]", who[0])
    await page.fill("input[name=password]", who[1])
    async with page.expect_navigation():
        await page.click("button[type=submit]")
    await page.wait_for_url(stack.at("/"))


async def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
