"""Inline SVG charts and HTML tables for the report (no script, no external resource).

Every plotted series carries ``class="series"`` and every chart ``data-plot="<name>"``,
so a browser can say which plots it laid out (see :data:`RENDER_CHECK`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

W, H, PAD = 420, 280, 44
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")

# Marks the body with the plots the browser actually laid out: per data-plot name, the
# number of series with a non-empty bounding box; and the sections present, in order.
RENDER_CHECK = """<script>(function () {
var plots = {}, n = 0;
document.querySelectorAll('svg[data-plot]').forEach(function (svg) {
  var k = 0;
  svg.querySelectorAll('.series').forEach(function (e) {
    var b = e.getBBox(); if (b.width > 0 || b.height > 0) { k++; } });
  plots[svg.dataset.plot] = k; n += k; });
document.body.dataset.renderedSeries = n;
document.body.dataset.plots = JSON.stringify(plots);
document.body.dataset.sections = JSON.stringify(Array.from(
  document.querySelectorAll('section[id]')).map(function (s) { return s.id; }));
})();</script>"""


def esc(v) -> str:
    return html.escape(str(v))


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (list, tuple)):
        return esc(", ".join(map(str, v)))
    if isinstance(v, dict):
        return esc(", ".join(f"{k}={x}" for k, x in v.items()))
    return esc(v)


def _ticks(lo: float, hi: float, integer: bool) -> list[float]:
    if not integer:
        return [lo + (hi - lo) * i / 4 for i in range(5)]
    a, b = math.ceil(lo), math.floor(hi)
    step = max(1, math.ceil((b - a) / 5)) if b > a else 1
    return [float(v) for v in range(a, b + 1, step)]


def axes(xmin: float, xmax: float, ymin: float, ymax: float, xlabel: str, ylabel: str,
         *, int_x: bool = False):
    """(svg axis elements, x->px, y->px); ``int_x``: whole-number ticks only."""
    xspan = (xmax - xmin) or 1.0
    yspan = (ymax - ymin) or 1.0

    def sx(x: float) -> float:
        return PAD + (x - xmin) / xspan * (W - 1.5 * PAD)

    def sy(y: float) -> float:
        return H - PAD - (y - ymin) / yspan * (H - 1.7 * PAD)

    parts = [f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD / 2}" y2="{H - PAD}" '
             'stroke="#444"/>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{PAD}" y2="{PAD * 0.7}" stroke="#444"/>']
    for xv in _ticks(xmin, xmax, int_x):
        label = f"{int(xv)}" if int_x else f"{xv:.3g}"
        parts.append(f'<text x="{sx(xv):.1f}" y="{H - PAD + 14}" font-size="10" '
                     f'text-anchor="middle">{label}</text>')
    for yv in _ticks(ymin, ymax, False):
        parts.append(f'<text x="{PAD - 4}" y="{sy(yv) + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{yv:.3g}</text>')
    parts.append(f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">'
                 f'{esc(xlabel)}</text>')
    parts.append(f'<text x="12" y="{H / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {H / 2})">{esc(ylabel)}</text>')
    return parts, sx, sy


def _legend(i: int, name: str, color: str) -> str:
    return (f'<text x="{W - PAD}" y="{PAD * 0.7 + 14 * (i + 1)}" font-size="11" '
            f'text-anchor="end" fill="{color}">{esc(name)}</text>')


def line_chart(plot: str, series: dict[str, tuple[Sequence[float], Sequence[float]]],
               title: str, xlabel: str, ylabel: str, *, diagonal: bool = False,
               int_x: bool = False, unit_y: bool = False) -> str:
    """An SVG line chart; ``series`` maps a legend name to (xs, ys). ``diagonal``: the
    unit square with its diagonal; ``unit_y``: y from 0 to 1."""
    pts = [(float(x), float(y)) for xs, ys in series.values() for x, y in zip(xs, ys, strict=True)
           if math.isfinite(float(y))]
    if not pts:
        return ""
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    if diagonal:
        xmin, xmax, ymin, ymax = 0.0, 1.0, 0.0, 1.0
    if unit_y:
        ymin, ymax = 0.0, max(1.0, ymax)
    parts, sx, sy = axes(xmin, xmax, ymin, ymax, xlabel, ylabel, int_x=int_x)
    if diagonal:
        parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" '
                     'stroke="#bbb" stroke-dasharray="4"/>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        xs, ys = _thin(xs, ys)
        path = " ".join(f"{sx(float(x)):.1f},{sy(float(y)):.1f}"
                        for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y)))
        marker = "".join(f'<rect x="{sx(float(x)) - 2:.1f}" y="{sy(float(y)) - 2:.1f}" '
                         'width="4" height="4"/>'
                         for x, y in zip(xs, ys, strict=True)
                         if math.isfinite(float(y))) if len(xs) <= 12 else ""
        parts.append(f'<g fill="{color}"><polyline class="series" fill="none" '
                     f'stroke="{color}" stroke-width="2" points="{path}"/>{marker}</g>')
        parts.append(_legend(i, name, color))
    return figure(plot, parts, title)


def _thin(xs, ys, most: int = 600):
    """At most ``most`` points of a curve (evenly spaced, both ends kept): a curve over
    30,000 distinct scores draws the same at a tenth of the page size."""
    if len(xs) <= most:
        return xs, ys
    keep = np.unique(np.linspace(0, len(xs) - 1, most).round().astype(int))
    return np.asarray(xs)[keep], np.asarray(ys)[keep]


def scatter_chart(plot: str, xs: Sequence[float], ys: Sequence[float], title: str,
                  xlabel: str, ylabel: str, *, identity: bool = False,
                  max_points: int = 1500) -> str:
    """An SVG scatter plot (one series); ``identity`` draws the line y = x. More than
    ``max_points`` points are thinned to every k-th (the page stays small)."""
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if not x.size:
        return ""
    if x.size > max_points:
        keep = np.linspace(0, x.size - 1, max_points).round().astype(int)
        x, y = x[keep], y[keep]
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    if identity:
        parts, sx, sy = axes(lo, hi, lo, hi, xlabel, ylabel)
        parts.append(f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" '
                     f'y2="{sy(hi):.1f}" stroke="#bbb" stroke-dasharray="4"/>')
    else:
        parts, sx, sy = axes(float(x.min()), float(x.max()), float(y.min()),
                             float(y.max()), xlabel, ylabel)
    dots = "".join(f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="1.8"/>'
                   for a, b in zip(x.tolist(), y.tolist(), strict=True))
    parts.append(f'<g class="series" fill="{COLORS[0]}" fill-opacity="0.45">{dots}</g>')
    return figure(plot, parts, title)


def bar_chart(plot: str, labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Horizontal SVG bar chart of signed values (negative bars go left of the axis)."""
    if not len(labels):
        return ""
    height = 22 * len(labels) + 30
    vals = [float(v) for v in values]
    vmax = max(max(abs(v) for v in vals), 1e-12)
    left, span = 150, W + 80 - 150 - 60
    zero = left + (span / 2 if min(vals) < 0 else 0)
    scale = span / 2 if min(vals) < 0 else span
    parts = [f'<line x1="{zero}" y1="12" x2="{zero}" y2="{height - 8}" stroke="#999"/>']
    for i, (lab, v) in enumerate(zip(labels, vals, strict=True)):
        y = 20 + i * 22
        w = abs(v) / vmax * scale
        x = zero - w if v < 0 else zero
        color = COLORS[1] if v < 0 else COLORS[0]
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">'
                     f'{esc(lab)}</text>')
        parts.append(f'<rect class="series" x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" '
                     f'height="16" fill="{color}"/>')
        # the value beside the bar's end, or (negative) just right of the zero axis
        tx = x + w + 4 if v >= 0 else zero + 4
        parts.append(f'<text x="{tx:.1f}" y="{y + 13}" font-size="10">{v:.4g}</text>')
    return figure(plot, parts, title, width=W + 80, height=height)


def columns_chart(plot: str, categories: Sequence[str], groups: dict[str, Sequence[float]],
                  title: str, xlabel: str, ylabel: str) -> str:
    """Vertical grouped bars: one group of bars per category, one colour per series."""
    k, m = len(groups), len(categories)
    if not k or not m:
        return ""
    vmax = max(max((float(v) for v in vs), default=0.0) for vs in groups.values()) or 1.0
    parts, _, sy = axes(0, m, 0.0, vmax, xlabel, ylabel)
    slot = (W - 1.5 * PAD) / m
    bw = slot * 0.8 / k
    for j, (name, vs) in enumerate(groups.items()):
        color = COLORS[j % len(COLORS)]
        rects = "".join(
            f'<rect x="{PAD + i * slot + slot * 0.1 + j * bw:.1f}" y="{sy(float(v)):.1f}" '
            f'width="{bw:.1f}" height="{max(sy(0) - sy(float(v)), 0.0):.1f}"/>'
            for i, v in enumerate(vs))
        parts.append(f'<g class="series" fill="{color}" fill-opacity="0.8">{rects}</g>')
        parts.append(_legend(j, name, color))
    step = max(1, m // 10)
    # category labels replace the numeric x ticks of axes()
    parts = [p for p in parts if f'y="{H - PAD + 14}"' not in p]
    for i in range(0, m, step):
        parts.append(f'<text x="{PAD + (i + 0.5) * slot:.1f}" y="{H - PAD + 14}" '
                     f'font-size="10" text-anchor="middle">{esc(categories[i])}</text>')
    return figure(plot, parts, title)


def figure(plot: str, parts: list[str], title: str, width: int = W, height: int = H) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" data-plot="{esc(plot)}" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(title)}">' + "".join(parts) +
            f"</svg><figcaption>{esc(title)}</figcaption></figure>")


def kv_table(rows: dict) -> str:
    body = "".join(f'<tr><th class="l">{esc(k)}</th><td>{fmt(v)}</td></tr>'
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def grid_table(rows: list[dict], cls: str = "") -> str:
    if not rows:
        return '<p class="muted">none</p>'
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><tr>{head}</tr>{body}</table>"


def grid(*figs: str) -> str:
    return f'<div class="grid">{"".join(figs)}</div>'
