"""Report benchmark: seconds to compute the binary report's statistics and to render the
whole page for N test rows and N out-of-time rows, beside scikit-learn computing the
same metrics (roc_auc_score, roc_curve for KS, average_precision_score,
brier_score_loss, calibration_curve) and numpy the same PSI, in the same run; the ratio
and the page size. Checks the values agree.

    .venv/bin/python bench/report.py --json out.json           # 30,000 rows, 3 repeats
    .venv/bin/python bench/report.py --rows 5000 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import sklearn.metrics as skm  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402

from federation.report import render_report, stats  # noqa: E402


def make(rows: int, shift: float, seed: int):
    rng = np.random.default_rng(seed)
    z = rng.normal(shift, 1.0, rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(1.5 - z))).astype(float)
    return y, np.round(1 / (1 + np.exp(1.5 - 0.8 * z)), 6)   # 6 decimals as a score CSV


def ours(y, p, yo, po) -> dict:
    _, thr = stats.ks_threshold(y, p)
    out = stats.binary_summary(y, p, thr)
    out["calibration"] = [r["observed rate"] for r in stats.calibration(y, p)]
    out["deciles"] = stats.deciles(y, p)
    out["psi"] = stats.psi_table(p, po, stats.quantile_edges(p))["psi"]
    return out


def reference(y, p, po) -> dict:
    fpr, tpr, _ = skm.roc_curve(y, p)
    edges = np.r_[-np.inf, stats.quantile_edges(p), np.inf]
    e = np.maximum(np.histogram(p, edges)[0] / p.size, 1e-4)
    a = np.maximum(np.histogram(po, edges)[0] / po.size, 1e-4)
    return {"AUC": skm.roc_auc_score(y, p), "KS": float(np.max(tpr - fpr)),
            "PR-AUC (average precision)": skm.average_precision_score(y, p),
            "Brier score": skm.brier_score_loss(y, p),
            "calibration": calibration_curve(y, p, n_bins=10)[0].tolist(),
            "psi": float(np.sum((a - e) * np.log(a / e)))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    y, p = make(args.rows, 0.0, 1)
    yo, po = make(args.rows, 0.3, 2)
    data = {"job": {"id": "bench"}, "scores": {"y": y.tolist(), "p": p.tolist()},
            "oot": {"name": "oot", "scores": {"y": yo.tolist(), "p": po.tolist()}}}
    t_ours, t_ref, t_page = [], [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        got = ours(y, p, yo, po)
        t_ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref = reference(y, p, po)
        t_ref.append(time.perf_counter() - t)
        t = time.perf_counter()
        page = render_report(data)
        t_page.append(time.perf_counter() - t)
    agree = all(abs(got[k] - ref[k]) < 1e-9 for k in ("AUC", "KS", "PR-AUC (average precision)",
                                                       "Brier score", "psi")) and \
        np.allclose(got["calibration"], ref["calibration"], atol=1e-12, rtol=0)
    out = {"rows": args.rows, "stats_s_median": statistics.median(t_ours),
           "sklearn_numpy_s_median": statistics.median(t_ref),
           "ratio": statistics.median(t_ours) / statistics.median(t_ref),
           "page_s_median": statistics.median(t_page), "page_bytes": len(page.encode()),
           "values_agree": agree}
    print("| rows (test + OOT) | fedjoint stats s | sklearn + numpy s | ratio | whole page s "
          "| page KiB | agree |")
    print(f"| {args.rows} + {args.rows} | {out['stats_s_median']:.3f} | "
          f"{out['sklearn_numpy_s_median']:.3f} | {out['ratio']:.2f}x | "
          f"{out['page_s_median']:.2f} | {out['page_bytes'] / 1024:.0f} | {agree} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
