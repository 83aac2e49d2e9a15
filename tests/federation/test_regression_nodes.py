"""Regression through the node: the loader checks labels against what the job's
algorithm declares (0/1 or any finite number); SecureBoost ``reg:squarederror`` and
``linear_regression`` jobs submitted from the CLI to two real nodes, trained, evaluated
(RMSE, MAE, R^2 in the job's metrics, the Python API and the HTML report) and compared
with XGBoost / scikit-learn on the joined data; a linear-regression model scores
through a scoring job."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.linear_model import LinearRegression
from support.nodes import run_cli, two_nodes, write_job

from federation.config import DatasetConfig
from federation.data import DataError, hashed_split, load_dataset
from federation.report import render_report
from fedjoint import FedjointError, run_local
from fedjoint.testing import TEST_POLICY, check_algorithm, synthetic_parties

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"


# ---------------------------------------------------------------- the loader


def _ds(path: Path) -> DatasetConfig:
    return DatasetConfig(name="d", path=path, id_column="id", label_column="y")


@pytest.mark.parametrize("content,kind,use,match", [
    ("id,y,a\n1,0,1\n2,1,2\n3,2.5,3\n4,2.5,1\n", "binary", "objective binary:logistic",
     r"label column 'y' must be binary 0/1 for objective binary:logistic but has other "
     r"values \(found 3 distinct values, e.g. at data row 3, file line 4\)"),
    ("id,y,a\n1,1,1\n2,1,2\n", "binary", "logistic_regression",
     r"only one class \(2 rows\); logistic_regression needs both 0 and 1"),
    ("id,y,a\n1,4.5,1\n2,4.5,2\n", "continuous", "objective reg:squarederror",
     r"label column 'y' is constant \(2 rows\); objective reg:squarederror needs a target"),
    ("id,y,a\n1,4.5,1\n2,,2\n", "continuous", "linear_regression",
     r"column 'y' has 1 missing or infinite value\(s\), first at data row 2"),
    ("id,y,a\n1,4.5,1\n2,inf,2\n", "continuous", "linear_regression",
     r"column 'y' has 1 missing or infinite value\(s\), first at data row 2"),
])
def test_labels_must_fit_what_the_algorithm_declares(tmp_path, content, kind, use, match):
    p = tmp_path / "d.csv"
    p.write_text(content)
    with pytest.raises(DataError, match=match) as ei:
        load_dataset(_ds(p), label_kind=kind, label_use=use)
    assert "2.5" not in str(ei.value) and "4.5" not in str(ei.value)   # no values quoted


def test_a_continuous_target_loads_as_floats(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,y,a\n1,-3.25,1\n2,1e6,2\n3,0,3\n")
    ds = load_dataset(_ds(p), label_kind="continuous")
    assert ds.y.dtype == np.float64 and ds.y.tolist() == [-3.25, 1e6, 0.0]
    (tmp_path / "b.csv").write_text("id,y,a\n1,1,1\n2,0.0,2\n")
    binary = load_dataset(_ds(tmp_path / "b.csv"), label_kind="binary")
    assert binary.y.dtype == np.int8 and binary.y.tolist() == [1, 0]
    with pytest.raises(ValueError, match="label_kind"):
        load_dataset(_ds(p), label_kind="ordinal")


# ---------------------------------------------------------------- run_local (Python API)


def test_python_api_reports_regression_metrics():
    res = check_algorithm("secureboost", {"n_trees": 2, "max_depth": 3, "max_bin": 16,
                                          "objective": "reg:squarederror"})
    m = res.metrics
    assert {"test_rmse", "test_mae", "test_r2"} <= set(m) and "test_auc" not in m
    assert set(m["test"]) == {"rmse", "mae", "r2", "n"} and "confusion" not in m["test"]
    y, p = np.array(res.bank.test_scores["y"]), np.array(res.bank.test_scores["p"])
    assert res.bank.test_scores["label_kind"] == "continuous"
    assert abs(m["test_rmse"] - np.sqrt(np.mean((y - p) ** 2))) < 1e-12
    assert m["test_r2"] > 0.1


def test_a_binary_algorithm_refuses_a_continuous_target():
    bank, plat = synthetic_parties()
    bank = bank.assign(y=bank["b0"] * 2.0)
    job = {"job": {"name": "lr-cont", "algorithm": "logistic_regression", "dataset": "d",
                   "peer_dataset": "d"}, "psi": {"id_type": "string"},
           "params": {"epochs": 30, "batch_size": 0, "learning_rate": 0.1},
           "evaluation": {"cipher": "plain", "key_bits": 1024}}
    with pytest.raises(FedjointError, match=r"bank side: .*label column 'y' must be binary "
                                            r"0/1 for logistic_regression") as ei:
        run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                  platform_policy=TEST_POLICY)
    assert ei.value.party == "bank"
    # the same frame is a valid target for linear_regression
    job["job"].update(algorithm="linear_regression", name="linreg-cont")
    res = run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY)
    assert res.metrics["test_r2"] > 0.5      # y is a linear function of a bank column


def test_report_shows_regression_not_roc():
    rng = np.random.default_rng(0)
    y = rng.normal(size=300)
    p = y + 0.3 * rng.normal(size=300)
    page = render_report({"job": {"id": "j", "algorithm": "linear_regression"},
                          "metrics": {"test": {"rmse": 0.3, "mae": 0.24, "r2": 0.9}},
                          "scores": {"y": y.tolist(), "p": p.tolist(),
                                     "label_kind": "continuous"},
                          "history": [{"iteration": 1, "train_rmse": 0.5},
                                      {"iteration": 2, "train_rmse": 0.4}]})
    assert "Regression (test rows)" in page and "predicted vs actual" in page
    assert "residual vs predicted" in page and "rmse per iteration" in page
    assert "ROC curve" not in page and "Confusion matrix" not in page
    assert page.count("<circle") == 600
    binary = render_report({"job": {"id": "j"}, "scores": {"y": [0, 1, 1, 0],
                                                           "p": [0.1, 0.8, 0.6, 0.3]}})
    assert "ROC curve" in binary and "Regression (test rows)" not in binary


# ---------------------------------------------------------------- two real nodes

N_BANK, N_PLAT, SHIFT = 4000, 4000, 300      # bank rows 0..3999, platform rows 300..4299


def _regression_frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    """default_credit's features rounded to quarters, and a continuous target that needs
    both parties' columns (and an interaction, for the trees), with noise.

    Rounded, every column has far fewer than max_bin = 256 distinct values, so XGBoost's
    quantile sketch is exact and its cuts do not depend on the row order (which PSI
    changes: on the raw columns XGBoost itself predicts up to 2.6 apart on two orders of
    the same rows)."""
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv")[:N_PLAT + SHIFT]
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv")[:N_PLAT + SHIFT]
    g, h = (df.assign(**{c: np.round(df[c] * 4) / 4 for c in df.columns if c[0] == "x"})
            for df in (g, h))
    assert max(g.filter(like="x").nunique().max(), h.filter(like="x").nunique().max()) < 256
    rng = np.random.default_rng(11)
    t = (1.2 * g.x1 - 0.8 * g.x7 + 1.0 * h.x0 - 0.6 * h.x4 + 0.5 * h.x5 * g.x1
         + 0.3 * rng.standard_normal(len(g)))
    bank = g.assign(y=t)[:N_BANK]
    return bank, h[SHIFT:]


def _say(capsys, message: str) -> None:
    """A measured figure on the terminal (-s), outside what the CLI calls capture."""
    with capsys.disabled():
        print(message)


def _joined(bank: pd.DataFrame, plat: pd.DataFrame, salt: str = "fedjoint",
            test_fraction: float = 0.25):
    """The joined rows and the node's train/test split (keyed hash of the id)."""
    from psi.ids import normalise
    j = bank.merge(plat, on="id", suffixes=("_b", "_p"))
    test = hashed_split([normalise(str(i), "string") for i in j["id"]], test_fraction, salt)
    X = j.drop(columns=["id", "y"]).to_numpy(float)
    return X, j["y"].to_numpy(float), test


def _by_target(scores: dict, y: np.ndarray) -> np.ndarray:
    """The node's test predictions in the order of ``y`` (the target values are
    distinct floats, so they identify the rows)."""
    at = {v: p for v, p in zip(scores["y"], scores["p"], strict=True)}
    assert len(at) == len(scores["y"]) == len(y)
    return np.array([at[v] for v in y.tolist()])


@pytest.mark.skipif(not (ROOT / "psi" / "protocol.py").exists(), reason="psi not built")
def test_regression_jobs_through_two_nodes(tmp_path, capsys, monkeypatch):
    bank_df, plat_df = _regression_frames()
    X, y, test = _joined(bank_df, plat_df)
    assert len(y) == N_BANK - SHIFT and 0.2 < test.mean() < 0.3
    allowed = ["psi", "secureboost", "linear_regression", "score"]   # both must list it
    with two_nodes(tmp_path, monkeypatch, allowed, bank_df, plat_df):
        # ---- SecureBoost, reg:squarederror: accepted at submit, trained, evaluated
        sb_params = {"objective": "reg:squarederror", "n_trees": 10, "max_depth": 4,
                     "max_bin": 256, "learning_rate": 0.3}
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "sbreg", "secureboost", sb_params)),
                                 "--wait")
        assert code == 0, err + out
        sb_id = out.split()[0]
        code, out, err = run_cli(capsys, "job", "status", sb_id, "--json")
        rec = json.loads(out)
        m = rec["metrics"]
        assert rec["state"] == "done" and {"test_rmse", "test_mae", "test_r2"} <= set(m)
        assert "test_auc" not in m and m["n_test"] == int(test.sum())
        scores = json.loads(Path(rec["artifacts"]["test_scores"]).read_text())
        p_sb = _by_target(scores, y[test])
        ref = xgb.train(dict(tree_method="hist", max_bin=256, max_depth=4, eta=0.3,
                             objective="reg:squarederror", nthread=1),
                        xgb.DMatrix(X[~test], y[~test]), 10).predict(xgb.DMatrix(X[test]))
        rmse_ref = float(np.sqrt(np.mean((y[test] - ref) ** 2)))
        _say(capsys, f"secureboost reg through nodes: test RMSE {m['test_rmse']:.6f}, xgboost "
              f"{rmse_ref:.6f}, max|pred - xgboost| {np.abs(p_sb - ref).max():.2e}")
        # the cuts agree (exact sketch), so the trees are XGBoost's; XGBoost sums the
        # leaves in float32 (eps 1.2e-7): a few ulps apart at |prediction| up to ~12
        assert np.all(np.abs(p_sb - ref) <= 1e-6 * np.maximum(1.0, np.abs(ref)))
        assert abs(m["test_rmse"] - rmse_ref) < 1e-6
        code, out, err = run_cli(capsys, "job", "report", sb_id, "--out",
                                 str(tmp_path / "sb.html"))
        assert code == 0, err
        page = (tmp_path / "sb.html").read_text()
        assert "predicted vs actual" in page and "rmse per iteration" in page
        assert "ROC curve" not in page and "Confusion matrix" not in page

        # ---- linear_regression to convergence (full batch, heavy-ball momentum)
        Xs = (X[~test] - X[~test].mean(0)) / X[~test].std(0)
        ev = np.linalg.eigvalsh(Xs.T @ Xs / len(Xs))
        k = np.sqrt(ev.max() / ev.min())
        lin_params = {"epochs": 150, "batch_size": 0, "optimizer": "momentum",
                      "learning_rate": float(4 / (np.sqrt(ev.max()) + np.sqrt(ev.min())) ** 2),
                      "momentum": float(((k - 1) / (k + 1)) ** 2), "early_stopping": "none"}
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "linreg", "linear_regression",
                                               lin_params)), "--wait")
        assert code == 0, err + out
        lin_id = out.split()[0]
        code, out, err = run_cli(capsys, "job", "status", lin_id)
        assert code == 0 and "test_rmse=" in out and "test_r2=" in out, err + out
        rec = json.loads(run_cli(capsys, "job", "status", lin_id, "--json")[1])
        m = rec["metrics"]
        sk = LinearRegression().fit(X[~test], y[~test])
        p_ref = sk.predict(X[test])
        rmse_sk = float(np.sqrt(np.mean((y[test] - p_ref) ** 2)))
        p_lin = _by_target(json.loads(Path(rec["artifacts"]["test_scores"]).read_text()),
                           y[test])
        _say(capsys, f"linear_regression through nodes: test RMSE {m['test_rmse']:.6f}, "
              f"scikit-learn {rmse_sk:.6f}, max|pred - sklearn| "
              f"{np.abs(p_lin - p_ref).max():.2e}")
        # converged: coefficients agree to ~5e-5 at x_frac_bits = 12 (test_linreg), so
        # predictions within 1e-3 of scikit-learn's and the RMSE to 1e-4 relative
        assert np.abs(p_lin - p_ref).max() < 1e-3
        assert abs(m["test_rmse"] - rmse_sk) < 1e-4 * rmse_sk
        assert m["test_r2"] > 0.8

        # ---- the report shows the regression section
        code, out, err = run_cli(capsys, "job", "report", lin_id, "--out",
                                 str(tmp_path / "r.html"))
        assert code == 0, err
        page = (tmp_path / "r.html").read_text()
        assert "predicted vs actual" in page and "ROC curve" not in page
        assert "loss per iteration" in page

        # ---- scoring with the linear-regression model: values in the target's units
        out_csv = tmp_path / "scores.csv"
        code, out, err = run_cli(capsys, "job", "submit",
                                 str(write_job(tmp_path, "score", "score",
                                               extra_job={"model": lin_id,
                                                          "output": str(out_csv)})), "--wait")
        assert code == 0, err + out
        with out_csv.open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == len(y)
        scored = {r["id"]: float(r["score"]) for r in rows}
        j = bank_df.merge(plat_df, on="id")
        full = sk.predict(X)
        got = np.array([scored[str(i)] for i in j["id"]])
        assert np.abs(got - full).max() < 1e-3 and got.min() < -1 and got.max() > 1
