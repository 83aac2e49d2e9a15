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
    y, p = _check(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def binary_report(y, p) -> dict:
    """The metrics banks report, as one dict."""
    return {"auc": auc(y, p), "ks": ks(y, p), "accuracy": accuracy(y, p),
            "log_loss": log_loss(y, p), "n": int(np.asarray(y).size)}
