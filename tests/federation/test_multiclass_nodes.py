"""A 4-class SecureBoost job through two real nodes (CLI): the label's class names
mapped in sorted order, multi:softprob trained and evaluated (accuracy, macro-F1,
per-class AUC, confusion matrix in status, report and test scores with row ids),
compared with XGBoost on the joined data; a scoring job writes each row's class and
per-class probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn import metrics as skm
from support.nodes import run_cli, two_nodes, write_job

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
N_BANK, N_PLAT, SHIFT = 3000, 3000, 200
CLASSES = ["agri", "manuf", "retail", "services"]


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """default_credit rounded to quarters (fewer than 256 distinct values per column, so
    XGBoost's sketch is exact and the cuts agree whatever the row order) and a 4-class
    label from both parties' columns, as names."""
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv")[:N_PLAT + SHIFT]
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv")[:N_PLAT + SHIFT]
    g, h = (df.assign(**{c: np.round(df[c] * 4) / 4 for c in df.columns if c[0] == "x"})
            for df in (g, h))
    rng = np.random.default_rng(5)
    t = 1.0 * g.x1 - 0.7 * g.x7 + 0.9 * h.x0 - 0.5 * h.x4 + 0.4 * rng.standard_normal(len(g))
    k = np.digitize(t, np.quantile(t, [0.3, 0.55, 0.8]))
    bank = g.drop(columns=["y"]).assign(y=[CLASSES[i] for i in k])[:N_BANK]
    return bank, h[SHIFT:]


@pytest.mark.skipif(not (ROOT / "psi" / "protocol.py").exists(), reason="psi not built")
def test_four_class_secureboost_through_two_nodes(tmp_path, capsys, monkeypatch):
    bank_df, plat_df = _frames()
    j = bank_df.merge(plat_df, on="id", suffixes=("_b", "_p"))
    X = j.drop(columns=["id", "y"]).to_numpy(float)
    y = np.searchsorted(CLASSES, j["y"].to_numpy())
    pos = {str(i): r for r, i in enumerate(j["id"])}
    with two_nodes(tmp_path, monkeypatch, ["psi", "secureboost", "score"], bank_df, plat_df):
        params = {"objective": "multi:softprob", "num_class": 4, "n_trees": 5,
                  "max_depth": 3, "max_bin": 256, "learning_rate": 0.3}
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "mc", "secureboost", params)), "--wait")
        assert code == 0, err + out
        job_id = out.split()[0]
        code, out, err = run_cli(capsys, "job", "status", job_id)
        assert code == 0 and "test_accuracy=" in out and "test_macro_f1=" in out, err + out
        rec = json.loads(run_cli(capsys, "job", "status", job_id, "--json")[1])
        m = rec["metrics"]
        assert rec["state"] == "done" and m["test"]["classes"] == CLASSES
        scores = json.loads(Path(rec["artifacts"]["test_scores"]).read_text())
        assert scores["classes"] == CLASSES and scores["label_kind"] == "multiclass"
        rows = np.array([pos[i] for i in scores["ids"]])
        assert (y[rows] == np.array(scores["y"])).all()
        test = np.zeros(len(y), bool)
        test[rows] = True
        ref = xgb.train(dict(tree_method="hist", max_bin=256, max_depth=3, eta=0.3,
                             objective="multi:softprob", num_class=4, nthread=1),
                        xgb.DMatrix(X[~test], y[~test]), 5)
        p_ref = ref.predict(xgb.DMatrix(X[rows]))
        p = np.array(scores["p"])
        auc_ref = [skm.roc_auc_score(y[rows] == c, p_ref[:, c]) for c in range(4)]
        acc_ref = skm.accuracy_score(y[rows], p_ref.argmax(1))
        with capsys.disabled():
            print(f"4-class secureboost through nodes: test accuracy {m['test_accuracy']:.4f}"
                  f" (xgboost {acc_ref:.4f}), per-class AUC "
                  f"{np.round(m['test']['auc_per_class'], 4).tolist()} (xgboost "
                  f"{np.round(auc_ref, 4).tolist()}), max|p - xgboost| "
                  f"{np.abs(p - p_ref).max():.2e}")
        assert np.abs(p - p_ref).max() < 1e-5
        assert abs(m["test_accuracy"] - acc_ref) < 1e-9
        assert np.abs(np.array(m["test"]["auc_per_class"]) - auc_ref).max() < 1e-4
        assert m["test"]["confusion"] == skm.confusion_matrix(
            y[rows], p.argmax(1), labels=range(4)).tolist()
        assert min(auc_ref) > 0.7

        code, out, err = run_cli(capsys, "job", "report", job_id, "--out",
                                 str(tmp_path / "mc.html"))
        assert code == 0, err
        page = (tmp_path / "mc.html").read_text()
        assert "Confusion matrix" in page and "predicted services" in page
        assert "auc (one-vs-rest)" in page and "ROC and KS" not in page

        out_csv = tmp_path / "scores.csv"
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "score", "score",
                                               extra_job={"model": job_id,
                                                          "output": str(out_csv)})), "--wait")
        assert code == 0, err + out
        with out_csv.open() as fh:
            got = list(csv.DictReader(fh))
        assert list(got[0]) == ["id", "class"] + [f"p_{c}" for c in CLASSES]
        assert len(got) == len(y)
        P = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in got])
        full = ref.predict(xgb.DMatrix(X[[pos[r["id"]] for r in got]]))
        assert np.abs(P - full).max() < 2e-6                  # 6 decimals in the CSV
        assert [r["class"] for r in got] == [CLASSES[i] for i in P.argmax(1)]
