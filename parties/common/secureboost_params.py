"""SecureBoost job parameters (the ``[params]`` table of a job), shared by both roles.

Both nodes parse the same table with :func:`parties.common.params.from_dict`; the bank
also announces the values that shape the protocol (``max_bin``, ``max_depth``...) in
its first message and the platform refuses to continue if they differ from its own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from parties.common.params import ParamError

OBJECTIVES = ("binary:logistic", "reg:squarederror")
REFRESH_MODES = ("djn_full", "standard")

#: parameters both parties must agree on (checked by the platform)
SHARED = ("max_bin", "max_depth", "n_trees", "complete_secure", "binning")


@dataclass
class SecureBoostParams:
    objective: str = "binary:logistic"
    n_trees: int = 20
    max_depth: int = 5
    learning_rate: float = 0.3
    max_bin: int = 32
    min_child_weight: float = 1.0
    reg_lambda: float = 1.0
    gamma: float = 0.0
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

    def __post_init__(self):
        def bad(field, why):
            raise ParamError(f"{field} = {getattr(self, field)!r}: {why}")
        if self.objective not in OBJECTIVES:
            bad("objective", f"expected one of {OBJECTIVES}")
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
        return asdict(self)

    def needs_validation_split(self) -> str:
        """The param that needs a validation split carved from the training rows."""
        return "early_stopping_rounds" if self.early_stopping_rounds > 0 else ""
