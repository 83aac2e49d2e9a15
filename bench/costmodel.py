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

Each point's SecureBoost and LR jobs run the same PSI as its PSI job: their PSI terms
are samples too (three a size). The same terms are fitted twice: on the wall seconds
(``kind="wall"``) and on the CPU seconds both parties' process trees spent in them
(``"cpu"``, from the CPU timeline bench/scale.py records per job: :func:`cpu_terms`),
which the load of a shared machine does not stretch; with the run's PSI floor
(bench/psi.py's micro-benchmark, CPU time) ``psi_core``'s CPU per ID is held at least
at the floor's.

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


def psi_floor_per_id(floor_us: dict) -> float:
    """CPU seconds per ID (of either party) at the PSI's floor: hash_to_curve + 2 X25519
    (its owner's blinding and the peer's), from bench/psi.py's ``measure_floor``."""
    x = min(floor_us["x25519_openssl_us"], floor_us.get("x25519_mb_batch_us", np.inf))
    return (floor_us["hash_to_curve_us"] + 2 * x) / 1e6


def psi_terms(row: dict) -> dict:
    """``psi_wait`` and ``psi_core`` seconds of any job's row with a PSI phase."""
    if not row.get("psi_s"):
        return {}
    wait = max(0.0, row["plat_t"].get("load", 0.0) - row["bank_t"].get("load", 0.0))
    wait = min(wait, row["psi_s"])
    return {"psi_wait": wait, "psi_core": row["psi_s"] - wait}


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
    out.update(psi_terms(point.get("psi", {})))
    return out


def _cpu_over(tl: dict):
    """``over(a, b)``: CPU seconds of both parties' process trees between ``a`` and ``b``
    (seconds from the job's submission), interpolated in a bench/scale.py timeline."""
    t = np.asarray(tl["t"], float)
    cpu = np.maximum.accumulate(np.asarray(tl["bank"], float) +
                                np.asarray(tl["platform"], float))
    return lambda a, b: float(np.interp(b, t, cpu) - np.interp(a, t, cpu))


def _phases(bank_t: dict, t_done: float) -> dict:
    """``{phase: (start, end)}`` of the runner's phases, laid out in their order from the
    job's start (``t_done`` - total: the bench saw the job done within 0.2 s)."""
    at, pos = {}, t_done - bank_t.get("total", 0.0)
    for k in ("load", "psi", "keygen", "training", "evaluating"):
        if k in bank_t:
            at[k] = (pos, pos + bank_t[k])
            pos += bank_t[k]
    return at


def job_cpu_terms(job: str, row: dict, trees: int, epochs: int) -> dict:
    """CPU seconds per term of one job's row (both parties' trees: their main, job and
    worker processes), from its ``cpu_timeline``: each phase's CPU over its interval;
    where terms interleave in one interval (a tree's levels, an LR epoch's phases) the
    interval's CPU split by their wall seconds. The PSI terms of any job with a PSI
    phase; {} for a row recorded without a timeline."""
    tl = row.get("cpu_timeline") or {}
    if len(tl.get("t", ())) < 2:
        return {}
    over, at, out = _cpu_over(tl), _phases(row["bank_t"], tl["t_done"]), {}
    psi = psi_terms(row)
    if psi and "psi" in at:
        a0, a1 = at["psi"]
        out["psi_wait"] = over(a0, a0 + psi["psi_wait"])
        out["psi_core"] = over(a0 + psi["psi_wait"], a1)
    if job not in ("secureboost", "lr") or "training" not in at:
        return out
    per = trees if job == "secureboost" else epochs
    wall = {k: v * per for k, v in terms({job: row}, trees, epochs).items()}
    a0, a1 = at["training"]
    parts, rest = {}, list(wall)
    if job == "secureboost":
        for k in ("sb_setup", "sb_stream") if trees == 1 else ("sb_setup",):
            parts[k] = over(a0, a0 + wall[k])   # setup, then tree 0's gradient stream
            a0 += wall[k]
            rest.remove(k)
    left, wsum = over(a0, a1), sum(wall[k] for k in rest) or 1.0
    parts.update({k: left * wall[k] / wsum for k in rest})
    out.update({k: v / per for k, v in parts.items()})
    return out


def cpu_terms(point: dict, trees: int, epochs: int) -> dict:
    """CPU seconds per term of a point (as :func:`terms`: SecureBoost and LR terms of
    their jobs, the PSI terms of the PSI job)."""
    out = {}
    for job, row in point.items():
        got = job_cpu_terms(job, row, trees, epochs)
        out.update({k: v for k, v in got.items() if job == "psi" or not k.startswith("psi_")})
    return out


def samples(point: dict, trees: int, epochs: int, kind: str = "wall") -> list[dict]:
    """The point's terms (:func:`terms` or :func:`cpu_terms`), then the PSI terms of its
    SecureBoost and LR jobs, which run the same PSI on the same data: three PSI samples
    a size, least squares averages their noise."""
    if kind == "cpu":
        out = [cpu_terms(point, trees, epochs)]
        extra = [job_cpu_terms(j, point[j], trees, epochs) for j in ("secureboost", "lr")
                 if j in point]
    else:
        out = [terms(point, trees, epochs)]
        extra = [psi_terms(point[j]) for j in ("secureboost", "lr") if j in point]
    return out + [{k: v for k, v in e.items() if k.startswith("psi_")} for e in extra]


def fit_terms(pairs: list[tuple[dict, dict]]) -> dict:
    """``{term: (fixed_s, unit_s)}`` from ``[(counts, seconds per term)]`` (one or more
    pairs per calibration point); raises ValueError for fewer than two distinct sizes."""
    if len({tuple(sorted(c.items())) for c, _ in pairs}) < 2:
        raise ValueError("one calibration size: two calibration sizes are needed")
    out = {}
    for name in dict.fromkeys(k for _, t in pairs for k in t):
        xs = np.array([c[name] for c, t in pairs if name in t], float)
        ys = np.array([t[name] for c, t in pairs if name in t], float)
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
        epochs: int, kind: str = "wall", floor_us: dict | None = None) -> dict:
    """Unit costs from ``[(rows, point)]`` measured in one run: of the wall seconds
    (``kind="wall"``) or of the CPU seconds of both parties (``"cpu"``: the load of the
    machine stretches a job's wall time, not the work it does). With the run's PSI floor
    (``floor_us``), ``psi_core``'s CPU per ID is at least the floor's: at 10k-100k the
    PSI is mostly fixed cost and the per-ID slope between such points is noise."""
    units = fit_terms([(point_counts(p, r, depth, bins), t) for r, p in points
                       for t in samples(p, trees, epochs, kind) if t])
    if kind == "cpu" and floor_us and "psi_core" in units:
        fixed, unit = units["psi_core"]
        low = psi_floor_per_id(floor_us)
        if unit < low:      # the same least squares with the slope held at the floor
            xs, ys = zip(*[(point_counts(p, r, depth, bins)["psi_core"], t["psi_core"])
                           for r, p in points for t in samples(p, trees, epochs, kind)
                           if "psi_core" in t], strict=True)
            units["psi_core"] = (float(np.mean(np.array(ys) - low * np.array(xs))), low)
    return units


def measured(point: dict, kind: str = "wall", trees: int = 1, epochs: int = 1) -> dict:
    """s/tree, s/epoch and PSI s of a point (wall), or each job's CPU seconds summed over
    its terms (``kind="cpu"``; jobs recorded without a CPU timeline left out)."""
    if kind == "cpu":
        return totals(cpu_terms(point, trees, epochs))
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


def compare(units: dict, point: dict, rows: int, a: dict, kind: str = "wall") -> list:
    """``[(job, predicted, measured or None, {term: (predicted, measured)})]`` for a
    point of ``rows`` rows (``a``: the run's depth, bins, trees, epochs)."""
    pt = predict_terms(units, point_counts(point, rows, a["depth"], a["bins"]))
    got = (cpu_terms if kind == "cpu" else terms)(point, a["trees"], a["epochs"])
    meas = measured(point, kind, a["trees"], a["epochs"])
    return [(job, v, meas.get(job),
             {k: (x, got.get(k)) for k, x in pt.items() if k.startswith(JOBS[job])})
            for job, v in totals(pt).items()]


def print_compare(rows: int, res: list, kind: str, label: str = "") -> None:
    unit = "CPU s" if kind == "cpu" else "s"
    for job, v, m, per in res:
        line = f"{rows:8d} {job:11s} {kind:4s} predicted {v:8.1f} {unit}"
        if m:
            line += f"  measured {m:8.1f}  ratio {v / m:.2f}{label}"
        print(line + "\n" + " " * 14 + "terms (predicted / measured): " + ", ".join(
            f"{k} {x:.1f} / " + ("-" if y is None else f"{y:.1f}") for k, (x, y) in per.items()))


def core_share(point: dict, a: dict) -> dict:
    """Cores each job's two process trees used on average (CPU s / wall s over its
    terms): how much of the machine the load left the run."""
    w, c = totals(terms(point, a["trees"], a["epochs"])), measured(point, "cpu", a["trees"],
                                                                    a["epochs"])
    return {j: c[j] / w[j] for j in c if w.get(j)}


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
    cal = [(r, pts[r]) for r in use]
    fits = {"wall": fit(cal, ar["depth"], ar["bins"], ar["trees"], ar["epochs"])}
    try:
        fits["cpu"] = fit(cal, ar["depth"], ar["bins"], ar["trees"], ar["epochs"], "cpu",
                          run.get("psi_floor_us"))
    except ValueError:
        pass                     # recorded before the bench kept CPU timelines
    for kind, units in fits.items():
        print(f"{kind} fit on {use} rows of {a.run.name} (loads " + ", ".join(
            f"{r}: {mean_load(p):.1f}" for r, p in cal) + "): " + ", ".join(
            f"{k} {f:+.3g} + {u:.3g}/unit" for k, (f, u) in units.items()))
    if run.get("psi_floor_us"):
        print(f"PSI floor of the run: {psi_floor_per_id(run['psi_floor_us']) * 1e6:.2f} us CPU"
              " per ID")
    seen = [(int(r), p, a.run.name) for r, p in pts.items()]
    for path in a.check:
        other = json.loads(path.read_text())
        seen.append((int(other["rows"]), other["measured"], path.name))
    done = set()
    for rows, point, src in sorted(seen, key=lambda x: x[0]) + [
            (int(r), {}, "") for r in a.predict.split(",")]:
        if not point and int(rows) in done:
            continue
        done.add(rows)
        load = f" ({src}, load {mean_load(point):.1f})" if point else ""
        for kind, units in fits.items():
            if kind == "cpu" and not measured(point, "cpu", ar["trees"], ar["epochs"]) \
                    and point:
                continue
            print_compare(rows, compare(units, point, rows, ar, kind), kind, load)
        if "cpu" in fits and point:
            share = core_share(point, ar)
            if share:
                print(" " * 14 + "cores used (CPU s / wall s): " +
                      ", ".join(f"{j} {v:.2f}" for j, v in share.items()))


if __name__ == "__main__":
    main()
