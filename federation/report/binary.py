"""Report sections of a 0/1 target: discrimination (ROC, KS, PR), lift and gain by
decile, score distribution by class, calibration, the confusion matrix at a chosen
threshold, and the out-of-time comparison. Each takes the bank's (label, score)
pairs; numbers come from :mod:`federation.report.stats`."""

from __future__ import annotations

import numpy as np

from federation.report import stats as S
from federation.report.svg import (
    columns_chart,
    esc,
    grid,
    grid_table,
    kv_table,
    line_chart,
)
from parties.common import metrics


def choose_threshold(y, p, threshold: float | None) -> tuple[float, str]:
    """(threshold, how it was chosen): the one asked for, else the KS-optimal score."""
    if threshold is not None:
        return float(threshold), "chosen by the user (report option)"
    ks, t = S.ks_threshold(y, p)
    return t, f"KS-optimal: the score where TPR - FPR is largest (KS {ks:.4f})"


def discrimination(y, p, tag: str = "") -> str:
    fpr, tpr, _ = metrics.roc_curve(y, p)
    auc = metrics.auc(y, p)
    ks, _ = S.ks_threshold(y, p)
    roc = line_chart(f"roc{tag}", {f"ROC (AUC {auc:.3f})": (fpr, tpr)}, "ROC curve",
                     "false positive rate", "true positive rate", diagonal=True)
    pos = float(np.sum(np.asarray(y) == 1))
    frac = (tpr * pos + fpr * (len(y) - pos)) / max(len(y), 1)
    ksc = line_chart(f"ks{tag}", {"TPR (events)": (frac, tpr), "FPR (non-events)": (frac, fpr),
                                  f"KS {ks:.3f}": (frac, tpr - fpr)},
                     "KS curve", "fraction of population (by descending score)", "rate",
                     unit_y=True)
    rec, prec, ap = S.pr_curve(y, p)
    base = float(np.mean(y))
    pr = line_chart(f"pr{tag}", {f"PR (AP {ap:.3f})": (rec, prec),
                                 f"base rate {base:.3f}": ([0.0, 1.0], [base, base])},
                    "precision-recall curve", "recall", "precision", diagonal=True)
    return grid(roc, ksc, pr)


def decile_section(y, p, tag: str = "") -> str:
    rows = S.deciles(y, p)
    d = [r["decile"] for r in rows]
    lift = line_chart(f"lift{tag}", {"lift": (d, [r["lift"] for r in rows]),
                                     "cumulative lift": (d, [r["cumulative lift"]
                                                             for r in rows]),
                                     "random": (d, [1.0] * len(d))},
                      "lift by decile", "decile (1 = highest scores)", "lift", int_x=True)
    gx = [0, *d]
    gain = line_chart(f"gain{tag}",
                      {"model": (gx, [0.0, *(r["gain (cumulative events captured)"]
                                            for r in rows)]),
                       "random": (gx, [g / len(d) for g in gx])},
                      "cumulative gain", "decile (1 = highest scores)",
                      "share of events captured", int_x=True, unit_y=True)
    return grid(lift, gain) + grid_table(rows, "deciles")


def distribution(y, p) -> str:
    edges, ev, ne = S.histogram_by_class(y, p)
    cats = [f"{a:.3g}" for a in edges[:-1]]
    return grid(columns_chart("score-distribution", cats,
                              {"defaults (y = 1)": ev, "non-defaults (y = 0)": ne},
                              "score distribution by class (share of each class)",
                              "score (bin lower edge)", "share of class"))


def calibration_section(y, p) -> str:
    rows = S.calibration(y, p)
    pred = [r["mean predicted"] for r in rows]
    obs = [r["observed rate"] for r in rows]
    curve = line_chart("calibration", {"model": (pred, obs), "perfect": ([0, 1], [0, 1])},
                       "reliability curve (10 equal-width bins)", "mean predicted probability",
                       "observed default rate", diagonal=True)
    return (grid(curve) + kv_table({"Brier score": S.brier(y, p),
                                    "Brier score of the base rate (always predicting "
                                    "the mean)": S.brier(y, np.full(len(y), np.mean(y)))})
            + grid_table(rows))


def confusion_section(y, p, threshold: float, how: str) -> str:
    c = metrics.confusion(y, p, threshold)
    tpr = c["tp"] / max(c["tp"] + c["fn"], 1)
    fpr = c["fp"] / max(c["fp"] + c["tn"], 1)
    prec = c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else float("nan")
    return (f"<p>Threshold <b>{threshold:.6g}</b> ({esc(how)}); a row with score &ge; "
            "threshold is predicted to default.</p>"
            "<table class='confusion'><tr><th></th><th>predicted default</th>"
            f"<th>predicted non-default</th></tr><tr><th>actual default</th>"
            f"<td>{c['tp']:,}</td><td>{c['fn']:,}</td></tr><tr><th>actual non-default</th>"
            f"<td>{c['fp']:,}</td><td>{c['tn']:,}</td></tr></table>"
            + kv_table({"true positive rate (recall)": tpr, "false positive rate": fpr,
                        "precision": prec,
                        "predicted defaults": c["tp"] + c["fp"]}))


def out_of_time(dev: tuple, oot: tuple, threshold: float, name: str) -> str:
    """The OOT population beside the development (test) sample, then its own curves."""
    (yd, pd_), (yo, po) = dev, oot
    a, b = S.binary_summary(yd, pd_, threshold), S.binary_summary(yo, po, threshold)
    rows = [{"metric": k, "development (test split)": a[k], f"out-of-time ({name})": b[k],
             "change": b[k] - a[k]} for k in a]
    fd, td, _ = metrics.roc_curve(yd, pd_)
    fo, to, _ = metrics.roc_curve(yo, po)
    roc = line_chart("roc-oot", {f"development (AUC {a['AUC']:.3f})": (fd, td),
                                 f"out-of-time (AUC {b['AUC']:.3f})": (fo, to)},
                     "ROC: development vs out-of-time", "false positive rate",
                     "true positive rate", diagonal=True)
    c = metrics.confusion(yo, po, threshold)
    conf = grid_table([{"": "actual default", "predicted default": c["tp"],
                        "predicted non-default": c["fn"]},
                       {"": "actual non-default", "predicted default": c["fp"],
                        "predicted non-default": c["tn"]}])
    return (grid_table(rows) + grid(roc) + "<h3>Out-of-time lift and gain</h3>" +
            decile_section(yo, po, "-oot") +
            f"<h3>Out-of-time confusion matrix (threshold {threshold:.6g})</h3>" + conf)
