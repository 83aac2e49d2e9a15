"""Local input checks and feature standardisation, fitted on a party's own training rows.

Each party validates and standardises only its own columns; the fitted statistics
(mean, scale and, for columns with an imputing ``nan_policy``, the fill value: the
column's mean or median on the training rows, or 0) are stored in that party's model
part and never cross the channel. Scoring applies the same fill values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parties.common.params import ParamError

NAN_POLICIES = ("fail", "mean", "median", "zero")


class InputError(ValueError):
    """A party's own training or scoring data is unusable (names the column)."""


# ---- missing values: a job's nan_policy -> one policy per column of this party -------
NAN_DEFAULT_KEY = "*"                      #: table key: policy of the columns not named
NAN_QUALIFIERS = ("bank:", "platform:")    #: "bank:col" names only the bank's column


def check_nan_policy(nan_policy) -> None:
    """``nan_policy`` is a policy name or a table of them (ParamError names the entry)."""
    expected = "expected one of fail, mean, median, zero"
    if isinstance(nan_policy, str):
        if nan_policy not in NAN_POLICIES:
            raise ParamError(f"nan_policy = {nan_policy!r}; {expected}, or a table "
                             "{column = policy}")
        return
    if not isinstance(nan_policy, dict):
        raise ParamError(f"nan_policy = {nan_policy!r}; {expected}, or a table")
    for key, value in nan_policy.items():
        name = key
        for q in NAN_QUALIFIERS:
            if isinstance(key, str) and key.startswith(q):
                name = key[len(q):]
        if not isinstance(key, str) or not name:
            raise ParamError(f"nan_policy: key {key!r} must be a column name, "
                             f"'bank:<column>', 'platform:<column>' or {NAN_DEFAULT_KEY!r}")
        if value not in NAN_POLICIES:
            raise ParamError(f"nan_policy[{key!r}] = {value!r}; {expected}")


def column_nan_policies(nan_policy: str | dict, names: list[str],
                        party: str) -> tuple[str | list[str], list[str]]:
    """This party's policy per column from the job's ``nan_policy``, and the table's
    unqualified names that are not this party's columns (the peer's, or typos; only the
    peer can tell, and neither party tells the other). A name qualified with this
    party ("bank:col") that it does not have is an InputError (names its column)."""
    if isinstance(nan_policy, str):
        return nan_policy, []
    default = nan_policy.get(NAN_DEFAULT_KEY, "fail")
    own: dict[str, str] = {}
    plain: dict[str, str] = {}
    for key, value in nan_policy.items():
        if key == NAN_DEFAULT_KEY:
            continue
        q = next((q for q in NAN_QUALIFIERS if key.startswith(q)), "")
        if not q:
            plain[key] = value
        elif q == f"{party}:":
            own[key[len(q):]] = value
    absent = sorted(set(own) - set(names))
    if absent:
        raise InputError(f"{party} training data: nan_policy names {party} column(s) "
                         f"{absent}, which the {party}'s data does not have")
    return ([own.get(c, plain.get(c, default)) for c in names],
            sorted(set(plain) - set(names)))


def fit_own_columns(X: np.ndarray, names: list[str], party: str, where: str, *,
                    nan_policy: str | dict, standardize: bool = True,
                    log=None) -> Standardizer:
    """Resolve the job's ``nan_policy`` for this party's columns and fit its
    standardizer on its training rows. ``log(event, fields)`` (the party's own job log,
    never sent) is told the table's names that are not this party's columns and, per
    column with missing cells, how many there are and what imputes them."""
    policies, elsewhere = column_nan_policies(nan_policy, names, party)
    if elsewhere and log is not None:
        log("lr.nan_policy_not_own_columns", {"party": party, "names": elsewhere})
    std = Standardizer.fit(X, names, where, standardize=standardize, nan_policy=policies)
    missing = np.isnan(X).sum(axis=0)
    if missing.any() and log is not None:
        pol = std.policies
        log("lr.missing_values", {"party": party, "columns": [
            {"column": names[j], "missing": int(missing[j]), "policy": pol[j],
             "fill": float(std.fill[j])} for j in np.flatnonzero(missing)]})
    return std


def peer_view(exc: Exception, party: str, reveal: bool) -> str:
    """What the peer is told about this party's input error: the message itself only
    when this node's policy reveals its feature names (it names columns and counts)."""
    if reveal:
        return str(exc)
    return (f"the {party}'s own data is not usable for this job (the reason is in the "
            f"{party}'s job log; it is not sent because it may name the {party}'s columns)")


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


def _policies(nan_policy: str | list[str], n: int, where: str) -> list[str]:
    pol = [nan_policy] * n if isinstance(nan_policy, str) else list(nan_policy)
    if len(pol) != n:
        raise InputError(f"{where}: {len(pol)} nan policies for {n} columns")
    bad = [v for v in pol if v not in NAN_POLICIES]
    if bad:
        raise InputError(f"{where}: nan_policy {bad[0]!r} is not one of {NAN_POLICIES}")
    return pol


@dataclass
class Standardizer:
    """Per-column mean/scale and missing-value handling fitted on training rows.

    ``nan_policy`` is one policy for every column or a list with one per column
    (``fail`` | ``mean`` | ``median`` | ``zero``); ``fill`` holds the value imputed for a
    missing cell of each column (0 for ``fail`` columns, where a missing cell is an
    error, at training and at scoring)."""

    names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    fill: np.ndarray
    nan_policy: str | list[str] = "fail"

    @property
    def policies(self) -> list[str]:
        """The policy of each column."""
        return _policies(self.nan_policy, len(self.names), "standardizer")

    @classmethod
    def fit(cls, X: np.ndarray, names: list[str], where: str, *, standardize: bool = True,
            nan_policy: str | list[str] = "fail") -> Standardizer:
        """Fit on the training rows ``X``. ``nan_policy``: one policy for all columns or
        one per column (``parties.common.lr_common.column_nan_policies`` resolves a
        job's table)."""
        pol = _policies(nan_policy, X.shape[1], where)
        if X.shape[0] == 0:
            raise InputError(f"{where}: no training rows")
        nan = np.isnan(X)
        inf = np.isinf(X)
        if inf.any():
            j = int(np.flatnonzero(inf.any(axis=0))[0])
            raise InputError(f"{where}: feature column {names[j]!r} has infinite values")
        fails = nan.any(axis=0) & (np.asarray(pol) == "fail")
        if fails.any():
            j = int(np.flatnonzero(fails)[0])
            raise InputError(
                f"{where}: feature column {names[j]!r} has {int(nan[:, j].sum())} missing "
                f"(NaN) values and nan_policy \"fail\"; set nan_policy in [params] to "
                f"\"mean\", \"median\" or \"zero\", or per column (nan_policy = "
                f"{{ {names[j]!r} = \"median\" }}), to impute")
        full = nan.all(axis=0)
        if full.any():
            k = int(np.flatnonzero(full)[0])
            raise InputError(f"{where}: feature column {names[k]!r} is entirely missing")
        fill = np.zeros(X.shape[1])
        for j, policy in enumerate(pol):
            if policy == "mean":
                fill[j] = np.nanmean(X[:, j])
            elif policy == "median":
                fill[j] = np.nanmedian(X[:, j])
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
        if isinstance(nan_policy, str) or len(set(pol)) <= 1:  # one policy: stored as str
            stored: str | list[str] = nan_policy if isinstance(nan_policy, str) else \
                (pol[0] if pol else "fail")
        else:
            stored = pol
        return cls(list(names), mean, std, fill, stored)

    def transform(self, X: np.ndarray, where: str) -> np.ndarray:
        if X.shape[1] != len(self.names):
            raise InputError(f"{where}: expected {len(self.names)} feature columns "
                             f"({', '.join(self.names)}), got {X.shape[1]}")
        nan = np.isnan(X)
        if nan.any():
            fails = nan.any(axis=0) & (np.asarray(self.policies) == "fail")
            if fails.any():
                j = int(np.flatnonzero(fails)[0])
                raise InputError(f"{where}: feature column {self.names[j]!r} has "
                                 f"{int(nan[:, j].sum())} missing (NaN) values; the model "
                                 "was trained with nan_policy \"fail\" for it")
            X = np.where(nan, self.fill, X)
        if np.isinf(X).any():
            j = int(np.flatnonzero(np.isinf(X).any(axis=0))[0])
            raise InputError(f"{where}: feature column {self.names[j]!r} has infinite values")
        return (X - self.mean) / self.scale

    def to_dict(self) -> dict:
        return {"names": list(self.names), "mean": [float(v) for v in self.mean],
                "scale": [float(v) for v in self.scale], "fill": [float(v) for v in self.fill],
                "nan_policy": (self.nan_policy if isinstance(self.nan_policy, str)
                               else list(self.nan_policy))}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(list(d["names"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64),
                   np.asarray(d["fill"], dtype=np.float64), d.get("nan_policy", "fail"))
