"""WOE scorecard online scoring, platform side: the partial score ``z_p`` of one
applicant row at a time (its points are ``-factor * z_p``), computed as the scoring job
computes it (its WOE-image encoding, the stored standardiser, ``linear_predictor``).
Every value has a bin (a missing cell the missing bin's); a row the platform holds no
data for is answered with 0. What the bank learns: that partial score per scored row,
as for logistic regression.
"""

from __future__ import annotations

import numpy as np

from parties.common import lr_common as C
from parties.common import woe_lr as W
from parties.common.serving import ServingInputError
from parties.common.standardize import Standardizer


class Answerer:
    answer_dtype = "f8"
    answer_width = 1

    def __init__(self, model, setup: dict):
        if model.algorithm != W.ALGORITHM or model.party != "platform":
            raise ServingInputError("not the platform's woe_lr model part")
        self.enc = W.Encoding.from_dict(model.body["encoding"])
        self.std = Standardizer.from_dict(model.body["standardizer"])
        self.w = np.asarray(model.body["weights"], dtype=np.float64)

    def answer(self, X: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        ok = np.asarray(found, bool).copy()
        z = np.zeros(len(X))
        if ok.any():
            Xs = self.std.transform(self.enc.transform(X[ok]), "served rows")
            z[ok] = C.linear_predictor(Xs, self.w)
        return z[:, None], ok


def answerer(model, setup: dict) -> Answerer:
    return Answerer(model, setup)
