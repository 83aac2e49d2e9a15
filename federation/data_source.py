"""A party's dataset read in chunks: CSV and Parquet through pyarrow, SQL through DuckDB.

Nothing here crosses the wire: this is the node's own data, read before any message is
sent (a dataset that does not load, or does not fit the node's memory budget, fails the
job before PSI). Rows stream as Arrow record batches of ``limits.read_chunk_rows`` rows;
each numeric feature column goes straight from the batch's Arrow column into a float64
block (no Python object per cell), so the loader holds the float64 matrix, the ids and
one batch. The id column, a label column and categorical columns are kept whole (Arrow
strings until the end) and checked by :mod:`federation.data` exactly as a whole-table
read would be, so every value, missing cell and error equals the pandas reader's.

Sources (``[datasets.NAME]`` in node.toml, docs/data.md): ``format = "csv"`` (the
default), ``"parquet"`` (default for ``.parquet`` / ``.pq``) or ``"duckdb"`` (default
for ``.duckdb`` / ``.ddb``: ``path`` is the database, opened read-only, and ``query``
the SELECT whose rows are the dataset, in its order).

A CSV row with more or fewer fields than the header is read by pandas' reader instead
(:class:`Fallback`), which pads short rows with missing cells and names the bad line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from federation.config.limits import Limits
from federation.config.node import source_format

#: cells read as missing (np.nan) in feature columns, compared case-insensitively after
#: stripping spaces: blank, NA, NaN, -NaN, null, None and pandas' <NA>
MISSING_TOKENS = frozenset({"", "na", "nan", "-nan", "null", "none", "<na>"})


class DataError(ValueError):
    """A dataset is missing, unreadable or not usable for the job."""


#: rows per read chunk (node.toml limits.read_chunk_rows)
CHUNK_ROWS = Limits.read_chunk_rows
#: what one row's id costs while loading: a Python str in the ids list (~50 bytes and
#: its length, 8 for the list slot) and its Arrow copy
ID_ROW_BYTES = 100
#: the whole-table CSV reader (a row of the wrong width) holds ~8x the file's bytes
FALLBACK_FACTOR = 8


class Fallback(Exception):
    """The file needs the whole-table reader (a CSV row of the wrong width)."""


def dedup_names(names: list[str]) -> list[str]:
    """CSV header names made unique as pandas does (``a, a`` -> ``a, a.1``)."""
    out, counts = list(names), defaultdict(int)
    for i, col in enumerate(out):
        cur = counts[col]
        while cur > 0:
            counts[col] = cur + 1
            col = f"{col}.{cur}"
            cur = counts[col]
        out[i] = col
        counts[col] = cur + 1
    return out


class CsvStream:
    """Every stream has ``columns``, ``rows_hint`` (the row count when the source knows
    it, Parquet and DuckDB; for CSV an estimate: the file's size over the bytes per line
    of its first MiB), ``row_bytes`` (what one row of a batch takes, for the memory
    budget) and ``batches(wanted)``: Arrow record batches of the ``wanted`` columns."""

    def __init__(self, path: Path, chunk_rows: int):
        import pyarrow as pa
        import pyarrow.csv as pcsv
        self.path, self.pa, self.pcsv = path, pa, pcsv
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        if not head.strip():
            raise EmptyFile()
        lines = max(1, head.count(b"\n") - 1)
        self.row_bytes = max(1.0, (len(head) - head.find(b"\n") - 1) / lines) \
            if b"\n" in head else float(len(head))
        self.rows_hint = int(size / self.row_bytes)
        self.block = int(min(1 << 30, max(1 << 16, chunk_rows * self.row_bytes)))
        try:
            names = pcsv.open_csv(path, read_options=pcsv.ReadOptions(
                block_size=len(head) + 16)).schema.names
        except pa.ArrowInvalid as exc:
            raise Fallback(str(exc).splitlines()[0]) from None
        self.raw_names = [str(c) for c in names]
        self.columns = dedup_names(self.raw_names)

    def batches(self, wanted: list[str]) -> Iterator:
        pa, pcsv = self.pa, self.pcsv

        def bad_row(row) -> str:
            raise Fallback(f"{row.actual_columns} fields where the header has "
                           f"{row.expected_columns}")

        try:    # Arrow's own messages may quote a row: pandas names the line instead
            yield from pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(block_size=self.block, skip_rows=1,
                                              use_threads=False, column_names=self.columns),
                parse_options=pcsv.ParseOptions(invalid_row_handler=bad_row),
                convert_options=pcsv.ConvertOptions(
                    column_types={c: pa.string() for c in wanted}, include_columns=wanted,
                    strings_can_be_null=False, quoted_strings_can_be_null=False))
        except pa.ArrowInvalid as exc:
            raise Fallback(str(exc).splitlines()[0]) from None


class EmptyFile(Exception):
    """A file with no bytes but whitespace (no header row)."""


class ParquetStream:
    def __init__(self, path: Path, chunk_rows: int):
        import pyarrow.parquet as pq
        self.file = pq.ParquetFile(path)
        self.columns = [str(c) for c in self.file.schema_arrow.names]
        self.rows_hint = self.file.metadata.num_rows
        self.chunk_rows = chunk_rows
        self.row_bytes = 8.0 * max(1, len(self.columns))

    def batches(self, wanted: list[str]) -> Iterator:
        if not wanted:
            return iter(())
        return self.file.iter_batches(batch_size=self.chunk_rows, columns=wanted)


class DuckdbStream:
    def __init__(self, path: Path, query: str, chunk_rows: int, budget_mb: int):
        import duckdb
        # read-only; no extension is downloaded at run time; DuckDB's own memory bounded
        config = {"autoinstall_known_extensions": False,
                  **({"memory_limit": f"{budget_mb}MB"} if budget_mb else {})}
        self.con = duckdb.connect(str(path), read_only=True, config=config)
        self.query, self.chunk_rows = query.strip().rstrip(";"), chunk_rows
        query = self.query
        rel = self.con.sql(query)
        self.columns = [str(c) for c in rel.columns]
        self.rows_hint = int(self.con.sql(f"select count(*) from ({query})").fetchone()[0])
        self.row_bytes = 8.0 * max(1, len(self.columns))

    def batches(self, wanted: list[str]) -> Iterator:
        if not wanted:
            return iter(())
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in wanted)
        rel = self.con.sql(f"select {cols} from ({self.query})")
        read = getattr(rel, "to_arrow_reader", None) or rel.fetch_record_batch  # duckdb < 1.4
        reader = read(self.chunk_rows)
        try:
            yield from reader
        finally:
            self.con.close()


def open_stream(ds, path: Path, chunk_rows: int, budget_mb: int):
    """The dataset's stream (:class:`CsvStream`, :class:`ParquetStream` or
    :class:`DuckdbStream`); the readers' exceptions become errors naming the file in
    federation.data."""
    fmt = source_format(ds)
    if fmt == "parquet":
        return ParquetStream(path, chunk_rows)
    if fmt == "duckdb":
        return DuckdbStream(path, ds.query, chunk_rows, budget_mb)
    return CsvStream(path, chunk_rows)


class NumericColumn:
    """One numeric feature column accumulated chunk by chunk: float64 values (NaN for
    missing cells), and the count and first row of non-numeric and infinite cells (so
    the error equals the whole-column check's). ``values_of(series)`` is the whole-table
    reader's cell logic, used for a chunk the Arrow fast path does not take."""

    def __init__(self, name: str, values_of):
        self.name, self.values_of = name, values_of
        self.nonnum = self.inf = 0
        self.first_nonnum = self.first_inf = -1
        self.dtype_error: str | None = None

    def add(self, arr, offset: int, out: np.ndarray) -> None:
        """Fill ``out`` (this column's rows ``offset..``) from the Arrow array ``arr``."""
        vals = _fast_float(arr)
        if vals is None:
            self.add_values(*self.values_of(arr.to_pandas()), offset, out)
        else:
            self.add_values(vals, None, offset, out)

    def add_values(self, vals, bad, offset: int, out: np.ndarray, finite: bool = False
                   ) -> None:
        """Count and store ``vals`` (``bad``: non-numeric cells; ``vals`` None: ``bad`` is
        why the column is not numeric). ``finite``: NaN counts as bad too (labels)."""
        if vals is None:
            self.dtype_error = self.dtype_error or bad
            return
        if bad is not None and bad.any():
            self.first_nonnum = self._first(self.first_nonnum, bad, offset)
            self.nonnum += int(bad.sum())
        inf = ~np.isfinite(vals) if finite else np.isinf(vals)
        if inf.any():
            self.first_inf = self._first(self.first_inf, inf, offset)
            self.inf += int(inf.sum())
        out[:] = vals

    @staticmethod
    def _first(first: int, mask: np.ndarray, offset: int) -> int:
        return first if first >= 0 else offset + int(np.flatnonzero(mask)[0])


_TOKENS = None


def _fast_float(arr):
    """float64 values of an Arrow column when Arrow alone gets them exactly as the
    whole-table reader would (numbers and bools; strings that are all finite numbers or
    missing-value tokens), else None."""
    import pyarrow as pa
    import pyarrow.compute as pc
    global _TOKENS
    t = arr.type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t):
        return pc.cast(arr, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        return None
    if _TOKENS is None:
        _TOKENS = pa.array(sorted(MISSING_TOKENS))
    blank = pc.or_kleene(pc.is_in(pc.utf8_lower(arr), value_set=_TOKENS), pc.is_null(arr))
    blank = blank.fill_null(True)
    try:
        vals = pc.cast(pc.if_else(blank, pa.scalar(None, t), arr), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    out = vals.to_numpy(zero_copy_only=False)
    finite = np.isfinite(out)
    if not np.array_equal(~finite, blank.to_numpy(zero_copy_only=False)):
        return None     # "nan" spellings or infinities outside the tokens: exact path
    return out


def _mb(n: float) -> int:
    return int(-(-n // (1 << 20)))


class Budget:
    """``limits.memory_budget_mb`` (0: none) applied to one dataset: what the loader
    holds (float64 features, ids, whole label / categorical columns) plus one read
    chunk of ``chunk_rows`` rows. Errors name the key that would make it fit."""

    def __init__(self, name: str, path: Path, mb: int, chunk_rows: int):
        self.name, self.path, self.mb, self.chunk_rows = name, path, mb, chunk_rows

    def check(self, rows: int, n_feats: int, n_whole: int, row_bytes: float,
              estimate: bool = False) -> None:
        if not self.mb:
            return
        budget = self.mb << 20
        per_row = 8 * n_feats + ID_ROW_BYTES + 16 * max(0, n_whole - 1)
        held = rows * per_row
        per_chunk_row = 3 * row_bytes + 8 * n_feats
        chunk = self.chunk_rows * per_chunk_row
        about = "~" if estimate else "at least "
        what = (f"{self.path}: dataset {self.name!r} needs {about}{_mb(held)} MB in memory "
                f"({'~' if estimate else ''}{rows} rows x {n_feats} features as float64, "
                "with its ids)")
        if held > budget:
            raise DataError(f"{what}, more than limits.memory_budget_mb = {self.mb}; "
                            f"raise limits.memory_budget_mb in node.toml (to at least "
                            f"{_mb(held + chunk)}), or list fewer columns in "
                            f"[datasets.{self.name}] columns")
        if held + chunk > budget:
            fit = int((budget - held) // per_chunk_row)
            raise DataError(f"{what} and ~{_mb(chunk)} MB for a read chunk of "
                            f"limits.read_chunk_rows = {self.chunk_rows} rows, more than "
                            f"limits.memory_budget_mb = {self.mb}; set "
                            f"limits.read_chunk_rows = {max(1, fit)} (or fewer) in node.toml"
                            + ("" if fit >= 1024 else
                               ", or raise limits.memory_budget_mb"))

    def check_file(self, size: int) -> None:
        """The whole-table reader's need (~``FALLBACK_FACTOR`` x the file) vs the budget."""
        if self.mb and size * FALLBACK_FACTOR > self.mb << 20:
                raise DataError(f"{self.path}: has rows whose field count differs from the "
                            f"header, which only the whole-table reader reads (~"
                            f"{_mb(size * FALLBACK_FACTOR)} MB for this file), more than "
                            f"limits.memory_budget_mb = {self.mb}; fix those rows or raise "
                            "limits.memory_budget_mb")


class FrameTable:
    """A whole pandas DataFrame (the Python API's frames; the CSV fallback)."""

    def __init__(self, df, path: Path):
        df.columns = [str(c) for c in df.columns]
        self.df, self.path, self.columns = df, path, list(df.columns)
        self.numeric: dict[str, NumericColumn] = {}

    def empty(self) -> bool:
        return len(self.df) == 0

    def is_category(self, col: str) -> bool:
        import pandas as pd
        return isinstance(self.df[col].dtype, pd.CategoricalDtype)

    def series(self, col: str):
        return self.df[col]

    def read(self, values_of, id_col, label_col, feats, cat_cols) -> np.ndarray:
        X = np.full((len(self.df), len(feats)), np.nan)
        for j, c in enumerate(feats):
            if c not in cat_cols:
                self.numeric[c] = acc = NumericColumn(c, values_of)
                acc.add_values(*values_of(self.df[c]), 0, X[:, j])
        return X


class StreamTable:
    """A file or query read batch by batch (:func:`open_stream`)."""

    def __init__(self, ds, path: Path, budget: Budget):
        try:
            self.stream = open_stream(ds, path, budget.chunk_rows, budget.mb)
        except EmptyFile:
            raise DataError(f"{path}: the file is empty (no header row)") from None
        self.path, self.budget, self.columns = path, budget, self.stream.columns
        self.numeric: dict[str, NumericColumn] = {}
        self._whole: dict = {}

    def empty(self) -> bool:
        if not isinstance(self.stream, CsvStream):
            return self.stream.rows_hint == 0
        return not any(b.num_rows for b in self.stream.batches(self.columns[:1]))

    def is_category(self, col: str) -> bool:
        return False

    def series(self, col: str):
        return self._whole[col].to_pandas()

    def read(self, values_of, id_col, label_col, feats, cat_cols) -> np.ndarray:
        import pyarrow as pa
        whole = list(dict.fromkeys([id_col, *([label_col] if label_col else []),
                                    *(c for c in feats if c in cat_cols)]))
        self.numeric = {c: NumericColumn(c, values_of) for c in feats if c not in cat_cols}
        wanted = list(dict.fromkeys(whole + list(self.numeric)))
        st, budget, F = self.stream, self.budget, len(feats)
        budget.check(st.rows_hint, F, len(whole), st.row_bytes, estimate=True)
        chunks: dict[str, list] = {c: [] for c in whole}
        blocks, n = [], 0
        for batch in st.batches(wanted):
            k = batch.num_rows
            if not k:
                continue
            block = np.full((k, F), np.nan)
            for j, c in enumerate(feats):
                if c in self.numeric:
                    self.numeric[c].add(batch.column(c), n, block[:, j])
            for c in whole:
                chunks[c].append(batch.column(c))
            blocks.append(block)
            n += k
            budget.check(n, F, len(whole), st.row_bytes)
        self._whole = {c: pa.chunked_array(v) for c, v in chunks.items()}
        X = np.empty((n, F))        # pages are touched as blocks are copied and freed
        i = 0
        while blocks:
            block = blocks.pop(0)
            X[i:i + len(block)] = block
            i += len(block)
            del block
        return X
