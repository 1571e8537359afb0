"""Text reports from a pyinstrument session of the engine process (``--profile``)."""

from __future__ import annotations

from pathlib import Path


def render(session_path: Path, out: Path) -> Path:
    """Write a flat view (own time per function) and a call tree (≥ 1% of the run)."""
    from pyinstrument.renderers.console import ConsoleRenderer
    from pyinstrument.session import Session

    session = Session.load(str(session_path))
    flat = ConsoleRenderer(
        flat=True,
        time="percent_of_total",
        processor_options={"filter_threshold": 0.005},
    ).render(session)
    tree = ConsoleRenderer(
        time="percent_of_total",
        processor_options={"filter_threshold": 0.01},
    ).render(session)
    out.write_text(
        "# Engine event-loop thread, own time per function (pyinstrument, flat)\n"
        + flat
        + "\n# Call tree (frames >= 1% of the run; library internals folded)\n"
        + tree
    )
    return out
