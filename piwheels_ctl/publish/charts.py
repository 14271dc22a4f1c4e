"""SVG charts for the statistics page, drawn at publish time: geometry here, markup in a template.

No JavaScript, no fonts or anything else from elsewhere: a farm's master is often offline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .templating import fragments

WIDTH = 640
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 40
# Series colours, by position (a colour-blind safe palette: Okabe and Ito).
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000")


@dataclass
class Shape:
    kind: str  # "rect", "line", "text" or "polyline"
    x: float = 0
    y: float = 0
    w: float = 0
    h: float = 0
    fill: str = ""
    text: str = ""
    anchor: str = "start"
    points: str = ""
    title: str = ""


@dataclass
class Chart:
    """A chart ready for the template: its size, shapes and legend."""

    title: str
    height: int
    shapes: list[Shape] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (colour, name)

    def svg(self) -> str:
        return fragments.get_template("chart.svg.j2").render(chart=self, width=WIDTH)


def _nice_max(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least ``value`` (and at least 1)."""
    step = 1.0
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def _axes(chart: Chart, bottom: float, top_value: float, unit: str) -> None:
    for i in range(5):
        value = top_value * i / 4
        y = bottom - (bottom - TOP) * i / 4
        chart.shapes.append(Shape("line", x=LEFT, y=y, w=WIDTH - RIGHT - LEFT, fill="#ddd"))
        label = f"{value:g}{unit}"
        chart.shapes.append(Shape("text", x=LEFT - 4, y=y + 4, text=label, anchor="end"))


def _x_labels(chart: Chart, labels: Sequence[str], bottom: float) -> None:
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    every = max(1, len(labels) // 6)
    for i, label in enumerate(labels):
        if i % every == 0 or i == len(labels) - 1:
            x = LEFT + slot * (i + 0.5)
            chart.shapes.append(Shape("text", x=x, y=bottom + 16, text=label, anchor="middle"))


def stacked_bars(
    title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[int]]], height: int = 240
) -> Chart:
    """Bars per label, each series stacked on the ones before (e.g. builds per day: ok, failed)."""
    height += 14 * ((max(len(series), 1) - 1) // 3)  # a legend row for every three series
    chart = Chart(title, height)
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = _nice_max(max(totals, default=0))
    top = max(4.0, -(-top // 4) * 4)  # whole numbers on each of the four grid lines
    bottom = height - BOTTOM - 14 * ((max(len(series), 1) - 1) // 3)
    _axes(chart, bottom, top, "")
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    scale = (bottom - TOP) / top
    for i, label in enumerate(labels):
        y = float(bottom)
        for number, (name, values) in enumerate(series):
            h = values[i] * scale
            if values[i]:
                y -= h
                chart.shapes.append(
                    Shape("rect", x=LEFT + slot * i + slot * 0.15, y=y, w=slot * 0.7, h=h,
                          fill=PALETTE[number % len(PALETTE)], title=f"{label}: {values[i]} {name}")
                )  # fmt: skip
    _x_labels(chart, labels, bottom)
    chart.legend = [(PALETTE[n % len(PALETTE)], name) for n, (name, _) in enumerate(series)]
    return chart


def lines(
    title: str,
    labels: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    top: float = 100.0,
    unit: str = "%",
    height: int = 240,
) -> Chart:
    """One line per series over the labels; a None value breaks the line (no data that day)."""
    height += 14 * ((max(len(series), 1) - 1) // 3)  # a legend row for every three series
    chart = Chart(title, height)
    bottom = height - BOTTOM - 14 * ((max(len(series), 1) - 1) // 3)
    _axes(chart, bottom, top, unit)
    slot = (WIDTH - LEFT - RIGHT) / max(len(labels), 1)
    for number, (name, values) in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        run: list[str] = []
        for i, value in enumerate([*values, None]):
            if value is None:
                if run:
                    chart.shapes.append(Shape("polyline", points=" ".join(run), fill=colour))
                run = []
                continue
            x, y = LEFT + slot * (i + 0.5), bottom - (bottom - TOP) * value / top
            run.append(f"{x:.1f},{y:.1f}")
            chart.shapes.append(
                Shape("dot", x=x, y=y, fill=colour, title=f"{name} {labels[i]}: {value:.0f}{unit}")
            )
        chart.legend.append((colour, name))
    _x_labels(chart, labels, bottom)
    return chart


def horizontal_bars(title: str, items: Sequence[tuple[str, int]]) -> Chart:
    """One bar per item, longest first (e.g. failed builds per reason)."""
    row = 24
    height = TOP + row * max(len(items), 1) + 12
    chart = Chart(title, height)
    label_width = 180
    top = max((value for _, value in items), default=0) or 1
    span = WIDTH - label_width - RIGHT - 48
    for i, (label, value) in enumerate(sorted(items, key=lambda kv: (-kv[1], kv[0]))):
        y = TOP + row * i
        w = span * value / top
        chart.shapes.append(Shape("text", x=label_width - 6, y=y + 16, text=label, anchor="end"))
        chart.shapes.append(
            Shape("rect", x=label_width, y=y + 4, w=max(w, 1), h=row - 8, fill=PALETTE[1],
                  title=f"{label}: {value}")
        )  # fmt: skip
        chart.shapes.append(Shape("text", x=label_width + w + 6, y=y + 16, text=str(value)))
    if not items:
        chart.shapes.append(Shape("text", x=WIDTH / 2, y=TOP + 16, text="no failures", anchor="middle"))
    return chart
