"""Binary-classification, multiclass and regression metrics computed at the bank.

Implemented here (numpy only) so both roles and the report use one definition; tests
compare them with scikit-learn.
"""

from __future__ import annotations

import numpy as np


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and scores ({p.size}) differ in length")
    return y, p


def roc_curve(y, p) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds (descending scores)."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="mergesort")
    y, p = y[order], p[order]
    distinct = np.flatnonzero(np.diff(p)) if p.size else np.array([], dtype=int)
    ends = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    pos, neg = max(tps[-1], 1e-300), max(fps[-1], 1e-300)
    return np.r_[0.0, fps / neg], np.r_[0.0, tps / pos], np.r_[np.inf, p[ends]]


def auc(y, p) -> float:
    """Area under the ROC curve (ties handled as by scikit-learn)."""
    y, _ = _check(y, p)
    if y.min() == y.max():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.trapezoid(tpr, fpr))


def ks(y, p) -> float:
    """Kolmogorov-Smirnov statistic: max |TPR - FPR| over thresholds."""
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr)) if fpr.size else float("nan")


def log_loss(y, p, eps: float = 1e-15) -> float:
    y, p = _check(y, p)
    p = np.clip(p, eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(y, p, threshold: float = 0.5) -> float:
    y, p = _check(y, p)
    return float(np.mean((p >= threshold) == (y == 1)))


def confusion(y, p, threshold: float = 0.5) -> dict:
    y, p = _check(y, p)
    pred, pos = p >= threshold, y == 1
    return {"tp": int(np.sum(pred & pos)), "fp": int(np.sum(pred & ~pos)),
            "tn": int(np.sum(~pred & ~pos)), "fn": int(np.sum(~pred & pos))}


def rmse(y, p) -> float:
    """Root mean squared error."""
    y, p = _check(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y, p) -> float:
    """Mean absolute error."""
    y, p = _check(y, p)
    return float(np.mean(np.abs(y - p)))


def r2(y, p) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` (scikit-learn's r2_score:
    1.0 for a perfect fit of a constant target, 0.0 for an imperfect one)."""
    y, p = _check(y, p)
    ss_res = float(np.sum((y - p) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2)) if y.size else 0.0
    if ss_tot == 0.0:
        return 1.0 if ss_res == 0.0 else 0.0
    return 1.0 - ss_res / ss_tot


def binary_report(y, p) -> dict:
    """The metrics banks report, as one dict."""
    return {"auc": auc(y, p), "ks": ks(y, p), "accuracy": accuracy(y, p),
            "log_loss": log_loss(y, p), "n": int(np.asarray(y).size)}


def regression_report(y, p) -> dict:
    """The metrics reported for a continuous target, as one dict."""
    return {"rmse": rmse(y, p), "mae": mae(y, p), "r2": r2(y, p),
            "n": int(np.asarray(y).size)}


def _check_multi(y, proba) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or proba.shape[0] != y.size or proba.shape[1] < 2:
        raise ValueError(f"multiclass scores must be (n, K >= 2) for {y.size} labels, "
                         f"got shape {proba.shape}")
    k = proba.shape[1]
    if y.size and (y.min() < 0 or y.max() >= k or np.any(y != np.round(y))):
        raise ValueError(f"multiclass labels must be class indices 0..{k - 1}")
    return y.astype(np.int64), proba


def multiclass_confusion(y, pred, k: int) -> np.ndarray:
    """K x K counts: row = actual class index, column = predicted class index (as
    scikit-learn's confusion_matrix with labels 0..K-1)."""
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (np.asarray(y, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return out


def macro_f1(cm: np.ndarray) -> float:
    """Unweighted mean of per-class F1 from a confusion matrix (a class with no true
    and no predicted rows scores 0, as scikit-learn's ``zero_division=0``)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(axis=0) + cm.sum(axis=1)
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def multiclass_log_loss(y, proba, eps: float = 1e-15) -> float:
    """Mean of ``-log p[y]`` with rows renormalised and clipped to [eps, 1 - eps]."""
    y, proba = _check_multi(y, proba)
    p = proba / proba.sum(axis=1, keepdims=True)
    p = np.clip(p[np.arange(y.size), y], eps, 1 - eps)
    return float(-np.mean(np.log(p)))


def multiclass_report(y, proba) -> dict:
    """Accuracy, macro-F1, log loss, one-vs-rest AUC per class and its unweighted mean
    (``auc``; scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``), and
    the K x K confusion matrix (rows actual, columns predicted). ``y``: class indices
    0..K-1; ``proba``: (n, K) class probabilities. Predicted class: the most probable
    (the lowest index on a tie, as numpy's argmax and XGBoost's multi:softmax)."""
    y, proba = _check_multi(y, proba)
    k = proba.shape[1]
    pred = np.argmax(proba, axis=1)
    cm = multiclass_confusion(y, pred, k)
    per_class = [auc((y == c).astype(np.float64), proba[:, c]) for c in range(k)]
    finite = [a for a in per_class if a == a]
    return {"accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
            "macro_f1": macro_f1(cm), "log_loss": multiclass_log_loss(y, proba),
            "auc": float(np.mean(finite)) if finite else float("nan"),
            "auc_per_class": per_class, "confusion": cm.tolist(), "n": int(y.size)}


#: what :func:`report` accepts (parties.registry declares the same label kinds)
REPORTS = {"binary": binary_report, "continuous": regression_report,
           "multiclass": multiclass_report}


def report(label_kind: str, y, p) -> dict:
    """The metrics for ``label_kind`` as the algorithm declares it: ``"binary"`` (0/1
    labels, scores P(1)), ``"continuous"`` (a regression target) or ``"multiclass"``
    (class indices, ``p`` an (n, K) array of class probabilities)."""
    try:
        fn = REPORTS[label_kind]
    except KeyError:
        raise ValueError(f"unknown label kind {label_kind!r}") from None
    return fn(y, p)
