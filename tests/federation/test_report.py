"""The model-risk report: its statistics against scikit-learn and plain numpy, every
section present and every plot laid out in a real headless Chromium (one page load),
and the reviewer's findings (counts as seconds, fractional iteration ticks, a fixed
0.5 threshold, LR |coef| as "gain")."""

import re

import numpy as np
import pytest
import sklearn.metrics as skm
from sklearn.calibration import calibration_curve
from support.browser import page_state

from federation.report import render_report, sections, stats, write_report

rng = np.random.default_rng(3)


def _yp(n=1500):
    y = rng.integers(0, 2, n).astype(float)
    p = np.clip(0.3 * y + 0.55 * rng.random(n), 0.001, 0.999)
    return y, np.round(p, 2)      # rounded: many tied scores


def test_stats_equal_scikit_learn():
    y, p = _yp()
    rec, prec, ap = stats.pr_curve(y, p)
    assert ap == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    assert stats.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-15)
    ks, thr = stats.ks_threshold(y, p)
    fpr, tpr, _ = skm.roc_curve(y, p)
    assert ks == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    # the KS-optimal threshold is where the confusion matrix reaches the KS
    pred = p >= thr
    assert pred[y == 1].mean() - pred[y == 0].mean() == pytest.approx(ks, abs=1e-12)
    s = stats.binary_summary(y, p, thr)
    assert s["AUC"] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    for n_bins in (10, 7):
        true, pred_ = calibration_curve(y, p, n_bins=n_bins, strategy="uniform")
        rows = stats.calibration(y, p, n_bins)
        assert [r["observed rate"] for r in rows] == pytest.approx(true, abs=1e-12)
        assert [r["mean predicted"] for r in rows] == pytest.approx(pred_, abs=1e-12)
    # scores exactly on the bin edges go where scikit-learn puts them
    edge = np.array([0.1, 0.2, 0.5, 0.9, 1.0, 0.0])
    ye = np.array([1, 0, 1, 0, 1, 0.0])
    assert [r["observed rate"] for r in stats.calibration(ye, edge)] == \
        pytest.approx(calibration_curve(ye, edge, n_bins=10)[0])


def test_deciles_and_psi_equal_plain_numpy():
    y, p = _yp(1003)
    rows = stats.deciles(y, p)
    order = np.argsort(-p, kind="stable")
    # rank r (0 = highest score) is in decile g where floor(g n / 10) <= r
    group = (np.arange(y.size)[:, None] >= np.array([(g * y.size) // 10 for g in range(1, 10)])
             ).sum(1)
    ev = np.bincount(group, weights=y[order], minlength=10)
    cnt = np.bincount(group, minlength=10)
    rate = y.mean()
    assert [r["rows"] for r in rows] == cnt.tolist()
    assert [r["events"] for r in rows] == ev.astype(int).tolist()
    assert [r["lift"] for r in rows] == pytest.approx(ev / cnt / rate, abs=1e-12)
    assert [r["gain (cumulative events captured)"] for r in rows] == \
        pytest.approx(np.cumsum(ev) / y.sum(), abs=1e-12)
    assert rows[-1]["cumulative lift"] == pytest.approx(1.0)
    # PSI: np.histogram on the same edges, shares floored, sum (a - e) ln(a / e)
    e_x = rng.normal(size=4000)
    a_x = np.r_[rng.normal(0.3, 1.2, 2500), [np.nan] * 40]
    edges = stats.quantile_edges(e_x)
    assert len(edges) == 9
    got = stats.psi_table(e_x, a_x, edges)
    bins = np.r_[-np.inf, edges, np.inf]
    ec = np.r_[np.histogram(e_x, bins)[0], 0]
    ac = np.r_[np.histogram(a_x[~np.isnan(a_x)], bins)[0], 40]
    es, as_ = np.maximum(ec / ec.sum(), 1e-4), np.maximum(ac / ac.sum(), 1e-4)
    assert got["psi"] == pytest.approx(np.sum((as_ - es) * np.log(as_ / es)), abs=1e-12)
    assert [b["actual"] for b in got["bins"]] == ac.tolist()
    assert stats.psi(ec, ec) == 0.0
    assert stats.psi_band(0.05) == "stable" and stats.psi_band(0.3) == "significant shift"


def _full_data():
    y, p = _yp(800)
    yo, po = _yp(500)
    binning = {"tables": {"x0": {"method": "monotonic", "iv": 0.3, "cuts": [0.1, 0.5],
                                 "bins": [{"bin": "[-inf, 0.1)", "count": 10, "woe": 0.2,
                                           "iv": 0.1}]}},
               "platform_tables": {"platform#0": {"method": "monotonic", "iv": 0.2,
                                                  "bins": [{"bin": "bins 0-3", "count": 7,
                                                            "woe": -0.4, "iv": 0.05}]}},
               "iv_ranking": [{"feature": "x0", "iv": 0.3},
                              {"feature": "platform#0", "iv": 0.2}]}
    return {
        "job": {"id": "job-1", "name": "credit", "algorithm": "logistic_regression"},
        "params": {"learning_rate": 0.05, "epochs": 3},
        "evaluation": {"test_fraction": 0.25, "threshold": 0.5},
        "psi": {"intersection": 800, "own_size": 1000, "peer_size": 900},
        "metrics": {"test": {"auc": 0.81, "ks": 0.5}},
        "history": [{"iteration": i, "train_loss": 1 / (i + 1), "valid_auc": 0.7 + i / 100}
                    for i in range(3)],
        "scores": {"y": y.tolist(), "p": p.tolist(), "label_kind": "binary"},
        "oot": {"name": "2025Q1", "scores": {"y": yo.tolist(), "p": po.tolist()}},
        "stability": {"variables": [{"feature": "x0", "psi": 0.02, "binned_by": "deciles",
                                     "bins": [{"bin": "[-inf, 0.1)", "expected": 5,
                                               "actual": 6}]}], "note": "platform note"},
        "binning": binning,
        "scorecard": {"pdo": 20, "base_score": 600, "base_odds": 50, "factor": 28.85,
                      "offset": 487.1, "rows": [{"feature": "x0", "bin": "[-inf, 0.1)",
                                                 "woe": 0.2, "points": 12.0}]},
        "coefficients": {"bank": [{"feature": "x0", "coefficient": -0.7},
                                  {"feature": "x1", "coefficient": 0.4}], "intercept": -1.2,
                         "platform": {"features (count)": 4}},
        "timings": {"psi": 1.5, "training": 20.0, "training.obf_chunks_bank": 12.0},
        "transcript": {"verified": True, "detail": "both transcripts agree",
                       "ledger": {"partition": {"count": 12, "to": "bank"}}},
    }


SECTIONS = ["job", "hyper-parameters", "data", "metrics", "discrimination", "deciles",
            "distribution", "calibration", "confusion", "oot", "stability", "woe-iv",
            "scorecard", "coefficients", "history", "timings", "transcript"]
PLOTS = ["roc", "ks", "pr", "lift", "gain", "score-distribution", "calibration", "roc-oot",
         "lift-oot", "gain-oot", "psi-score", "iv", "coefficients", "history-loss",
         "history-auc"]


def test_report_sections_and_plots_render_in_headless_chromium(tmp_path):
    data = _full_data()
    page = render_report(data)
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:)?//", page), "external resource"
    assert "<script src" not in page and "@import" not in page
    state = page_state(write_report(data, tmp_path / "report.html"), tmp_path)
    assert state["sections"] == SECTIONS
    assert sorted(state["plots"]) == sorted(PLOTS)
    empty = [k for k, n in state["plots"].items() if n == 0]
    assert not empty, f"plots with no series laid out: {empty}"
    assert state["plots"]["ks"] == 3 and state["plots"]["coefficients"] == 2


def test_reviewer_findings_fixed():
    data = _full_data()
    page = render_report(data)
    y, p = np.asarray(data["scores"]["y"]), np.asarray(data["scores"]["p"])
    ks, thr = stats.ks_threshold(y, p)
    # the threshold is the KS-optimal score (not 0.5), and the report says so
    assert f"Threshold <b>{thr:.6g}</b> (KS-optimal" in page and thr != 0.5
    chosen = render_report({**data, "threshold": 0.37})
    assert "Threshold <b>0.37</b> (chosen by the user" in chosen
    # counts are not seconds
    secs, counts = _section(data, "timings").split("<h3>Counts</h3>")
    assert "obf_chunks" in counts and "obf_chunks" not in secs and "<td>12</td>" in counts
    # iteration ticks are whole numbers
    ticks = re.findall(r'y="250" font-size="10" text-anchor="middle">([^<]+)</text>',
                       _section(data, "history"))
    assert ticks and all(t.isdigit() for t in ticks), ticks
    # LR: signed coefficients, the platform's part named as such, no |coef| "gain"
    coef = _section(data, "coefficients")
    assert "-0.7" in coef and "gain" not in coef.lower() and "Platform part" in coef


def _section(data: dict, sid: str) -> str:
    return next(body for s, _, body in sections(data) if s == sid)


def test_sections_by_label_kind():
    y = rng.normal(size=300)
    reg = [s for s, _, _ in sections({"job": {"id": "r"}, "scores": {
        "y": y.tolist(), "p": (y + 0.1).tolist(), "label_kind": "continuous"}})]
    assert "regression" in reg and "calibration" not in reg and "deciles" not in reg
    p = rng.dirichlet([1, 1, 1], 200)
    mc = [s for s, _, _ in sections({"job": {"id": "m"}, "scores": {
        "y": rng.integers(0, 3, 200).tolist(), "p": p.tolist(), "label_kind": "multiclass",
        "classes": ["a", "b", "c"]}})]
    assert "classes" in mc and "discrimination" not in mc and "confusion" not in mc
    # without an out-of-time population the stability section says how to get one
    base = {k: v for k, v in _full_data().items() if k not in ("oot", "stability")}
    stab = _section(base, "stability")
    assert "--oot" in stab and "oot" not in [s for s, _, _ in sections(base)]


@pytest.mark.parametrize("y,p", [([0, 0, 0, 0], [0.1, 0.2, 0.3, 0.4]),    # no event
                                 ([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]),    # constant score
                                 ([1, 0], [0.9, 0.1])])                    # two rows
def test_degenerate_test_rows_still_render(y, p):
    page = render_report({"job": {"id": "d"}, "scores": {"y": y, "p": p},
                          "oot": {"name": "o", "scores": {"y": y, "p": p}}})
    assert '<section id="confusion">' in page and '<section id="stability">' in page


def test_scoring_csvs_read_back_as_the_node_wrote_them(tmp_path):
    """The report reads a scoring job's CSV as federation.node.jobs.write_scores writes
    it: binary (extra scorecard columns ignored) and multiclass (p_<class> columns)."""
    from federation.node.jobs import write_scores
    from federation.node.results import _read_class_scores, _read_scores
    path = write_scores(tmp_path / "b.csv", {"ids": ["a", "b"], "p": [0.25, 0.5],
                                             "columns": {"points": [600.5, 580.0],
                                                         "reason_1": ["x, y", "z"]}})
    assert _read_scores(str(path)) == (["a", "b"], [0.25, 0.5])
    path = write_scores(tmp_path / "m.csv", {"ids": ["a", "b"], "classes": ["lo", "hi"],
                                             "pred": ["hi", "lo"],
                                             "p": [[0.25, 0.75], [0.9, 0.1]]})
    assert _read_class_scores(str(path), ["lo", "hi"]) == (["a", "b"],
                                                           [[0.25, 0.75], [0.9, 0.1]])
    with pytest.raises(ValueError, match="expected an id,score CSV"):
        _read_scores(str(path))
