"""Self-contained HTML job reports (no external resources; plots as inline SVG).

Input is a plain dict assembled by the node from its job store (see
:func:`render_report`); the bank's report includes the test-set labels and scores it
already holds, from which ROC and KS curves and the confusion matrix are drawn for 0/1
labels, a predicted-versus-actual plot and residual summary for a continuous target
(RMSE, MAE and R^2 are in the metrics table), and for multiclass labels the K x K
confusion matrix and one-vs-rest ROC curves with each class's AUC. Nothing here reads the peer's data:
platform feature names appear as the platform's policy released them.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parties.common import metrics

_W, _H, _PAD = 420, 280, 44
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;
color:#222;max-width:1100px}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.15rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}.ok{color:#2ca02c;font-weight:600}
.bad{color:#d62728;font-weight:600}.muted{color:#777}figure{margin:0}
figcaption{font-size:.85rem;color:#555;text-align:center}
"""


# Marks the body with how many plot series the browser actually laid out (non-empty
# bounding boxes), so a headless-browser test can check that plots render.
_RENDER_CHECK = """<script>document.body.dataset.renderedSeries = Array.from(
document.querySelectorAll('svg .series')).filter(function (e) {
var b = e.getBBox(); return b.width > 0 || b.height > 0; }).length;</script>"""


def _esc(v) -> str:
    return html.escape(str(v))


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _esc(v)


def _axes(xmin: float, xmax: float, ymin: float, ymax: float, xlabel: str, ylabel: str):
    """Return (svg axis elements, x->px, y->px)."""
    xspan = (xmax - xmin) or 1.0
    yspan = (ymax - ymin) or 1.0

    def sx(x: float) -> float:
        return _PAD + (x - xmin) / xspan * (_W - 1.5 * _PAD)

    def sy(y: float) -> float:
        return _H - _PAD - (y - ymin) / yspan * (_H - 1.7 * _PAD)

    parts = [f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD / 2}" y2="{_H - _PAD}" '
             'stroke="#444"/>',
             f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_PAD}" y2="{_PAD * 0.7}" stroke="#444"/>']
    for i in range(5):
        xv = xmin + xspan * i / 4
        yv = ymin + yspan * i / 4
        parts.append(f'<text x="{sx(xv):.1f}" y="{_H - _PAD + 14}" font-size="10" '
                     f'text-anchor="middle">{xv:.3g}</text>')
        parts.append(f'<text x="{_PAD - 4}" y="{sy(yv) + 3:.1f}" font-size="10" '
                     f'text-anchor="end">{yv:.3g}</text>')
    parts.append(f'<text x="{_W / 2}" y="{_H - 8}" font-size="11" text-anchor="middle">'
                 f'{_esc(xlabel)}</text>')
    parts.append(f'<text x="12" y="{_H / 2}" font-size="11" text-anchor="middle" '
                 f'transform="rotate(-90 12 {_H / 2})">{_esc(ylabel)}</text>')
    return parts, sx, sy


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str,
               xlabel: str, ylabel: str, diagonal: bool = False) -> str:
    """An SVG line chart; ``series`` maps a legend name to (xs, ys)."""
    pts = [(float(x), float(y)) for xs, ys in series.values() for x, y in zip(xs, ys, strict=True)
           if math.isfinite(float(y))]
    if not pts:
        return ""
    xmin, xmax = min(p[0] for p in pts), max(p[0] for p in pts)
    ymin, ymax = min(p[1] for p in pts), max(p[1] for p in pts)
    if diagonal:
        xmin, xmax, ymin, ymax = 0.0, 1.0, 0.0, 1.0
    parts, sx, sy = _axes(xmin, xmax, ymin, ymax, xlabel, ylabel)
    if diagonal:
        parts.append(f'<line x1="{sx(0)}" y1="{sy(0)}" x2="{sx(1)}" y2="{sy(1)}" '
                     'stroke="#bbb" stroke-dasharray="4"/>')
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = _COLORS[i % len(_COLORS)]
        path = " ".join(f"{sx(float(x)):.1f},{sy(float(y)):.1f}"
                        for x, y in zip(xs, ys, strict=True) if math.isfinite(float(y)))
        parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" '
                     f'points="{path}"/>')
        parts.append(f'<text x="{_W - _PAD}" y="{_PAD * 0.7 + 14 * (i + 1)}" font-size="11" '
                     f'text-anchor="end" fill="{color}">{_esc(name)}</text>')
    return _figure(parts, title)


def scatter_chart(xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str,
                  ylabel: str, *, identity: bool = False, max_points: int = 1500) -> str:
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
        parts, sx, sy = _axes(lo, hi, lo, hi, xlabel, ylabel)
        parts.append(f'<line x1="{sx(lo):.1f}" y1="{sy(lo):.1f}" x2="{sx(hi):.1f}" '
                     f'y2="{sy(hi):.1f}" stroke="#bbb" stroke-dasharray="4"/>')
    else:
        parts, sx, sy = _axes(float(x.min()), float(x.max()), float(y.min()),
                              float(y.max()), xlabel, ylabel)
    dots = "".join(f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="1.8"/>'
                   for a, b in zip(x.tolist(), y.tolist(), strict=True))
    parts.append(f'<g class="series" fill="{_COLORS[0]}" fill-opacity="0.45">{dots}</g>')
    return _figure(parts, title)


def bar_chart(labels: Sequence[str], values: Sequence[float], title: str) -> str:
    """Horizontal SVG bar chart (feature importance)."""
    if not labels:
        return ""
    height = 22 * len(labels) + 30
    vmax = max(max(values), 1e-12)
    left = 150
    parts = []
    for i, (lab, v) in enumerate(zip(labels, values, strict=True)):
        y = 20 + i * 22
        w = (v / vmax) * (_W + 80 - left - 60)
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">'
                     f'{_esc(lab)}</text>')
        parts.append(f'<rect class="series" x="{left}" y="{y}" width="{w:.1f}" height="16" '
                     f'fill="{_COLORS[0]}"/>')
        parts.append(f'<text x="{left + w + 4:.1f}" y="{y + 13}" font-size="10">{v:.4g}</text>')
    return _figure(parts, title, width=_W + 80, height=height)


def _figure(parts: list[str], title: str, width: int = _W, height: int = _H) -> str:
    return (f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_esc(title)}">' + "".join(parts) +
            f"</svg><figcaption>{_esc(title)}</figcaption></figure>")


def _kv_table(rows: dict) -> str:
    body = "".join(f'<tr><th class="l">{_esc(k)}</th><td>{_fmt(v)}</td></tr>'
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def _grid_table(rows: list[dict]) -> str:
    if not rows:
        return '<p class="muted">none</p>'
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''))}</td>" for c in cols) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _curves(y: np.ndarray, p: np.ndarray) -> str:
    fpr, tpr, thr = metrics.roc_curve(y, p)
    auc, ks = metrics.auc(y, p), metrics.ks(y, p)
    roc = line_chart({f"ROC (AUC {auc:.3f})": (fpr, tpr)}, "ROC curve",
                     "false positive rate", "true positive rate", diagonal=True)
    pos = float(np.sum(y == 1))
    frac = (tpr * pos + fpr * (len(y) - pos)) / max(len(y), 1)
    ksc = line_chart({"TPR": (frac, tpr), "FPR": (frac, fpr),
                      f"KS {ks:.3f}": (frac, tpr - fpr)},
                     "KS curve", "fraction of population (by descending score)", "rate")
    return f'<div class="grid">{roc}{ksc}</div>'


def _regression(y: np.ndarray, p: np.ndarray) -> str:
    """Predicted versus actual on the test rows, and the residuals' summary."""
    r = y - p
    plot = scatter_chart(y, p, "predicted vs actual (test rows)", "actual", "predicted",
                         identity=True)
    resid = scatter_chart(p, r, "residual vs predicted", "predicted", "actual - predicted")
    q = np.quantile(r, [0.05, 0.5, 0.95])
    summary = {"rmse": metrics.rmse(y, p), "mae": metrics.mae(y, p), "r2": metrics.r2(y, p),
               "mean residual": float(r.mean()), "residual 5%": float(q[0]),
               "residual median": float(q[1]), "residual 95%": float(q[2]), "n": int(y.size)}
    return f'<div class="grid">{plot}{resid}</div>' + _kv_table(summary)


def _confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> str:
    c = metrics.confusion(y, p, threshold)
    return (f"<p>Threshold {threshold:g}</p><table><tr><th></th><th>predicted 1</th>"
            f"<th>predicted 0</th></tr><tr><th>actual 1</th><td>{c['tp']:,}</td>"
            f"<td>{c['fn']:,}</td></tr><tr><th>actual 0</th><td>{c['fp']:,}</td>"
            f"<td>{c['tn']:,}</td></tr></table>")


def _multiclass(scores: dict) -> str:
    """One-vs-rest ROC curves, per-class AUC / F1 table and the K x K confusion matrix."""
    y = np.asarray(scores["y"], dtype=np.int64)
    p = np.asarray(scores["p"], dtype=np.float64)
    classes = [str(c) for c in scores.get("classes") or range(p.shape[1])]
    rep = metrics.multiclass_report(y, p)
    cm = np.asarray(rep["confusion"])
    curves = {}
    for c, name in enumerate(classes[:len(_COLORS)]):
        fpr, tpr, _ = metrics.roc_curve((y == c).astype(float), p[:, c])
        curves[f"{name} (AUC {rep['auc_per_class'][c]:.3f})"] = (fpr, tpr)
    roc = line_chart(curves, "one-vs-rest ROC", "false positive rate",
                     "true positive rate", diagonal=True) if curves else ""
    tp, actual, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    per_class = [{"class": name, "rows": int(actual[c]), "predicted": int(predicted[c]),
                  "auc (one-vs-rest)": rep["auc_per_class"][c],
                  "precision": float(tp[c] / predicted[c]) if predicted[c] else float("nan"),
                  "recall": float(tp[c] / actual[c]) if actual[c] else float("nan")}
                 for c, name in enumerate(classes)]
    head = "".join(f"<th>predicted {_esc(n)}</th>" for n in classes)
    body = "".join(f"<tr><th>actual {_esc(n)}</th>" +
                   "".join(f"<td>{int(v):,}</td>" for v in cm[i]) + "</tr>"
                   for i, n in enumerate(classes))
    matrix = f"<h3>Confusion matrix</h3><table><tr><th></th>{head}</tr>{body}</table>"
    summary = {k: rep[k] for k in ("accuracy", "macro_f1", "auc", "log_loss", "n")}
    return (f'<div class="grid">{roc}</div>' + _kv_table(summary) +
            _grid_table(per_class) + matrix)


def _history(history: list[dict]) -> str:
    if not history:
        return '<p class="muted">no per-iteration history</p>'
    xs = [h.get("iteration", i) for i, h in enumerate(history)]
    charts = []
    for group in (("loss", "train_loss", "valid_loss", "test_loss"),
                  ("auc", "train_auc", "valid_auc", "test_auc"),
                  ("rmse", "train_rmse", "valid_rmse")):
        series = {k: (xs, [float(h.get(k, float("nan"))) for h in history])
                  for k in group[1:] if any(k in h for h in history)}
        if series:
            charts.append(line_chart(series, f"{group[0]} per iteration", "iteration",
                                     group[0]))
    return f'<div class="grid">{"".join(charts)}</div>'


def render_report(data: dict) -> str:
    """HTML for one job.

    ``data`` keys (all optional except ``job``): ``job`` (id, name, algorithm, state,
    times...), ``psi`` (intersection size and counts), ``metrics`` ({split: {name:
    value}}), ``history`` (list of per-iteration dicts with ``iteration`` and e.g.
    ``train_loss``/``valid_auc``), ``scores`` ({"y": [...], "p": [...]} on the test
    split, with ``"label_kind": "continuous"`` for a regression target; for
    ``"multiclass"``, ``p`` is (n, K) and ``classes`` names the K classes), ``threshold``,
    ``feature_importance`` (list of {feature, gain, splits}),
    ``timings`` ({phase: seconds}), ``transcript`` ({verified, detail, ledger}).
    """
    job = data.get("job", {})
    title = f"fedjoint job {job.get('id', '?')} — {job.get('algorithm', '')}"
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           f"<p class='muted'>{_esc(job.get('name', ''))}</p>",
           "<h2>Job</h2>", _kv_table(job)]
    if data.get("psi"):
        out += ["<h2>Private set intersection</h2>", _kv_table(data["psi"])]
    if data.get("metrics"):
        rows = [{"split": split, **vals} for split, vals in data["metrics"].items()]
        out += ["<h2>Metrics</h2>", _grid_table(rows)]
    scores = data.get("scores") or {}
    if scores.get("y") is not None and len(scores.get("y", [])) > 1:
        y, p = np.asarray(scores["y"], float), np.asarray(scores["p"], float)
        if scores.get("label_kind") == "multiclass":
            out += ["<h2>Classes (test rows)</h2>", _multiclass(scores)]
        elif scores.get("label_kind") == "continuous":
            out += ["<h2>Regression (test rows)</h2>", _regression(y, p)]
        else:
            out += ["<h2>ROC and KS</h2>", _curves(y, p), "<h2>Confusion matrix</h2>",
                    _confusion(y, p, float(data.get("threshold", 0.5)))]
    out += ["<h2>Training history</h2>", _history(data.get("history") or [])]
    fi = data.get("feature_importance") or []
    if fi:
        fi = sorted(fi, key=lambda r: -float(r.get("gain", 0)))[:25]
        out += ["<h2>Feature importance (gain)</h2>",
                bar_chart([r["feature"] for r in fi], [float(r.get("gain", 0)) for r in fi],
                          "total gain by feature"), _grid_table(fi)]
    if data.get("timings"):
        out += ["<h2>Timings (seconds)</h2>", _kv_table(data["timings"])]
    tr = data.get("transcript")
    if tr:
        ok = tr.get("verified")
        status = ('<span class="ok">verified</span>' if ok else
                  '<span class="bad">NOT verified</span>')
        out += ["<h2>Transcript</h2>", f"<p>{status} {_esc(tr.get('detail', ''))}</p>"]
        ledger = tr.get("ledger") or {}
        if ledger:
            out += ["<h3>Disclosure ledger</h3>",
                    _grid_table([{"value kind": k, **(v if isinstance(v, dict) else
                                                      {"count": v})}
                                 for k, v in ledger.items()])]
    out.append(_RENDER_CHECK)
    out.append(f"<script type='application/json' id='report-data'>"
               f"{_esc(json.dumps({'job': job}, default=str))}</script></body></html>")
    return "\n".join(out)


def write_report(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(data), encoding="utf-8")
    return path
