"""The console's ASGI app: the shell the plugins add their pages and actions to.

Every page needs a signed-in account; every POST goes through ``Console.action``,
which checks the account's role and the form's CSRF token before the handler
runs, so no plugin can forget either. A refused or bad form changes nothing
and shows its message on the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import secrets
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine import plugins
from engine.console.admin import AdminLink
from engine.console.config import ConsoleConfig, console_dir
from engine.console.users import SigninLimiter, Users
from engine.errors import SynvoiceError

log = logging.getLogger("synvoice.console")

CONSOLE_GROUP = "synvoice.console"
HERE = Path(__file__).parent
SESSION_COOKIE = "synvoice_console"
SESSION_HOURS = 8

Endpoint = Callable[[Request], Awaitable[Response]]
ActionHandler = Callable[[Request, FormData], Awaitable[Response]]


def gap_key(kind: str, series: str, first: int, last: int, period: str = "") -> str:
    """One name for a gap across the plugins that report and explain it (the
    period of a resetting series is part of it: 3-5 of 2026 is not 3-5 of 2027)."""
    where = f"{kind}/{period}" if period else kind
    return f"{where}:{series}:{first}:{last}"


class FormError(Exception):
    """Bad input in a form: its message is shown on the page; nothing changed."""


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class NavItem:
    path: str
    label: str
    order: int


class Hub:
    """Server-sent events: each open page has a queue; ``publish`` fans out."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[str]] = set()

    def publish(self, event: str, data: Any) -> None:
        msg = f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"
        for q in list(self._queues):
            if q.qsize() < 200:  # a stalled page misses updates, never grows memory
                q.put_nowait(msg)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        q: asyncio.Queue[str] = asyncio.Queue()
        self._queues.add(q)
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    yield await asyncio.wait_for(q.get(), 15.0)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield ": keep-alive\n\n"
        finally:
            self._queues.discard(q)


@dataclass
class Console:
    """What plugins see: ``register(console)`` adds pages, actions, templates,
    dashboard panels, banners and live sources."""

    data_dir: Path
    config: ConsoleConfig
    admin: AdminLink
    routes: list[BaseRoute] = field(default_factory=list)
    nav: list[NavItem] = field(default_factory=list)
    template_dirs: list[Path] = field(default_factory=lambda: [HERE / "templates"])
    # Parts of the dashboard: each returns (template, context) to include.
    panels: list[Callable[[], Awaitable[tuple[str, dict[str, Any]]]]] = field(default_factory=list)
    # Warnings shown on every page (e.g. duplicate numbers): each returns messages.
    banners: list[Callable[[], list[tuple[str, str]]]] = field(default_factory=list)
    # Polled twice a second; a change is sent to the open pages as event ``name``.
    live_sources: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # Template snippets other plugins put into a page's slot (e.g. "document": the
    # Assign Number and renumber forms on the document page).
    tools: dict[str, list[str]] = field(default_factory=dict)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    hub: Hub = field(default_factory=Hub)
    # (when, where, what) of the last refusals and failures: the dashboard's "recent errors"
    errors: deque[tuple[str, str, str]] = field(default_factory=lambda: deque(maxlen=20))
    views_path: Path = field(init=False)
    users: Users = field(init=False)
    limiter: SigninLimiter = field(init=False)
    templates: Jinja2Templates = field(init=False)
    # device ids -> when each one's last event was committed (the views know; projections add it)
    last_seen: Callable[[Collection[str]], dict[str, str]] = lambda _ids: {}
    # gap_key(...) -> why the numbers are missing (gaps marked explained; devices add it)
    gap_notes: Callable[[], dict[str, str]] = lambda: {}

    def __post_init__(self) -> None:
        self.views_path = self.data_dir / "views.sqlite"
        self.users = Users(console_dir(self.data_dir) / "users.json")
        self.limiter = SigninLimiter(self.config.signin_attempts)

    @property
    def home(self) -> Path:
        return console_dir(self.data_dir)

    # --- what plugins call ----------------------------------------------------------

    def add_templates(self, directory: Path) -> None:
        self.template_dirs.append(directory)

    def add_tool(self, slot: str, template: str) -> None:
        self.tools.setdefault(slot, []).append(template)

    def add_nav(self, path: str, label: str, order: int = 50) -> None:
        self.nav.append(NavItem(path, label, order))

    def page(self, path: str) -> Callable[[Endpoint], Endpoint]:
        """A GET page for any signed-in account."""

        def deco(fn: Endpoint) -> Endpoint:
            async def endpoint(request: Request) -> Response:
                if not self.signed_in(request):
                    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse(f"/signin?next={quote(nxt)}", 303)
                try:
                    return await fn(request)
                except Refused as r:
                    return self.refusal(request, r.status, r.message)
                except (FormError, SynvoiceError) as exc:
                    return self.refusal(request, 400, _message(exc))

            self.routes.append(Route(path, endpoint, methods=["GET"]))
            return fn

        return deco

    def action(self, path: str, role: str = "operator") -> Callable[[ActionHandler], ActionHandler]:
        """A POST action: signed in, ``role`` (auditors read only), CSRF token checked."""

        def deco(fn: ActionHandler) -> ActionHandler:
            async def endpoint(request: Request) -> Response:
                try:
                    form = await self.checked_form(request, role)
                except Refused as r:
                    return self.refusal(request, r.status, r.message)
                try:
                    return await fn(request, form)
                except Refused as r:
                    return self.refusal(request, r.status, r.message)
                except (FormError, SynvoiceError) as exc:
                    if isinstance(exc, SynvoiceError):  # the engine's refusals, for the dashboard
                        self.errors.append((_now(), path, f"{exc.code}: {exc.message}"))
                    self.flash(request, "error", _message(exc))
                    return self.back(request, form)

            self.routes.append(Route(path, endpoint, methods=["POST"]))
            return fn

        return deco

    # --- sessions ---------------------------------------------------------------------

    def signed_in(self, request: Request) -> bool:
        s = request.session
        name = s.get("user")
        if not name:
            return False
        acc = self.users.load().get(name)
        if acc is None or acc.gen != s.get("gen"):  # password changed or account removed
            s.clear()
            return False
        return True

    def role(self, request: Request) -> str:
        return str(request.session.get("role", ""))

    def csrf(self, request: Request) -> str:
        tok = request.session.get("csrf")
        if not tok:
            tok = request.session["csrf"] = secrets.token_urlsafe(24)
        return str(tok)

    async def checked_form(self, request: Request, role: str) -> FormData:
        if not self.signed_in(request):
            raise Refused(403, "Sign in first: this request changes nothing.")
        try:
            form = await request.form(max_files=0, max_fields=50_000)
        except Exception:
            raise Refused(400, "The form could not be read.") from None
        sent = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        want = str(request.session.get("csrf") or "")
        if not want or not hmac.compare_digest(sent.encode(), want.encode()):
            raise Refused(403, "The form's security token is missing or stale: reload the page.")
        if role == "operator" and self.role(request) != "operator":
            raise Refused(403, "This account is read-only (auditor): nothing was changed.")
        return form

    def flash(self, request: Request, level: str, message: str) -> None:
        request.session.setdefault("flash", []).append([level, message])

    def back(self, request: Request, form: FormData | None = None) -> Response:
        target = str(form.get("back") or "") if form is not None else ""
        if not target:
            ref = urlsplit(request.headers.get("referer", ""))
            target = ref.path + (f"?{ref.query}" if ref.query else "") if ref.path else "/"
        return RedirectResponse(_safe_next(target), 303)

    # --- rendering --------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **ctx: Any) -> Response:
        fragment = request.headers.get("x-fragment") == "1"
        # A live refresh shows no messages: it must not eat the next page's.
        flashes = [] if fragment else request.session.pop("flash", [])
        banners: list[tuple[str, str]] = []
        for b in self.banners:
            try:
                banners.extend(b())
            except Exception as exc:  # a banner never takes the page down
                log.warning("console banner failed: %s", exc)
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "user": request.session.get("user"),
                "role": self.role(request),
                "csrf": self.csrf(request) if request.session.get("user") else "",
                "signin_csrf": self.csrf(request) if template == "signin.html" else "",
                "nav": sorted(self.nav, key=lambda n: (n.order, n.label)),
                "flashes": flashes,
                "banners": banners,
                "fragment": fragment,
                "tools": self.tools,
                **ctx,
            },
            status_code=status,
        )

    def refusal(self, request: Request, status: int, message: str) -> Response:
        return self.render(request, "refused.html", status=status, message=message)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _message(exc: Exception) -> str:
    if isinstance(exc, SynvoiceError):
        return exc.message
    return str(exc)


# --- sign-in ------------------------------------------------------------------------


def add_signin(console: Console) -> None:
    async def signin_page(request: Request) -> Response:
        return console.render(
            request, "signin.html", next=_safe_next(request.query_params.get("next"))
        )

    async def signin(request: Request) -> Response:
        try:
            form = await request.form(max_files=0, max_fields=10)
        except Exception:
            return console.render(request, "signin.html", status=400, error="Bad form.", next="/")
        sent = str(form.get("csrf") or "")
        want = str(request.session.get("csrf") or "")
        if not want or not hmac.compare_digest(sent.encode(), want.encode()):
            # Login CSRF: a form posted from elsewhere must not sign this browser in.
            return console.render(
                request,
                "signin.html",
                status=403,
                error="The form's security token is missing or stale: sign in again.",
                next="/",
            )
        name = str(form.get("user") or "").strip().lower()[:64]
        password = str(form.get("password") or "")[:1024]
        nxt = _safe_next(str(form.get("next") or "/"))
        addr = request.client.host if request.client else "?"
        keys = [f"user:{name}", f"addr:{addr}"]
        wait = console.limiter.wait(keys)
        if wait > 0:
            return console.render(
                request,
                "signin.html",
                status=429,
                error=f"Too many failed sign-ins: try again in {int(wait) + 1} s.",
                next=nxt,
            )
        acc = await asyncio.to_thread(console.users.check, name, password)
        if acc is None:
            console.limiter.failed(keys)
            return console.render(
                request, "signin.html", status=401, error="Wrong user name or password.", next=nxt
            )
        request.session.clear()
        request.session.update(
            {"user": acc.name, "role": acc.role, "gen": acc.gen, "csrf": secrets.token_urlsafe(24)}
        )
        return RedirectResponse(nxt, 303)

    async def signout(request: Request) -> Response:
        try:
            await console.checked_form(request, role="auditor")
        except Refused as r:
            return console.refusal(request, r.status, r.message)
        request.session.clear()
        return RedirectResponse("/signin", 303)

    console.routes += [
        Route("/signin", signin_page, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", signout, methods=["POST"]),
    ]


def _safe_next(nxt: str | None) -> str:
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        return "/"
    return nxt


# --- the app --------------------------------------------------------------------------


def session_key(console: Console) -> str:
    p = console.home / "session.key"
    if not p.exists():
        console.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        p.write_text(secrets.token_hex(32))
        p.chmod(0o600)
    return p.read_text().strip()


def build(
    data_dir: Path, config: ConsoleConfig, load_plugins: bool = True
) -> tuple[Console, Starlette]:
    from engine.console import metrics, screens

    console = Console(data_dir, config, AdminLink(data_dir))
    add_signin(console)
    screens.register(console)
    if load_plugins:
        for _name, register in plugins.load(CONSOLE_GROUP):
            register(console)
    env = Environment(
        loader=ChoiceLoader([FileSystemLoader(str(d)) for d in console.template_dirs]),
        autoescape=select_autoescape(["html"]),
    )
    console.templates = Jinja2Templates(env=env)
    metrics.register(console)

    async def events(request: Request) -> Response:
        if not console.signed_in(request):
            return Response("sign in first", 403)
        return StreamingResponse(
            console.hub.stream(request),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def ping(_request: Request) -> Response:
        # The benchmark's ceiling: the same server, no session, no template.
        return Response("ok", media_type="text/plain")

    routes: list[BaseRoute] = [
        *console.routes,
        Route("/events", events),
        Route("/ping", ping),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def poll_sources() -> None:
        last: dict[str, Any] = {}
        while True:
            for name, fn in console.live_sources.items():
                try:
                    v = await asyncio.to_thread(fn)
                except Exception:
                    continue
                if last.get(name) != v:
                    if name in last:
                        console.hub.publish(name, v)
                    last[name] = v
            await asyncio.sleep(0.5)

    tasks: list[asyncio.Task[None]] = []

    async def on_start() -> None:
        for fn in console.startup:
            await fn()
        tasks.append(asyncio.create_task(poll_sources()))

    async def on_stop() -> None:
        for t in tasks:
            t.cancel()
        for fn in reversed(console.shutdown):
            try:
                await fn()
            except Exception:
                log.exception("console shutdown step failed")
        await console.admin.close()

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await on_start()
        try:
            yield
        finally:
            await on_stop()

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(metrics.TimingMiddleware, console=console),
            Middleware(
                SessionMiddleware,
                secret_key=session_key(console),
                session_cookie=SESSION_COOKIE,
                max_age=SESSION_HOURS * 3600,
                same_site="strict",
                https_only=config.tls_cert is not None,
            ),
            Middleware(SecurityHeaders),
        ],
        lifespan=lifespan,
        max_body_size=1024 * 1024,  # forms are small; a bigger body is refused
    )
    return console, app


class SecurityHeaders:
    """No framing, no sniffing, assets only from this server (there is no CDN)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with(message: Any) -> None:
            if message["type"] == "http.response.start":
                h = list(message.get("headers", []))
                h += [
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                ]
                message["headers"] = h
            await send(message)

        await self.app(scope, receive, send_with)


__all__ = ["Console", "FormError", "HTMLResponse", "Refused", "build"]
