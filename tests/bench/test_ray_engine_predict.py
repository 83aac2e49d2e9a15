"""bench/ray_engine.py --predict on the per-term cost model (bench/costmodel.py): from
known unit costs, the Ray-spread terms shrink as 1/CPUs, the node-side part does not,
and the sum at the fit's own cores is the model's s/tree (wall) or CPU seconds spread
over the node's cores."""

import importlib.util
from pathlib import Path

import pytest

_BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, _BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


costmodel = _load("costmodel")
ray_bench = _load("ray_engine")

UNITS = {"sb_setup": (1.5, 2e-7), "sb_stream": (0.4, 1.2e-4), "sb_hist": (3.0, 3e-7),
         "sb_decrypt": (0.0, 2.5e-5), "sb_rest": (0.2, 2e-5), "lr_rest": (9.0, 1.0)}


@pytest.mark.parametrize("kind", ["wall", "cpu"])
def test_predict_cores_spreads_the_kernel_terms_only(kind):
    rows, cores = 1_000_000, [2, 16, 64, 256]
    got = ray_bench.predict_cores(UNITS, rows, cores, 1.5, kind=kind, serial_row_s=0.0,
                                  gbit_s=1e12)
    per = costmodel.predict_terms({k: v for k, v in UNITS.items() if k != "lr_rest"},
                                  costmodel.point_counts({}, rows, 3, 16))
    core_s = 2.0 if kind == "wall" else 1.0       # wall seconds were on the fit's 2 cores
    par = (per["sb_stream"] + per["sb_hist"]) * core_s * 1.5
    node = (per["sb_setup"] + per["sb_decrypt"] + per["sb_rest"]) * core_s / 2
    for r, c in zip(got, cores, strict=True):
        assert r["parallel_s"] == pytest.approx(par / c)
        assert r["floor_s"] == pytest.approx(node)
        assert r["s_per_tree"] == pytest.approx(par / c + node)
    if kind == "wall":     # at the fit's own 2 cores, ratio 1: the model's s/tree
        one = ray_bench.predict_cores(UNITS, rows, [2], 1.0, kind="wall", serial_row_s=0.0,
                                      gbit_s=1e12)[0]
        assert one["s_per_tree"] == pytest.approx(costmodel.totals(per)["secureboost"])
