"""Logistic-regression online scoring, platform side: the partial score ``x_p . w_p``
of one applicant row at a time (see :mod:`parties.common.serving`), computed as the
scoring job computes it (the stored standardiser, then ``linear_predictor``), so the
bank's served score equals its batch score bit for bit. A row the platform holds no
data for, or whose cells the model cannot take (a missing value in a column trained
with ``nan_policy = "fail"``, an infinite value), is answered with 0: every platform
feature at its training mean. What the bank learns: that partial score per scored row.
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
        if model.body.get("multi_class"):
            raise ServingInputError("online scoring of a multiclass logistic-regression "
                                    "part is not available; score it with a scoring job")
        self.std = Standardizer.from_dict(model.body["standardizer"])
        self.w = np.asarray(model.body["weights"], dtype=np.float64)
        self.fail = np.asarray(self.std.policies) == "fail"

    def answer(self, X: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        ok = found & ~((np.isnan(X) & self.fail).any(axis=1) | np.isinf(X).any(axis=1))
        z = np.zeros(len(X))
        if ok.any():
            z[ok] = C.linear_predictor(self.std.transform(X[ok], "served rows"), self.w)
        return z[:, None], ok


def answerer(model, setup: dict) -> Answerer:
    return Answerer(model, setup)
