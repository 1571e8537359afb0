"""Embedded Unicode fonts for the PDFs, fast enough for batch billing.

The fonts come from registry packages (no font file lives in this repository):
Roboto (``font-roboto``: Latin, Greek, Cyrillic) and Noto Sans CJK JP
(``noto-cjk-sans-jp-regular``: Japanese, Chinese, Korean). Text that neither
covers makes ``check_printable`` fail with the characters named, so a document
never prints ``?``.

Why the caching: fpdf2 parses a TTF for every ``add_font`` and runs the
fontTools subsetter on it for every PDF (~40 ms for two fonts), 15x the cost of
the rest of an invoice. Here each font is parsed once per process (the
prototype ``TTFFont``) and every document gets a light copy of it whose font
program is a ``_Program``: fpdf2's subsetting step then asks a per-process
cache keyed by the glyph set, so invoices that use the same glyphs share one
subset (the base glyphs are always included, so most invoices share one).
One font program per script, no bold face: bold is drawn as filled and stroked
text, since each embedded font costs fpdf2 a 128 KB CIDToGIDMap per PDF.
"""

from __future__ import annotations

import io
import threading
import types
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import fpdf.output
from fontTools import subset as ftsubset
from fontTools import ttLib
from fpdf import FPDF
from fpdf.fonts import SubsetMap, TTFFont

MAIN = "main"  # family names inside each FPDF
CJK = "cjk"
# Always part of a document's font subset: with them, the glyph set (the cache key)
# of most invoices is the same.
BASE_CHARS = "".join(chr(c) for c in range(0x20, 0x7F)) + (
    "\u20ac\u2013\u2014\u2018\u2019\u201a\u201c\u201d\u201e\u2022\u2026\u00b0\u00a7\u00d7\u00b7"
)
_CACHE_SIZE = 256


class UnprintableText(ValueError):
    """Characters no embedded font has (the document fails; nothing prints '?')."""


def _package_file(package: str, *parts: str) -> Path:
    return Path(str(resources.files(package).joinpath(*parts)))


@dataclass(frozen=True)
class FontFiles:
    regular: Path
    cjk: Path


@cache
def font_files() -> FontFiles:
    return FontFiles(
        regular=_package_file("font_roboto", "files", "Roboto-Regular.ttf"),
        cjk=_package_file("noto_cjk_sans_jp_regular", "NotoSansCJKjp-Regular.otf"),
    )


# --- fpdf2's subsetting step, served from a cache ----------------------------------------

_Subset = tuple[bytes, dict[str, int], ttLib.TTFont]
_subsets: OrderedDict[tuple[str, frozenset[str]], _Subset] = OrderedDict()
_subsets_lock = threading.Lock()


class _Program:
    """Stands in for a fontTools ``TTFont`` in one document's ``TTFFont``: reads go
    to the shared, pristine font until fpdf2 subsets it; then ``save`` and
    ``getGlyphID`` answer from the cached subset."""

    def __init__(self, source: ttLib.TTFont, path: Path) -> None:
        self._source = source
        self._path = path
        self._stream: bytes | None = None
        self._gids: dict[str, int] = {}
        self._font = source  # the subset once made (CFF fonts read their table from it)

    def __contains__(self, tag: str) -> bool:
        return tag in self._font

    def __getitem__(self, tag: str) -> Any:
        return self._font[tag]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self._font, name)

    def getGlyphID(self, name: str) -> int:  # fontTools' name
        if self._stream is not None:
            return self._gids[name]
        return int(self._source.getGlyphID(name))

    def getGlyphName(self, gid: int) -> str:
        return str(self._source.getGlyphName(gid))

    def subset_to(self, glyphs: frozenset[str], options: Any) -> None:
        key = (str(self._path), glyphs)
        with _subsets_lock:
            hit = _subsets.get(key)
            if hit is not None:
                _subsets.move_to_end(key)
        if hit is None:
            font = ttLib.TTFont(self._path, recalcTimestamp=False)
            sub = ftsubset.Subsetter(options)
            sub.populate(glyphs=sorted(glyphs))
            sub.subset(font)
            out = io.BytesIO()
            font.save(out)
            hit = (out.getvalue(), {g: i for i, g in enumerate(font.getGlyphOrder())}, font)
            with _subsets_lock:
                _subsets[key] = hit
                while len(_subsets) > _CACHE_SIZE:
                    _subsets.popitem(last=False)
        self._stream, self._gids, self._font = hit

    def save(self, file: io.BytesIO) -> None:
        if self._stream is None:
            raise RuntimeError("font program saved before it was subset")
        file.write(self._stream)

    def close(self) -> None:
        pass  # the source is shared by every document of this process


class _Subsetter(ftsubset.Subsetter):  # type: ignore[misc]
    """fontTools' subsetter, except for ``_Program`` fonts (served from the cache)."""

    def populate(self, glyphs: Iterable[str] = (), **kw: Any) -> None:
        self._synvoice_glyphs = frozenset(glyphs)
        super().populate(glyphs=list(self._synvoice_glyphs), **kw)

    def subset(self, font: Any) -> None:
        if isinstance(font, _Program):
            font.subset_to(self._synvoice_glyphs, self.options)
        else:
            super().subset(font)


# fpdf2 reaches fontTools through this module attribute; other fonts subset as before.
setattr(  # noqa: B010 (fpdf2 has no hook for its subsetter)
    fpdf.output, "ftsubset", types.SimpleNamespace(Options=ftsubset.Options, Subsetter=_Subsetter)
)


# --- per-process prototypes, per-document copies -----------------------------------------


@dataclass(frozen=True)
class _Proto:
    font: TTFFont
    path: Path


def _proto(key: str, path: Path) -> _Proto:
    pdf = FPDF()
    pdf.add_font(key, "", path)
    font = pdf.fonts[key]
    assert isinstance(font, TTFFont)
    return _Proto(font, path)


@cache
def _main() -> _Proto:
    """The main font, parsed once per process."""
    return _proto(MAIN, font_files().regular)


@cache
def _cjk() -> _Proto:
    """The CJK font (13 MB), parsed once per process and only when a document needs it."""
    return _proto(CJK, font_files().cjk)


@cache
def _main_cover() -> frozenset[int]:
    return frozenset(_main().font.cmap)


@cache
def _cjk_cover() -> frozenset[int]:
    return frozenset(_cjk().font.cmap)


def _copy(proto: _Proto, index: int) -> TTFFont:
    """A document's own ``TTFFont``: shares the parsed tables, widths and cmap (read
    only), has its own subset map and font program."""
    src = proto.font
    font: TTFFont = TTFFont.__new__(TTFFont)
    for slot in TTFFont.__slots__:
        if hasattr(src, slot):
            setattr(font, slot, getattr(src, slot))
    font.i = index
    font.ttfont = _Program(src.ttfont, proto.path)
    font.missing_glyphs = []
    font.biggest_size_pt = 0
    font.subset = SubsetMap(font)
    return font


def check_printable(texts: Iterable[str]) -> None:
    """Raise ``UnprintableText`` naming the characters no embedded font has."""
    main = _main_cover()
    bad: dict[str, None] = {}
    for s in texts:
        for ch in s:
            if ord(ch) not in main and ch not in "\n\r\t":
                bad[ch] = None
    if bad:
        cjk = _cjk_cover()
        bad = {ch: None for ch in bad if ord(ch) not in cjk}
    if bad:
        shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in list(bad)[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise UnprintableText(f"no embedded font can print {shown}{more}")


def install(pdf: FPDF, *, cjk: bool) -> None:
    """Give ``pdf`` the fonts (the CJK one only when the document needs it)."""
    font = _copy(_main(), len(pdf.fonts) + 1)
    pdf.fonts[MAIN] = font
    for ch in BASE_CHARS:  # see BASE_CHARS
        font.subset.pick(ord(ch))
    if cjk:
        proto = _cjk()
        pdf.fonts[CJK] = _copy(proto, len(pdf.fonts) + 1)
        if proto.font.is_cff and proto.font.is_cid_keyed:
            pdf._set_min_pdf_version("1.6")


def needs_cjk(texts: Iterable[str]) -> bool:
    main = _main_cover()
    return any(ord(ch) not in main for s in texts for ch in s if ch not in "\n\r\t")


def runs(text: str) -> list[tuple[str, str]]:
    """``text`` split into (family, part) runs: the main font where it has the
    glyph, the CJK font for the rest (call ``check_printable`` first)."""
    main = _main_cover()
    out: list[tuple[str, str]] = []
    for ch in text:
        fam = MAIN if ord(ch) in main else CJK
        if out and out[-1][0] == fam:
            out[-1] = (fam, out[-1][1] + ch)
        else:
            out.append((fam, ch))
    return out


def warm() -> None:
    """Parse the main font now (worker processes call it once, not per document)."""
    _main_cover()
