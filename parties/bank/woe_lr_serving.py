"""WOE scorecard online scoring, bank side: the platform answers its partial score
``z_p`` (its points are ``-factor * z_p``) in the same one round trip as logistic
regression's; the bank returns, per applicant, the probability, the log-odds score, the
points (base + its own bins' + the platform's) and its reason codes, computed as the
scoring job computes them (:func:`parties.bank.woe_lr.predict`), so they agree bit for
bit. See :mod:`parties.common.serving`.
"""

from __future__ import annotations

import numpy as np

from parties.bank import woe_lr as role
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common import woe_lr as W
from parties.common.serving import Scores, ServingInputError
from parties.common.standardize import Standardizer


class Scorer:
    answer_dtype = "f8"
    answer_width = 1
    setup: dict = {}

    def __init__(self, model):
        if model.algorithm != W.ALGORITHM or model.party != "bank":
            raise ServingInputError("not the bank's woe_lr model part")
        self.model = model
        self.features = list(model.feature_names)
        self.enc = W.Encoding.from_dict(model.body["encoding"])
        self.std = Standardizer.from_dict(model.body["standardizer"])
        self.w = np.asarray(model.body["weights"], dtype=np.float64)
        self.intercept = float(model.body["intercept"])
        self.factor = float(model.body["scorecard"]["factor"])

    @property
    def csv_columns(self) -> tuple[str, ...]:
        """The score file's columns after the common four (``fedjoint serve --score-file``)."""
        n = int(self.model.params.get("n_reasons", 3))
        return ("points", "platform_points", *(f"reason_{k + 1}" for k in range(n)))

    def csv_cells(self, result: dict) -> list[str]:
        """One scored row's cells for :attr:`csv_columns` (floats as ``repr``)."""
        names = [r["feature"] for r in result["reasons"]]
        n = len(self.csv_columns) - 2
        return [repr(result["points"]), repr(result["platform_points"]),
                *(names[k] if k < len(names) else "" for k in range(n))]

    def check(self, X: np.ndarray) -> None:
        """Every value has a bin (missing: the missing bin): nothing to refuse."""

    def score(self, X: np.ndarray, answers: np.ndarray, found: np.ndarray) -> Scores:
        X = np.asarray(X, dtype=np.float64)
        zp = np.asarray(answers, dtype=np.float64)[:, 0]
        if not np.isfinite(zp).all():
            raise ValueError("the platform answered a partial score that is not finite")
        Xs = self.std.transform(self.enc.transform(X), "features")
        z = C.linear_predictor(Xs, self.w) + self.intercept + zp
        ex = role.explain_rows(self.model, X, -self.factor * zp)
        extra = [{"points": float(p), "platform_points": float(q), "reasons": r}
                 for p, q, r in zip(ex["points"], ex["platform_points"], ex["reasons"],
                                    strict=True)]
        return Scores(score=z, probability=R.sigmoid(z), extra=extra)


def scorer(model) -> Scorer:
    return Scorer(model)
