"""Multiclass metrics (parties.common.metrics) against scikit-learn, and the loader's
multiclass labels (federation.data.class_labels): class order, errors, limits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from federation.config import DatasetConfig
from federation.data import DataError, load_dataset
from parties.common import metrics


def _proba(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits)
    return y, p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("k", [2, 4, 7])
def test_multiclass_report_matches_sklearn(k):
    y, p = _proba(600, k, seed=k)
    rep = metrics.report("multiclass", y, p)
    pred = p.argmax(axis=1)
    assert rep["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert rep["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert rep["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=range(k)), abs=1e-10)
    assert rep["confusion"] == skm.confusion_matrix(y, pred, labels=range(k)).tolist()
    for c in range(k):
        assert rep["auc_per_class"][c] == pytest.approx(
            skm.roc_auc_score(y == c, p[:, c]), abs=1e-12)
    ref_auc = (skm.roc_auc_score(y, p, multi_class="ovr") if k > 2
               else float(np.mean([skm.roc_auc_score(y == c, p[:, c]) for c in range(k)])))
    assert rep["auc"] == pytest.approx(ref_auc, abs=1e-12)
    assert rep["n"] == 600


def test_multiclass_ties_and_unpredicted_class():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.full((6, 3), 1 / 3)                 # all tied: argmax picks class 0
    rep = metrics.report("multiclass", y, p)
    assert rep["confusion"] == [[2, 0, 0], [2, 0, 0], [2, 0, 0]]
    assert rep["macro_f1"] == pytest.approx(
        skm.f1_score(y, np.zeros(6, int), average="macro", zero_division=0))
    assert rep["auc_per_class"] == [0.5, 0.5, 0.5]


def test_multiclass_report_refuses_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        metrics.report("multiclass", [0, 1], [0.2, 0.8])
    with pytest.raises(ValueError, match="class indices"):
        metrics.report("multiclass", [0, 3], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="unknown label kind"):
        metrics.report("ordinal", [0, 1], [0.2, 0.8])


def _ds(tmp_path, labels, name="m.csv"):
    path = tmp_path / name
    pd.DataFrame({"id": [f"e{i}" for i in range(len(labels))], "y": labels,
                  "x": np.arange(len(labels), dtype=float)}).to_csv(path, index=False)
    return DatasetConfig(name="m", path=str(path), id_column="id", label_column="y")


def test_integer_classes_keep_their_numbers(tmp_path):
    ds = load_dataset(_ds(tmp_path, [2, 0, 1, 3, 1]), label_kind="multiclass")
    assert ds.classes == [0, 1, 2, 3]
    assert ds.y.tolist() == [2, 0, 1, 3, 1] and ds.y.dtype == np.int64
    assert ds.take([3, 0]).classes == [0, 1, 2, 3]


def test_other_integers_and_names_map_in_sorted_order(tmp_path):
    ds = load_dataset(_ds(tmp_path, [10, -5, 7, 10]), label_kind="multiclass")
    assert ds.classes == [-5, 7, 10] and ds.y.tolist() == [2, 0, 1, 2]
    ds = load_dataset(_ds(tmp_path, ["retail", " bank", "agri", "bank"]),
                      label_kind="multiclass")
    assert ds.classes == ["agri", "bank", "retail"] and ds.y.tolist() == [2, 1, 0, 1]
    frame = pd.DataFrame({"id": ["a", "b", "c"], "y": [1.0, 3.0, 1.0], "x": [0.0, 1, 2]})
    ds = load_dataset(DatasetConfig(name="f", path="<frame>", id_column="id",
                                    label_column="y", frame=frame), label_kind="multiclass")
    assert ds.classes == [1, 3] and ds.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("labels, match", [
    ([0, 1, "", 2], r"missing label\(s\), first at data row 3 \(file line 4\)"),
    ([0, 1.5, 2, 1], r"data row 2 \(file line 3\) holds '1.5', not an integer"),
    ([4, 4, 4], r"only one class, '4' \(3 rows\)"),
])
def test_multiclass_label_errors_name_row_and_value(tmp_path, labels, match):
    with pytest.raises(DataError, match=match):
        load_dataset(_ds(tmp_path, labels), label_kind="multiclass",
                     label_use="objective multi:softprob")
