"""The scale bench's cost model: each job's time as a sum of terms, each term a count
times a unit cost plus a fixed cost, fitted from the phase timings of two or more
calibration sizes measured in the same run (bench/scale.py).

Terms (seconds per tree / epoch / PSI job, from the bank's job record, which is the
critical path; the terms add up to the measured figure exactly)::

    term         count                 timing it is fitted on (bank's record)
    sb_setup     n*F_p  row-features   training - training.total (binning, key and
                                       obfuscator-pool start-up)
    sb_stream    n      rows           encrypt + send (gradient encryption with its DJN
                                       obfuscator precompute; the platform's root
                                       histogram accumulates per chunk meanwhile)
    sb_hist      n*F_p*(d-1)           wait_histograms (the platform's levels below the
                 row-feature-levels    root, then packing + refresh of every node-bin)
    sb_decrypt   (2^d-1)*F_p*B         decrypt + unpack (per node-feature-bin)
    sb_rest      n      rows           the rest of the tree loop (splits, partitions)
    lr_encrypt / lr_homomorphic / lr_wait / lr_rest   n rows   LR phases per epoch
    psi_wait     rows_p rows           platform load - bank load (the bank's PSI clock
                                       runs while the platform still reads its file)
    psi_core     rows_b + rows_p IDs   the PSI itself (blinding, hashing, matching)

A term is ``fixed + unit * count``, least squares over the calibration points; a term
whose count is the same at every point (``sb_decrypt`` at fixed depth and bins) is
``unit * count`` with ``unit`` the mean ratio; a fitted unit cost below zero (noise
between points measured at different loads) makes the term a constant, their mean. One calibration size cannot separate a
term's fixed cost from its per-unit cost (at 10k rows ``wait_histograms`` is almost all
fixed: through the origin it extrapolates 100x to 1M), so :func:`fit` refuses it.

    .venv/bin/python bench/costmodel.py RUN.json [--use 30000,100000] [--check 1M.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

PLAT_F, TEST_FRACTION = 70, 0.2


def counts(n: int, rows_b: int, rows_p: int, depth: int, bins: int) -> dict:
    """What each term's unit cost multiplies (see the module doc)."""
    return {"sb_setup": n * PLAT_F, "sb_stream": n, "sb_hist": n * PLAT_F * (depth - 1),
            "sb_decrypt": (2 ** depth - 1) * PLAT_F * bins, "sb_rest": n,
            "lr_encrypt": n, "lr_homomorphic": n, "lr_wait": n, "lr_rest": n,
            "psi_wait": rows_p, "psi_core": rows_b + rows_p}


def terms(point: dict, trees: int, epochs: int) -> dict:
    """Seconds per term of one measured point ``{job: row}`` (a bench/scale.py point)."""
    out = {}
    if "secureboost" in point:
        b = point["secureboost"]["bank_t"]
        g = {k: b.get(f"training.{k}", 0.0) for k in
             ("total", "encrypt", "send", "wait_histograms", "decrypt", "unpack")}
        parts = {"sb_setup": b.get("training", 0.0) - g["total"],
                 "sb_stream": g["encrypt"] + g["send"], "sb_hist": g["wait_histograms"],
                 "sb_decrypt": g["decrypt"] + g["unpack"]}
        parts["sb_rest"] = g["total"] - sum(parts.values()) + parts["sb_setup"]
        out.update({k: v / trees for k, v in parts.items()})
    if "lr" in point:
        b = point["lr"]["bank_t"]
        parts = {f"lr_{k}": b.get(f"training.phase.{k}", 0.0)
                 for k in ("encrypt", "homomorphic", "wait")}
        parts["lr_rest"] = b.get("training", 0.0) - sum(parts.values())
        out.update({k: v / epochs for k, v in parts.items()})
    if point.get("psi", {}).get("psi_s"):
        j = point["psi"]
        wait = max(0.0, j["plat_t"].get("load", 0.0) - j["bank_t"].get("load", 0.0))
        out["psi_wait"] = min(wait, j["psi_s"])
        out["psi_core"] = j["psi_s"] - out["psi_wait"]
    return out


def fit_terms(samples: list[tuple[dict, dict]]) -> dict:
    """``{term: (fixed_s, unit_s)}`` from ``[(counts, seconds per term)]``, one pair per
    calibration point; raises ValueError for fewer than two distinct sizes."""
    if len({tuple(sorted(c.items())) for c, _ in samples}) < 2:
        raise ValueError("one calibration size: two calibration sizes are needed")
    out = {}
    for name in samples[0][1]:
        xs = np.array([c[name] for c, t in samples if name in t], float)
        ys = np.array([t[name] for c, t in samples if name in t], float)
        if np.ptp(xs) == 0:
            out[name] = (0.0, float(np.mean(ys / xs)))
            continue
        unit, fixed = np.polyfit(xs, ys, 1)
        # a unit cost below zero is noise between the points (the load moved): a constant
        out[name] = (float(fixed), float(unit)) if unit >= 0 else (float(np.mean(ys)), 0.0)
    return out


def predict_terms(units: dict, cnt: dict) -> dict:
    """Seconds per term (never below zero) for the counts ``cnt``."""
    return {k: max(0.0, f + u * cnt[k]) for k, (f, u) in units.items()}


JOBS = {"secureboost": "sb_", "lr": "lr_", "psi": "psi_"}


def totals(per_term: dict) -> dict:
    """s/tree, s/epoch and PSI s: the sums of each job's terms."""
    return {job: sum(v for k, v in per_term.items() if k.startswith(p))
            for job, p in JOBS.items() if any(k.startswith(p) for k in per_term)}


def point_counts(point: dict, rows: int, depth: int, bins: int) -> dict:
    """Counts of a measured point (training rows: 80 % of its intersection)."""
    inter = int(rows * 0.8)
    for job in point.values():
        got = job.get("intersection")
        size = got.get("size") or got.get("intersection") if isinstance(got, dict) else None
        if size:
            inter = int(size)
            break
    return counts(int(inter * (1 - TEST_FRACTION)), rows, rows, depth, bins)


def fit(points: list[tuple[int, dict]], depth: int, bins: int, trees: int,
        epochs: int) -> dict:
    """Unit costs from ``[(rows, point)]`` measured in one run."""
    return fit_terms([(point_counts(p, r, depth, bins), terms(p, trees, epochs))
                      for r, p in points])


def measured(point: dict) -> dict:
    return {job: (row["per_unit_s"] if job != "psi" else row["psi_s"])
            for job, row in point.items() if row.get("per_unit_s") or row.get("psi_s")}


def mean_load(point: dict) -> float:
    """Mean 1-minute load average at the start and end of a point's jobs (0: not
    recorded, runs before it was)."""
    vals = [v for row in point.values() for v in row.get("load", [])]
    return float(np.mean(vals)) if vals else 0.0


def run_points(run: dict) -> dict[int, dict]:
    """``{rows: point}`` of a bench/scale.py --json file (calibration and measured)."""
    out = {int(r): p for r, p in run.get("calibration", {}).items()}
    out[int(run["rows"])] = run["measured"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a bench/scale.py --json file to fit on")
    ap.add_argument("--use", help="rows of the points to fit on (default: its calibration)")
    ap.add_argument("--predict", default="100000,300000,1000000")
    ap.add_argument("--check", type=Path, nargs="*", default=[],
                    help="other runs' JSON whose measured points are shown beside")
    a = ap.parse_args()
    run = json.loads(a.run.read_text())
    ar, pts = run["args"], run_points(run)
    use = [int(x) for x in (a.use or ",".join(run.get("calibration", {}))).split(",")]
    units = fit([(r, pts[r]) for r in use], ar["depth"], ar["bins"], ar["trees"],
                ar["epochs"])
    print(f"fitted on {use} rows of {a.run} (load {run.get('load_before')} -> "
          f"{run.get('load_after')}): " +
          ", ".join(f"{k} {f:+.3g} s + {u:.3g} s/unit" for k, (f, u) in units.items()))
    seen = {(r, str(a.run), str(run.get("load_before"))): p for r, p in pts.items()}
    for path in a.check:
        other = json.loads(path.read_text())
        seen[(int(other["rows"]), str(path), str(other.get("load_before")))] = \
            other["measured"]
    for rows in sorted({int(x) for x in a.predict.split(",")} | {r for r, _, _ in seen}):
        base = next((p for (r, _, _), p in seen.items() if r == rows), {})
        pt = predict_terms(units, point_counts(base, rows, ar["depth"], ar["bins"]))
        for job, v in totals(pt).items():
            print(f"{rows:8d} {job:11s} predicted {v:8.1f}", end="")
            for (r, src, load), p in seen.items():
                m = measured(p).get(job) if r == rows else None
                if m:
                    mt = {k: round(x, 1) for k, x in terms(p, ar["trees"], ar["epochs"]).items()
                          if k.startswith(JOBS[job])}
                    print(f"  measured {m:8.1f} ratio {v / m:.2f} ({Path(src).name}, load "
                          f"{load}; terms {mt})", end="")
            print(f"\n{'':20s} terms {({k: round(x, 1) for k, x in pt.items() if k.startswith(JOBS[job])})}")


if __name__ == "__main__":
    main()
