"""HTML job report: self-contained, and its plots render in a real headless browser."""

import re

import numpy as np
from support.browser import rendered_series

from federation.report import render_report, write_report


def _report_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + 0.6 * rng.random(400), 0, 1)
    return {
        "job": {"id": "job-1", "name": "credit", "algorithm": "secureboost", "state": "done"},
        "psi": {"intersection": 400, "bank_rows": 500},
        "metrics": {"test": {"auc": 0.81, "ks": 0.5}},
        "history": [{"iteration": i, "train_loss": 1 / (i + 1), "valid_auc": 0.7 + i / 100}
                    for i in range(6)],
        "scores": {"y": y.tolist(), "p": p.tolist()},
        "feature_importance": [{"feature": f"platform_f{i}", "gain": float(i + 1), "splits": i}
                               for i in range(4)],
        "timings": {"psi": 1.5, "training": 20.0},
        "transcript": {"verified": True, "detail": "both transcripts agree",
                       "ledger": {"partition": {"count": 12, "to": "bank"}}},
    }


def test_report_is_self_contained():
    page = render_report(_report_data())
    assert "<svg" in page and "ROC curve" in page and "KS curve" in page
    assert not re.search(r"(src|href)\s*=\s*['\"]?https?:", page), "external resource in report"
    assert "verified" in page and "platform_f3" in page


def test_report_renders_plots_in_headless_chromium(tmp_path):
    path = write_report(_report_data(), tmp_path / "report.html")
    # ROC (1) + KS (3) + loss (1) + auc (1) series + 4 importance bars
    assert rendered_series(path, tmp_path) == 10
