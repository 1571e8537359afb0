"""The projection state: every view's content, folded from log events. Pure: no I/O.

``Projector.apply`` takes one stored event (its wire map, as decoded from the
log) in strict position order and updates the in-memory state: documents (via
``engine.document.fold_wire``), the number index behind duplicates and
gaps (counts per number in each series: a kind and, where its pattern resets,
a period; ``projections.numindex``), and the numbering settings (user mode,
user slots, epochs, number patterns). It also queues what the writer must persist
(``take_changes``): changed documents, appended history/renumbering/conflict
rows, the duplicate groups and gap lists that changed, and the checkpoint. The
live engine plugin, the standalone JetStream projection and the replay tool all
drive this one class.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.document import Conflict, DocumentView, fold_wire
from engine.hashchain import GENESIS, declares_gap
from engine.numbering import Epoch
from engine.schema.common import KINDS, UserMode
from engine.settings_fold import NumberingSettings
from engine.stored import StoredEventError
from projections.numbers import Gap, find_gaps
from projections.numindex import NumberIndex

History = tuple[int, str, str, str, str, str, str, str]
Renumbering = tuple[int, str, str, int, int, str, str, str, str]
ConflictRow = tuple[int, str, str, str, str, str]
Loader = Callable[[str], DocumentView | None]
# A number in its series: (kind, period, number); period "" unless the kind resets.
NumberKey = tuple[str, str, int]
# (kind, period, number) -> ids of the persisted documents holding it (views not
# in memory)
Finder = Callable[[str, str, int], Iterable[str]]
ManyLoader = Callable[[Collection[str]], dict[str, DocumentView]]
_KINDS = frozenset(KINDS)


@dataclass
class Changes:
    """What one writer transaction persists (all or nothing, with the checkpoint)."""

    position: int
    last_hash: bytes
    docs: list[DocumentView] = field(default_factory=list)
    history: list[History] = field(default_factory=list)
    renumberings: list[Renumbering] = field(default_factory=list)
    conflicts: list[ConflictRow] = field(default_factory=list)
    # (kind, period, number) -> the doc ids holding it now ([]: held once or not at
    # all, so no longer a duplicate)
    duplicates: dict[NumberKey, list[str]] = field(default_factory=dict)
    gaps: dict[str, list[Gap]] = field(default_factory=dict)  # kinds recomputed
    settings: dict[str, Any] | None = None

    @property
    def empty(self) -> bool:
        return not (
            self.docs
            or self.history
            or self.renumberings
            or self.conflicts
            or self.duplicates
            or self.gaps
            or self.settings
        )


def _name(customer: Any) -> str:
    return str(customer.get("name", "")) if isinstance(customer, dict) else ""


def summarize(t: str, d: Mapping[str, Any], kind: str, old_number: int, status: str) -> str:
    """A one-line, deterministic description of a document event for the history view."""
    if t == "document.created":
        n = d.get("number", 0)
        what = (
            f"created {kind} #{n} ({d.get('number_source', 'device')})"
            if n
            else (f"created {kind} without number")
        )
        who = _name(d.get("customer"))
        lines = len(d.get("lines", ()))
        s = f"{what}{' for ' + who if who else ''}, {lines} line{'s' * (lines != 1)}"
        if d.get("converted_from"):
            s += f", from {d['converted_from']}"
        if d.get("credits"):
            s += f", credits {d['credits']}"
        return s
    if t == "document.number_assigned":
        return f"number {old_number} -> {d.get('number')} ({d.get('source')})"
    if t == "document.customer_changed":
        return f"customer: {_name(d.get('customer'))}"
    if t == "document.lines_changed":
        lines = len(d.get("lines", ()))
        return f"lines: {lines} line{'s' * (lines != 1)}"
    if t == "document.dates_changed":
        return f"dates: issue {d.get('issue_date') or '-'}, due {d.get('due_date') or '-'}"
    if t == "document.issued":
        return "issued" if status == "draft" else f"issue ignored (status was {status})"
    if t == "document.voided":
        r = d.get("reason")
        return f"voided: {r}" if r else "voided"
    if t == "document.converted":
        return f"converted to invoice {d.get('invoice_id')}"
    return t


class Projector:
    def __init__(self) -> None:
        self.position = 0
        self.last_hash = GENESIS
        self.docs: dict[str, DocumentView] = {}
        # (kind, period) -> number -> how many documents hold it (behind duplicates
        # and gaps)
        self.numbers = NumberIndex(KINDS)
        # The user mode, users' slots, epochs and patterns: the engine's own fold.
        self.numbering = NumberingSettings()
        self.highest: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.loader: Loader | None = None  # brings back a view not in ``docs``
        self.finder: Finder | None = None  # holders among the views not in ``docs``
        self.loader_many: ManyLoader | None = None  # ``loader`` for a whole batch
        self._absent: set[str] = set()  # ids ``preload`` found nowhere: new documents
        self._reset_pending()

    def _reset_pending(self) -> None:
        self._dirty_docs: set[str] = set()
        self._history: list[History] = []
        self._renumberings: list[Renumbering] = []
        self._conflicts: list[ConflictRow] = []
        self._dirty_numbers: set[NumberKey] = set()
        self._dirty_kinds: set[str] = set()
        self._settings_dirty = False

    @property
    def mode(self) -> UserMode:
        return self.numbering.mode

    @property
    def users(self) -> dict[str, int]:
        """user -> slot"""
        return self.numbering.users

    @property
    def epochs(self) -> dict[str, list[Epoch]]:
        return self.numbering.epochs

    # --- state in and out --------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        snap = self.numbering.to_snapshot()
        snap["users"] = dict(sorted(snap["users"].items()))
        snap["highest"] = dict(self.highest)
        return snap

    @classmethod
    def restore(
        cls,
        position: int,
        last_hash: bytes,
        settings: Mapping[str, Any] | None,
        docs: Iterable[DocumentView] = (),
        numbers: Iterable[tuple[str, str, int]] = (),
        loader: Loader | None = None,
        finder: Finder | None = None,
        loader_many: ManyLoader | None = None,
    ) -> Projector:
        """The state as persisted: either every view (``docs``), or only the number
        index (``numbers``: (kind, period, number) of each document) with a ``loader`` that
        brings a view back when an event needs it and a ``finder`` that names the
        holders of a duplicate number (memory stays bounded)."""
        p = cls()
        p.position = position
        p.last_hash = last_hash
        p.loader = loader
        p.finder = finder
        p.loader_many = loader_many
        # Gap lists may have been deferred (see take_changes): recompute them once.
        p._dirty_kinds.update(KINDS)
        if settings:
            p.numbering = NumberingSettings.from_snapshot(settings)
            p.highest.update(settings["highest"])
        add = p.numbers.add
        for v in docs:
            p.docs[v.doc_id] = v
            add(v.kind, v.number, v.period)
        for kind, period, number in numbers:
            add(kind, number, period)
        return p

    def evict(self, keep: int) -> None:
        """Forget the cached views (after they were persisted) when more than ``keep``;
        only with a loader, which brings them back on demand."""
        self._absent.clear()  # evicted views are persisted: no longer "nowhere"
        if self.loader is not None and len(self.docs) > keep and not self._dirty_docs:
            self.docs.clear()

    def preload(self, doc_ids: Iterable[Any]) -> None:
        """Bring back, in one query, the views a batch of events will touch (one
        ``loader`` call per event was most of a small batch's cost)."""
        if self.loader_many is None:
            return
        want = {d for d in doc_ids if isinstance(d, str) and d not in self.docs}
        if want:
            found = self.loader_many(want)
            self.docs.update(found)
            self._absent.update(want.difference(found))

    # --- folding -------------------------------------------------------------------------

    def apply(self, ev: Mapping[str, Any], record_hash: bytes = b"") -> None:
        """Fold the next event (``ev["position"]`` must be ``self.position + 1``)."""
        pos = ev["position"]
        if pos != self.position + 1 and not declares_gap(self.position, pos, ev):
            raise StoredEventError(pos, f"out of order: the projection is at {self.position}")
        t = ev["type"]
        try:
            if t[:9] == "document.":
                self._document(ev, pos, t)
            elif t[:9] == "settings." or t[:10] == "numbering.":
                self._setting(ev, t)
            # Other event types (e.g. billing) are not about these views.
        except StoredEventError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoredEventError(pos, f"cannot fold {t}: {type(exc).__name__}: {exc}") from None
        self.position = pos
        if record_hash:
            self.last_hash = record_hash

    def skip(self, position: int, record_hash: bytes) -> None:
        """Pass over the next record without folding it: it is another projector's
        (a partitioned rebuild folds each document in exactly one projector)."""
        if position != self.position + 1:
            raise StoredEventError(position, f"out of order: the projection is at {self.position}")
        self.position = position
        self.last_hash = record_hash

    def _document(self, ev: Mapping[str, Any], pos: int, t: str) -> None:
        doc_id = ev["doc_id"]
        kind = ev["kind"]
        if kind not in _KINDS or not isinstance(doc_id, str):
            raise StoredEventError(pos, f"{t} without a valid doc_id and kind")
        v = self.docs.get(doc_id)
        if v is None:
            if self.loader is not None and doc_id not in self._absent:
                v = self.loader(doc_id)
            if v is None:
                v = DocumentView(doc_id, kind)
            self.docs[doc_id] = v
        old_kind = v.kind
        old_number = v.number
        old_period = v.period
        old_status = v.status
        conflicts: list[Conflict] = []
        fold_wire(v, ev, conflicts)
        self._dirty_docs.add(doc_id)
        if self.numbering.patterns:
            # Its series' period: the settings of now, kept with the view.
            v.period = self.numbering.period_of(v)
        if v.number != old_number or v.kind != old_kind or v.period != old_period:
            self._renumber((old_kind, old_period, old_number), (v.kind, v.period, v.number))
            if t == "document.number_assigned" and old_number:
                self._renumberings.append(
                    (
                        pos,
                        doc_id,
                        v.kind,
                        old_number,
                        v.number,
                        v.number_source,
                        ev["user"],
                        ev["device_id"],
                        ev["committed_at"],
                    )
                )
        if conflicts:
            for c in conflicts:
                self._conflicts.append((pos, c.doc_id, c.field, c.kind, c.winner, c.loser))
        self._history.append(
            (
                pos,
                doc_id,
                t,
                ev["user"],
                ev["device_id"],
                ev["device_time"],
                ev["committed_at"],
                summarize(t, ev["data"], kind, old_number, old_status),
            )
        )

    def _renumber(self, old_key: NumberKey, key: NumberKey) -> None:
        """Move a document in the number index (and mark what to recompute)."""
        old_kind, old_period, old = old_key
        kind, period, new = key
        if old:
            self.numbers.remove(old_kind, old, old_period)
            self._dirty_numbers.add(old_key)
            self._dirty_kinds.add(old_kind)
        if new:
            self.numbers.add(kind, new, period)
            self._dirty_numbers.add(key)
            self._dirty_kinds.add(kind)
            if new > self.highest[kind]:
                self.highest[kind] = new
                self._settings_dirty = True  # ``highest`` is persisted with the settings

    def _setting(self, ev: Mapping[str, Any], t: str) -> None:
        # A switch away from distributed ends the epochs where numbering stood
        # (see projections.numbers).
        if self.numbering.apply(t, ev["data"], self.highest) is None:
            return  # device enrolment/revocation: not part of these views
        self._settings_dirty = True
        self._dirty_kinds.update(KINDS)

    # --- what to persist ---------------------------------------------------------------

    def take_appends(self) -> Changes:
        """Only the append-only rows (history, renumberings, conflicts) so far; the
        rest stays pending. A rebuild spills these inside its one transaction."""
        ch = Changes(
            self.position,
            self.last_hash,
            history=self._history,
            renumberings=self._renumberings,
            conflicts=self._conflicts,
        )
        self._history, self._renumberings, self._conflicts = [], [], []
        return ch

    def forget_changed(self) -> None:
        """Forget which views and numbers changed, for a caller that writes every
        view itself (a bulk rebuild): the sets would grow to every document."""
        self._dirty_docs = set()
        self._dirty_numbers = set()

    def take_changes(self, defer_gaps_above: int | None = None) -> Changes:
        """Everything to persist since the last call, up to ``self.position``.

        ``defer_gaps_above``: keep the gap lists of kinds with more numbers than
        this pending (recomputing a big series on every small batch costs more
        than the batch); ``gaps_pending`` says when some are.
        """
        ch = self.take_appends()
        ch.docs = [self.docs[d] for d in sorted(self._dirty_docs)]
        count = self.numbers.count
        held = self.holders_of([x for x in self._dirty_numbers if count(x[0], x[2], x[1]) > 1])
        for key in sorted(self._dirty_numbers):
            ch.duplicates[key] = held.get(key, [])
        deferred = set()
        for kind in sorted(self._dirty_kinds):
            if defer_gaps_above is not None and self.numbers.distinct(kind) > defer_gaps_above:
                deferred.add(kind)
            else:
                ch.gaps[kind] = self.gaps(kind)
        if self._settings_dirty:
            ch.settings = self.settings()
        self._reset_pending()
        self._dirty_kinds = deferred
        return ch

    @property
    def settings_changed(self) -> bool:
        """Settings changed since the last ``take_changes`` (they are persisted then)."""
        return self._settings_dirty

    @property
    def gaps_pending(self) -> bool:
        return bool(self._dirty_kinds)

    # --- derived views -----------------------------------------------------------------

    def gaps(self, kind: str) -> list[Gap]:
        """The gaps of every series of ``kind`` (each period's, when it resets)."""
        nums = self.numbers
        out: list[Gap] = []
        for period in nums.periods(kind):
            eps = self.epochs[kind] if not period else ()
            out.extend(find_gaps(kind, nums.numbers(kind, period), eps, period))
        return out

    def holders_of(self, keys: Iterable[NumberKey]) -> dict[NumberKey, list[str]]:
        """(kind, period, number) -> sorted ids of the documents holding it: the
        views in memory, and (through ``finder``) the persisted ones not in memory."""
        wanted = set(keys)
        out: dict[NumberKey, list[str]] = {k: [] for k in wanted}
        if not wanted:
            return out
        docs = self.docs
        for v in docs.values():
            held = out.get((v.kind, v.period, v.number))
            if held is not None:
                held.append(v.doc_id)
        if self.finder is not None:
            for key, held in out.items():
                held.extend(d for d in self.finder(*key) if d not in docs)
        for held in out.values():
            held.sort()
        return out

    def duplicates(self) -> list[tuple[str, str, int, list[str]]]:
        """(kind, period, number, doc ids) of every number held twice in its series."""
        nums = self.numbers
        keys = [(k, p, n) for k, p in nums.series() for n in nums.held_twice(k, p)]
        held = self.holders_of(keys)
        return [(k, p, n, held[(k, p, n)]) for k, p, n in keys]
