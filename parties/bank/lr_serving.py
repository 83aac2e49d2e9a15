"""Logistic-regression online scoring, bank side: ``sigmoid(x_b . w_b + b + z_p)``
with the platform's answered partial score ``z_p``, computed as the scoring job
computes it (see :mod:`parties.common.serving`), so scores agree bit for bit. A
multiclass part (multinomial or one-vs-rest) takes the platform's ``K`` partial scores
(one answer row of ``K`` values per applicant, in the same one round trip) and returns
the class probabilities of :func:`parties.bank.lr.probabilities`, as the scoring job.
"""

from __future__ import annotations

import numpy as np

from parties.bank.lr import probabilities
from parties.common import lr_common as C
from parties.common import residuals as R
from parties.common.serving import Scores, ServingInputError
from parties.common.standardize import InputError, Standardizer


class Scorer:
    answer_dtype = "f8"
    answer_width = 1
    setup: dict = {}

    def __init__(self, model):
        if model.algorithm != C.ALGORITHM or model.party != "bank":
            raise ServingInputError("not the bank's logistic-regression model part")
        self.multi = model.body.get("multi_class")
        self.features = list(model.feature_names)
        self.std = Standardizer.from_dict(model.body["standardizer"])
        self.w = np.asarray(model.body["weights"], dtype=np.float64)
        if self.multi:
            self.classes = list(model.body["classes"])
            self.intercept = np.asarray(model.body["intercept"], dtype=np.float64)
            if self.w.ndim != 2 or self.w.shape[0] != len(self.classes):
                raise ServingInputError("the multiclass part's weights do not match its "
                                        "classes")
            self.answer_width = len(self.classes)
        else:
            self.intercept = float(model.body["intercept"])

    def check(self, X: np.ndarray) -> None:
        """Raise :class:`ServingInputError` naming the feature the model cannot take."""
        try:
            self.std.transform(X, "features")
        except InputError as exc:
            raise ServingInputError(str(exc)) from None

    def score(self, X: np.ndarray, answers: np.ndarray, found: np.ndarray) -> Scores:
        try:
            Xs = self.std.transform(np.asarray(X, dtype=np.float64), "features")
        except InputError as exc:
            raise ServingInputError(str(exc)) from None
        zp = np.asarray(answers, dtype=np.float64)
        if not np.isfinite(zp).all():
            raise ValueError("the platform answered a partial score that is not finite")
        if self.multi:      # as parties.bank.lr.predict: per class, then + intercept + zp
            z = np.column_stack([C.linear_predictor(Xs, w) for w in self.w])
            return Scores(score=None, probabilities=probabilities(
                self.multi, z + self.intercept + zp), classes=self.classes)
        z = C.linear_predictor(Xs, self.w) + self.intercept + zp[:, 0]
        return Scores(score=z, probability=R.sigmoid(z))


def scorer(model) -> Scorer:
    return Scorer(model)
