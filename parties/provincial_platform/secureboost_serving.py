"""SecureBoost online scoring, platform side: the left/right decision of every platform
split the bank asks about, for one applicant row at a time (see
:mod:`parties.common.serving`).

The bank names its platform split keys once, when serving is set up; each lookup then
answers all of them for each row in one packed bit vector (row-major, ``ceil(K/8)``
bytes a row). The decision is the batch scoring one (``threshold_left``: float32
``x < threshold``, missing -> the split's default direction), so served and batch
scores agree bit for bit. A row the platform holds no data for is answered with every
split's default direction (as if all its features were missing). A categorical split
(a level set this platform holds in its part; its feature's cells are the level
indices the loader mapped with the part's levels, NaN for missing or unseen) sends the
levels in its set right, missing the default way, every other level left
(:func:`parties.common.categorical.record_left`, as the scoring job). What the bank
learns: those K decisions per scored row, as in a scoring job.
"""

from __future__ import annotations

import numpy as np

from parties.common.categorical import record_left
from parties.common.serving import ServingInputError


class Answerer:
    answer_dtype = "u1"

    def __init__(self, model, setup: dict):
        if model.algorithm != "secureboost" or model.party != "platform":
            raise ServingInputError("not the platform's SecureBoost model part")
        keys = setup.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ServingInputError("setup.keys: expected a list of split keys")
        splits = model.body["splits"]
        unknown = [k for k in keys if k not in splits]
        if unknown:
            raise ServingInputError(f"setup.keys: the bank asks about {len(unknown)} split(s) "
                                    f"this platform never made (first {unknown[0][:40]!r})")
        rec = [splits[k] for k in keys]
        self.n_features = len(model.feature_names)
        self.feature = np.array([int(r["feature"]) for r in rec], dtype=np.int64)
        if self.feature.size and (self.feature.min() < 0
                                  or self.feature.max() >= self.n_features):
            raise ServingInputError("the model part names a feature it does not have")
        #: categorical splits: (answer column, record), decided as the scoring job does
        self.cats = [(i, r) for i, r in enumerate(rec) if "cats" in r]
        self.threshold = np.array([r.get("threshold", 0.0) for r in rec], dtype=np.float32)
        self.default_left = np.array([bool(r["default_left"]) for r in rec], dtype=bool)
        self.answer_width = (len(keys) + 7) // 8

    def answer(self, X: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        Xf = np.asarray(X, dtype=np.float32)
        V = Xf[:, self.feature]
        left = np.where(np.isnan(V), self.default_left, V < self.threshold)
        for i, r in self.cats:
            left[:, i] = record_left(r, Xf)
        left[~found] = self.default_left
        return np.packbits(left, axis=1), np.ones(len(Xf), dtype=bool)


def answerer(model, setup: dict) -> Answerer:
    return Answerer(model, setup)
