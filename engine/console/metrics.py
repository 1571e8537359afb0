"""``/metrics``: OpenMetrics for Prometheus (prometheus-client's exposition).

The engine's numbers come from its admin status reply (the ``metrics`` part
``engine.service`` keeps, head, published, views); the console adds its own
page times. Names are listed in the README ("Web console" → Metrics).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.errors import SynvoiceError

if TYPE_CHECKING:
    from engine.console.app import Console

_console_registry = CollectorRegistry(auto_describe=True)
PAGE_SECONDS = Histogram(
    "synvoice_console_request_seconds",
    "Console request time by page (first path segment)",
    ["page"],
    registry=_console_registry,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5),
)


def engine_families(st: dict[str, Any]) -> list[Metric]:
    """The engine's status reply as metric families (pure: tested without a server)."""
    out: list[Metric] = []
    head = int(st.get("head", 0))
    c = CounterMetricFamily("synvoice_events_appended", "Events appended to the log")
    c.add_metric([], head)
    out.append(c)
    nums = GaugeMetricFamily(
        "synvoice_numbers_issued", "Highest number the engine handed out, by kind", labels=["kind"]
    )
    for kind, n in sorted((st.get("counters") or {}).items()):
        nums.add_metric([kind], int(n))
    out.append(nums)
    pub = GaugeMetricFamily("synvoice_publisher_lag_events", "Committed events not yet published")
    pub.add_metric([], max(0, head - int(st.get("published", head))))
    out.append(pub)
    views = st.get("views")
    if isinstance(views, dict):
        g = GaugeMetricFamily("synvoice_views_lag_events", "Events the live views are behind")
        g.add_metric([], int(views.get("behind", 0)))
        out.append(g)
        p = GaugeMetricFamily("synvoice_views_position", "Last log position in the views")
        p.add_metric([], int(views.get("position", 0)))
        out.append(p)
    docs = GaugeMetricFamily("synvoice_documents", "Documents on the log")
    docs.add_metric([], int(st.get("documents", 0)))
    out.append(docs)
    m = st.get("metrics") or {}
    bounds = [float(b) for b in m.get("buckets", [])]
    if bounds:
        h = HistogramMetricFamily(
            "synvoice_request_seconds",
            "Engine request handling time by subject",
            labels=["subject"],
        )
        for subject, snap in (m.get("latency") or {}).items():
            counts = [int(x) for x in snap["counts"]]
            cumulative, run = [], 0
            for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                run += n
                cumulative.append((bound, float(run)))
            h.add_metric([subject], cumulative, float(snap["sum"]))
        out.append(h)
    r = CounterMetricFamily(
        "synvoice_refusals", "Requests the engine refused, by code", labels=["code"]
    )
    for code, n in (m.get("refusals") or {}).items():
        r.add_metric([code], int(n))
    out.append(r)
    return out


class _Snapshot(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families
        yield from _console_registry.collect()


def render(status: dict[str, Any] | None) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    fams = engine_families(status) if status is not None else []
    up = GaugeMetricFamily("synvoice_engine_up", "1 when the engine answered the scrape")
    up.add_metric([], 1 if status is not None else 0)
    reg.register(_Snapshot([up, *fams]))
    return bytes(generate_latest(reg))  # type: ignore[no-untyped-call]


def refusal(host: str, token: str, authorization: str | None) -> tuple[int, str] | None:
    """Why a scrape is refused (status, message), or None to serve it.

    With a token, only ``Authorization: Bearer TOKEN``. Without one, the figures
    are served only while the console listens on loopback: a scrape also costs
    the engine a status request, and nobody signs in for it."""
    if token:
        scheme, _, given = (authorization or "").partition(" ")
        if scheme == "Bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return None
        return 401, "metrics need Authorization: Bearer <SYNVOICE_CONSOLE_METRICS_TOKEN>\n"
    if _loopback(host):
        return None
    return 403, (
        f"the console listens on {host}: set SYNVOICE_CONSOLE_METRICS_TOKEN "
        "and scrape with that bearer token\n"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(console: Console) -> None:
    async def metrics(request: Request) -> Response:
        cfg = console.config
        why = refusal(cfg.host, cfg.metrics_token, request.headers.get("authorization"))
        if why is not None:
            headers = {"WWW-Authenticate": "Bearer"} if why[0] == 401 else None
            return Response(why[1], status_code=why[0], media_type="text/plain", headers=headers)
        try:
            st: dict[str, Any] | None = await console.admin.status()
        except SynvoiceError:
            st = None
        return Response(render(st), media_type=CONTENT_TYPE_LATEST)

    console.routes.append(Route("/metrics", metrics))


class TimingMiddleware:
    """Request times by page into ``synvoice_console_request_seconds``."""

    def __init__(self, app: Any, console: Console) -> None:
        self.app = app
        self.console = console
        self._known: set[str] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/events":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            if self._known is None:  # labels only for real pages: no label per junk path
                self._known = {_page(str(getattr(r, "path", ""))) for r in self.console.routes}
            page = _page(path)
            PAGE_SECONDS.labels(page if page in self._known else "/other").observe(
                time.perf_counter() - t0
            )


def _page(path: str) -> str:
    return "/" + path.strip("/").split("/", 1)[0]
