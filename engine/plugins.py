"""Entry-point plugins: how the engine and the CLI reach the layers above them.

``engine`` imports nothing above it. The packages above add CLI subcommands
(group ``synvoice.cli``: ``register(subparsers)``) and engine attachments (group
``synvoice.engine``: ``async attach(server)``) through entry points declared in
``pyproject.toml``. A plugin that is declared but cannot be loaded is an error,
not a silent skip: a renamed module must fail loudly.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from engine.errors import SynvoiceError

CLI_GROUP = "synvoice.cli"
ENGINE_GROUP = "synvoice.engine"


def load(group: str) -> list[tuple[str, Callable[..., Any]]]:
    """Every plugin of ``group`` as ``(name, callable)``, in name order.

    Raises ``SynvoiceError('internal')`` when the group is empty (the package's
    metadata is missing: not installed) or a declared plugin fails to import."""
    eps = sorted(entry_points(group=group), key=lambda ep: ep.name)
    if not eps:
        raise SynvoiceError(
            "internal",
            f"no {group} plugins are installed: install synvoice (pip install -e .) "
            "so its entry points exist",
        )
    out: list[tuple[str, Callable[..., Any]]] = []
    for ep in eps:
        try:
            fn = ep.load()
        except (ImportError, AttributeError) as exc:
            raise SynvoiceError(
                "internal", f"{group} plugin {ep.name!r} ({ep.value}) cannot be loaded: {exc}"
            ) from exc
        if not callable(fn):
            raise SynvoiceError("internal", f"{group} plugin {ep.name!r} is not callable")
        out.append((ep.name, fn))
    return out
