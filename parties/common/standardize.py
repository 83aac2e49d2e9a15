"""Local input checks and feature standardisation, fitted on a party's own training rows.

Each party validates and standardises only its own columns; the fitted statistics are
stored in that party's model part and never cross the channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NAN_POLICIES = ("fail", "mean", "zero")


class InputError(ValueError):
    """A party's own training or scoring data is unusable (names the column)."""


def as_feature_matrix(X, feature_names: list[str] | None, where: str) -> tuple[np.ndarray,
                                                                                list[str]]:
    """A float64 matrix from an array or DataFrame; errors name the offending column."""
    if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # pandas DataFrame
        names = [str(c) for c in X.columns] if feature_names is None else list(feature_names)
        cols = []
        for c, name in zip(X.columns, names, strict=True):
            col = X[c]
            if col.dtype.kind not in "biuf":
                try:
                    col = col.astype(np.float64)
                except (TypeError, ValueError):
                    raise InputError(f"{where}: feature column {name!r} is not numeric "
                                     f"(dtype {col.dtype})") from None
            cols.append(np.asarray(col, dtype=np.float64))
        arr = np.column_stack(cols) if cols else np.empty((len(X), 0))
        return arr, names
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise InputError(f"{where}: features must be a 2-D matrix, got shape {arr.shape}")
    names = [f"x{j}" for j in range(arr.shape[1])] if feature_names is None \
        else [str(n) for n in feature_names]
    if len(names) != arr.shape[1]:
        raise InputError(f"{where}: {len(names)} feature names for {arr.shape[1]} columns")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{where}: duplicate feature name {dup!r}")
    if arr.dtype.kind not in "biuf":
        out = np.empty(arr.shape, dtype=np.float64)
        for j, name in enumerate(names):
            try:
                out[:, j] = np.asarray(arr[:, j], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{where}: feature column {name!r} is not numeric") from None
        return out, names
    return arr.astype(np.float64, copy=False), names


def check_labels(y, n_rows: int, where: str) -> np.ndarray:
    """0/1 labels (bool, {0,1} ints or floats); anything else names what is wrong."""
    if y is None:
        raise InputError(f"{where}: the label column is missing")
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.ravel()
    if arr.size != n_rows:
        raise InputError(f"{where}: {arr.size} labels for {n_rows} feature rows")
    if arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{where}: labels are not numeric (dtype {arr.dtype})") from None
    arr = arr.astype(np.float64)
    if np.isnan(arr).any():
        i = int(np.flatnonzero(np.isnan(arr))[0])
        raise InputError(f"{where}: label missing (NaN) at row {i}")
    values = np.unique(arr)
    if not set(values.tolist()) <= {0.0, 1.0}:
        shown = ", ".join(f"{v:g}" for v in values[:5])
        raise InputError(f"{where}: labels must be binary 0/1; found values {shown}"
                         + (" ..." if values.size > 5 else ""))
    if values.size < 2:
        raise InputError(f"{where}: labels contain only class {values[0]:g}; need both 0 and 1")
    return arr


@dataclass
class Standardizer:
    """Per-column mean/scale (and NaN fill values) fitted on training rows."""

    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    fill: np.ndarray
    nan_policy: str = "fail"

    @classmethod
    def fit(cls, X: np.ndarray, names: list[str], where: str, *, standardize: bool = True,
            nan_policy: str = "fail") -> Standardizer:
        if nan_policy not in NAN_POLICIES:
            raise InputError(f"{where}: nan_policy must be one of {NAN_POLICIES}")
        if X.shape[0] == 0:
            raise InputError(f"{where}: no training rows")
        nan = np.isnan(X)
        inf = np.isinf(X)
        if inf.any():
            j = int(np.flatnonzero(inf.any(axis=0))[0])
            raise InputError(f"{where}: feature column {names[j]!r} has infinite values")
        if nan.any():
            j = int(np.flatnonzero(nan.any(axis=0))[0])
            if nan_policy == "fail":
                raise InputError(
                    f"{where}: feature column {names[j]!r} has {int(nan[:, j].sum())} missing "
                    f"(NaN) values; set nan_policy = \"mean\" or \"zero\" to impute")
            full = nan.all(axis=0)
            if full.any():
                k = int(np.flatnonzero(full)[0])
                raise InputError(f"{where}: feature column {names[k]!r} is entirely missing")
        fill = (np.nanmean(X, axis=0) if nan_policy == "mean" else np.zeros(X.shape[1]))
        Xf = np.where(nan, fill, X)
        mean = Xf.mean(axis=0)
        std = Xf.std(axis=0)
        const = ~(std > 1e-12 * np.maximum(1.0, np.abs(mean)))
        if const.any():
            j = int(np.flatnonzero(const)[0])
            raise InputError(f"{where}: feature column {names[j]!r} is constant "
                             f"(value {mean[j]:g}) on the training rows; drop it")
        if not standardize:
            mean, std = np.zeros_like(mean), np.ones_like(std)
        return cls(list(names), mean, std, fill, nan_policy)

    def transform(self, X: np.ndarray, where: str) -> np.ndarray:
        if X.shape[1] != len(self.names):
            raise InputError(f"{where}: expected {len(self.names)} feature columns "
                             f"({', '.join(self.names)}), got {X.shape[1]}")
        nan = np.isnan(X)
        if nan.any():
            j = int(np.flatnonzero(nan.any(axis=0))[0])
            if self.nan_policy == "fail":
                raise InputError(f"{where}: feature column {self.names[j]!r} has missing "
                                 f"(NaN) values")
            X = np.where(nan, self.fill, X)
        if np.isinf(X).any():
            j = int(np.flatnonzero(np.isinf(X).any(axis=0))[0])
            raise InputError(f"{where}: feature column {self.names[j]!r} has infinite values")
        return (X - self.mean) / self.scale

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": [float(v) for v in self.mean],
                "scale": [float(v) for v in self.scale], "fill": [float(v) for v in self.fill],
                "nan_policy": self.nan_policy}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(list(d["names"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64),
                   np.asarray(d["fill"], dtype=np.float64), d.get("nan_policy", "fail"))
