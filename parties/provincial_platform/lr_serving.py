"""Logistic-regression online scoring, platform side: the partial score ``x_p . w_p``
of one applicant row at a time (see :mod:`parties.common.serving`), computed as the
scoring job computes it (the stored standardiser, then ``linear_predictor``), so the
bank's served score equals its batch score bit for bit. A row the platform holds no
data for, or whose cells the model cannot take (a missing value in a column trained
with ``nan_policy = "fail"``, an infinite value), is answered with 0: every platform
feature at its training mean. A multiclass part answers its ``K`` partial scores
``x_p . w_p,k`` per row (one row of ``K`` values), as its scoring job sends them. What
the bank learns: that partial score (those ``K``) per scored row.
"""

from __future__ import annotations

import numpy as np

from parties.common import lr_common as C
from parties.common.serving import ServingInputError
from parties.common.standardize import Standardizer


class Answerer:
    answer_dtype = "f8"
    answer_width = 1

    def __init__(self, model, setup: dict):
        if model.algorithm != C.ALGORITHM or model.party != "platform":
            raise ServingInputError("not the platform's logistic-regression model part")
        self.std = Standardizer.from_dict(model.body["standardizer"])
        self.w = np.asarray(model.body["weights"], dtype=np.float64)
        self.answer_width = self.w.shape[0] if self.w.ndim == 2 else 1
        self.fail = np.asarray(self.std.policies) == "fail"

    def answer(self, X: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        ok = found & ~((np.isnan(X) & self.fail).any(axis=1) | np.isinf(X).any(axis=1))
        z = np.zeros((len(X), self.answer_width))
        if ok.any():
            Xs = self.std.transform(X[ok], "served rows")
            z[ok] = C.linear_predictor(Xs, self.w)[:, None] if self.w.ndim == 1 else \
                np.column_stack([C.linear_predictor(Xs, wk) for wk in self.w])
        return z, ok


def answerer(model, setup: dict) -> Answerer:
    return Answerer(model, setup)
