"""Multiclass outputs of a job: the runner's test scores and metrics, the scoring CSV,
the report's confusion matrix and per-class AUC (algorithm-independent plumbing)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from federation import runner
from federation.data import Dataset
from federation.node.jobs import write_scores
from federation.report import render_report


def _test_split(n=40, k=3, seed=1):
    rng = np.random.default_rng(seed)
    y = np.r_[np.arange(k), rng.integers(0, k, n - k)]
    p = rng.dirichlet(np.ones(k), n)
    p[np.arange(n), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    ds = Dataset("t", [f"id{i}" for i in range(n)], np.zeros((n, 1)), ["x"], y,
                 ["agri", "bank", "retail"][:k])
    return ds, p


def test_evaluate_multiclass_carries_ids_probabilities_and_metrics():
    test, p = _test_split()
    rep, scores = runner._evaluate("multiclass", test, p, 0.5)
    assert scores["ids"] == test.ids and scores["classes"] == ["agri", "bank", "retail"]
    assert np.allclose(scores["p"], p) and scores["pred"] == p.argmax(1).tolist()
    assert scores["y"] == test.y.tolist() and scores["label_kind"] == "multiclass"
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(test.y, p.argmax(1)))
    assert rep["auc"] == pytest.approx(skm.roc_auc_score(test.y, p, multi_class="ovr"))
    assert rep["classes"] == test.classes and len(rep["confusion"]) == 3
    with pytest.raises(runner.ProtocolError, match="shape"):
        runner._evaluate("multiclass", test, p[:, :2], 0.5)


def test_evaluate_binary_keeps_its_fields_and_adds_ids():
    test = Dataset("t", ["a", "b", "c", "d"], np.zeros((4, 1)), ["x"],
                   np.array([0, 1, 1, 0], dtype=np.int8))
    rep, scores = runner._evaluate("binary", test, [0.2, 0.7, 0.4, 0.1], 0.5)
    assert scores == {"ids": ["a", "b", "c", "d"], "y": [0, 1, 1, 0],
                      "p": [0.2, 0.7, 0.4, 0.1], "label_kind": "binary"}
    assert rep["confusion"] == {"tp": 1, "fp": 0, "tn": 2, "fn": 1} and rep["auc"] == 1.0


def test_a_class_missing_from_the_training_split_is_named():
    train = Dataset("t", ["a", "b", "c"], np.zeros((3, 1)), ["x"], np.array([0, 2, 0]),
                    ["low", "mid", "high"])
    with pytest.raises(runner.JobFailed, match=r"class\(es\) \['mid'\] of the label have "
                                               r"no rows in the training split"):
        runner._check_training_labels("multiclass", train)
    runner._check_training_labels("multiclass", Dataset(
        "t", ["a", "b"], np.zeros((2, 1)), ["x"], np.array([0, 1]), ["low", "mid"]))


def test_multiclass_scores_csv(tmp_path):
    out = write_scores(tmp_path / "s.csv", {"ids": ["e1", "e2"], "classes": [0, 7],
                                             "pred": [7, 0], "p": [[0.25, 0.75], [0.9, 0.1]]})
    assert out.read_text().splitlines() == ["id,class,p_0,p_7", "e1,7,0.250000,0.750000",
                                            "e2,0,0.900000,0.100000"]
    assert (out.stat().st_mode & 0o777) == 0o600


def test_report_renders_confusion_matrix_and_per_class_auc():
    test, p = _test_split()
    rep, scores = runner._evaluate("multiclass", test, p, 0.5)
    html = render_report({"job": {"id": "j1", "algorithm": "secureboost"},
                          "metrics": {"test": {k: v for k, v in rep.items()
                                               if not isinstance(v, list)}},
                          "scores": scores})
    assert "Confusion matrix" in html and "predicted retail" in html
    assert "actual agri" in html and "auc (one-vs-rest)" in html
    cm = skm.confusion_matrix(test.y, p.argmax(1))
    assert f"<td>{cm[0, 0]:,}</td>" in html
    assert f"AUC {rep['auc_per_class'][1]:.3f}" in html
    assert "ROC and KS" not in html


def test_python_api_multiclass_metrics_and_scores():
    """run_local: result.metrics carries the multiclass metrics; score() gives the
    predicted class and each class's probability per shared id."""
    from pathlib import Path

    import pandas as pd

    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY
    data = Path(__file__).resolve().parents[1] / "data"
    g = pd.read_csv(data / "breast_hetero_guest.csv")
    h = pd.read_csv(data / "breast_hetero_host.csv")
    s = g.x0 + h.x0
    names = np.array(["high", "low", "mid"])
    g = g.assign(y=names[np.digitize(s, np.quantile(s, [0.33, 0.66]))])
    job = {"job": {"name": "mc", "algorithm": "secureboost", "dataset": "loans",
                   "peer_dataset": "enterprises"}, "psi": {"id_type": "string"},
           "params": {"objective": "multi:softprob", "n_trees": 3, "max_depth": 3},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25}}
    res = run_local(job, bank=g, platform=h, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY, seed=3)
    m = res.metrics
    assert {"test_accuracy", "test_macro_f1", "test_log_loss", "test_auc"} <= set(m)
    assert m["test"]["classes"] == ["high", "low", "mid"] and m["test_accuracy"] > 0.7
    assert np.asarray(m["test"]["confusion"]).sum() == m["n_test"]
    ts = res.bank.test_scores
    assert skm.accuracy_score(ts["y"], ts["pred"]) == pytest.approx(m["test_accuracy"])
    scores = res.score(g.drop(columns=["y"]).head(50), h)
    assert list(scores.columns) == ["id", "class", "p_high", "p_low", "p_mid"]
    assert len(scores) == 50
    p = scores[["p_high", "p_low", "p_mid"]].to_numpy()
    assert np.allclose(p.sum(axis=1), 1.0)
    assert (scores["class"].to_numpy() == names[np.argsort(names)][p.argmax(1)]).all()
