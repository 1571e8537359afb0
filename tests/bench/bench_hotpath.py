"""7. The engine's per-event hot path, step by step (µs per event, this process).

Calls the engine's own functions on realistic events, so a change to them shows
here: what a push costs before the broker and SQLite are even involved. The raw
rows are msgpack alone, the floor under any step that decodes or encodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgpack

from engine import auth, codec, fastparse
from engine.events import Event, now, parse_event
from engine.hashchain import GENESIS
from engine.log import seal_events
from engine.state import EngineState
from tests.bench.context import Context
from tests.bench.loggen import DocumentEvents, LogSpec
from tests.bench.report import BenchResult, Figure

NAME = "hotpath"
TITLE = "7. engine hot path per event (diagnostic)"


def _us(fn: Callable[[], Any], per: int) -> float:
    """Best of 3 runs, in µs per item (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / per * 1e6


async def run(ctx: Context) -> BenchResult:
    res = BenchResult(NAME, TITLE)
    n = ctx.n(5000, 200)
    gen = DocumentEvents(LogSpec(events=n, seed=13), ["dev-bench"], ["alice"])
    gen.state = EngineState()
    maps = list(gen.maps(n, 1))
    for m in maps:
        m["seen_position"] = 0
    body = codec.pack({"events": maps})
    events: list[Event] = [parse_event(m) for m in maps]

    def fast() -> None:  # what EngineCore.push_body does per event
        for raw in fastparse.decode_push(body).events:
            fastparse.parse_pushed(raw)

    def seal() -> None:  # what EventLog.seal does, on a log at position 0
        seal_events(events, 0, GENESIS, now())

    def apply() -> None:
        st = EngineState()
        for ev in events:
            st.apply(ev)

    push = codec.pack({"events": maps[:200]})
    secret = bytes(32)
    headers = auth.sign("dev-bench", secret, "s", push)
    # (key, label, µs, on the hot path: counted in the sum)
    steps: list[tuple[str, str, float, bool]] = [
        (
            "decode",
            "decode + validate a pushed event (engine.fastparse, compiled)",
            _us(fast, n),
            True,
        ),
        ("seal", "seal: to_wire + pack + hash link (EventLog.seal)", _us(seal, n), True),
        ("apply", "EngineState.apply", _us(apply, n), True),
        (
            "parse",
            "parse_event (pydantic; the fallback for what the fast path leaves)",
            _us(lambda: [parse_event(m) for m in maps], n),
            False,
        ),
        (
            "unpack",
            "msgpack unpack of the push request (fallback path)",
            _us(lambda: codec.unpack_request(body, len(body) + 1), n),
            False,
        ),
        (
            "auth",
            "HMAC verify of a 200-event push (per request)",
            _us(
                lambda: [auth.verify(headers, "s", push, lambda _d: secret) for _ in range(100)],
                100,
            ),
            False,
        ),
    ]
    stored = [r.body for _, r in seal_events(events, 0, GENESIS, now())]
    for key, label, us, _ in steps:
        res.add(Figure(f"hotpath.{key}_us", label, us, "µs", ceiling="hotpath.ceil.msgpack"))
    total = sum(us for _, _, us, hot in steps if hot)
    res.add(
        Figure(
            "hotpath.total_us",
            "sum per pushed event on the hot path (before broker and SQLite)",
            total,
            "µs",
            note=f"≤ {1e6 / total:,.0f} ev/s on one core",
        ),
        Figure(
            "hotpath.ceil.msgpack",
            "raw msgpack decode + encode of one event",
            _us(lambda: [msgpack.packb(msgpack.unpackb(b)) for b in stored], n),
            "µs",
            raw=True,
        ),
    )
    return res
