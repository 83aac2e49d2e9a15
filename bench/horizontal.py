"""Horizontal jobs: round time and bytes per bank per round, with and without secure
aggregation, in one run.

default_credit (tests/data, 30,000 rows x 23 features) split across N banks non-IID by
x0 quintile, through Flower's Message API in process (fedjoint.run_horizontal: the
same ServerApp loop and ClientApp handlers as a deployment; no network). Per fit
round: wall seconds (median over rounds; the aggregator's view, so it includes every
bank's local training) and the payload bytes each bank sends and receives (median
over banks and rounds). The reference is the same job with plain sums
(``secure_aggregation = false``), measured in the same run; the ratio is secure/plain.
Process CPU seconds are printed beside wall time (the machine may be shared).

    .venv/bin/python bench/horizontal.py [--quick] [--banks 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

import fedjoint  # noqa: E402


def load_banks(n: int) -> tuple[dict, list[str]]:
    g = pd.read_csv(ROOT / "tests" / "data" / "default_credit_hetero_guest.csv")
    h = pd.read_csv(ROOT / "tests" / "data" / "default_credit_hetero_host.csv")
    df = g.merge(h, on="id", suffixes=("_g", "_h"))
    band = pd.qcut(df["x0_g"].rank(method="first"), n, labels=False)
    cols = [c for c in df.columns if c not in ("id", "y")]
    return {f"bank-{i}": df[band == i].reset_index(drop=True) for i in range(n)}, cols


def measure(banks: dict, cols: list[str], algorithm: str, secure: bool, rounds: int) -> dict:
    job = {"job": {"name": "bench", "algorithm": algorithm, "job_id": "bench"},
           "horizontal": {"columns": cols},
           "params": {"rounds": rounds, "patience": 0, "secure_aggregation": secure,
                      "min_banks": 3, "class_weight": "balanced"}}
    w0, c0 = time.perf_counter(), time.process_time()
    res = fedjoint.run_horizontal(job, banks)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    fits = [r for r in res.result.rounds if r["phase"] == "fit"]
    up = [b for r in fits for b in r["up_bytes"].values()]
    down = [b for r in fits for b in r["down_bytes"].values()]
    return {"algorithm": algorithm, "secure": secure, "rounds": len(fits),
            "round_s": statistics.median(r["seconds"] for r in fits),
            "up_bytes": statistics.median(up), "down_bytes": statistics.median(down),
            "job_wall_s": wall, "job_cpu_s": cpu,
            "n_params": len(res.theta), "test_log_loss": res.metrics["test_log_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 rounds instead of 8")
    ap.add_argument("--banks", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    banks, cols = load_banks(a.banks)
    rounds = 3 if a.quick else 8
    measure(banks, cols, "horizontal_mlp", True, 1)   # warm-up (imports, torch kernels)
    rows = []
    for alg in ("horizontal_lr", "horizontal_mlp"):
        plain = measure(banks, cols, alg, False, rounds)
        sec = measure(banks, cols, alg, True, rounds)
        rows += [plain, sec]
        print(f"\n{alg}: {plain['n_params']} parameters, {a.banks} banks, "
              f"{rounds} fit rounds (medians)")
        print(f"{'':18}{'plain':>12}{'secure':>12}{'ratio':>8}")
        for key, label in (("round_s", "round wall s"), ("up_bytes", "bank->agg B"),
                           ("down_bytes", "agg->bank B"), ("job_cpu_s", "job CPU s")):
            p, s = plain[key], sec[key]
            print(f"{label:18}{p:>12.4g}{s:>12.4g}{s / p:>8.2f}x")
        print(f"{'test log loss':18}{plain['test_log_loss']:>12.5f}{sec['test_log_loss']:>12.5f}")
    if a.json:
        a.json.write_text(json.dumps({"banks": a.banks, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
