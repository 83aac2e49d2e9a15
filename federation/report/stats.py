"""The model-risk statistics the report shows, computed from (label, score) pairs.

numpy only, one definition each; tests compare them with scikit-learn
(``roc_auc_score``, ``average_precision_score``, ``brier_score_loss``,
``calibration_curve``) and with a direct numpy computation. ``y`` is 0/1 (1 = default,
the event), ``p`` the model's probability of the event.
"""

from __future__ import annotations

import numpy as np

from parties.common import metrics

#: a bin share below this counts as this in the PSI's logarithm (empty bins)
PSI_FLOOR = 1e-4
N_DECILES = 10


def _yp(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and scores ({p.size}) differ in length")
    return y, p


def ks_threshold(y, p) -> tuple[float, float]:
    """(KS, the score threshold where TPR - FPR is largest): rows with ``p >= threshold``
    are predicted events, so the confusion matrix at it has TPR - FPR = KS."""
    fpr, tpr, thr = metrics.roc_curve(y, p)
    k = int(np.argmax(tpr - fpr))
    t = float(thr[k]) if np.isfinite(thr[k]) else float(np.max(p)) + 1e-12
    return float(tpr[k] - fpr[k]), t


def pr_curve(y, p) -> tuple[np.ndarray, np.ndarray, float]:
    """(recall, precision, average precision) over the distinct thresholds, descending.
    Average precision is ``sum_n (R_n - R_{n-1}) P_n`` (scikit-learn's
    ``average_precision_score``; no interpolation)."""
    y, p = _yp(y, p)
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    ends = np.r_[np.flatnonzero(np.diff(p)), y.size - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    pos = tps[-1] if tps.size else 0.0
    if pos == 0:
        return np.zeros(1), np.ones(1), float("nan")
    precision = tps / (tps + fps)
    recall = tps / pos
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return np.r_[0.0, recall], np.r_[1.0, precision], ap


def brier(y, p) -> float:
    """Mean squared difference between the probability and the 0/1 outcome."""
    y, p = _yp(y, p)
    return float(np.mean((p - y) ** 2))


def calibration(y, p, n_bins: int = 10) -> list[dict]:
    """Reliability table over ``n_bins`` equal-width probability bins on [0, 1]
    (scikit-learn's ``calibration_curve(strategy="uniform")``: bins ``(a, b]``, the
    first ``[0, b]``; empty bins are left out): per bin rows, mean predicted
    probability, observed event rate."""
    y, p = _yp(y, p)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ids = np.searchsorted(edges[1:-1], p)
    rows = []
    for b in range(n_bins):
        m = ids == b
        if m.any():
            rows.append({"bin": ("[" if b == 0 else "(") + f"{edges[b]:.2f}, "
                         f"{edges[b + 1]:.2f}]", "rows": int(m.sum()),
                         "mean predicted": float(p[m].mean()),
                         "observed rate": float(y[m].mean())})
    return rows


def deciles(y, p, n_groups: int = N_DECILES) -> list[dict]:
    """Lift and gain table: rows sorted by descending score (stable, so ties keep their
    order), group g holds ranks ``[floor(g n / G), floor((g + 1) n / G))``."""
    y, p = _yp(y, p)
    n = y.size
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    events, rate = float(ys.sum()), float(ys.mean()) if n else float("nan")
    cuts = [(g * n) // n_groups for g in range(n_groups + 1)]
    rows, cum_e, cum_n = [], 0.0, 0
    for g in range(n_groups):
        a, b = cuts[g], cuts[g + 1]
        if b <= a:
            continue
        e = float(ys[a:b].sum())
        cum_e += e
        cum_n = b
        cum_ne = (cum_n - cum_e) / max(n - events, 1.0)
        rows.append({"decile": g + 1, "rows": b - a, "min score": float(ps[b - 1]),
                     "max score": float(ps[a]), "events": int(e),
                     "event rate": e / (b - a),
                     "lift": (e / (b - a)) / rate if rate else float("nan"),
                     "cumulative lift": (cum_e / cum_n) / rate if rate else float("nan"),
                     "gain (cumulative events captured)": cum_e / events if events else
                     float("nan"),
                     "KS": cum_e / events - cum_ne if events else float("nan")})
    return rows


def quantile_edges(x, n_bins: int = N_DECILES) -> np.ndarray:
    """Interior edges of ``n_bins`` quantile bins of the non-missing values (duplicates
    dropped); a value ``>= edge`` goes right."""
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.zeros(0)
    e = np.unique(np.quantile(v, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return e[e > v.min()]


def bin_shares(x, edges) -> np.ndarray:
    """Counts per bin of ``x`` over ``edges`` (``x >= edge`` goes right), missing last."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.searchsorted(np.asarray(edges, np.float64), x, side="right")
    idx[~np.isfinite(x)] = len(edges) + 1
    return np.bincount(idx, minlength=len(edges) + 2).astype(np.int64)


def psi(expected_counts, actual_counts) -> float:
    """Population stability index ``sum (a_i - e_i) ln(a_i / e_i)`` over bins, with
    ``e_i``, ``a_i`` the bins' shares of each population, each floored at
    :data:`PSI_FLOOR` (an empty bin would make it infinite); bins empty in both
    populations add nothing."""
    e = np.asarray(expected_counts, dtype=np.float64)
    a = np.asarray(actual_counts, dtype=np.float64)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise ValueError("PSI needs two non-empty distributions over the same bins")
    keep = (e > 0) | (a > 0)
    es = np.maximum(e[keep] / e.sum(), PSI_FLOOR)
    as_ = np.maximum(a[keep] / a.sum(), PSI_FLOOR)
    return float(np.sum((as_ - es) * np.log(as_ / es)))


def psi_table(expected, actual, edges, labels: list[str] | None = None) -> dict:
    """PSI of one variable (or the score) between two samples binned on ``edges``:
    ``{"psi", "bins": [{bin, expected, actual, expected share, actual share}]}``."""
    ec, ac = bin_shares(expected, edges), bin_shares(actual, edges)
    return psi_from_counts(ec, ac, labels or interval_labels(edges))


def psi_from_counts(ec, ac, labels: list[str]) -> dict:
    ec, ac = np.asarray(ec, np.int64), np.asarray(ac, np.int64)
    rows = [{"bin": lab, "expected": int(e), "actual": int(a),
             "expected share": e / max(ec.sum(), 1), "actual share": a / max(ac.sum(), 1)}
            for lab, e, a in zip(labels, ec, ac, strict=True) if e or a or lab != "Missing"]
    return {"psi": psi(ec, ac), "bins": rows}


def interval_labels(edges) -> list[str]:
    e = ["-inf", *(f"{float(c):.6g}" for c in edges), "inf"]
    return [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:], strict=True)] + ["Missing"]


def psi_band(value: float) -> str:
    """The customary reading: < 0.1 stable, 0.1-0.25 some shift, >= 0.25 significant."""
    if not np.isfinite(value):
        return "n/a"
    return "stable" if value < 0.1 else ("some shift" if value < 0.25 else "significant shift")


def histogram_by_class(y, p, n_bins: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bin edges over the score range, share of events per bin, share of non-events)."""
    y, p = _yp(y, p)
    lo, hi = float(p.min()), float(p.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, n_bins + 1)
    ev, _ = np.histogram(p[y == 1], edges)
    ne, _ = np.histogram(p[y == 0], edges)
    return edges, ev / max(ev.sum(), 1), ne / max(ne.sum(), 1)


def binary_summary(y, p, threshold: float) -> dict:
    """The headline figures of one labelled population at ``threshold``."""
    y, p = _yp(y, p)
    ks, _ = ks_threshold(y, p)
    c = metrics.confusion(y, p, threshold)
    return {"rows": int(y.size), "events": int(y.sum()), "event rate": float(y.mean()),
            "AUC": metrics.auc(y, p), "Gini": 2 * metrics.auc(y, p) - 1, "KS": ks,
            "PR-AUC (average precision)": pr_curve(y, p)[2], "Brier score": brier(y, p),
            "log loss": metrics.log_loss(y, p),
            "accuracy at threshold": (c["tp"] + c["tn"]) / max(y.size, 1)}
