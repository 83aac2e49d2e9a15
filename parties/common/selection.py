"""Feature selection on a binning's WOE/IV tables: params, the plaintext rules and the
``selection`` protocol's message table (both roles use this module; nothing here sends).

Rules, applied in this order to every feature the binning input holds (the bank's own
columns and the platform's anonymous ``platform#k`` / released ``platform:<name>``
rows):

1. **IV** - drop a feature whose information value (from the binning table, as
   :func:`parties.common.woe.table` computed it) is below ``iv_min``.
2. **Stability** (``psi_max > 0``) - drop a feature whose population stability index
   between the training rows and the validation rows (``[evaluation] valid_fraction``)
   exceeds ``psi_max``: ``PSI = sum_i (v_i - t_i) ln(v_i / t_i)`` over the binning's
   bins (missing bin included), ``t_i`` / ``v_i`` the bin's share of the training /
   validation rows, shares floored at :data:`PSI_FLOOR` so an empty bin stays finite.
   Bank columns: the bank bins its own rows. Platform columns: the platform counts its
   rows per fine bin on both splits and the bank merges them into its bins.
3. **Correlation** (``max_corr < 1``) - the bank's own columns only: each column is
   WOE-encoded (its bin's WOE per row, on the training rows) and, going down the IV
   ranking, a column whose absolute Pearson correlation with an already kept column
   exceeds ``max_corr`` is dropped (a constant WOE column correlates with nothing).
   Platform columns cannot take part: their WOE values per row would need the
   platform's bin of each row (which the bank must not learn) joined with the bank's
   WOE of each bin (which the platform must not learn).
4. **Top-k** (``top_k > 0``) - keep the ``top_k`` highest-IV survivors (ties by name).

A rule that would leave no feature fails the job naming the rule and the best feature
it removed (:class:`SelectionError`).

Protocol (version 1, B = bank, P = platform)::

    B->P sel.init    version, the shared [params], the platform labels the bank's
                     binning part knows (sorted), n_train / n_valid rows
    P->B sel.counts  (psi_max > 0 only) rows per fine bin of every platform feature,
                     labels in the bank's order: row 0 training rows, row 1 validation
    B->P sel.keep    the platform labels kept (sorted: no IV order)
    either sel.abort reason the sender failed

What each party learns: the bank, with ``psi_max > 0``, the row counts of anonymous
platform bins on the validation rows (and on the stage's training rows); nothing else
beyond its binning part. The platform learns which of its features were kept - one
bit per feature, derived from the labels through IV / PSI (ledger: ``platform
features kept by the selection``) - because its later stages must use exactly those
columns; never their IV, PSI or rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from federation.link import Link, Message, ProtocolError, declare_protocol
from parties.common import aborts, woe
from parties.common.params import ParamError

PROTOCOL_VERSION = 1
#: least bin share in the PSI (an empty bin on one side counts as this share)
PSI_FLOOR = 1e-4
#: the [params] both parties must agree on
SHARED = ("iv_min", "top_k", "max_corr", "psi_max")


class SelectionError(ValueError):
    """The selection cannot be made as asked (a rule leaves nothing, inputs missing).
    ``peer_message``: what the peer may be told (empty: the message itself)."""

    def __init__(self, message: str, peer_message: str = ""):
        super().__init__(message)
        self.peer_message = peer_message


@dataclass(frozen=True)
class SelectionParams:
    """``[params]`` of a ``selection`` stage (both parties read the same table)."""

    iv_min: float = 0.02     #: drop features with IV below this (0: keep all)
    top_k: int = 0           #: keep at most this many features by IV (0: no limit)
    max_corr: float = 1.0    #: drop bank columns whose |corr| of WOE values exceeds it
    psi_max: float = 0.0     #: drop features whose PSI train vs validation exceeds it

    def __post_init__(self):
        if not 0.0 <= self.iv_min < 10.0:
            raise ParamError(f"iv_min = {self.iv_min}: expected a number in [0, 10)")
        if not 0 <= self.top_k <= 100_000:
            raise ParamError(f"top_k = {self.top_k}: expected an integer in [0, 100000] "
                             "(0: no limit)")
        if not 0.0 < self.max_corr <= 1.0:
            raise ParamError(f"max_corr = {self.max_corr}: expected a number in (0, 1] "
                             "(1: no correlation rule)")
        if not 0.0 <= self.psi_max < 100.0:
            raise ParamError(f"psi_max = {self.psi_max}: expected a number in [0, 100) "
                             "(0: no stability rule)")

    @staticmethod
    def label_kind(_params) -> str:
        return "binary"

    def needs_validation_split(self) -> str:
        return f"psi_max = {self.psi_max}" if self.psi_max > 0 else ""


# ------------------------------------------------------------------ plaintext rules


def bin_index(x: np.ndarray, table: dict) -> np.ndarray:
    """Each value's row in a bank binning ``table`` (its ``cuts``; missing: last row)."""
    cuts = np.asarray(table["cuts"], dtype=np.float64)
    b = woe.assign(x, cuts)
    return np.where(b == woe.MISSING, len(cuts) + 1, b)


def woe_encode(x: np.ndarray, table: dict) -> np.ndarray:
    """The WOE of each value's bin."""
    values = np.array([row["woe"] for row in table["bins"]], dtype=np.float64)
    return values[bin_index(x, table)]


def psi(train_counts, valid_counts) -> float:
    """Population stability index of the validation rows against the training rows."""
    t = np.asarray(train_counts, dtype=np.float64)
    v = np.asarray(valid_counts, dtype=np.float64)
    t = np.maximum(t / max(t.sum(), 1.0), PSI_FLOOR)
    v = np.maximum(v / max(v.sum(), 1.0), PSI_FLOOR)
    return float(np.sum((v - t) * np.log(v / t)))


def correlated(W: np.ndarray, order: list[int], max_corr: float
               ) -> dict[int, tuple[int, float]]:
    """Greedy correlation filter over the columns of ``W`` visited in ``order``: column
    -> (the kept column it correlates with, |corr|) for each dropped one."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(W, rowvar=False) if W.shape[1] > 1 else np.ones((1, 1))
    corr = np.nan_to_num(np.atleast_2d(corr), nan=0.0)
    kept: list[int] = []
    dropped = {}
    for j in order:
        hit = [(k, abs(corr[j, k])) for k in kept if abs(corr[j, k]) > max_corr]
        if hit:
            dropped[j] = max(hit, key=lambda kv: kv[1])
        else:
            kept.append(j)
    return dropped


def select(ivs: dict[str, float], p: SelectionParams, *, psis: dict[str, float] | None = None,
           woe_columns: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The selection report: one row per feature ``{feature, iv, psi, kept, reason}``
    in IV order. ``psis``: PSI per feature (stability rule); ``woe_columns``: the bank's
    WOE-encoded columns (correlation rule). :class:`SelectionError` names the rule that
    would leave nothing."""
    order = sorted(ivs, key=lambda f: (-ivs[f], f))
    rows = {f: {"feature": f, "iv": float(ivs[f]),
                "psi": None if psis is None or f not in psis else float(psis[f]),
                "kept": True, "reason": ""} for f in order}
    if not rows:
        raise SelectionError("selection: the binning input holds no features")

    def apply(rule: str, drop: dict[str, str]) -> None:
        alive = [f for f in order if rows[f]["kept"]]
        if drop and all(f in drop for f in alive):
            best = alive[0]
            raise SelectionError(f"selection: rule {rule} leaves no features (it removes "
                                 f"all {len(alive)}; the best, {best!r}, has "
                                 f"{drop[best]})")
        for f, why in drop.items():
            rows[f].update(kept=False, reason=why)

    apply(f"iv_min = {p.iv_min}", {f: f"IV {ivs[f]:.6g} < iv_min {p.iv_min}"
                                    for f in order if ivs[f] < p.iv_min})
    if p.psi_max > 0 and psis:
        apply(f"psi_max = {p.psi_max}",
              {f: f"PSI {psis[f]:.6g} > psi_max {p.psi_max}" for f in order
               if rows[f]["kept"] and f in psis and psis[f] > p.psi_max})
    if p.max_corr < 1.0 and woe_columns:
        names = [f for f in order if rows[f]["kept"] and f in woe_columns]
        if len(names) > 1:
            W = np.column_stack([woe_columns[f] for f in names])
            hits = correlated(W, list(range(len(names))), p.max_corr)
            apply(f"max_corr = {p.max_corr}",
                  {names[j]: f"|corr| {c:.6g} with {names[k]!r} > max_corr {p.max_corr}"
                   for j, (k, c) in hits.items()})
    if p.top_k:
        alive = [f for f in order if rows[f]["kept"]]
        for f in alive[p.top_k:]:
            rows[f].update(kept=False, reason=f"outside top_k {p.top_k}")
    return [rows[f] for f in order]


def binning_input(data, party: str):
    """This party's part of the ``binning`` input, checked to be one."""
    part = (data.inputs or {}).get("binning")
    if part is None:
        raise SelectionError("selection needs a binning input (inputs = { binning = "
                               "\"<binning stage or job>\" })")
    if part.algorithm != "binning" or part.party != party:
        raise SelectionError(f"selection: input 'binning' is a {part.algorithm!r} part of "
                               f"the {part.party}, expected this {party}'s binning part")
    return part


# ------------------------------------------------------------------ wire


K_INIT = "sel.init"
K_COUNTS = "sel.counts"
K_KEEP = "sel.keep"
K_ABORT = "sel.abort"


def recv(link: Link, kind: str, how: str = "recv"):
    """``link.recv`` (or ``recv_json``) turning the peer's ``sel.abort`` into
    :class:`PeerAborted`."""
    return aborts.recv(link, kind, K_ABORT, how)


def send_abort(link: Link, exc: BaseException) -> None:
    """Tell the peer we failed (best effort), without private column names."""
    aborts.send(link, K_ABORT, aborts.reason(exc))


def fine_bins(platform_table: dict) -> int:
    """Fine (pre-)bins of a platform feature as the bank's table records them, the
    missing bin included."""
    groups = platform_table.get("platform_bins") or []
    return int(groups[-1][1]) + 2 if groups else 1


def _kept(payload) -> int:
    keep = payload.get("keep") if isinstance(payload, dict) else None
    return len(keep) if isinstance(keep, list) else 0


def _size(payload) -> int:
    return int(payload.size) if isinstance(payload, np.ndarray) else 1


TABLE = declare_protocol("selection", str(PROTOCOL_VERSION), [
    Message(K_INIT, "bank", "json", "version, selection params, the platform labels of "
            "the bank's binning part, training / validation row counts"),
    Message(K_COUNTS, "platform", "npy", "psi_max > 0: rows per fine bin of each platform "
            "feature on the training and the validation rows",
            disclosure="row counts of anonymous platform bins", count=_size),
    Message(K_KEEP, "bank", "json", "the platform labels the selection keeps (sorted)",
            disclosure="platform features kept by the selection", count=_kept),
    Message(K_ABORT, "either", "json", "reason the sender failed"),
])


def check_counts(arr, sizes: list[int], n_train: int, n_valid: int) -> np.ndarray:
    """The platform's ``sel.counts``, range-checked: shape (2, sum(sizes)), each
    feature's counts summing to the row counts."""
    total = sum(sizes)
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu" or \
            arr.shape != (2, total):
        raise ProtocolError(f"{K_COUNTS}: expected a 2 x {total} integer array")
    arr = arr.astype(np.int64)
    pos = 0
    for k, size in enumerate(sizes):
        part = arr[:, pos:pos + size]
        pos += size
        if part.min() < 0 or int(part[0].sum()) != n_train or int(part[1].sum()) != n_valid:
            raise ProtocolError(f"{K_COUNTS}: feature {k}: counts do not sum to the "
                                f"{n_train} training / {n_valid} validation rows")
    return arr


def shared_params(p: SelectionParams) -> dict:
    return {k: getattr(p, k) for k in SHARED}


def check_shared(theirs: dict, p: SelectionParams) -> None:
    for k in SHARED:
        mine, other = getattr(p, k), (theirs or {}).get(k)
        if not isinstance(other, (int, float)) or float(other) != float(mine):
            raise ProtocolError(f"selection parameter {k} differs: bank {other!r}, "
                                f"platform {mine!r}")
