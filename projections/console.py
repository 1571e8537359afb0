"""The console's read pages over the views (``DATA/views.sqlite``): documents,
a document's history, duplicates and gaps, the audit.

Contributed through the ``synvoice.console`` entry point; reads only (the
projections write no events). Each request reads through its own read-only
connection in a thread: SQLite's WAL lets it read while the live worker writes.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
import uuid
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from engine.console.app import FormError, gap_key
from engine.hashchain import ChainVerifier
from engine.log import iter_records, open_readonly
from engine.schema.common import KINDS
from projections.store import DIGEST_TABLES, ViewsError, ViewStore

if TYPE_CHECKING:
    from engine.console.app import Console

PAGE_SIZE = 50
COUNT_CAP = 10_000  # a filtered list counts up to here, then says "10,000+"
LIST_INDEX = "documents_list"  # projections.store INDEXES
TEMPLATES = Path(__file__).parent / "templates"
STATUSES = ("draft", "issued", "void")
LIST_COLUMNS = (
    "doc_id",
    "kind",
    "number",
    "status",
    "user",
    "device_id",
    "customer",
    "currency",
    "total",
    "issue_date",
    "updated_at",
    "last_position",
)
CSV_VIEWS = (*(t for t, _, _ in DIGEST_TABLES), "unassigned")


# --- pure helpers (tested without a server) -------------------------------------------


def ranges(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted numbers as runs of consecutive ones: [1,2,3,7] -> [(1,3),(7,7)]."""
    out: list[tuple[int, int]] = []
    for n in sorted(set(numbers)):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def list_query(f: dict[str, str], before: int | None) -> tuple[str, str, list[Any]]:
    """(where clause, order/limit, args) for the documents list; newest first,
    keyset paging on ``last_position`` (the covering documents_list index)."""
    where: list[str] = ["created = 1"]
    args: list[Any] = []
    if f.get("kind"):
        where.append("kind = ?")
        args.append(f["kind"])
    if f.get("status"):
        where.append("status = ?")
        args.append(f["status"])
    if f.get("user"):
        where.append("user = ?")
        args.append(f["user"])
    if (f.get("number") or f.get("unassigned")) and not f.get("kind"):
        # every kind named: SQLite then seeks the documents_number index (kind, number)
        where.append(f"kind IN ({', '.join('?' * len(KINDS))})")
        args += list(KINDS)
    if f.get("number"):
        where.append("number = ?")
        args.append(int(f["number"]))
    if f.get("unassigned"):
        where.append("number = 0 AND status != 'void'")
    if f.get("customer"):
        where.append("customer LIKE ? ESCAPE '\\'")
        args.append("%" + _like(f["customer"]) + "%")
    if f.get("q"):
        q = f["q"]
        alts = ["customer LIKE ? ESCAPE '\\'", "doc_id LIKE ? ESCAPE '\\'"]
        qargs: list[Any] = ["%" + _like(q) + "%", _like(q.lower()) + "%"]
        if q.isascii() and q.isdigit() and len(q) < 12:
            alts.append("number = ?")
            qargs.append(int(q))
        where.append("(" + " OR ".join(alts) + ")")
        args += qargs
    base = " AND ".join(where)
    page = ""
    if before is not None:
        page = " AND last_position < ?"
    return base, page, args


def _like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def parse_filters(params: Any) -> dict[str, str]:
    """The list's filters from the query string; bad values are a FormError."""
    f = {
        k: str(params.get(k) or "").strip()[:200]
        for k in ("kind", "status", "user", "number", "customer", "q")
    }
    f["unassigned"] = "1" if params.get("unassigned") else ""
    if f["kind"] and f["kind"] not in KINDS:
        raise FormError(f"Kind must be one of {', '.join(KINDS)}.")
    if f["status"] and f["status"] not in STATUSES:
        raise FormError(f"Status must be one of {', '.join(STATUSES)}.")
    if f["number"] and not (
        f["number"].isascii() and f["number"].isdigit() and len(f["number"]) <= 12
    ):
        raise FormError("Number must be a whole number.")
    return f


def _page(
    s: ViewStore, index: str, where: str, page: str, args: list[Any], before: int | None
) -> tuple[list[dict[str, Any]], int]:
    """One page (PAGE_SIZE + 1 rows: is there more?) and the count, capped when filtered."""
    src = f"documents INDEXED BY {index}" if index else "documents"
    cols = ", ".join(LIST_COLUMNS)
    sql = f"SELECT {cols} FROM {src} WHERE {where}{page} ORDER BY last_position DESC LIMIT ?"
    rows = s._dicts(sql, [*args, *([before] if before is not None else []), PAGE_SIZE + 1])
    if where == "created = 1":  # the smallest index counts (a placeholder row is rare)
        q, qargs = "SELECT COUNT(*) FROM documents", []
    else:  # bounded work: a filtered count stops at the cap ("10,000+")
        q = f"SELECT COUNT(*) FROM (SELECT 1 FROM {src} WHERE {where} LIMIT ?)"
        qargs = [*args, COUNT_CAP + 1]
    total = int(s.conn.execute(q, qargs).fetchone()[0])
    return rows, total


def _display_numbers(s: ViewStore, rows: list[dict[str, Any]]) -> None:
    """Add each row's number as its pattern shows it (INV-2026-0042), where the
    kind has a pattern: one query for the page's numbering moments, none without."""
    ns = s.numbering()
    if not ns.patterns or not rows:
        return
    ids = [r["doc_id"] for r in rows if r["number"] and r["kind"] in ns.patterns]
    if not ids:
        return
    q = (
        "SELECT doc_id, COALESCE(numbered_at, created_at) FROM documents "
        f"WHERE doc_id IN ({','.join('?' * len(ids))})"
    )
    at = dict(s.conn.execute(q, ids).fetchall())
    for r in rows:
        if r["doc_id"] in at:
            r["display_number"] = ns.display(r["kind"], r["number"], at[r["doc_id"]], r["user"])


# --- reading ------------------------------------------------------------------------------


class Views:
    """Read-only access to the views file (one connection per call, in a thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _store(self) -> ViewStore:
        return ViewStore.open_readonly(self.path)

    def position(self) -> int:
        if not self.path.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            s = ViewStore(self.path, conn)
            return s.checkpoint()[0]
        except sqlite3.Error:
            return 0
        finally:
            conn.close()

    def page(self, f: dict[str, str], before: int | None) -> dict[str, Any]:
        s = self._store()
        try:
            where, page, args = list_query(f, before)
            # By number: the number index finds the few rows; else newest first on
            # the covering list index.
            index = "" if f.get("number") or f.get("unassigned") else LIST_INDEX
            try:
                rows, total = _page(s, index, where, page, args, before)
            except sqlite3.OperationalError as exc:  # a views file from before the index
                if "no such index" not in str(exc):
                    raise
                rows, total = _page(s, "", where, page, args, before)
            more = len(rows) > PAGE_SIZE
            rows = rows[:PAGE_SIZE]
            _display_numbers(s, rows)
            return {
                "rows": rows,
                "total": total,
                "capped": total > COUNT_CAP,
                "next": rows[-1]["last_position"] if more and rows else None,
                "position": s.checkpoint()[0],
            }
        finally:
            s.close()

    def document(self, doc_id: str) -> dict[str, Any] | None:
        s = self._store()
        try:
            doc = s.document(doc_id)
            if doc is None:
                return None
            view = s.load_document(doc_id)
            if view is not None and view.number:
                at = view.numbered_at or view.created_at
                doc["display_number"] = s.numbering().display(view.kind, view.number, at, view.user)
            renumberings = s._dicts(
                "SELECT position, old_number, new_number, source, user, device_id, committed_at "
                "FROM renumberings WHERE doc_id = ? ORDER BY position",
                (doc_id,),
            )
            holders = (
                [h for h in s.holders(doc["kind"], doc["period"], doc["number"]) if h != doc_id]
                if doc["number"]
                else []
            )
            return {
                "doc": doc,
                "view": view,
                "history": s.history(doc_id),
                "renumberings": renumberings,
                "conflicts": s.conflicts(doc_id),
                "others": holders,
            }
        finally:
            s.close()

    def numbers(self) -> dict[str, Any]:
        s = self._store()
        try:
            dups = s.duplicates()
            # One group per series: a kind, and its period where the pattern resets.
            by_series: dict[tuple[str, str], dict[int, list[dict[str, Any]]]] = {}
            for d in dups:
                key = (d["kind"], d["period"])
                by_series.setdefault(key, {}).setdefault(d["number"], []).append(d)
            groups = [
                {
                    "kind": k,
                    "period": p,
                    "ranges": ranges(list(nums)),
                    "numbers": sorted(nums.items()),
                }
                for (k, p), nums in sorted(by_series.items())
            ]
            return {"duplicates": groups, "gaps": s.gaps(), "unassigned": s.counts()["unassigned"]}
        finally:
            s.close()

    def problems(self, explained: Collection[str] = ()) -> tuple[int, int]:
        """(numbers held twice, numbers missing and not explained): the banner's figures."""
        if not self.path.exists():
            return 0, 0
        s = self._store()
        try:
            c = s.conn
            dup = int(
                c.execute(
                    "SELECT COUNT(*) FROM (SELECT DISTINCT kind, period, number FROM duplicates)"
                ).fetchone()[0]
            )
            rows = c.execute("SELECT kind, series, first, last, missing, period FROM gaps")
            gap = sum(
                int(m) for k, sr, f, la, m, p in rows if gap_key(k, sr, f, la, p) not in explained
            )
            return dup, gap
        finally:
            s.close()

    def last_seen(self, device_ids: Collection[str]) -> dict[str, str]:
        """When each device's last event was committed (one index seek per device)."""
        if not self.path.exists():
            return {}
        s = self._store()
        try:
            out: dict[str, str] = {}
            for d in device_ids:
                row = s.conn.execute(
                    "SELECT committed_at FROM history WHERE device_id = ? "
                    "ORDER BY position DESC LIMIT 1",
                    (d,),
                ).fetchone()
                if row:
                    out[d] = str(row[0])
            return out
        finally:
            s.close()

    def digest(self) -> dict[str, Any]:
        s = self._store()
        try:
            return {"digest": s.digest(), "position": s.checkpoint()[0], "counts": s.counts()}
        finally:
            s.close()

    def csv_rows(self, table: str) -> Iterator[str]:
        s = self._store()
        try:
            cols, rows = s.iter_table(table)
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(cols)
            for i, r in enumerate(rows):
                w.writerow(r)
                if i % 1000 == 999:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()
        finally:
            s.close()


async def verify_chain(log_path: Path) -> dict[str, Any]:
    """Recompute the log's hash chain from its stored bytes (read-only)."""
    conn = await open_readonly(log_path)
    try:
        v = ChainVerifier()
        async for chunk in iter_records(conn):
            for r in chunk:
                if v.feed(r.position, r.body, r.hash) is not None:
                    break
            if v.broken is not None:
                break
        return {"checked": v.checked, "broken": str(v.broken) if v.broken else None}
    finally:
        await conn.close()


# --- the pages ---------------------------------------------------------------------------


def register(console: Console) -> None:
    views = Views(console.views_path)
    console.add_templates(TEMPLATES)
    console.add_nav("/documents", "Documents", 10)
    console.add_nav("/numbers", "Duplicates & gaps", 20)
    console.add_nav("/audit", "Audit", 90)
    console.live_sources["views"] = views.position
    console.last_seen = views.last_seen

    def banner() -> list[tuple[str, str]]:
        dup, gap = views.problems(console.gap_notes())
        if not dup and not gap:
            return []
        parts = []
        if dup:
            parts.append(f"{dup} number{'s' if dup != 1 else ''} held twice")
        if gap:
            parts.append(f"{gap} number{'s' if gap != 1 else ''} missing")
        return [
            (
                "warn",
                f'<span id="numbers-banner">Numbering: {", ".join(parts)}.</span> '
                '<a href="/numbers">Resolve</a>',
            )
        ]

    console.banners.append(banner)

    async def in_thread(fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except ViewsError as exc:
            raise FormError(f"The views are not ready: {exc}") from None

    @console.page("/documents")
    async def documents(request: Request) -> Response:
        try:
            f = parse_filters(request.query_params)
            raw_before = request.query_params.get("before")
            before = int(raw_before) if raw_before else None
        except ValueError:
            f, before = parse_filters({}), None
            console.flash(request, "error", "Bad page position.")
        except FormError as exc:
            console.flash(request, "error", str(exc))
            f, before = parse_filters({}), None
        data = await in_thread(views.page, f, before)
        keep = {k: v for k, v in f.items() if v}
        return console.render(
            request, "documents.html", f=f, keep=keep, kinds=KINDS, statuses=STATUSES, **data
        )

    @console.page("/documents/{doc_id}")
    async def document(request: Request) -> Response:
        raw = request.path_params["doc_id"]
        try:
            doc_id = str(uuid.UUID(raw))
        except ValueError:
            raise FormError(f"{raw[:60]!r} is not a document id.") from None
        data = await in_thread(views.document, doc_id)
        if data is None:
            return console.render(
                request, "refused.html", status=404, message=f"No document {doc_id} in the views."
            )
        return console.render(request, "document.html", **data)

    @console.page("/numbers")
    async def numbers(request: Request) -> Response:
        data = await in_thread(views.numbers)
        notes = console.gap_notes()
        for g in data["gaps"]:
            g["explained"] = notes.get(
                gap_key(g["kind"], g["series"], g["first"], g["last"], g["period"])
            )
        return console.render(request, "numbers.html", **data)

    @console.page("/audit")
    async def audit(request: Request) -> Response:
        data = await in_thread(views.digest)
        return console.render(request, "audit.html", chain=None, views=CSV_VIEWS, **data)

    @console.action("/audit/verify", role="auditor")
    async def audit_verify(request: Request, form: Any) -> Response:
        try:
            chain = await verify_chain(console.data_dir / "log.sqlite")
        except FileNotFoundError as exc:
            raise FormError(str(exc)) from None
        data = await in_thread(views.digest)
        return console.render(request, "audit.html", chain=chain, views=CSV_VIEWS, **data)

    @console.page("/audit/{table}.csv")
    async def audit_csv(request: Request) -> Response:
        table = request.path_params["table"]
        if table not in CSV_VIEWS:
            raise FormError(f"No view {table[:40]!r}: choose one of {', '.join(CSV_VIEWS)}.")
        await in_thread(views.position)
        return StreamingResponse(
            _iterate_in_thread(views.csv_rows(table)),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{table}.csv"'},
        )


async def _iterate_in_thread(it: Iterator[str]) -> Any:
    sentinel = object()
    while True:
        chunk = await asyncio.to_thread(next, it, sentinel)
        if chunk is sentinel:
            return
        yield chunk
