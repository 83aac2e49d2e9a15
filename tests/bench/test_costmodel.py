"""bench/costmodel.py: the scale bench's cost model recovers known unit costs from
synthetic phase timings, adds its terms up to the measured job time, and refuses a
single calibration size (which cannot separate fixed from per-row costs)."""

import importlib.util
import os
import time
from pathlib import Path

import numpy as np
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


def test_the_psi_of_every_job_is_a_sample():
    # the SecureBoost and LR jobs run the same PSI: least squares over all three a size
    pts = []
    for r in (10_000, 30_000):
        p = synthetic_point(r)
        for job, extra in (("secureboost", 1.0), ("lr", -1.0)):
            p[job].update(psi_s=p["psi"]["psi_s"] + extra, bank_t={**p[job]["bank_t"],
                          **p["psi"]["bank_t"]}, plat_t=p["psi"]["plat_t"])
        pts.append((r, p))
    units = costmodel.fit(pts, DEPTH, BINS, trees=2, epochs=1)
    assert units["psi_core"] == pytest.approx(TRUE["psi_core"], rel=1e-9)
    pts[1][1]["lr"]["psi_s"] += 3.0             # one noisy sample moves the fit by a third
    fixed, unit = costmodel.fit(pts, DEPTH, BINS, trees=2, epochs=1)["psi_core"]
    assert unit == pytest.approx(TRUE["psi_core"][1] + 1.0 / 40_000)     # IDs: 20k -> 60k
    assert fixed == pytest.approx(TRUE["psi_core"][0] - 0.5)


def timeline(t_done: float, rates: list[tuple[float, float]]) -> dict:
    """A CPU timeline sampled every 0.25 s: ``rates`` = [(until s, cores used)]."""
    ts = np.arange(0.0, t_done + 0.25, 0.25)
    cpu = np.cumsum([0.0] + [0.25 * next(c for u, c in rates if t <= u) for t in ts[1:]])
    return {"t": ts.tolist(), "t_done": t_done, "bank": (cpu * 0.25).tolist(),
            "platform": (cpu * 0.75).tolist()}


def test_cpu_seconds_per_term_from_the_timeline():
    # one tree: load 1 s, psi 2 s, keygen 1 s, setup 2 s, stream 4 s, the rest 4 s
    sb = {"load": 1.0, "psi": 2.0, "keygen": 1.0, "training": 10.0, "evaluating": 0.0,
          "total": 14.0, "training.total": 8.0, "training.encrypt": 4.0,
          "training.wait_histograms": 3.0, "training.decrypt": 0.5}
    row = {"bank_t": sb, "plat_t": {"load": 1.5}, "psi_s": 2.0, "per_unit_s": 10.0,
           "cpu_timeline": timeline(14.0, [(4, 1.0), (6, 0.5), (10, 2.0), (14, 1.0)])}
    got = costmodel.job_cpu_terms("secureboost", row, trees=1, epochs=1)
    assert got["psi_wait"] == pytest.approx(0.5)       # the platform's load beyond the bank's
    assert got["psi_core"] == pytest.approx(1.5)
    assert got["sb_setup"] == pytest.approx(1.0)
    assert got["sb_stream"] == pytest.approx(8.0)
    # the tree's other 4 s (4 CPU s) split by the terms' wall seconds (3, 0.5, 0.5)
    assert got["sb_hist"] == pytest.approx(3.0)
    assert got["sb_decrypt"] == pytest.approx(0.5)
    assert got["sb_rest"] == pytest.approx(0.5)
    pt = {"secureboost": row}
    assert costmodel.measured(pt, "cpu")["secureboost"] == pytest.approx(13.0)
    assert costmodel.core_share(pt, {"trees": 1, "epochs": 1})["secureboost"] == \
        pytest.approx(1.3)
    assert costmodel.job_cpu_terms("secureboost", {"bank_t": sb}, 1, 1) == {}


def test_psi_cpu_per_id_is_held_at_the_floor():
    floor = {"x25519_openssl_us": 40.0, "x25519_mb_batch_us": 10.0, "hash_to_curve_us": 5.0}
    assert costmodel.psi_floor_per_id(floor) == pytest.approx(25e-6)

    def point(rows, cpu):
        t = {"load": 0.0, "psi": 10.0, "total": 10.0}
        return {"psi": {"bank_t": t, "plat_t": t, "psi_s": 10.0, "cpu_timeline": {
            "t": [0.0, 10.0], "t_done": 10.0, "bank": [0.0, cpu], "platform": [0.0, 0.0]}}}
    # a slope of 10 us per ID between the points, below the floor's 25
    pts = [(r, point(r, 2.0 + 10e-6 * 2 * r)) for r in (10_000, 30_000)]
    assert costmodel.fit(pts, DEPTH, BINS, 1, 1, "cpu")["psi_core"][1] == pytest.approx(10e-6)
    fixed, unit = costmodel.fit(pts, DEPTH, BINS, 1, 1, "cpu", floor)["psi_core"]
    assert unit == 25e-6 and fixed == pytest.approx(2.0 - 15e-6 * 40_000)


def test_tree_cpu_counts_children_alive_and_reaped():
    import subprocess
    import sys
    sys.modules.setdefault("costmodel", costmodel)   # bench/scale.py imports it by name
    spec = importlib.util.spec_from_file_location("scale", _SPEC.origin.replace(
        "costmodel.py", "scale.py"))
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\n"
    me = os.getpid()
    before = scale.tree_cpu(me)
    child = subprocess.Popen([sys.executable, "-c", burn + "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    try:
        for _ in range(200):                     # alive: counted as a descendant
            if scale.tree_cpu(me) - before >= 0.2:
                break
            time.sleep(0.05)
        assert scale.tree_cpu(me) - before >= 0.2
    finally:
        child.communicate(b"")                   # exits and is reaped: in our children time
    assert scale.tree_cpu(me) - before >= 0.2
    assert scale.machine_busy() > 0


def test_the_command_line_refits_a_recorded_run(tmp_path, capsys, monkeypatch):
    import json
    run = {"rows": 100_000, "args": {"depth": DEPTH, "bins": BINS, "trees": 2, "epochs": 1},
           "calibration": {str(r): synthetic_point(r) for r in (10_000, 30_000)},
           "measured": synthetic_point(100_000), "load_before": [1.0, 1.0, 1.0]}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(run))
    monkeypatch.setattr("sys.argv", ["costmodel.py", str(path), "--predict", "300000"])
    costmodel.main()
    out = capsys.readouterr().out
    assert "wall fit on [10000, 30000]" in out and "cpu fit" not in out  # no CPU timelines
    assert out.count("ratio 1.00") == 9                  # 3 jobs at 10k, 30k and 100k
    assert "300000 secureboost wall predicted" in out
