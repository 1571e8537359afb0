"""8. Web console page times over 100,000 documents in the views, beside a static
page (``/ping``) and an asset from the same server, measured in the same run.

A generated log (~2.8 events per document) is folded into the views by the
projections' rebuild; then a real engine starts on it with its console
process, and one signed-in client asks for each page in turn (keep-alive,
one request at a time: what a person at the console waits for).
"""

from __future__ import annotations

import asyncio
import http.client
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path

from engine.console.users import Users
from tests.bench.context import Context
from tests.bench.loggen import LogSpec, generate
from tests.bench.report import BenchResult, Figure, Goal
from tests.bench.stack import Stack, run_worker
from tests.bench.stats import percentile

NAME = "console"
TITLE = "8. web console page times (100k documents)"
DOCUMENTS = 100_000
EVENTS_PER_DOC = 2.8
USER = ("bench", "bench password")


class Client:
    """A keep-alive HTTP/1.1 client with the console's session cookie."""

    def __init__(self, url: str) -> None:
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=30)
        self.cookie = ""

    def get(self, path: str) -> tuple[int, float, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", path, headers={"Cookie": self.cookie} if self.cookie else {})
        r = self.conn.getresponse()
        body = r.read()
        return r.status, time.perf_counter() - t0, body

    def sign_in(self) -> None:
        self.conn.request("GET", "/signin")
        r = self.conn.getresponse()
        page = r.read().decode()
        self.cookie = (r.getheader("set-cookie") or "").split(";", 1)[0]
        m = re.search(r'name="csrf" value="([^"]+)"', page)
        csrf = m.group(1) if m else ""
        form = {"user": USER[0], "password": USER[1], "next": "/", "csrf": csrf}
        self.conn.request(
            "POST",
            "/signin",
            urllib.parse.urlencode(form),
            {"Content-Type": "application/x-www-form-urlencoded", "Cookie": self.cookie},
        )
        r = self.conn.getresponse()
        r.read()
        cookie = r.getheader("set-cookie") or ""
        if r.status != 303 or not cookie:
            raise RuntimeError(f"bench sign-in failed: HTTP {r.status}")
        self.cookie = cookie.split(";", 1)[0]

    def close(self) -> None:
        self.conn.close()


def pages(views: Path) -> dict[str, str]:
    """The pages measured, with ids, numbers and a deep page position from the views."""
    c = sqlite3.connect(f"file:{views}?mode=ro", uri=True)
    try:
        doc_id, number = c.execute(
            "SELECT doc_id, number FROM documents WHERE number > 0 ORDER BY last_position LIMIT 1 "
            "OFFSET (SELECT COUNT(*) / 2 FROM documents WHERE number > 0)"
        ).fetchone()
        deep = c.execute(
            "SELECT last_position FROM documents ORDER BY last_position LIMIT 1 "
            "OFFSET (SELECT MIN(1000, COUNT(*) / 2) FROM documents)"
        ).fetchone()[0]
        customer = c.execute(
            "SELECT customer FROM documents WHERE customer IS NOT NULL LIMIT 1"
        ).fetchone()[0]
    finally:
        c.close()
    word = re.split(r"\W+", str(customer))[0] or "a"
    return {
        "documents": "/documents",
        "deep page": f"/documents?before={deep}",
        "search": f"/documents?q={urllib.parse.quote(word)}",
        "search, no match": "/documents?q=no-such-customer",  # scans the whole list index
        "filters": "/documents?kind=invoice&status=issued",
        "number": f"/documents?number={number}",
        "unassigned": "/documents?unassigned=1",
        "document": f"/documents/{doc_id}",
        "duplicates & gaps": "/numbers",
        "dashboard": "/",
    }


def measure(url: str, paths: dict[str, str], rounds: int) -> dict[str, list[float]]:
    cl = Client(url)
    try:
        cl.sign_in()
        out: dict[str, list[float]] = {name: [] for name in [*paths, "ceiling /ping", "asset"]}
        for _ in range(2):  # warm: templates compiled, SQLite pages cached
            for p in paths.values():
                cl.get(p)
        for _ in range(rounds):
            for name, p in paths.items():
                status, s, _ = cl.get(p)
                if status != 200:
                    raise RuntimeError(f"{p}: HTTP {status}")
                out[name].append(s)
            out["ceiling /ping"].append(cl.get("/ping")[1])
            out["asset"].append(cl.get("/static/console.css")[1])
        return out
    finally:
        cl.close()


async def _console_url(log: Path, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            m = re.search(r"^console: (http\S+)$", log.read_text(errors="replace"), re.M)
            if m:
                return m.group(1)
        await asyncio.sleep(0.2)
    raise RuntimeError("the console did not start")


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    work = ctx.dir(NAME)
    data = work / "data"
    docs = ctx.n(DOCUMENTS, 500)
    spec = LogSpec(events=int(docs * EVENTS_PER_DOC))
    with ctx.progress(f"generating {spec.events:,} events", spec.events) as adv:
        gen = await asyncio.to_thread(generate, data / "log.sqlite", spec, adv)
    ctx.note(f"console: folding {gen.head:,} events ({gen.documents:,} documents) into the views")
    r = await run_worker(work, "rebuild", str(gen.path), str(data / "views.sqlite"))
    if r["status"] != "ok":
        res.status, res.message = "error", f"views rebuild: {r.get('message')}"
        return res
    Users(data / "console" / "users.json").set_password(*USER, role="auditor")
    rounds = max(5, ctx.n(30, 5))
    async with Stack(work, env={"SYNVOICE_CONSOLE": "1", "SYNVOICE_CONSOLE_PORT": "0"}) as st:
        url = await _console_url(st.engine.log_file)
        paths = await asyncio.to_thread(pages, data / "views.sqlite")
        times = await asyncio.to_thread(measure, url, paths, rounds)
    page_times = sorted(t for name, ts in times.items() if name in paths for t in ts)
    ping = sorted(times["ceiling /ping"])
    res.add(
        Figure(
            "console.page_p95_ms",
            f"page time p95, {len(paths)} pages x {rounds}, {gen.documents:,} documents",
            percentile(page_times, 95) * 1000,
            "ms",
            Goal("lt", 200),
            ceiling="console.ceil.ping_p95_ms",
        ),
        Figure("console.page_p50_ms", "page time p50", percentile(page_times, 50) * 1000, "ms"),
        Figure(
            "console.ceil.ping_p95_ms",
            "static page from the same server (/ping), p95",
            percentile(ping, 95) * 1000,
            "ms",
            raw=True,
        ),
        Figure(
            "console.ceil.asset_p95_ms",
            "static asset from the package (console.css), p95",
            percentile(sorted(times["asset"]), 95) * 1000,
            "ms",
            raw=True,
        ),
    )
    res.info = {
        "documents": gen.documents,
        "events": gen.head,
        "per_page_p95_ms": {
            name: round(percentile(sorted(ts), 95) * 1000, 2) for name, ts in times.items()
        },
    }
    return res
