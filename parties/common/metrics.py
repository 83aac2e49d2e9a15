"""Binary-classification and regression metrics computed at the bank.

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


def report(label_kind: str, y, p) -> dict:
    """``binary_report`` for 0/1 labels, ``regression_report`` for a continuous target
    (``label_kind`` as the algorithm declares it: ``"binary"`` | ``"continuous"``)."""
    if label_kind == "binary":
        return binary_report(y, p)
    if label_kind == "continuous":
        return regression_report(y, p)
    raise ValueError(f"unknown label kind {label_kind!r}")
