"""What both linear-regression roles share: parameters, the exact squared-loss residual's
fixed-point layout, the target scaling and the scoring handshake.

``linear_regression`` speaks logistic regression's protocol (the same message table,
``lr_common.TABLE``, and version): per mini-batch the bank sends ``[[u]]_B``, the
platform ``[[z_p]]_P``, and each forms its gradient from the residual
``d = u + a * z_p`` (docs/lr.md). For the squared loss that residual is exact:

    d = z_b + z_p - y        i.e.  u = z_b - y,  a = 1 (public: no [[a]] is sent)
    l = (z_b + z_p - y)^2 / 2 = u^2/2 + u z_p + z_p^2/2

so nothing is approximated: the gradients each party unmasks are the exact gradients
of the (L2-penalised) mean squared error on the fixed-point values. The transport,
masking, obfuscators-ahead, optimiser and part-digest helpers are LR's
(:mod:`parties.common.lr_common`); the roles are ``parties/bank/linreg.py`` and
``parties/provincial_platform/linreg.py``; what each party learns is in docs/linreg.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from parties.common import lr_common as C
from parties.common.artifact import ModelPart
from parties.common.params import ParamError
from parties.common.standardize import InputError
from secure_agg.keypolicy import describe_public_key

ALGORITHM = "linear_regression"
#: the hello's residual field: an LR role paired with a linear-regression role (or the
#: other way round) fails at the hello instead of training a mixed model
RESIDUAL = "squared"
OBJECTIVE = "reg:squarederror"

# ---- fixed-point layout (on top of LR's constants) ---------------------------------------
FZ, ZB = C.FZ, C.ZB   #: z_b, z_p and u have FZ fractional bits; |z_b|, |z_p| < 2**ZB
#: |u| = |z_b - y| < 2**ZB + 2**ZB on the standardised target (|y| < 2**ZB is checked)
U_BITS = FZ + ZB + 2
LOSS_FRAC = 2 * FZ    #: fractional bits of the loss slot (U * Z_p and Z_p**2)

EARLY_STOPPING = ("none", "loss")
NAN_POLICIES = ("fail", "mean", "zero")
#: parameters that shape the joint protocol and must be equal on both sides
SHARED_KEYS = ("epochs", "batch_size", "early_stopping", "tol", "seed", "evaluate_train",
               "x_frac_bits")

_NO_TREES = "a tree parameter; linear_regression trains no trees"
#: known names linear regression does not take, and why (parties.common.params)
REFUSED = {
    **{k: f"{_NO_TREES} (its passes over the data are epochs)"
       for k in ("n_trees", "n_estimators", "num_boost_round")},
    **{k: _NO_TREES for k in ("max_depth", "gamma", "min_split_loss", "max_delta_step",
                              "min_child_weight", "max_bin", "colsample_bytree",
                              "subsample")},
    "alpha": "ambiguous: scikit-learn Ridge's alpha penalises the summed squared error "
             "(set reg_lambda = alpha / n for n training rows), XGBoost's alpha is the L1 "
             "penalty (reg_alpha); name the one you mean",
    "penalty": "set reg_lambda (L2) and/or reg_alpha (L1)",
    "class_weight": "a continuous target has no classes",
    "scale_pos_weight": "a continuous target has no classes",
    "approximation": "the squared-loss residual is exact: there is nothing to approximate",
    "platform_curvature": "the squared loss's curvature is the public constant 1",
    "objective": "linear_regression fits the squared error; for other losses use "
                 "secureboost's objective",
}


class LinRegError(C.LRError):
    """Training or scoring failed; the message says why. No model part is published.
    ``shown``: what the peer is told (the message itself unless it names this party's
    own columns)."""

    def __init__(self, message: str = "", shown: str | None = None):
        self.shown = message if shown is None else shown
        super().__init__(message, peer_reason=self.shown)


@dataclass
class LinRegParams:
    """``[params]`` of a ``linear_regression`` job (both parties read the same table).

    The optimiser keys mean what they mean for logistic regression (``LRParams``). The
    loss is ``(1/2n) sum (y_s - z)^2 + (reg_lambda/2)||w||^2 + reg_alpha ||w||_1`` on the
    bank's standardised target ``y_s`` (docs/linreg.md): ridge with scikit-learn's
    ``alpha = n * reg_lambda``."""

    #: other names people know for the same keys (resolved when the table is parsed)
    ALIASES: ClassVar[dict] = {"eta": "learning_rate", "lambda": "reg_lambda",
                               "l2": "reg_lambda", "l1": "reg_alpha", "random_state": "seed"}
    REFUSED: ClassVar[dict] = REFUSED

    epochs: int = 10
    batch_size: int | None = 4096        #: None, 0 or -1: full batch
    learning_rate: float = 0.05
    decay: float = 0.0                   #: per-epoch rate: lr / (1 + decay * epoch)
    optimizer: str = "adam"              #: sgd | momentum | adam
    momentum: float = 0.9                #: momentum / Adam beta1
    reg_lambda: float = 0.0              #: (lambda/2)||w||^2 (Ridge alpha = n*lambda); l2
    reg_alpha: float = 0.0               #: lambda*||w||_1, via a proximal step; l1
    fit_intercept: bool = True           #: intercept lives at the bank, not penalised
    early_stopping: str = "loss"         #: none | loss
    tol: float = 1e-4                    #: relative loss change that stops training
    seed: int | None = None              #: fixes the batch order (else from the DRBG)
    standardize: bool = True             #: features (the target is always scaled)
    nan_policy: str = "fail"             #: fail | mean | zero
    evaluate_train: bool = True          #: platform discloses train partial scores at the end
    x_frac_bits: int = 12

    def __post_init__(self):
        C.check_optimizer(self)
        if self.early_stopping not in EARLY_STOPPING:
            raise ParamError(f"early_stopping = {self.early_stopping!r}; expected one of "
                             f"{EARLY_STOPPING}")
        if self.tol < 0:
            raise ParamError("tol must be >= 0")
        if self.nan_policy not in NAN_POLICIES:
            raise ParamError(f"nan_policy = {self.nan_policy!r}; expected one of "
                             f"{NAN_POLICIES}")

    # the names lr_common's optimiser and penalty read
    l2 = property(lambda self: self.reg_lambda)
    l1 = property(lambda self: self.reg_alpha)

    def shared(self) -> dict:
        return {k: getattr(self, k) for k in SHARED_KEYS}

    def to_dict(self) -> dict:
        return asdict(self)


def check_peer_hello(own: dict, other: dict, p: LinRegParams, party: str,
                     peer_label: str) -> None:
    """The residual (both sides must run the squared-loss one), then LR's hello checks
    (peer error, version, row counts, shared params)."""
    if other.get("ok") and other.get("residual") != RESIDUAL:
        raise LinRegError(f"the {peer_label} runs residual {other.get('residual')!r}, not "
                          f"linear regression's {RESIDUAL!r} (is it a logistic_regression "
                          "job there?)")
    C.check_peer_hello(own, other, p, party, peer_label)


def guarded(ctx, party: str, body, *args):
    """Run a role's ``body(ctx, peer, *args)`` (``lr_common.guarded``); the peer is told
    only that this party's own data was unusable, never why."""
    return C.guarded(ctx, lambda exc: peer_reason(party), LinRegError, body, *args)


def hello(err: BaseException | None, party: str, cipher) -> dict:
    """The common part of ``lr.hello`` for linear regression: ok or the error the peer
    may see, the residual, this party's public key (modulus form)."""
    shown = None if err is None else (
        peer_reason(party) if isinstance(err, InputError) else str(err))
    return {"version": C.PROTOCOL_VERSION, "ok": err is None, "error": shown,
            "residual": RESIDUAL, "key": describe_public_key(cipher.public(), form="modulus")}


def peer_reason(party: str) -> str:
    """What the peer is told when this party's own input is unusable (the reason names
    this party's columns and stays in its own job log)."""
    return (f"the {party}'s own data is not usable for this job (the reason is in the "
            f"{party}'s job log)")


# ---- the bank's target ------------------------------------------------------------------
@dataclass
class TargetScaler:
    """The bank's target scaling: the model fits ``y_s = (y - mean) / scale`` and predicts
    ``mean + scale * z``. ``mean`` is 0 without an intercept (``scale`` is then the root
    mean square). Fitted on the bank's training rows; never crosses the channel."""

    mean: float
    scale: float

    @classmethod
    def fit(cls, y: np.ndarray, fit_intercept: bool, where: str) -> TargetScaler:
        from parties.common.standardize import InputError
        y = np.asarray(y, dtype=np.float64)
        if not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise InputError(f"{where}: target missing or infinite at row {i}")
        mean = float(y.mean()) if fit_intercept else 0.0
        scale = float(np.sqrt(np.mean((y - mean) ** 2)))
        if not scale > 1e-12 * max(1.0, abs(mean)):
            raise InputError(f"{where}: the target is constant on the {y.size} training "
                             "rows; there is nothing to fit")
        ys = (y - mean) / scale
        # sum(y_s^2) = n, so |y_s| <= sqrt(n): only more than 2**24 rows can trip this
        if np.abs(ys).max() >= 2.0 ** ZB:
            raise InputError(f"{where}: a target value is {np.abs(ys).max():.3g} scales from "
                             f"{'the mean' if fit_intercept else 0}; the fixed-point layout "
                             f"allows < {2 ** ZB} (fit an intercept or transform the target)")
        return cls(mean, scale)

    def transform(self, y: np.ndarray) -> np.ndarray:
        return (np.asarray(y, dtype=np.float64) - self.mean) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return self.mean + self.scale * np.asarray(z, dtype=np.float64)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> TargetScaler:
        return cls(float(d["mean"]), float(d["scale"]))


# ---- scoring ------------------------------------------------------------------------------
def scoring_handshake(peer: C.Peer, model: ModelPart, X, party: str,
                      peer_label: str) -> np.ndarray:
    """LR's scoring handshake (``lr_common.scoring_handshake``) for linear-regression
    parts; the peer is told only that this party's rows were unusable."""
    return C.scoring_handshake(peer, model, X, party, peer_label, algorithm=ALGORITHM,
                               what="linear-regression", error=LinRegError,
                               input_view=lambda exc: peer_reason(party))
