"""Children that never outlive the engine, whatever kills it.

``kill -9`` of the engine runs no clean-up code, so the children must notice by
themselves. On Linux the kernel does it: ``PR_SET_PDEATHSIG`` makes it send the
child SIGKILL when its parent dies. SIGKILL, not SIGTERM: a broker or worker
that hangs in its shutdown would outlive us, and both recover from a kill
(JetStream replays its store, the views resume from their checkpoint).

Two details make it reliable:
- The signal fires when the *thread* that forked the child ends, not the
  process. The engine therefore starts children from its event-loop thread,
  never from a thread pool (``asyncio.to_thread``) whose threads come and go.
- A parent that dies between ``fork`` and ``prctl`` sends nothing: the child
  then checks that its parent is still the one it was forked from.

Elsewhere (no ``prctl``) the portable fallback is a pipe: the live-views worker
ends when its stdin reaches end-of-file, which happens when the engine dies.
nats-server cannot watch a pipe; the data-folder lock then still keeps a second
engine (and its broker) off the same store.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1

_libc: ctypes.CDLL | None = None


def _prctl() -> Callable[..., int] | None:
    """libc's ``prctl`` (loaded in the parent: nothing is loaded after a fork)."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fn: Callable[..., int] = _libc.prctl
    return fn


def bind_to_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when ``parent`` dies (Linux; a no-op
    elsewhere); end now if ``parent`` is already gone (we were re-parented)."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def preexec_bound_to_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` binding a child to this process (None where unsupported).

    Call it in the thread that will start the child (see the module docstring)."""
    if _prctl() is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        bind_to_parent(parent)

    return preexec
