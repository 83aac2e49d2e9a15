"""The bank's SecureBoost objectives (gradients, base margin, output transform,
metrics) and its input checks; the protocol is in :mod:`parties.bank.secureboost`."""

from __future__ import annotations

import math

import numpy as np

from parties.common import metrics
from parties.common.secureboost_params import SecureBoostParams


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def grad_hess(objective: str, y: np.ndarray, margin: np.ndarray, huber_slope: float = 1.0):
    """Per-row gradient and hessian of the loss at ``margin`` (XGBoost's formulas)."""
    if objective == "binary:logistic":
        p = sigmoid(margin)
        return p - y, np.maximum(p * (1.0 - p), 1e-16)
    if objective == "reg:pseudohubererror":
        z = margin - y
        scale = 1.0 + (z / huber_slope) ** 2
        root = np.sqrt(scale)
        return z / root, 1.0 / (scale * root)
    return margin - y, np.ones_like(margin)


def base_margin(p: SecureBoostParams, y: np.ndarray) -> float:
    if p.objective == "binary:logistic":
        b = p.label_mean(y) if p.base_score is None else p.base_score
        b = min(max(b, 1e-6), 1 - 1e-6)
        return math.log(b / (1 - b))
    if p.base_score is not None:
        return float(p.base_score)
    if p.objective == "reg:pseudohubererror":
        # XGBoost's intercept for it: one Newton step from a zero margin
        g, h = grad_hess(p.objective, y, np.zeros_like(y), p.huber_slope)
        return float(-g.sum() / h.sum())
    return float(np.mean(y))


def transform(objective: str, margin: np.ndarray) -> np.ndarray:
    return sigmoid(margin) if objective == "binary:logistic" else margin


def report(objective: str, y: np.ndarray, pred: np.ndarray) -> dict:
    if objective == "binary:logistic":
        return metrics.binary_report(y, pred)
    return metrics.regression_report(y, pred)


def check_inputs(X, y, feature_names, what="X"):
    if y is None:
        raise ValueError("label y is missing: the bank must hold the label column")
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"label y is not numeric (dtype {y.dtype})")
    y = y.astype(np.float64).ravel()
    if not np.isfinite(y).all():
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise ValueError(f"label y has a missing or non-finite value at row {bad}")
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D matrix, got shape {X.shape}")
    if X.shape[0] != y.size:
        raise ValueError(f"{what} has {X.shape[0]} rows but y has {y.size}")
    if X.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 rows")
    if len(feature_names) != X.shape[1]:
        raise ValueError(f"feature_names has {len(feature_names)} names for "
                         f"{X.shape[1]} columns")
    return X, y
