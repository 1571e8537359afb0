"""Benchmark figures, goals, ceilings and their rendering (rich table, JSON). Pure but for printing.

A figure can name a *ceiling*: a raw figure measured in the same run (e.g. raw
aiosqlite inserts beside durable appends). The ratio to it is what holds on a
noisy machine; absolute figures drift with the load of the moment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

GoalOp = Literal["ge", "le", "lt", "eq"]

_OPS = {"ge": "≥", "le": "≤", "lt": "<", "eq": "="}


@dataclass(frozen=True)
class Goal:
    op: GoalOp
    value: float

    def met(self, v: float) -> bool:
        if self.op == "ge":
            return v >= self.value
        if self.op == "le":
            return v <= self.value
        if self.op == "lt":
            return v < self.value
        return v == self.value

    def __str__(self) -> str:
        return f"{_OPS[self.op]} {fmt_number(self.value)}"


@dataclass
class Figure:
    """One measured number. ``ceiling`` is the key of a raw figure of the same run."""

    key: str
    label: str
    value: float | None
    unit: str
    goal: Goal | None = None
    ceiling: str | None = None
    raw: bool = False  # a raw ceiling (not the product's own figure)
    note: str = ""

    @property
    def goal_met(self) -> bool | None:
        if self.goal is None or self.value is None:
            return None
        return self.goal.met(self.value)


@dataclass
class BenchResult:
    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    status: Literal["ok", "not available", "error"] = "ok"
    message: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)  # CPU use, sizes, profile paths

    def add(self, *figs: Figure) -> None:
        self.figures.extend(figs)

    def figure(self, key: str) -> Figure | None:
        return next((f for f in self.figures if f.key == key), None)


def fmt_number(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(fig: Figure, results: Sequence[BenchResult]) -> float | None:
    """The figure over its ceiling (both measured in this run), if both exist."""
    if fig.ceiling is None or fig.value is None:
        return None
    ceil = find(results, fig.ceiling)
    if ceil is None or not ceil.value:
        return None
    return fig.value / ceil.value


def find(results: Sequence[BenchResult], key: str) -> Figure | None:
    for r in results:
        f = r.figure(key)
        if f is not None:
            return f
    return None


def to_json(results: Sequence[BenchResult], meta: dict[str, Any]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for r in results:
        figs = []
        for f in r.figures:
            d = asdict(f)
            d["goal"] = str(f.goal) if f.goal else None
            d["goal_met"] = f.goal_met
            ceil = find(results, f.ceiling) if f.ceiling else None
            d["ceiling_value"] = ceil.value if ceil else None
            d["ratio"] = ratio(f, results)
            figs.append(d)
        out.append(
            {
                "name": r.name,
                "title": r.title,
                "status": r.status,
                "message": r.message,
                "seconds": round(r.seconds, 2),
                "figures": figs,
                "info": r.info,
            }
        )
    return {"meta": meta, "benchmarks": out}


def render(results: Sequence[BenchResult], title: str) -> Any:
    """A rich Table: each figure beside its goal, its raw ceiling and the ratio."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, show_lines=False, header_style="bold")
    t.add_column("benchmark / figure")
    t.add_column("measured", justify="right")
    t.add_column("goal", justify="right")
    t.add_column("raw ceiling (same run)", justify="right")
    t.add_column("ratio", justify="right")
    for r in results:
        head = Text(f"{r.title}", style="bold cyan")
        if r.status != "ok":
            style = "yellow" if r.status == "not available" else "red"
            head.append(f"  {r.status}: {r.message}", style=style)
        t.add_row(head, "", "", "", "")
        for f in r.figures:
            val = f"{fmt_number(f.value)} {f.unit}".strip()
            label = Text(
                "  " + f.label + (f" ({f.note})" if f.note and f.value is not None else "")
            )
            if f.raw:
                label.stylize("dim")
            met = f.goal_met
            goal = Text(str(f.goal) if f.goal else "")
            measured = Text(val)
            if met is True:
                measured.stylize("green")
                goal.append(" ✓", style="green")
            elif met is False:
                measured.stylize("red")
                goal.append(" ✗", style="red")
            ceil = find(results, f.ceiling) if f.ceiling else None
            ceil_txt = f"{fmt_number(ceil.value)} {ceil.unit}" if ceil else ""
            rt = ratio(f, results)
            t.add_row(label, measured, goal, ceil_txt, "" if rt is None else f"{rt:.2f}x")
        t.add_section()
    return t


def render_cpu(results: Sequence[BenchResult]) -> Any:
    """Who was busy during each measured workload (1.00 = one full core of two)."""
    from rich.table import Table

    t = Table(title="CPU during the measured workloads (cores)", header_style="bold")
    procs = sorted({p for r in results for p in r.info.get("cpu_share", {})})
    t.add_column("benchmark")
    for p in procs:
        t.add_column(p, justify="right")
    for r in results:
        share = r.info.get("cpu_share")
        if share:
            t.add_row(r.name, *(f"{share.get(p, 0):.2f}" for p in procs))
    return t
