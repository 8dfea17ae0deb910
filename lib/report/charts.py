"""Inline SVG line charts for the report's curves (drawn here, so the page needs no plotting script)."""
import math
from html import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22"]


def _ticks(lo: float, hi: float, count: int = 4) -> list:
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / count))
    for factor in (1, 2, 5, 10):
        if (hi - lo) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v != 0 else "0"


def line_chart(title: str, series: list, width: int = 380, height: int = 220) -> str:
    """An SVG chart of `series` [(label, [[x, y], ...])], one colour per series in order, with
    a key below. Non-finite values are left out. Returns "" when no series has a point."""
    series = [(label, [(x, y) for x, y in pts if math.isfinite(y)]) for label, pts in series]
    series = [(label, pts) for label, pts in series if pts]
    if not series:
        return ""
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - abs(y0) * 0.1 - 1e-6, y1 + abs(y1) * 0.1 + 1e-6
    left, right, top, bottom = 48, 10, 22, 24
    w, h = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * w

    def py(y):
        return top + (1 - (y - y0) / (y1 - y0)) * h

    parts = [f'<svg class="chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
             f'data-title="{escape(title)}">',
             f'<text x="{left}" y="14" font-weight="bold">{escape(title)}</text>']
    for t in _ticks(y0, y1):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + w}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>'
                     f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        parts.append(f'<text x="{px(t):.1f}" y="{top + h + 16}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + h}"/>'
                 f'<line class="axis" x1="{left}" x2="{left + w}" y1="{top + h}" y2="{top + h}"/>')
    for i, (label, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        if len(pts) == 1:
            parts.append(f'<circle cx="{px(pts[0][0]):.1f}" cy="{py(pts[0][1]):.1f}" r="3" fill="{colour}" '
                         f'data-series="{escape(label)}"/>')
        else:
            parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{coords}" '
                         f'data-series="{escape(label)}"/>')
    parts.append("</svg>")
    key = "".join(f'<span style="color:{COLOURS[i % len(COLOURS)]}">&#9632; {escape(label)}</span>'
                  for i, (label, _) in enumerate(series))
    return f'<figure>{"".join(parts)}<p class="key">{key}</p></figure>'
