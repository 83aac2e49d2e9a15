"""Full exports only for the models the standard formats can carry: a multiclass or
categorical model part is refused with the reason before anything is asked of the peer."""

from federation.serving.export import not_exportable
from parties.common.artifact import ModelPart


def part(algorithm="secureboost", **body):
    return ModelPart(algorithm=algorithm, party="bank", job_id="j1", params={}, body=body)


def test_binary_and_regression_parts_are_exportable():
    assert not_exportable(part(objective="binary:logistic", trees=[])) == ""
    assert not_exportable(part("logistic_regression", intercept=0.1, weights=[1.0])) == ""


def test_multiclass_categorical_and_other_algorithms_are_refused_with_the_reason():
    mc = part(objective="multi:softprob", num_class=4)
    assert not_exportable(mc) == not_exportable(mc, "xgboost-json") == ""
    assert "multiclass SecureBoost model has no onnx export" in not_exportable(mc, "onnx")
    assert "multiclass" in not_exportable(part("logistic_regression", multi_class="ovr"))
    cat = part(categories={"industry": ["a", "b"]})
    assert not_exportable(cat) == not_exportable(cat, "xgboost-json") == ""
    assert "categorical features has no onnx export" in not_exportable(cat, "onnx")
    mn = part("logistic_regression", multi_class="multinomial", classes=[0, 1, 2])
    assert not_exportable(mn) == not_exportable(mn, "sklearn-json") == \
        not_exportable(mn, "onnx") == ""
    assert "no pmml export yet (formats: sklearn-json, onnx)" in not_exportable(mn, "pmml")
    assert "linear_regression models have no full export" == \
        not_exportable(part("linear_regression"))


def test_onnx_without_the_export_extra_names_the_extra(monkeypatch):
    """The node runs without the converters; --format onnx then says what to install
    (before the platform is asked to reveal anything)."""
    import sys

    import pytest

    from federation.serving.export import ExportRefused
    from federation.serving.export_onnx import need_converters
    from federation.serving.export_pmml import need_converters as need_pmml
    for need, algorithm, module in ((need_converters, "secureboost", "onnxmltools"),
                                    (need_converters, "logistic_regression", "skl2onnx"),
                                    (need_pmml, "logistic_regression", "nyoka")):
        monkeypatch.setitem(sys.modules, module, None)   # import raises ImportError
        with pytest.raises(ExportRefused, match=rf"extra 'export' \({module} is not "
                                                r"installed\): pip install 'fedjoint\[export\]'"):
            need(algorithm)
