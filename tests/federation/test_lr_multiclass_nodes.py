"""A 4-class logistic-regression job (multi_class = "multinomial") through two real nodes
(CLI): class names mapped in sorted order, trained over one PSI, evaluated (accuracy,
macro-F1, per-class AUC, confusion in status and test scores with row ids), compared
with scikit-learn's multinomial LogisticRegression on the joined data (same L2, same
standardisation; tolerance as tests/parties/test_lr_multiclass.py: accuracy within
0.01); a scoring job writes each row's class and per-class probabilities."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.linear_model import LogisticRegression
from support.nodes import run_cli, two_nodes, write_job

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
N, SHIFT = 3000, 200
CLASSES = ["current", "current_high", "default", "default_high"]


def _frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """default_credit with a 4-class label from the bank's own data (default or not x a
    withheld bank column above its mean), as names; the platform's rows shifted so the
    intersection is a strict subset of both."""
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv")[:N + SHIFT]
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv")[:N + SHIFT]
    k = 2 * g.y.to_numpy() + (g.x0.to_numpy() > 0)
    bank = g.drop(columns=["y", "x0"]).assign(y=[CLASSES[i] for i in k])[:N]
    return bank, h[SHIFT:]


def test_four_class_lr_through_two_nodes(tmp_path, capsys, monkeypatch):
    bank_df, plat_df = _frames()
    j = bank_df.merge(plat_df, on="id", suffixes=("_b", "_p"))
    X = j.drop(columns=["id", "y"]).to_numpy(float)
    y = np.searchsorted(CLASSES, j["y"].to_numpy())
    pos = {str(i): r for r, i in enumerate(j["id"])}
    lam = 3e-2
    with two_nodes(tmp_path, monkeypatch, ["psi", "logistic_regression", "score"],
                   bank_df, plat_df):
        params = {"multi_class": "multinomial", "epochs": 60, "batch_size": 0,
                  "learning_rate": 0.1, "reg_lambda": lam, "early_stopping": "none",
                  "seed": 3}
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "mclr", params=params)), "--wait")
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
        # the reference: each party standardises with its own training rows' statistics
        Xs = (X - X[~test].mean(0)) / X[~test].std(0)
        sk = LogisticRegression(C=1.0 / ((~test).sum() * lam), max_iter=10000,
                                tol=1e-10).fit(Xs[~test], y[~test])
        p_ref = sk.predict_proba(Xs[rows])
        p = np.array(scores["p"])
        acc_ref = skm.accuracy_score(y[rows], p_ref.argmax(1))
        auc_ref = [skm.roc_auc_score(y[rows] == c, p_ref[:, c]) for c in range(4)]
        with capsys.disabled():
            print(f"\n4-class LR through nodes: test accuracy {m['test_accuracy']:.4f} "
                  f"(scikit-learn {acc_ref:.4f}), per-class AUC "
                  f"{np.round(m['test']['auc_per_class'], 4).tolist()} (scikit-learn "
                  f"{np.round(auc_ref, 4).tolist()}), mean |p - sklearn| "
                  f"{np.abs(p - p_ref).mean():.4f}")
        assert abs(m["test_accuracy"] - acc_ref) < 0.01
        assert np.abs(np.array(m["test"]["auc_per_class"]) - auc_ref).max() < 0.02
        assert np.abs(p - p_ref).mean() < 0.06
        assert m["test"]["confusion"] == skm.confusion_matrix(
            y[rows], p.argmax(1), labels=range(4)).tolist()

        out_csv = tmp_path / "scores.csv"
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "score", "score",
                                               extra_job={"model": job_id,
                                                          "output": str(out_csv)})),
                                 "--wait")
        assert code == 0, err + out
        with out_csv.open() as fh:
            got = list(csv.DictReader(fh))
        assert list(got[0]) == ["id", "class"] + [f"p_{c}" for c in CLASSES]
        assert len(got) == len(y)
        P = {r["id"]: [float(r[f"p_{c}"]) for c in CLASSES] for r in got}
        same = np.array([P[i] for i in scores["ids"]])
        assert np.abs(same - p).max() < 2e-6                  # 6 decimals in the CSV
        assert [r["class"] for r in got] == [CLASSES[int(np.argmax(P[r["id"]]))]
                                             for r in got]
