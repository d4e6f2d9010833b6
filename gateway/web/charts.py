"""Geometry of the status page's bar charts, computed here and drawn as inline SVG by the
template: no JavaScript, nothing fetched, readable with CSS off (each bar has a title)."""

from __future__ import annotations

from collections.abc import Sequence

WIDTH = 720
PLOT_LEFT = 44  # room for the y-axis labels
PLOT_TOP = 10


def _r(value: float) -> float:
    return round(value, 1)


def stacked_columns(buckets: Sequence[tuple[str, dict[str, int]]], series: Sequence[str],
                    height: int = 200, label_every: int = 3) -> dict:
    """One column per bucket (label, {series: count}), series stacked bottom-up."""
    plot_h = height - PLOT_TOP - 24
    plot_w = WIDTH - PLOT_LEFT - 8
    top = max((sum(c.get(s, 0) for s in series) for _, c in buckets), default=0)
    scale = plot_h / top if top else 0.0
    step = plot_w / max(len(buckets), 1)
    base = PLOT_TOP + plot_h
    bars, xlabels = [], []
    for i, (label, counts) in enumerate(buckets):
        x, y = PLOT_LEFT + i * step, float(base)
        for name in series:
            n = counts.get(name, 0)
            if not n:
                continue
            h = n * scale
            y -= h
            bars.append({"x": _r(x + 1), "y": _r(y), "w": _r(step - 2), "h": _r(h),
                         "cls": name, "title": f"{label}: {n} {name.replace('_', ' ')}"})
        if i % label_every == 0:
            xlabels.append({"x": _r(x + step / 2), "y": base + 16, "text": label})
    ylabels = [{"x": PLOT_LEFT - 6, "y": base + 4, "text": "0"}]
    if top:
        ylabels.append({"x": PLOT_LEFT - 6, "y": PLOT_TOP + 4, "text": str(top)})
    return {"width": WIDTH, "height": height, "bars": bars, "xlabels": xlabels,
            "ylabels": ylabels, "axis": {"x1": PLOT_LEFT, "x2": WIDTH - 8, "y": base}}


def horizontal_bars(items: Sequence[tuple[str, int, str]], row: int = 22,
                    label_width: int = 250) -> dict:
    """One bar per (label, count, css class), longest = full width."""
    top = max((n for _, n, _ in items), default=0)
    plot_w = WIDTH - label_width - 60
    bars = []
    for i, (label, n, cls) in enumerate(items):
        y = PLOT_TOP + i * row
        w = plot_w * n / top if top else 0.0
        bars.append({"label": label, "n": n, "cls": cls, "y": y, "text_y": y + row * 0.65,
                     "x": label_width, "w": _r(w), "h": row - 6,
                     "count_x": _r(label_width + w + 6)})
    return {"width": WIDTH, "height": PLOT_TOP * 2 + row * max(len(items), 1), "bars": bars,
            "label_x": label_width - 8}
