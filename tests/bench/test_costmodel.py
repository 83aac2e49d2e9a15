"""bench/costmodel.py: the scale bench's cost model recovers known unit costs from
synthetic phase timings, adds its terms up to the measured job time, and refuses a
single calibration size (which cannot separate fixed from per-row costs)."""

import importlib.util
from pathlib import Path

import pytest

# loaded by path: bench/ on sys.path would shadow the psi package with bench/psi.py
_SPEC = importlib.util.spec_from_file_location(
    "costmodel", Path(__file__).resolve().parents[2] / "bench" / "costmodel.py")
costmodel = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(costmodel)

DEPTH, BINS = 3, 16
# (fixed s, unit s) per term: what the synthetic "measurements" are made of
TRUE = {"sb_setup": (1.5, 2e-7), "sb_stream": (0.4, 1.2e-4), "sb_hist": (3.0, 3e-7),
        "sb_decrypt": (0.0, 2.5e-5), "sb_rest": (0.2, 2e-5),
        "lr_encrypt": (0.9, 9e-5), "lr_homomorphic": (1.0, 1.2e-4), "lr_wait": (2.0, 1e-4),
        "lr_rest": (0.2, 8e-6), "psi_wait": (1.5, 2e-5), "psi_core": (1.4, 7e-6)}


def synthetic_point(rows: int, trees: int = 2, epochs: int = 1) -> dict:
    """A bench/scale.py point whose phase timings follow ``TRUE`` exactly."""
    inter = int(rows * 0.8)
    c = costmodel.counts(int(inter * 0.8), rows, rows, DEPTH, BINS)
    t = {k: f + u * c[k] for k, (f, u) in TRUE.items()}
    loop = t["sb_stream"] + t["sb_hist"] + t["sb_decrypt"] + t["sb_rest"]
    sb = {"training": trees * (loop + t["sb_setup"]), "training.total": trees * loop,
          "training.encrypt": trees * t["sb_stream"] * 0.9,
          "training.send": trees * t["sb_stream"] * 0.1,
          "training.wait_histograms": trees * t["sb_hist"],
          "training.decrypt": trees * t["sb_decrypt"] * 0.7,
          "training.unpack": trees * t["sb_decrypt"] * 0.3}
    lr = {f"training.phase.{k}": epochs * t[f"lr_{k}"]
          for k in ("encrypt", "homomorphic", "wait")}
    lr["training"] = epochs * sum(t[k] for k in t if k.startswith("lr_"))
    psi_s = t["psi_wait"] + t["psi_core"]
    ix = {"intersection": inter}
    return {"psi": {"psi_s": psi_s, "bank_t": {"load": 2.0},
                    "plat_t": {"load": 2.0 + t["psi_wait"]}, "intersection": ix},
            "secureboost": {"bank_t": sb, "per_unit_s": sb["training"] / trees,
                            "intersection": ix},
            "lr": {"bank_t": lr, "per_unit_s": lr["training"] / epochs, "intersection": ix}}


def test_recovers_known_unit_costs_and_predicts_the_sum():
    pts = [(r, synthetic_point(r)) for r in (10_000, 30_000)]
    units = costmodel.fit(pts, DEPTH, BINS, trees=2, epochs=1)
    for name, (fixed, unit) in TRUE.items():
        assert units[name][1] == pytest.approx(unit, rel=1e-6), name
        assert units[name][0] == pytest.approx(fixed, rel=1e-6, abs=1e-9), name
    big = synthetic_point(1_000_000)
    pred = costmodel.totals(costmodel.predict_terms(
        units, costmodel.point_counts(big, 1_000_000, DEPTH, BINS)))
    assert pred == pytest.approx(costmodel.measured(big), rel=1e-9)


def test_terms_add_up_to_the_measured_job_time():
    pt = synthetic_point(100_000, trees=3, epochs=2)
    for r in (pt["secureboost"], pt["lr"]):     # per tree / epoch on a 3-tree, 2-epoch job
        r["per_unit_s"] = r["bank_t"]["training"] / (3 if "training.total" in r["bank_t"]
                                                     else 2)
    got = costmodel.totals(costmodel.terms(pt, trees=3, epochs=2))
    assert got == pytest.approx(costmodel.measured(pt), rel=1e-12)


def test_one_calibration_size_is_refused():
    with pytest.raises(ValueError, match="two calibration sizes"):
        costmodel.fit([(10_000, synthetic_point(10_000))], DEPTH, BINS, trees=2, epochs=1)


def test_a_negative_unit_cost_becomes_a_constant():
    c = [{"sb_hist": 1000}, {"sb_hist": 3000}]
    units = costmodel.fit_terms([(c[0], {"sb_hist": 7.0}), (c[1], {"sb_hist": 5.0})])
    assert units["sb_hist"] == (6.0, 0.0)


def test_mean_load_of_a_point():
    assert costmodel.mean_load({"psi": {"load": [4.0, 6.0]}, "lr": {"load": [8.0, 8.0]}}) == 6.5
    assert costmodel.mean_load({"psi": {}}) == 0.0
