"""Keeping Python's cyclic garbage collector out of a bulk load (a catch-up).

A catch-up page decodes and folds thousands of events into dicts that live on in
the views. The collector's passes over that growing heap (none of it garbage)
cost as much as the fold itself. So the fold runs with the collector paused,
and what it made is then frozen (``gc.freeze``: out of the collector's sight,
still freed by reference counting) until the catch-up ends and ``gc_release()``
hands everything back to the collector.

``gc.unfreeze`` un-freezes everything, whoever froze it: a program embedding the
agent may have frozen its own start-up heap (a common server idiom). So the
agent freezes only while nothing else is frozen, and un-freezes only what it
froze; otherwise the views simply stay in the collector's sight (slower, same
result).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_frozen_by_us = False  # the objects in gc's permanent generation are ours alone


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
            _freeze()
        if was:
            gc.enable()


def _freeze() -> None:
    global _frozen_by_us
    if _frozen_by_us or gc.get_freeze_count() == 0:
        gc.freeze()
        _frozen_by_us = True


def gc_release() -> None:
    """Give what ``gc_paused(keep=True)`` froze back to the collector (and nothing
    that someone else froze)."""
    global _frozen_by_us
    if _frozen_by_us:
        gc.unfreeze()
        _frozen_by_us = False
