"""Reading PDFs back in tests (pypdf text, pdfium pictures)."""

from __future__ import annotations

import io
from pathlib import Path

from pypdf import PdfReader


def pdf_text(pdf: bytes) -> str:
    """Every page's text. pypdf reads the 2-byte codes of the CJK font (a CID-keyed
    CFF font) with a NUL before each character; pdfium and viewers do not, so the
    NULs are dropped here."""
    reader = PdfReader(io.BytesIO(pdf))
    return "\n".join(p.extract_text() for p in reader.pages).replace("\x00", "")


def png_of_first_page(pdf: bytes, out: Path, scale: float = 1.0) -> Path:
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(pdf)
    try:
        image = doc[0].render(scale=scale).to_pil()
        out.parent.mkdir(parents=True, exist_ok=True)
        image.save(out, optimize=True)
    finally:
        doc.close()
    return out
