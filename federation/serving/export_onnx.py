"""The full model as ONNX (issue 15 part 5, ``--format onnx``), built on the bank's node
from the documents of :mod:`federation.serving.export` after the platform's reveal (the
same consent and signed statement; nothing else crosses the wire).

* SecureBoost: the XGBoost JSON document loaded into ``xgboost.Booster`` and converted
  by onnxmltools' XGBoost converter (``ai.onnx.ml`` TreeEnsembleClassifier /
  Regressor; float32 input and thresholds, as XGBoost compares them).
* Logistic regression: the ``LogisticRegression`` of :func:`sklearn_model` converted by
  skl2onnx with a float64 input (standard MatMul/Add/Sigmoid, no float32 rounding).

Input ``input`` is one row per applicant, columns in ``feature_names`` order (stored in
the model's metadata as JSON): the bank's features, then ``platform.<name>``. Outputs:
``label`` and ``probabilities`` (classifiers, one column per class) or ``variable``
(regression). The converters are the optional extra ``export``; the node runs without it.
"""

from __future__ import annotations

import json

from federation.serving.export import need_modules, sklearn_json, sklearn_model, xgboost_json


def need_converters(algorithm: str) -> None:
    """Raise :class:`ExportRefused` naming the extra when a converter is not installed."""
    need_modules("onnx", ("onnx", "onnxmltools", "xgboost") if algorithm == "secureboost"
                 else ("onnx", "skl2onnx", "sklearn"))


def _with_names(model, names: list[str], model_id: str) -> bytes:
    import onnx
    onnx.helper.set_model_props(model, {"feature_names": json.dumps(names),
                                        "fedjoint_model": model_id})
    return model.SerializeToString()


def onnx_model(part, table: dict) -> bytes:
    """The serialised ONNX model of the full model ``part`` + the platform's ``table``."""
    need_converters(part.algorithm)
    if part.algorithm == "secureboost":
        import xgboost as xgb
        from onnxmltools import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType
        doc = xgboost_json(part, table)
        names = doc["learner"]["feature_names"]
        booster = xgb.Booster(model_file=bytearray(json.dumps(doc).encode()))
        booster.feature_names = None   # the converter reads splits as f<index>
        model = convert_xgboost(booster, name=f"fedjoint-{part.job_id}",
                                initial_types=[("input", FloatTensorType([None, len(names)]))])
        return _with_names(model, names, part.job_id)
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType
    doc = sklearn_json(part, table)
    est = sklearn_model(doc)
    model = convert_sklearn(est, name=f"fedjoint-{part.job_id}",
                            initial_types=[("input", DoubleTensorType([None, len(doc["coef"][0])]))],
                            options={id(est): {"zipmap": False}})
    return _with_names(model, doc["feature_names"], part.job_id)
