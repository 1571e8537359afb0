"""The engine's own screens: dashboard, devices, integrations, settings.

Reads come from the engine's admin status reply; every change is an admin
request (``engine.console.admin``), refused or done by the engine itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import segno
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from engine.console.app import FormError
from engine.editions import human_bytes
from engine.errors import SynvoiceError

if TYPE_CHECKING:
    from engine.console.app import Console

MODE_WARNING = (
    "The user mode decides how numbers are handed out. Set it once, before the first "
    "document: changing it later needs --force and may leave gaps or duplicates."
)


def qr_data_uri(text: str) -> str:
    """A QR code of ``text`` as an SVG data URI (the tablet scans the token)."""
    return str(segno.make(text, error="m").svg_data_uri(scale=4, border=2))


def text_field(form: FormData, name: str, label: str, max_len: int = 200) -> str:
    v = str(form.get(name) or "").strip()
    if not v:
        raise FormError(f"{label} is required.")
    if len(v) > max_len:
        raise FormError(f"{label} is longer than {max_len} characters.")
    return v


def register(console: Console) -> None:
    console.add_nav("/", "Dashboard", 0)
    console.add_nav("/devices", "Devices", 60)
    console.add_nav("/integrations", "Integrations", 70)
    console.add_nav("/settings", "Settings", 80)

    async def status_or_none() -> tuple[dict[str, Any] | None, str | None]:
        try:
            return await console.admin.status(), None
        except SynvoiceError as exc:
            return None, exc.message

    @console.page("/")
    async def dashboard(request: Request) -> Response:
        st, err = await status_or_none()
        panels = []
        for panel in console.panels:
            try:
                panels.append(await panel())
            except Exception as exc:
                panels.append(("panel_error.html", {"error": str(exc)}))
        return console.render(
            request,
            "dashboard.html",
            st=st,
            engine_error=err,
            panels=panels,
            errors=list(reversed(console.errors)),
            human_bytes=human_bytes,
            last_seen=_last_seen(console, st),
        )

    @console.page("/devices")
    async def devices(request: Request) -> Response:
        st, err = await status_or_none()
        return console.render(
            request,
            "devices.html",
            st=st,
            engine_error=err,
            enrolled=None,
            last_seen=_last_seen(console, st),
        )

    @console.action("/devices/enroll")
    async def enroll(request: Request, form: FormData) -> Response:
        user = text_field(form, "user", "User", 64).lower()
        name = str(form.get("name") or "").strip() or None
        r, token = await console.admin.enroll(user, name)
        st, err = await status_or_none()
        # Shown once, in this reply only: the token is the device's credential.
        return console.render(
            request,
            "devices.html",
            st=st,
            engine_error=err,
            enrolled={**r, "token": token, "qr": qr_data_uri(token)},
            last_seen=_last_seen(console, st),
        )

    @console.action("/devices/revoke")
    async def revoke(request: Request, form: FormData) -> Response:
        device_id = text_field(form, "device_id", "Device", 64)
        reason = str(form.get("reason") or "").strip() or None
        r = await console.admin.revoke(device_id, reason)
        console.flash(request, "ok", f"Device {r['device_id']} revoked.")
        return RedirectResponse("/devices", 303)

    @console.page("/integrations")
    async def integrations(request: Request) -> Response:
        st, err = await status_or_none()
        return console.render(request, "integrations.html", st=st, engine_error=err, added=None)

    @console.action("/integrations/add")
    async def integration_add(request: Request, form: FormData) -> Response:
        name = text_field(form, "name", "Name", 64)
        r = await console.admin.integration("add", name)
        st, err = await status_or_none()
        return console.render(request, "integrations.html", st=st, engine_error=err, added=r)

    @console.action("/integrations/remove")
    async def integration_remove(request: Request, form: FormData) -> Response:
        name = text_field(form, "name", "Name", 64)
        await console.admin.integration("remove", name)
        console.flash(request, "ok", f"Integration {name} removed: its broker user is gone.")
        return RedirectResponse("/integrations", 303)

    @console.page("/settings")
    async def settings(request: Request) -> Response:
        st, err = await status_or_none()
        return console.render(
            request, "settings.html", st=st, engine_error=err, warning=MODE_WARNING
        )

    @console.action("/settings/mode")
    async def set_mode(request: Request, form: FormData) -> Response:
        mode = str(form.get("mode") or "")
        if mode not in ("single", "centralized", "distributed"):
            raise FormError("Choose single, centralized or distributed.")
        if form.get("confirm") != "yes":
            raise FormError("Tick the box to confirm you read the warning.")
        r = await console.admin.set_mode(mode, form.get("force") == "yes")
        msg = f"User mode is now {r['mode']}." if r["changed"] else f"User mode is already {mode}."
        console.flash(request, "ok", msg)
        return RedirectResponse("/settings", 303)

    @console.action("/settings/register")
    async def register_key(request: Request, form: FormData) -> Response:
        key = text_field(form, "key", "Registration key", 4000)
        r = await console.admin.register(key)
        who = f" for {r['edition_licensee']}" if r.get("edition_licensee") else ""
        verb = "Registered" if r["changed"] else "Already registered"
        console.flash(request, "ok", f"{verb}: {r['edition']} edition{who}.")
        return RedirectResponse("/settings", 303)


def _last_seen(console: Console, st: dict[str, Any] | None) -> dict[str, str]:
    if not st:
        return {}
    try:
        return console.last_seen(list(st.get("devices") or {}))
    except Exception:  # the views may not exist yet
        return {}
