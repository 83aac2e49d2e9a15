"""SecureBoost job parameters (the ``[params]`` table of a job), shared by both roles.

Both nodes parse the same table with :func:`parties.common.params.from_dict`; the bank
also announces the values that shape the protocol (``max_bin``, ``max_depth``...) in
its first message and the platform refuses to continue if they differ from its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from parties.common.params import (
    SCALE_POS_WEIGHT,
    ParamError,
    artifact_params,
    check_class_weight,
)
from parties.common.tree import SplitRule
from secure_agg.rng import Drbg

OBJECTIVES = ("binary:logistic", "reg:squarederror", "reg:pseudohubererror",
              "multi:softprob", "multi:softmax")
#: multiclass objectives: K trees per round (parties.common.secureboost_multiclass)
MULTI = ("multi:softprob", "multi:softmax")
#: XGBoost objectives SecureBoost does not run, and why (named in the error)
UNSUPPORTED_OBJECTIVES = {
    "reg:absoluteerror": "XGBoost refits every leaf to the median of its rows' residuals "
                         "after the tree is built (a per-leaf quantile step, not a "
                         "gradient/hessian sum); use reg:pseudohubererror for a robust "
                         "loss",
    "reg:quantileerror": "XGBoost refits every leaf to a quantile of its rows' residuals",
}
REFRESH_MODES = ("djn_full", "standard")
#: class weights multiply the bank's g and h; kept far below the fixed-point limits
MAX_CLASS_WEIGHT = 2.0 ** 16
_PROTOCOL = "would need a protocol change"

#: parameters both parties must agree on (checked by the platform)
SHARED = ("max_bin", "max_depth", "n_trees", "complete_secure", "binning")


@dataclass
class SecureBoostParams:
    #: XGBoost / scikit-learn / older names -> the canonical key (parties.common.params)
    ALIASES = {"eta": "learning_rate", "n_estimators": "n_trees", "num_boost_round": "n_trees",
               "lambda": "reg_lambda", "l2": "reg_lambda", "alpha": "reg_alpha",
               "l1": "reg_alpha", "min_split_loss": "gamma", "random_state": "seed",
               "scale_pos_weight": SCALE_POS_WEIGHT}
    #: known names this algorithm does not take, and why
    REFUSED = {
        "colsample_bylevel": f"columns are sampled per tree (colsample_bytree); per level "
                             f"the platform would sample its own columns ({_PROTOCOL})",
        "colsample_bynode": f"columns are sampled per tree (colsample_bytree); per node "
                            f"the platform would sample its own columns ({_PROTOCOL})",
        "tree_method": "SecureBoost always builds histogram trees (XGBoost's 'hist'; "
                       "set max_bin)",
        "grow_policy": f"trees grow level by level (max_depth); lossguide {_PROTOCOL}",
        "max_leaves": f"trees grow level by level (max_depth); lossguide {_PROTOCOL}",
        "monotone_constraints": f"the bank does not know which platform feature a "
                                f"candidate split is on ({_PROTOCOL})",
        "interaction_constraints": f"the bank does not know which platform feature a "
                                   f"candidate split is on ({_PROTOCOL})",
        "nthread": "set workers in the [node] table of node.toml",
        "n_jobs": "set workers in the [node] table of node.toml",
        "epochs": "SecureBoost trains trees: set n_trees",
        "batch_size": "SecureBoost uses every row in every tree (chunk_rows only sizes "
                      "messages)",
    }
    #: fields added after model parts were first recorded: in a part only when set
    ADDED_FIELDS = ("reg_alpha", "max_delta_step", "class_weight", "seed", "num_class",
                    "max_cat_to_onehot", "max_cat_threshold")

    objective: str = "binary:logistic"
    n_trees: int = 20
    max_depth: int = 5
    learning_rate: float = 0.3
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0                # minimum loss reduction of a split (min_split_loss)
    reg_alpha: float = 0.0            # L1 penalty on leaf weights (bank-local)
    max_delta_step: float = 0.0       # cap on |leaf weight| before learning_rate; 0: none
    #: None | "balanced" | {"0": w0, "1": w1}: the bank weighs each row's g and h by its
    #: class (scale_pos_weight = w is {"0": 1, "1": w}); binary:logistic only
    class_weight: str | dict | None = None
    seed: int | None = None           # fixes subsample/GOSS/colsample draws (else the job's)
    base_score: float | None = None   # None: mean label (probability for logistic)
    subsample: float = 1.0            # row subsampling per tree (unsampled rows: g=h=0)
    goss: bool = False                # gradient-based one-side sampling instead
    top_rate: float = 0.2
    other_rate: float = 0.1
    colsample_bytree: float = 1.0
    early_stopping_rounds: int = 0    # 0 = off; needs a validation set
    complete_secure: int = 0          # first k trees use bank features only
    precision_bits: int = 24          # fixed-point fractional bits of g and h (as float32)
    chunk_rows: int = 4096            # rows per encrypted-gradient message (streaming)
    binning: str = "auto"             # "auto" | "xgboost" | "native" (see binning.py)
    #: how the platform refreshes aggregates bound for the bank (docs/secureboost.md):
    #: "djn_full" (statistically hiding against a semi-honest bank) or "standard"
    #: (uniform r^n, also against a bank that tags rows outside <h_s>); the platform's
    #: policy key ``refresh`` can only make it stricter
    refresh: str = "djn_full"
    #: delta of reg:pseudohubererror (XGBoost's huber_slope); recorded only with it
    huber_slope: float = 1.0
    #: multi:* objectives: the number of classes (XGBoost's num_class); 0: the label's
    #: (the bank's loader counts them); when set it must equal the label's
    num_class: int = 0
    #: categorical features (parties.common.categorical), XGBoost's names and defaults:
    #: fewer levels than this -> one-hot splits, else sorted-gradient partitions
    max_cat_to_onehot: int = 4
    max_cat_threshold: int = 64       # most levels a partition's search walks per side

    def __post_init__(self):
        def bad(field, why):
            raise ParamError(f"{field} = {getattr(self, field)!r}: {why}")
        if self.objective in UNSUPPORTED_OBJECTIVES:
            bad("objective", f"not supported by SecureBoost: "
                f"{UNSUPPORTED_OBJECTIVES[self.objective]}")
        if self.objective not in OBJECTIVES:
            bad("objective", f"expected one of {OBJECTIVES}")
        if self.max_cat_to_onehot < 1:
            bad("max_cat_to_onehot", "must be >= 1")
        if self.max_cat_threshold < 1:
            bad("max_cat_threshold", "must be >= 1")
        if not self.huber_slope > 0:
            bad("huber_slope", "must be > 0")
        if self.n_trees < 1:
            bad("n_trees", "must be >= 1")
        if not 1 <= self.max_depth <= 16:
            bad("max_depth", "must be in [1, 16]")
        if not 0 < self.learning_rate <= 1:
            bad("learning_rate", "must be in (0, 1]")
        if not 2 <= self.max_bin <= 1024:
            bad("max_bin", "must be in [2, 1024]")
        if self.min_child_weight < 0:
            bad("min_child_weight", "must be >= 0")
        if self.reg_lambda < 0:
            bad("reg_lambda", "must be >= 0")
        if self.gamma < 0:
            bad("gamma", "must be >= 0")
        if self.reg_alpha < 0:
            bad("reg_alpha", "must be >= 0")
        if self.max_delta_step < 0:
            bad("max_delta_step", "must be >= 0 (0: no cap)")
        if self.num_class and (self.objective not in MULTI or not
                               2 <= self.num_class <= 4096):
            bad("num_class", "needs objective multi:softprob or multi:softmax and is in "
                "[2, 4096] (0: the label's classes)")
        if self.num_class < 0:
            bad("num_class", "must be >= 0 (0: the label's classes)")
        if self.objective in MULTI and self.goss:
            bad("goss", "is not available with multi:* objectives (use subsample)")
        if self.class_weight is not None and self.objective in MULTI:
            bad("class_weight", "weighs the two classes of binary:logistic; not available "
                f"with {self.objective}")
        if self.class_weight is not None and self.objective != "binary:logistic":
            bad("class_weight", "weighs the two classes of binary:logistic; "
                f"{self.objective} has no classes")
        check_class_weight(self.class_weight, MAX_CLASS_WEIGHT)
        if not 0 < self.subsample <= 1:
            bad("subsample", "must be in (0, 1]")
        if not (0 < self.top_rate < 1 and 0 < self.other_rate < 1
                and self.top_rate + self.other_rate <= 1):
            bad("top_rate", "top_rate and other_rate must be in (0, 1) with sum <= 1")
        if self.goss and self.subsample < 1:
            bad("goss", "use either goss or subsample < 1, not both")
        if not 0 < self.colsample_bytree <= 1:
            bad("colsample_bytree", "must be in (0, 1]")
        if self.early_stopping_rounds < 0:
            bad("early_stopping_rounds", "must be >= 0")
        if not 0 <= self.complete_secure <= self.n_trees:
            bad("complete_secure", "must be in [0, n_trees]")
        if not 8 <= self.precision_bits <= 52:
            bad("precision_bits", "must be in [8, 52]")
        if self.chunk_rows < 64:
            bad("chunk_rows", "must be >= 64")
        if self.binning not in ("auto", "xgboost", "native"):
            bad("binning", "expected 'auto', 'xgboost' or 'native'")
        if self.refresh not in REFRESH_MODES:
            bad("refresh", f"expected one of {REFRESH_MODES}")
        if self.base_score is not None and self.objective == "binary:logistic" and not (
                0 < self.base_score < 1):
            bad("base_score", "must be a probability in (0, 1) for binary:logistic")

    def to_dict(self) -> dict:
        """The params a model part records; ``huber_slope`` only with the objective that
        reads it (so parts of the other objectives are as before it existed)."""
        out = artifact_params(self)
        if self.objective != "reg:pseudohubererror":
            del out["huber_slope"]
        return out

    def label_kind(self) -> str:
        """What the bank's labels must be: ``"binary"`` (0/1) for binary:logistic,
        ``"multiclass"`` (class values) for multi:*, ``"continuous"`` (any finite
        number) for the reg: objectives."""
        if self.objective in MULTI:
            return "multiclass"
        return "binary" if self.objective == "binary:logistic" else "continuous"

    def needs_validation_split(self) -> str:
        """The param that needs a validation split carved from the training rows."""
        return "early_stopping_rounds" if self.early_stopping_rounds > 0 else ""

    def split_rule(self) -> SplitRule:
        """Gains and leaf weights (XGBoost's, with reg_alpha and max_delta_step)."""
        return SplitRule(self.reg_lambda, self.min_child_weight, self.gamma, self.reg_alpha,
                         self.max_delta_step)

    def sampling_rng(self, job_rng: Drbg) -> np.random.Generator:
        """The bank's draws for subsample, GOSS and colsample_bytree: from ``seed`` when
        set (every job with that seed samples the same rows and columns), else from the
        job's own stream ``sb/sampling``. Encryption randomness never comes from here."""
        if self.seed is None:
            return job_rng.child("sb/sampling").numpy()
        key = hashlib.sha256(f"fedjoint-sb-sampling\0{self.seed}".encode()).digest()
        return Drbg(key, "sb/sampling").numpy()

    def row_weights(self, y: np.ndarray) -> np.ndarray | None:
        """Each row's class weight (``None``: unweighted); "balanced" is n / (2 n_class)
        over the rows given (the bank's training rows)."""
        cw = self.class_weight
        if cw is None:
            return None
        y = np.asarray(y)
        if cw == "balanced":
            n, n1 = y.size, float((y == 1).sum())
            if n1 in (0.0, float(n)):
                return np.ones(n)
            w1, w0 = n / (2.0 * n1), n / (2.0 * (n - n1))
        else:
            table = {str(k): float(v) for k, v in cw.items()}
            w0, w1 = table.get("0", 1.0), table.get("1", 1.0)
        return np.where(y == 1, w1, w0)

    def label_mean(self, y: np.ndarray) -> float:
        """The (class-weighted) mean label: the constant that minimises the loss."""
        w = self.row_weights(y)
        return float(np.mean(y)) if w is None else float(np.average(y, weights=w))
