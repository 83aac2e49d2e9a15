"""The full logistic regression as PMML (issue 15 part 5, ``--format pmml``), built on
the bank's node from :func:`federation.serving.export.sklearn_model` after the
platform's reveal (the same consent and signed statement; nothing else crosses the
wire), by nyoka (no Java): a PMML 4.4 ``RegressionModel`` with ``logit``
normalisation, one ``NumericPredictor`` per column (the bank's features, then
``platform.<name>``), raw feature units, no imputation (impute with ``fill`` of the
sklearn-json document first).

SecureBoost has no PMML export: nyoka's XGBoost converter writes the trees without
``defaultChild`` (a missing value does not follow the split's default direction) and
drops ``base_score`` (intercept 0.0), so its PMML would not score as the model does;
sklearn2pmml, which carries both, needs Java.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from federation.serving.export import need_modules, sklearn_json, sklearn_model


def need_converters(algorithm: str) -> None:
    """Raise :class:`ExportRefused` naming the extra when nyoka is not installed."""
    need_modules("pmml", ("nyoka", "sklearn"))


def pmml_document(part, table: dict) -> bytes:
    """The PMML document of the full LR model ``part`` + the platform's ``table``."""
    need_converters(part.algorithm)
    from nyoka import skl_to_pmml
    from sklearn.pipeline import Pipeline
    doc = sklearn_json(part, table)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pmml"
        skl_to_pmml(Pipeline([("lr", sklearn_model(doc))]), doc["feature_names"], "label",
                    str(path), model_name=f"fedjoint-{part.job_id}",
                    description=f"fedjoint model {part.job_id}")
        return path.read_bytes()
