"""Loading a party's dataset (CSV or Parquet) with errors an operator can act on.

Errors are :class:`DataError` and name the file and the column (and for NaN the first
row, by its 1-based line in the file). Error messages never quote feature values (they
may be sensitive); they name columns, rows and counts only. A multiclass label's
errors quote the class value at fault (class names are the bank's own vocabulary and
the error stays with the bank: the peer is told only that the data did not load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from federation.config import DatasetConfig
from federation.data_source import (
    CHUNK_ROWS,
    MISSING_TOKENS,
    Budget,
    DataError,
    Fallback,
    FrameTable,
    NumericColumn,
    StreamTable,
    source_format,
)


@dataclass
class Dataset:
    name: str
    ids: list[str]                 # enterprise IDs as strings, in file order
    X: np.ndarray                  # float64 (rows x features)
    feature_names: list[str]
    y: np.ndarray | None = None    # bank only: int8 0/1, float64 (continuous) or int64
    #: multiclass only: the class values in index order (y holds indices into it)
    classes: list | None = None
    #: categorical feature columns: name -> sorted levels; X holds the level's index
    #: (NaN: missing, or a level the given list lacks)
    categories: dict[str, list] = field(default_factory=dict)
    #: cells of a categorical column whose level the given list lacks (scoring): counts
    unseen: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows) -> Dataset:
        rows = np.asarray(rows, dtype=np.int64)
        return Dataset(self.name, [self.ids[i] for i in rows], self.X[rows],
                       list(self.feature_names), None if self.y is None else self.y[rows],
                       self.classes, dict(self.categories), dict(self.unseen))


def _read(path: Path) -> pd.DataFrame:
    """The whole file as a DataFrame of text (CSV) or typed columns (Parquet): the
    chunked reader's fallback, and the Python API's and reports' reader of a path."""
    _check_path(path, "csv")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        # ids are read as strings so leading zeros and long numbers survive
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (no header row)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot parse ({first})") from None


def _numeric_values(s: pd.Series) -> tuple[np.ndarray | None, np.ndarray | str]:
    """Column ``s`` as float64 (missing-value tokens and NaN: ``np.nan``) and the mask
    of its non-numeric cells; ``(None, reason)`` for a column not numeric by dtype."""
    if s.dtype == object or pd.api.types.is_string_dtype(s):
        raw = s.astype(str).str.strip()
        blank = (raw.isna() | raw.str.lower().isin(MISSING_TOKENS)).to_numpy(dtype=bool)
        vals = pd.to_numeric(raw.where(~blank, None), errors="coerce")
        bad = vals.isna().to_numpy(dtype=bool) & ~blank
    else:
        if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)):
            return None, f"dtype {s.dtype}"
        vals = pd.to_numeric(s, errors="coerce")
        bad = np.zeros(len(s), dtype=bool)
    return vals.to_numpy(dtype=np.float64, na_value=np.nan), bad


def _numeric_error(col: str, path: Path, acc: NumericColumn, missing_ok: bool) -> str | None:
    """The error for a column whose cells ``acc`` counted, or None."""
    if acc.dtype_error:
        return f"{path}: column {col!r} is not numeric ({acc.dtype_error})"
    if acc.nonnum:
        row = acc.first_nonnum
        return (f"{path}: column {col!r} is not numeric ({acc.nonnum} non-numeric value(s), "
                f"first at data row {row + 1}, file line {row + 2}); drop it from columns "
                "or encode it as numbers")
    if acc.inf:
        row = acc.first_inf
        what = "infinite" if missing_ok else "missing or infinite"
        fix = ("replace them by finite numbers (leave a cell blank for a missing value)"
               if missing_ok else "impute or drop them before the job")
        return (f"{path}: column {col!r} has {acc.inf} {what} value(s), first at data row "
                f"{row + 1} (file line {row + 2}); {fix}")
    return None


def _numeric(s: pd.Series, col: str, path: Path, *, missing_ok: bool = False) -> np.ndarray:
    """Column ``s`` as float64. ``missing_ok`` (feature columns): blank / NA / NaN /
    null cells and pandas NaN load as ``np.nan``; otherwise (labels) they are an error.
    Infinite values and non-numeric strings are always an error (column and row named)."""
    acc = NumericColumn(col, _numeric_values)
    out = np.full(len(s), np.nan)
    acc.add_values(*_numeric_values(s), 0, out, finite=not missing_ok)
    err = _numeric_error(col, path, acc, missing_ok)
    if err:
        raise DataError(err)
    return out


#: what a label column may hold (the job's algorithm declares which; parties.registry)
LABEL_KINDS = ("binary", "continuous", "multiclass")
#: default bound on a multiclass label's distinct classes (node.toml limits.max_classes)
MAX_CLASSES = 64


def load_dataset(ds: DatasetConfig, *, need_label: bool | None = None,
                 label_kind: str = "binary", label_use: str = "",
                 max_classes: int = MAX_CLASSES,
                 categories: dict[str, list] | None = None,
                 memory_budget_mb: int = 0, chunk_rows: int = CHUNK_ROWS) -> Dataset:
    """Load and check ``ds`` (its file or database query, or its in-memory ``frame``).
    ``need_label``: True for the bank's training data. ``label_kind``: what the job's
    algorithm needs the labels to be, ``"binary"`` (0/1, both classes present),
    ``"continuous"`` (any finite number, not all equal) or ``"multiclass"`` (class
    values, 2..``max_classes`` of them: see :func:`class_labels`); ``label_use`` names
    what needs it in errors (e.g. ``"objective binary:logistic"``). ``categories``
    (scoring with a stored model): the categorical columns and their levels as the model
    recorded them, instead of ``ds.categorical`` (see :func:`category_codes`).
    Files are read in chunks of ``chunk_rows`` rows (federation.data_source); a dataset
    that would not fit ``memory_budget_mb`` (0: no budget) is refused, naming the key
    to change (limits.memory_budget_mb, limits.read_chunk_rows)."""
    if label_kind not in LABEL_KINDS:
        raise ValueError(f"label_kind {label_kind!r} is not one of {LABEL_KINDS}")
    path = Path(ds.path)
    budget = Budget(ds.name, path, memory_budget_mb, chunk_rows)
    kw = dict(need_label=need_label, label_kind=label_kind, label_use=label_use,
              max_classes=max_classes, categories=categories)
    if ds.frame is not None:
        return _load(ds, FrameTable(ds.frame.copy(), path), **kw)
    _check_path(path, source_format(ds))
    try:
        return _load(ds, StreamTable(ds, path, budget), **kw)
    except Fallback:      # a CSV row of the wrong width: pandas pads it or names the line
        budget.check_file(path.stat().st_size)
        return _load(ds, FrameTable(_read(path), path), **kw)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot parse ({first})") from None


def _check_path(path: Path, fmt: str) -> None:
    if not path.exists():
        raise DataError(f"{path}: dataset file not found")
    if path.is_dir():
        what = "a DuckDB database" if fmt == "duckdb" else "a CSV or Parquet file"
        raise DataError(f"{path}: is a directory, expected {what}")


def _load(ds: DatasetConfig, table, *, need_label, label_kind, label_use, max_classes,
          categories) -> Dataset:
    path = table.path
    cols = table.columns
    if not cols:
        raise DataError(f"{path}: the file has no columns")
    if table.empty():
        raise DataError(f"{path}: the file has a header but no data rows")
    if len(set(cols)) != len(cols):
        dup = sorted({c for c in cols if cols.count(c) > 1})
        raise DataError(f"{path}: duplicate column name(s) {dup}")
    if ds.id_column not in cols:
        raise DataError(f"{path}: id column {ds.id_column!r} not found (columns: "
                        f"{_short(cols)}); set id_column in [datasets.{ds.name}]")
    if need_label is None:
        need_label = ds.label_column is not None
    # header-level problems are raised in the order a whole-table check raises them,
    # after the id and label checks: the rows are read for those columns only then
    header_error: DataError | None = None
    try:
        feats = _feature_columns(ds, cols, path)
        cat_cols = _categorical_columns(ds, table, feats, path, categories)
    except DataError as exc:
        header_error, feats, cat_cols = exc, [], set()
    label_col = ds.label_column if need_label and ds.label_column in cols else None
    X = table.read(_numeric_values, ds.id_column, label_col, feats, cat_cols)
    ids = table.series(ds.id_column).astype(str).str.strip().tolist()
    empty = [i for i, v in enumerate(ids) if v == "" or v.lower() == "nan"]
    if empty:
        raise DataError(f"{path}: id column {ds.id_column!r} is empty at data row "
                        f"{empty[0] + 1} ({len(empty)} empty id(s))")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        first = next(i for i, v in enumerate(ids) if v in seen or seen.add(v))
        raise DataError(f"{path}: id column {ds.id_column!r} has "
                        f"{len(ids) - len(set(ids))} duplicate id(s), first at data row "
                        f"{first + 1}; ids must be unique")

    y, classes = None, None
    if need_label:
        if not ds.label_column:
            raise DataError(f"[datasets.{ds.name}] has no label_column; the bank's training "
                            "dataset needs one")
        if ds.label_column not in cols:
            raise DataError(f"{path}: label column {ds.label_column!r} not found (columns: "
                            f"{_short(cols)}); set label_column in [datasets.{ds.name}]")
        if label_kind == "multiclass":
            y, classes = class_labels(table.series(ds.label_column), ds.label_column, path,
                                      label_use, max_classes)
        else:   # missing or infinite: named error
            yv = _numeric(table.series(ds.label_column), ds.label_column, path)
            y = _check_labels(yv, ds.label_column, path, label_kind, label_use)
    if header_error is not None:
        raise header_error
    levels: dict[str, list] = {}
    unseen: dict[str, int] = {}
    for j, c in enumerate(feats):
        if c in cat_cols:
            X[:, j], levels[c], n_unseen = category_codes(
                table.series(c), c, path, (categories or {}).get(c), ds.max_categories,
                ds.name)
            if n_unseen:
                unseen[c] = n_unseen
        else:   # blank cells: np.nan
            err = _numeric_error(c, path, table.numeric[c], missing_ok=True)
            if err:
                raise DataError(err)
    return Dataset(ds.name, ids, X, feats, y, classes, levels, unseen)


def _feature_columns(ds: DatasetConfig, cols: list[str], path: Path) -> list[str]:
    skip = {ds.id_column, ds.label_column}
    if ds.columns is None:
        feats = [c for c in cols if c not in skip]
    else:
        missing = [c for c in ds.columns if c not in cols]
        if missing:
            raise DataError(f"{path}: column(s) {missing} listed in [datasets.{ds.name}] "
                            f"columns are not in the file (columns: {_short(cols)})")
        feats = list(ds.columns)
    if not feats:
        raise DataError(f"{path}: no feature columns besides id/label")
    return feats


def _categorical_columns(ds: DatasetConfig, table, feats: list[str], path: Path,
                         categories: dict | None) -> set[str]:
    """The feature columns loaded as categories: the model's (``categories`` given), else
    ``ds.categorical`` plus, for an in-memory frame, columns of pandas' category dtype."""
    if categories is not None:
        return set(categories) & set(feats)
    declared = list(ds.categorical or [])
    missing = [c for c in declared if c not in table.columns]
    if missing:
        raise DataError(f"{path}: categorical column(s) {missing} listed in "
                        f"[datasets.{ds.name}] are not in the file")
    auto = {c for c in feats if table.is_category(c)}
    return (set(declared) & set(feats)) | auto


def category_codes(s: pd.Series, col: str, path: Path, levels: list | None,
                   max_categories: int, ds_name: str = "") -> tuple[np.ndarray, list, int]:
    """A categorical column -> (float64 level indices, levels, unseen cell count).

    Cells are read as text (stripped); blank / NA / NaN / null cells are missing (NaN).
    Without ``levels`` they are built here: if every present value is an integer the
    levels are ints sorted numerically (``"01"`` and ``1`` are one level), otherwise the
    texts sorted as text; more than ``max_categories`` of them is an error naming the
    column and the count. With ``levels`` (a stored model's), a value not in the list
    maps to NaN (missing: scoring routes it the split's default direction) and is
    counted. Errors never quote values."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        s = s.astype(object)
    present = s.notna().to_numpy(dtype=bool, copy=True)
    text = pd.Series([str(v).strip() if ok else "" for v, ok in zip(s, present, strict=True)],
                     index=s.index, dtype=object)
    present &= ~text.str.lower().isin(MISSING_TOKENS).to_numpy(dtype=bool)
    nums = pd.to_numeric(text.where(present, None), errors="coerce").to_numpy(np.float64)
    ints = present & np.isfinite(nums) & (nums == np.round(nums))
    as_int = ints[present].all() if levels is None else all(
        isinstance(v, int) and not isinstance(v, bool) for v in levels)
    if levels is None:
        vals = (sorted({_int_key(t) for t in text[present]}) if as_int
                else sorted({str(v) for v in text[present]}))
        if len(vals) > max_categories:
            where = f" ([datasets.{ds_name}] max_categories)" if ds_name else ""
            raise DataError(f"{path}: categorical column {col!r} has {len(vals)} distinct "
                            f"levels, more than max_categories = {max_categories}{where}; "
                            "merge rare levels or raise the limit")
        levels = vals
    index = {v: i for i, v in enumerate(levels)}
    out = np.full(len(s), np.nan)
    if as_int:
        rows = np.flatnonzero(ints)
        keys = [_int_key(t) for t in text.to_numpy()[rows]]
    else:
        rows = np.flatnonzero(present)
        keys = [str(v) for v in text.to_numpy()[rows]]
    codes = np.array([index.get(k, -1) for k in keys], dtype=np.int64)
    out[rows] = np.where(codes >= 0, codes, np.nan)
    unseen = int((codes < 0).sum()) + int((present & ~ints).sum() if as_int else 0)
    return out, list(levels), unseen


def class_labels(s: pd.Series, col: str, path: Path, use: str = "",
                 max_classes: int = MAX_CLASSES) -> tuple[np.ndarray, list]:
    """A multiclass label column -> (int64 class indices, class values in index order).

    Integer values (``0..K-1`` or any other integers) are classes sorted numerically;
    otherwise every value is a class name (stripped text) and the names are sorted as
    text. So integer classes ``0..K-1`` keep their numbers as indices. Errors: a missing
    label, a non-integer number among numbers, one class only, more than
    ``max_classes`` classes; each names the row (and the value at fault)."""
    use = use or "this job"
    where = f"{path}: label column {col!r}"
    if pd.api.types.is_bool_dtype(s):
        s = s.astype(np.int64)
    if pd.api.types.is_numeric_dtype(s):
        raw = s.astype(object).where(s.notna(), None)
        text = pd.Series(["" if v is None else str(v) for v in raw], index=s.index)
        nums = pd.to_numeric(s, errors="coerce")
    else:
        text = s.astype(str).str.strip().where(s.notna(), "")
        nums = pd.to_numeric(text, errors="coerce")
    blank = (s.isna() | text.str.lower().isin(MISSING_TOKENS)).to_numpy(dtype=bool)
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise DataError(f"{where} has {int(blank.sum())} missing label(s), first at data "
                        f"row {row + 1} (file line {row + 2}); {use} needs a class on "
                        "every row")
    numeric = nums.notna().to_numpy(dtype=bool)
    if numeric.all():
        v = nums.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(v) | (v != np.round(v))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where} must hold class values (integers or names) for "
                            f"{use}; data row {row + 1} (file line {row + 2}) holds "
                            f"{_quote(text.iloc[row])}, not an integer ({int(bad.sum())} "
                            "such row(s))")
        keys: np.ndarray = v.astype(np.int64)
        classes = sorted({int(c) for c in np.unique(keys)})
    else:
        keys = text.to_numpy(dtype=object)
        classes = sorted({str(c) for c in keys})
    if len(classes) < 2:
        raise DataError(f"{where} has only one class, {_quote(classes[0])} ({len(s)} "
                        f"rows); {use} needs at least two")
    if len(classes) > max_classes:
        raise DataError(f"{where} has {len(classes)} distinct classes, more than "
                        f"limits.max_classes = {max_classes} (e.g. "
                        f"{', '.join(_quote(c) for c in classes[:5])}, ...); merge rare "
                        "classes or raise the limit in node.toml")
    if numeric.all():
        y = np.searchsorted(np.asarray(classes, dtype=np.int64), keys)
    else:
        y = pd.Categorical(keys, categories=classes).codes
    return np.asarray(y, dtype=np.int64), classes


def _int_key(text: str) -> int:
    """An integer-valued cell as an exact int ("0012" -> 12, "3.0" -> 3; long digit
    strings are not rounded through float)."""
    try:
        return int(text)
    except ValueError:
        return int(float(text))


def _quote(value, n: int = 40) -> str:
    text = str(value)
    return repr(text if len(text) <= n else text[:n] + "...")


def _check_labels(y: np.ndarray, col: str, path: Path, kind: str, use: str) -> np.ndarray:
    """The label column as the job needs it (int8 0/1, or float64). Errors name the
    column, the first offending row and counts, never a value."""
    use = use or "this job"
    n_distinct = len(np.unique(y))
    if kind == "binary":
        bad = (y != 0.0) & (y != 1.0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: label column {col!r} must be binary 0/1 for {use} but "
                            f"has other values (found {n_distinct} distinct values, e.g. at "
                            f"data row {row + 1}, file line {row + 2})")
        if n_distinct < 2:
            raise DataError(f"{path}: label column {col!r} has only one class ({len(y)} "
                            f"rows); {use} needs both 0 and 1")
        return y.astype(np.int8)
    if n_distinct < 2:
        raise DataError(f"{path}: label column {col!r} is constant ({len(y)} rows); {use} "
                        "needs a target that varies")
    return y


def _short(cols: list[str], n: int = 8) -> str:
    return ", ".join(cols[:n]) + (f", ... ({len(cols)} in all)" if len(cols) > n else "")


def hashed_split(ids: list[str], test_fraction: float, salt: str) -> np.ndarray:
    """Boolean test mask from a keyed hash of each id, so both parties compute the same
    split from the intersection without talking (``salt`` is the job id)."""
    import hashlib

    if test_fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    out = np.empty(len(ids), dtype=bool)
    limit = int(test_fraction * (1 << 64))
    key = b"fedjoint-split-v1\0" + salt.encode() + b"\0"
    for i, v in enumerate(ids):
        h = int.from_bytes(hashlib.sha256(key + v.encode()).digest()[:8], "big")
        out[i] = h < limit
    return out
