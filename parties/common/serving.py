"""The online-scoring contract of an algorithm (used by :mod:`federation.serving`).

An algorithm that can be served declares, in its registry entry, a bank module and a
platform module with one factory each:

``bank.scorer(model) -> Scorer``
    ``Scorer.features`` (the bank's feature names, in model order), ``Scorer.setup``
    (a JSON-able dict the platform needs to answer, e.g. which of its splits the bank
    asks about), ``Scorer.answer_width`` and ``Scorer.answer_dtype`` (what one row of
    the platform's answer must be), ``Scorer.score(X, answers, found) -> Scores``.
    Optional: ``Scorer.csv_columns`` and ``Scorer.csv_cells(result)``, more columns of a
    score file (``fedjoint serve --score-file``), e.g. a scorecard's points.
``platform.answerer(model, setup) -> Answerer``
    ``Answerer.answer(X, found) -> (answers, ok)``: one row of ``answer_width`` values
    per row of ``X`` (this platform's features, float64, NaN = missing); rows with
    ``found`` False (the platform holds no data for the applicant) or ``ok`` False (a
    cell the model cannot take) are answered as if every platform feature were missing
    (the model's default directions / a partial score of 0).

What the answer discloses to the bank is what the algorithm's batch scoring already
discloses, row by row: SecureBoost's left/right decisions at the platform's splits, or
LR's (and a WOE scorecard's) partial score ``x_p . w_p``. The answer of a row never depends on the other rows
scored with it, so served scores equal a scoring job's scores bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: the dtypes an answer may have on the wire
ANSWER_DTYPES = {"u1": np.uint8, "f8": np.float64}


class ServingInputError(ValueError):
    """A request the model cannot score; the message names the field."""


@dataclass
class Scores:
    """Per row: ``score`` (margin / log-odds, or the prediction for regression),
    ``probability`` (None for regression) and, for a multiclass model, ``probabilities``
    (per class, in the order of ``classes``) instead of both."""

    score: np.ndarray | None            # None for multiclass models
    probability: np.ndarray | None = None
    probabilities: np.ndarray | None = None   # (rows, classes)
    classes: list | None = None
    #: more fields per row, merged into each result (a scorecard's points, reasons)
    extra: list[dict] | None = None
