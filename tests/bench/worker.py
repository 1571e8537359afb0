"""Benchmark steps run in their own process (so their memory and event loop are theirs).

``python -m tests.bench.worker rebuild LOG VIEWS``
``python -m tests.bench.worker billing COUNT HOME SMTP_HOST SMTP_PORT URL TOKEN``
``python -m tests.bench.worker baseline``
``python -m tests.bench.worker pdf-smtp COUNT SMTP_HOST SMTP_PORT``

Each prints one JSON line: {"status": "ok"|"not available"|"error", ...}.
The functions of other packages are called only if they can be imported; a
missing module or function is "not available yet", anything else an error.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.procstat import mb, status_kb


def _peak_mb() -> float | None:
    return mb(status_kb(os.getpid(), "VmHWM"))


def _find(module: str, attr: str) -> Callable[..., Any] | str:
    """The function, or why it is not available."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module.startswith(exc.name):
            return f"{module} not available yet"
        raise
    fn = getattr(mod, attr, None)
    if not callable(fn):
        return f"{module}.{attr} not available yet"
    return fn


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return asyncio.run(fn(*args, **kwargs))
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        return asyncio.run(_await(result))
    return result


async def _await(aw: Any) -> Any:
    return await aw


def rebuild(log: str, views: str) -> dict[str, Any]:
    fn = _find("projections.rebuild", "rebuild")
    if isinstance(fn, str):
        return {"status": "not available", "message": fn}
    t0 = time.perf_counter()
    result = _call(fn, Path(log), Path(views), until=None, progress=False)
    seconds = time.perf_counter() - t0
    return {
        "status": "ok",
        "seconds": seconds,
        "peak_rss_mb": _peak_mb(),
        "result": _summary(result),
    }


def billing(count: int, home: str, smtp_host: str, smtp_port: int, url: str, token: str) -> Any:
    """Calls ``tests.bench.billing_run.run(n_sales, smtp_host, smtp_port,
    engine_url, token, home)``; its own invoices/s (the process phase) is used
    if it reports one, else count / wall time."""
    fn = _find("tests.bench.billing_run", "run")
    if isinstance(fn, str):
        return {"status": "not available", "message": fn}
    given = {
        "n_sales": count,
        "count": count,
        "n": count,
        "smtp_host": smtp_host,
        "smtp_port": smtp_port,
        "engine_url": url,
        "token": token,
        "home": Path(home),
        "progress": False,
    }
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in given:
            kwargs[name] = given[name]
        elif param.default is inspect.Parameter.empty and param.kind not in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ):
            return {
                "status": "error",
                "message": f"tests.bench.billing_run.run needs {name!r}; the benchmark "
                "passes n_sales, smtp_host, smtp_port, engine_url, token, home",
            }
    t0 = time.perf_counter()
    result = _call(fn, **kwargs)
    seconds = time.perf_counter() - t0
    reported = _rate_in(result)
    invoices = _count_in(result) or count
    return {
        "status": "ok",
        "seconds": seconds,
        "invoices": invoices,
        "per_s": reported if reported is not None else invoices / seconds,
        "rate_source": "invoices_per_s reported by run()"
        if reported is not None
        else "count / wall time",
        "peak_rss_mb": _peak_mb(),
        "result": _summary(result),
    }


def _rate_in(result: Any) -> float | None:
    if isinstance(result, int | float) and not isinstance(result, bool):
        return float(result)
    if isinstance(result, dict):
        for key in ("invoices_per_s", "invoices_per_second", "per_s", "rate"):
            v = result.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return float(v)
    return None


def _count_in(result: Any) -> int | None:
    if isinstance(result, dict):
        for key in ("processed", "invoices", "count", "n"):
            v = result.get(key)
            if isinstance(v, int) and not isinstance(v, bool):
                return v
    return None


def _summary(result: Any) -> Any:
    as_dict = getattr(result, "as_dict", None)
    if callable(as_dict):  # e.g. RebuildResult: workers, their peak memory, digest
        result = as_dict()
    try:
        json.dumps(result)
        return result
    except (TypeError, ValueError):
        return repr(result)[:500]


def baseline() -> dict[str, Any]:
    """RSS of an idle Python with everything the engine imports: the memory floor."""
    import engine.server  # noqa: F401

    for name in ("projections.live", "devices.billing.intake"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            pass
    return {"status": "ok", "peak_rss_mb": _peak_mb()}


def pdf_smtp(count: int, smtp_host: str, smtp_port: int) -> dict[str, Any]:
    """Raw ceilings for billing: one-page PDFs with fpdf2, and mails with that PDF
    attached to the loopback SMTP sink over one connection (smtplib)."""
    import smtplib
    from email.message import EmailMessage

    from fpdf import FPDF

    t0 = time.perf_counter()
    pdf_bytes = b""
    for i in range(count):
        pdf = FPDF()
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.cell(0, 10, f"Invoice {i}")
        for j in range(5):
            pdf.cell(
                0, 8, f"Line {j}: consulting, 2 x 150.00 = 300.00", new_x="LMARGIN", new_y="NEXT"
            )
        pdf_bytes = bytes(pdf.output())
    pdf_rate = count / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    with smtplib.SMTP(smtp_host, smtp_port) as smtp:
        for i in range(count):
            msg = EmailMessage()
            msg["From"] = "billing@example.com"
            msg["To"] = f"customer{i}@example.com"
            msg["Subject"] = f"Invoice {i}"
            msg.set_content("Please find your invoice attached.")
            msg.add_attachment(
                pdf_bytes, maintype="application", subtype="pdf", filename="invoice.pdf"
            )
            smtp.send_message(msg)
    smtp_rate = count / (time.perf_counter() - t0)
    return {"status": "ok", "pdf_per_s": pdf_rate, "smtp_per_s": smtp_rate}


def main(argv: list[str]) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    cmd, *rest = argv
    try:
        if cmd == "rebuild":
            out = rebuild(rest[0], rest[1])
        elif cmd == "billing":
            out = billing(int(rest[0]), rest[1], rest[2], int(rest[3]), rest[4], rest[5])
        elif cmd == "baseline":
            out = baseline()
        elif cmd == "pdf-smtp":
            out = pdf_smtp(int(rest[0]), rest[1], int(rest[2]))
        else:
            out = {"status": "error", "message": f"unknown worker command {cmd!r}"}
    except Exception as exc:
        traceback.print_exc()
        out = {"status": "error", "message": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
