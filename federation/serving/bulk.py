"""Batch scoring at scale through a serving session (issue 15 part 4): a CSV of
applicants scored with no PSI, the platform looking them up by pseudonym in its store.

A scoring job runs a balanced PSI over all of the bank's applicants (12-15 s at least,
and memory for the whole set). When the platform already serves the model, the mapping
is the pseudonym store: ``fedjoint serve --model ID --score-file IN.csv --out OUT.csv``
reads IN in chunks (bounded memory: ``chunk_rows`` rows at a time), parses the model's
features as a job's loader does, and sends one ``serve.lookup`` per
``limits.serve_max_batch_rows`` applicants, several in flight, writing
``id,score,probability,platform_data`` (a multiclass model:
``id,class,p_<class>...,platform_data``) in input order (floats as ``repr``, exact; then
the model's ``Scorer.csv_columns``, e.g. a scorecard's points and reason codes) and
reporting progress. What crosses per applicant is what an online score sends (docs/
serving.md), and each applicant counts against the platform's rate and daily budget.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def score_file(served, in_path: str | Path, out_path: str | Path, *, id_column: str = "id",
               chunk_rows: int = 65536, inflight: int = 4,
               progress: Callable[[int, float], None] | None = None) -> dict:
    """Score every row of ``in_path`` (CSV with ``id_column`` and the model's bank
    features; other columns are ignored); returns {rows, held, seconds, per_s}."""
    import pandas as pd

    from federation.admin import write_private
    from federation.data import DataError, _numeric, category_codes
    from federation.serving.bank import ServingError
    in_path, out_path = Path(in_path), Path(out_path)
    batch = served.cfg.limits.serve_max_batch_rows
    t0 = time.perf_counter()
    rows = held = 0
    # a model's extra columns (a scorecard's points and reason codes), after the four
    extra = tuple(getattr(served.scorer, "csv_columns", ()))
    classes = getattr(served.scorer, "classes", None)   # a multiclass model's
    head = ["class", *(f"p_{c}" for c in classes)] if classes else ["score", "probability"]
    write_private(out_path, ",".join(["id", *head, "platform_data", *extra]).encode()
                  + b"\n")
    try:
        reader = pd.read_csv(in_path, dtype=str, keep_default_na=False, chunksize=chunk_rows)
    except (OSError, ValueError) as exc:
        raise DataError(f"{in_path}: cannot read ({exc})") from None
    with open(out_path, "a", encoding="utf-8") as out, \
            ThreadPoolExecutor(inflight, thread_name_prefix="fedjoint-bulk") as pool:
        pending: deque = deque()

        def drain(keep: int) -> None:
            nonlocal held
            while len(pending) > keep:
                raw_ids, fut = pending.popleft()
                res = fut.result()
                lines = []
                for i, r in zip(raw_ids, res, strict=True):
                    if "error" in r:
                        lines.append(f"{i},{',' * len(head)}refused{',' * len(extra)}\n")
                        continue
                    held += r["platform_data"]
                    cells = served.scorer.csv_cells(r) if extra else []
                    vals = [str(r["class"]), *(repr(r["probabilities"][str(c)])
                                               for c in classes)] if classes else \
                        [f"{r['score']!r}", f"{r.get('probability', '')!r}"]
                    lines.append(",".join([f"{i}", *vals, str(r["platform_data"]).lower(),
                                           *cells]) + "\n")
                out.write("".join(lines))
        try:
            for chunk in reader:
                missing = [c for c in [id_column, *served.features] if c not in chunk.columns]
                if missing:
                    raise DataError(f"{in_path}: missing column(s) {', '.join(missing)} (the "
                                    f"model needs {id_column!r} and its bank features)")
                try:
                    X = np.column_stack([
                        category_codes(chunk[c], c, in_path, served.categories[c], 0)[0]
                        if c in served.categories else
                        _numeric(chunk[c], c, in_path, missing_ok=True)
                        for c in served.features])
                except DataError as exc:
                    raise DataError(f"{exc} (in the chunk starting at data row {rows + 1})"
                                    ) from None
                raw = chunk[id_column].tolist()
                ids = [served.normalised_id(i) for i in raw]
                served.check_rows(X)
                for s in range(0, len(ids), batch):
                    pending.append((raw[s:s + batch], pool.submit(
                        served.score_rows, ids[s:s + batch], X[s:s + batch])))
                    drain(inflight)
                rows += len(ids)
                if progress is not None:
                    progress(rows, time.perf_counter() - t0)
            drain(0)
        except ServingError as exc:
            raise DataError(f"scoring {in_path} stopped after {rows} rows: {exc}") from None
    dt = time.perf_counter() - t0
    return {"rows": rows, "held": held, "seconds": dt, "per_s": rows / dt if dt else 0.0}
