"""Number patterns: how a series' integer sequence number is shown. Pure: no I/O.

A pattern is literal text with tokens, e.g. ``INV-{YYYY}-{SEQ:4}``:

* ``{SEQ}`` the sequence number (exactly once); ``{SEQ:n}`` zero-padded to n digits;
* ``{YYYY}``, ``{YY}``, ``{MM}`` the year and month the number was assigned,
  in the business's time zone;
* ``{USER}`` the user's name, ``{SLOT}`` their slot (distributed mode: each user's
  numbers are their own series, so the pattern should name it).

``reset`` is ``never``, ``yearly`` or ``monthly``: the period a sequence runs in
(``period_of``). The document keeps its integer ``number``; its display number is
derived from the pattern in force when it was numbered, the period of that
moment and the number, so a later pattern change never rewrites issued numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

RESETS = ("never", "yearly", "monthly")
MAX_PATTERN = 64
MAX_PAD = 12

_TOKEN = re.compile(r"\{([A-Z]+)(?::(\d+))?\}")
_LITERAL = re.compile(r"^[^{}\x00-\x1f\x7f]*$")
_NAMES = ("SEQ", "YYYY", "YY", "MM", "USER", "SLOT")


class PatternError(ValueError):
    """A pattern, reset or time zone that cannot be used (the message says why)."""


@dataclass(frozen=True)
class NumberPattern:
    text: str = "{SEQ}"
    reset: str = "never"
    tz: str = "UTC"
    since: str = ""  # ISO time from which it numbers ("" : always)

    def period(self, when: datetime) -> str:
        return period_of(self.reset, self.tz, when)

    def display(
        self, number: int, when: datetime | None, user: str | None = None, slot: int | None = None
    ) -> str:
        return format_number(self, number, when, user, slot)


def _tokens(text: str) -> list[tuple[str, int | None]]:
    out: list[tuple[str, int | None]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        lit = text[pos : m.start()]
        if not _LITERAL.match(lit):
            raise PatternError(f"unexpected brace or control character in {lit!r}")
        if lit:
            out.append(("", None))
        name, pad = m.group(1), m.group(2)
        if name not in _NAMES:
            raise PatternError(f"unknown token {{{name}}}: use {', '.join(_NAMES)}")
        if pad is not None and name != "SEQ":
            raise PatternError(f"only {{SEQ}} takes a width, not {{{name}:{pad}}}")
        if pad is not None and not 1 <= int(pad) <= MAX_PAD:
            raise PatternError(f"{{SEQ:n}} needs 1 <= n <= {MAX_PAD}")
        out.append((name, None if pad is None else int(pad)))
        pos = m.end()
    if not _LITERAL.match(text[pos:]):
        raise PatternError(f"unexpected brace or control character in {text[pos:]!r}")
    return out


def check_pattern(text: str, reset: str = "never", tz: str = "UTC") -> NumberPattern:
    """The pattern if it can number a series, else ``PatternError``."""
    if not 1 <= len(text) <= MAX_PATTERN:
        raise PatternError(f"a pattern has 1 to {MAX_PATTERN} characters")
    names = [n for n, _ in _tokens(text) if n]
    if names.count("SEQ") != 1:
        raise PatternError("a pattern holds {SEQ} (or {SEQ:n}) exactly once")
    if reset not in RESETS:
        raise PatternError(f"reset must be one of {', '.join(RESETS)}")
    has_year = "YYYY" in names or "YY" in names
    if reset == "yearly" and not has_year:
        raise PatternError("a yearly reset needs {YYYY} or {YY} in the pattern")
    if reset == "monthly" and not (has_year and "MM" in names):
        raise PatternError("a monthly reset needs the year and {MM} in the pattern")
    zone(tz)
    return NumberPattern(text, reset, tz)


@lru_cache(maxsize=64)
def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PatternError(
            f"unknown time zone {tz!r} (use an IANA name, e.g. Europe/Berlin)"
        ) from None


def local(tz: str, when: datetime) -> datetime:
    """``when`` (aware; naive means UTC) in the business's time zone."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(zone(tz))


def period_of(reset: str, tz: str, when: datetime) -> str:
    """The period a number assigned at ``when`` runs in: "" (never), "2026", "2026-03"."""
    if reset == "never":
        return ""
    t = local(tz, when)
    return f"{t.year:04d}" if reset == "yearly" else f"{t.year:04d}-{t.month:02d}"


def format_number(
    p: NumberPattern,
    number: int,
    when: datetime | None,
    user: str | None = None,
    slot: int | None = None,
) -> str:
    """The display number. Number 0 (not yet assigned) shows as "0"."""
    if number <= 0:
        return "0"
    t = local(p.tz, when) if when is not None else None
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(p.text):
        out.append(p.text[pos : m.start()])
        name, pad = m.group(1), m.group(2)
        if name == "SEQ":
            out.append(str(number).zfill(int(pad)) if pad else str(number))
        elif name == "USER":
            out.append(user or "")
        elif name == "SLOT":
            out.append(str(slot or ""))
        elif t is None:
            out.append("?" * len(name))
        elif name == "YYYY":
            out.append(f"{t.year:04d}")
        elif name == "YY":
            out.append(f"{t.year % 100:02d}")
        else:  # MM
            out.append(f"{t.month:02d}")
        pos = m.end()
    out.append(p.text[pos:])
    return "".join(out)


def in_force(history: list[NumberPattern], when: datetime | None) -> NumberPattern | None:
    """The pattern that numbered at ``when``: the last one set at or before it
    (the history is in log order). None: numbered before any pattern."""
    if when is None:
        return history[-1] if history else None
    found: NumberPattern | None = None
    for p in history:
        if not p.since or _parse(p.since) <= _aware(when):
            found = p
    return found


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


@lru_cache(maxsize=256)
def _parse(iso: str) -> datetime:
    return _aware(datetime.fromisoformat(iso))
