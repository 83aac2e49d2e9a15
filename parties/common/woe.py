"""Binning, weight of evidence and information value: the plaintext arithmetic.

Both roles of the ``binning`` algorithm use these functions; the bank on its own
columns (labels in hand) and on the per-bin counts the platform returns, the platform
only for its pre-bin cut points (it never has labels). Nothing here sends anything.

Conventions (those of optbinning's ``OptimalBinning``, so tables compare directly):

* A value ``x`` falls in bin ``b`` iff ``c_b <= x < c_{b+1}`` (``c_0 = -inf``,
  ``c_K = +inf``): ``x < cut`` goes left. ``NaN`` is missing and gets its own bin.
* Quantile cut points are ``numpy.quantile`` (linear interpolation) of the non-missing
  values at ``1/k .. (k-1)/k``, equal-width ones ``linspace(min, max, k + 1)`` interior
  points (scikit-learn's ``KBinsDiscretizer`` strategies ``quantile`` and ``uniform``);
  duplicate cuts and cuts at or below the minimum are dropped (no empty bins).
* ``WOE_i = ln((non-events_i / non-events) / (events_i / events))`` - optbinning's sign:
  a bin with a lower event (default) rate than the whole has a positive WOE. Totals
  include the missing bin. No smoothing: a bin with no events or no non-events gets
  WOE 0 and IV contribution 0 (as optbinning reports such bins).
* ``IV_i = (non-event share_i - event share_i) * WOE_i``; the feature's IV is their sum.
* Monotonic optimal binning: fine quantile pre-bins are merged into contiguous groups
  maximising the IV subject to a monotone *event rate* (``ascending``: non-decreasing
  with ``x``, so WOE non-increasing; ``descending`` the reverse; ``auto``: the one of
  the two with the larger IV, optbinning's ``auto_asc_desc``), each group holding at
  least ``min_bin_size`` of all rows and ``min_bin_n_event`` events /
  ``min_bin_n_nonevent`` non-events. optbinning solves that problem with a MIP/CP
  solver; here an exact dynamic programme over (group start, group end) does it, in
  O(m^3) for m pre-bins. The missing bin takes no part in the constraints.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from parties.common.params import ParamError

METHODS = ("quantile", "equal_width", "monotonic")
TRENDS = ("auto", "ascending", "descending")
MISSING = -1
MAX_BINS = 256


class WoeError(ValueError):
    """A feature cannot be binned as asked (single value, infeasible constraints...).
    ``peer_message``: what the peer may be told when the message names a private
    column (empty: the message itself)."""

    def __init__(self, message: str, peer_message: str = ""):
        super().__init__(message)
        self.peer_message = peer_message


@dataclass(frozen=True)
class BinningParams:
    """``[params]`` of a ``binning`` job (both parties read the same table)."""

    ALIASES: ClassVar[dict] = {"max_n_prebins": "n_prebins", "strategy": "method"}

    method: str = "monotonic"          #: quantile | equal_width | monotonic
    n_bins: int = 10                   #: bins of the quantile / equal-width methods
    n_prebins: int = 20                #: fine quantile pre-bins the monotonic method merges
    monotonic_trend: str = "auto"      #: event rate vs x: auto | ascending | descending
    min_bin_size: float = 0.05         #: least share of all rows per merged bin, (0, 0.5]
    min_bin_n_event: int = 1           #: least events per merged bin
    min_bin_n_nonevent: int = 1        #: least non-events per merged bin

    def __post_init__(self):
        if self.method not in METHODS:
            raise ParamError(f"method = {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.monotonic_trend not in TRENDS:
            raise ParamError(f"monotonic_trend = {self.monotonic_trend!r}: expected one of "
                             f"{', '.join(TRENDS)}")
        for key in ("n_bins", "n_prebins"):
            v = getattr(self, key)
            if not 2 <= v <= MAX_BINS:
                raise ParamError(f"{key} = {v}: expected an integer in [2, {MAX_BINS}]")
        if not 0.0 < self.min_bin_size <= 0.5:
            raise ParamError(f"min_bin_size = {self.min_bin_size}: expected a share of the "
                             "rows in (0, 0.5]")
        for key in ("min_bin_n_event", "min_bin_n_nonevent"):
            if getattr(self, key) < 0:
                raise ParamError(f"{key} = {getattr(self, key)}: expected an integer >= 0")

    @staticmethod
    def label_kind(_params) -> str:
        return "binary"

    @property
    def fine_bins(self) -> int:
        """How many bins the cut points make before any merging."""
        return self.n_prebins if self.method == "monotonic" else self.n_bins

    @property
    def cut_method(self) -> str:
        return "equal_width" if self.method == "equal_width" else "quantile"


def cut_points(x: np.ndarray, method: str, n_bins: int, feature: str) -> np.ndarray:
    """Interior cut points of one column (see the module docstring); ``WoeError`` for a
    column with fewer than two distinct non-missing values."""
    v = np.asarray(x, dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0 or v.min() == v.max():
        what = "no non-missing value" if v.size == 0 else f"a single value ({v[0]:g})"
        raise WoeError(f"feature {feature!r} has {what}: nothing to bin (drop the column)")
    if method == "quantile":
        cuts = np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1)[1:-1])
    else:
        cuts = np.linspace(v.min(), v.max(), n_bins + 1)[1:-1]
    cuts = np.unique(cuts)
    return cuts[cuts > v.min()]


def assign(x: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Bin index per value (``x < cut`` goes left); ``MISSING`` for NaN."""
    x = np.asarray(x, dtype=np.float64)
    b = np.searchsorted(cuts, x, side="right").astype(np.int64)
    b[np.isnan(x)] = MISSING
    return b


def bin_counts(bins: np.ndarray, n_bins: int, y: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows (and events, with ``y``) per bin ``0..n_bins-1`` then the missing bin."""
    idx = np.where(bins == MISSING, n_bins, bins)
    counts = np.bincount(idx, minlength=n_bins + 1).astype(np.int64)
    events = None if y is None else \
        np.bincount(idx, weights=y, minlength=n_bins + 1).round().astype(np.int64)
    return counts, events


def _iv_terms(ne: np.ndarray, e: np.ndarray, NE: int, E: int) -> tuple[np.ndarray, np.ndarray]:
    ne, e = np.asarray(ne, dtype=np.float64), np.asarray(e, dtype=np.float64)
    ok = (ne > 0) & (e > 0)
    woe = np.zeros_like(ne)
    p, q = ne / max(NE, 1), e / max(E, 1)
    woe[ok] = np.log(p[ok] / q[ok])
    return woe, (p - q) * woe


def table(counts: np.ndarray, events: np.ndarray, labels: list[str]) -> dict:
    """The binning table from per-bin counts (last entry: the missing bin).

    ``{"bins": [{bin, count, count_share, event, non_event, event_rate, woe, iv}],
    "iv": total, "n": rows, "n_event": events}`` - the missing row is always present
    (count 0 when the column has no missing value), as optbinning's table has it."""
    counts, events = np.asarray(counts, np.int64), np.asarray(events, np.int64)
    nonev = counts - events
    n, E = int(counts.sum()), int(events.sum())
    woe, iv = _iv_terms(nonev, events, n - E, E)
    rows = []
    for i, label in enumerate(labels):
        c = int(counts[i])
        rows.append({"bin": label, "count": c, "count_share": c / n if n else 0.0,
                     "event": int(events[i]), "non_event": int(nonev[i]),
                     "event_rate": events[i] / c if c else 0.0,
                     "woe": float(woe[i]), "iv": float(iv[i])})
    return {"bins": rows, "iv": float(iv.sum()), "n": n, "n_event": E}


def interval_labels(cuts: np.ndarray) -> list[str]:
    edges = ["-inf", *(f"{c:.10g}" for c in cuts), "inf"]
    return [f"[{a}, {b})" for a, b in zip(edges[:-1], edges[1:], strict=True)] + ["Missing"]


# ------------------------------------------------------------- monotonic merging


def monotonic_groups(counts: np.ndarray, events: np.ndarray, p: BinningParams,
                     feature: str) -> tuple[list[tuple[int, int]], str]:
    """Merge the pre-bins (``counts``/``events`` with the missing bin last) into
    contiguous groups ``[(first, last), ...]`` maximising IV under the constraints of
    ``p``; returns the groups and the trend used. ``WoeError`` names the feature when
    no grouping meets the constraints."""
    counts, events = np.asarray(counts, np.int64), np.asarray(events, np.int64)
    n, E = int(counts.sum()), int(events.sum())
    NE = n - E
    c, e = counts[:-1], events[:-1]
    trends = ("ascending", "descending") if p.monotonic_trend == "auto" \
        else (p.monotonic_trend,)
    best = None
    for trend in trends:
        found = _dp(c, e, n, E, NE, p, trend)
        if found is not None and (best is None or found[0] > best[0] + 1e-12):
            best = (found[0], found[1], trend)
    if best is None:
        raise WoeError(
            f"feature {feature!r}: no binning meets the constraints (min_bin_size "
            f"{p.min_bin_size} = {math.ceil(p.min_bin_size * n)} rows, min_bin_n_event "
            f"{p.min_bin_n_event}, min_bin_n_nonevent {p.min_bin_n_nonevent}): its "
            f"{int(c.sum())} non-missing rows hold {int(e.sum())} events")
    return best[1], best[2]


def _dp(c, e, n, E, NE, p: BinningParams, trend: str):
    """Exact best partition of pre-bins into contiguous groups with monotone event rate.

    ``best[i][j]``: largest IV of a partition of pre-bins ``0..j`` whose last group is
    ``i..j``; a group ``i..j`` may follow ``k..i-1`` iff the rates are ordered."""
    m = len(c)
    cc = np.concatenate([[0], np.cumsum(c)])
    ce = np.concatenate([[0], np.cumsum(e)])
    min_size = math.ceil(p.min_bin_size * n - 1e-9)
    ok = np.zeros((m, m), bool)
    iv = np.full((m, m), -np.inf)
    rate = np.zeros((m, m))
    for i in range(m):
        cnt = cc[i + 1:] - cc[i]
        ev = ce[i + 1:] - ce[i]
        nev = cnt - ev
        good = (cnt >= max(min_size, 1)) & (ev >= p.min_bin_n_event) & \
            (nev >= p.min_bin_n_nonevent)
        ok[i, i:] = good
        _, terms = _iv_terms(nev, ev, NE, E)
        iv[i, i:] = terms
        rate[i, i:] = np.divide(ev, cnt, out=np.zeros(len(cnt)), where=cnt > 0)
    sign = 1.0 if trend == "ascending" else -1.0
    best = np.full((m, m), -np.inf)
    back = np.full((m, m), -1, np.int64)
    for j in range(m):
        for i in range(j + 1):
            if not ok[i, j]:
                continue
            if i == 0:
                best[i, j] = iv[i, j]
                continue
            prev = best[:i, i - 1]
            allowed = np.isfinite(prev) & (sign * (rate[i, j] - rate[:i, i - 1]) >= -1e-12)
            if allowed.any():
                k = int(np.argmax(np.where(allowed, prev, -np.inf)))
                best[i, j] = prev[k] + iv[i, j]
                back[i, j] = k
    last = best[:, m - 1]
    if not np.isfinite(last).any():
        return None
    i, j = int(np.argmax(last)), m - 1
    total = float(last[i])
    groups = []
    while True:
        groups.append((i, j))
        if i == 0:
            break
        i, j = int(back[i, j]), i - 1
    return total, groups[::-1]


def merge(counts: np.ndarray, events: np.ndarray | None, groups: list[tuple[int, int]]
          ) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-group sums (the missing bin stays last, unmerged)."""
    def s(a):
        return np.array([a[i:j + 1].sum() for i, j in groups] + [a[-1]], np.int64)
    return s(np.asarray(counts)), None if events is None else s(np.asarray(events))


def bin_column(x: np.ndarray, y: np.ndarray, p: BinningParams, feature: str) -> dict:
    """The whole binning of one column the caller holds with its labels: the table with
    interval labels, the cut points, and (monotonic) the trend used."""
    cuts = cut_points(x, p.cut_method, p.fine_bins, feature)
    counts, events = bin_counts(assign(x, cuts), len(cuts) + 1, y)
    out = {"method": p.method}
    if p.method == "monotonic":
        groups, trend = monotonic_groups(counts, events, p, feature)
        cuts = np.array([cuts[i - 1] for i, _ in groups[1:]])
        counts, events = merge(counts, events, groups)
        out["monotonic_trend"] = trend
    out.update(table(counts, events, interval_labels(cuts)))
    out["cuts"] = [float(c) for c in cuts]
    return out


def check_binary(y: np.ndarray, where: str) -> np.ndarray:
    """Labels as 0/1 floats, or ``WoeError`` naming the first bad row."""
    y = np.asarray(y, dtype=np.float64)
    bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
    if bad.size:
        raise WoeError(f"{where}: label in row {int(bad[0])} is {float(y[bad[0]])!r}; binning needs "
                       "0/1 labels (1 = event)")
    if y.sum() == 0 or y.sum() == y.size:
        raise WoeError(f"{where}: every label is {int(y[0])}; WOE needs events and non-events")
    return y


def iv_ranking(tables: dict[str, dict]) -> list[dict]:
    """``[{feature, iv}]`` by decreasing IV (ties by name)."""
    return [{"feature": f, "iv": t["iv"]}
            for f, t in sorted(tables.items(), key=lambda kv: (-kv[1]["iv"], kv[0]))]
