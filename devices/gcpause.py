"""Keeping Python's cyclic garbage collector out of a bulk load (a catch-up).

A catch-up page decodes and folds thousands of events into dicts that live on in
the views. The collector's passes over that growing heap (none of it garbage)
cost as much as the fold itself. So the fold runs with the collector paused,
and what it made is then frozen (``gc.freeze``: out of the collector's sight,
still freed by reference counting) until the catch-up ends and ``gc_release()``
hands everything back to the collector (``gc.unfreeze``, which also un-freezes
objects anyone else froze: nothing in Synvoice does).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(*, keep: bool = False) -> Iterator[None]:
    """No cyclic GC inside the block (synchronous code only: no await inside, so
    nothing else runs meanwhile), then as it was. ``keep``: what exists at the end
    is long-lived; freeze it until ``gc_release()``."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if keep:
            gc.freeze()
        if was:
            gc.enable()


def gc_release() -> None:
    """Give what ``gc_paused(keep=True)`` froze back to the collector."""
    gc.unfreeze()
