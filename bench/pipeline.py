"""Pipeline benchmark: one ``binning -> selection -> logistic_regression`` pipeline job
beside the same three steps as separate jobs (a binning job, a selection job taking it
as ``[inputs]``, an LR job on the kept columns), both through ``fedjoint.run_local`` (the
node's runner for both parties, every message encoded as on the wire) on the same
rows, in the same run. Reported per variant: seconds (median of the repeats), PSI runs,
messages and bytes that crossed, and the LR's test AUC (the same model both ways?).

    .venv/bin/python bench/pipeline.py --json out.json            # 6,000 rows, 2048 bits
    .venv/bin/python bench/pipeline.py --rows 2000 --key-bits 1024 --repeats 1   # quick

Data: the first ``--rows`` bank rows of examples/credit_risk and the platform rows
they share.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pandas as pd  # noqa: E402

import fedjoint  # noqa: E402

POLICY = {"allow_insecure_test_jobs": True, "min_key_bits": 1024, "allowed_algorithms": ["all"]}
BIN = {"method": "monotonic", "n_prebins": 10}
SEL = {"iv_min": 0.02, "max_corr": 0.8}
LR = {"epochs": 5, "batch_size": 1024, "seed": 3}


def job(name: str, algorithm: str, key_bits: int, **extra) -> dict:
    return {"job": {"name": name, "algorithm": algorithm, "dataset": "d",
                    "peer_dataset": "d", **extra.pop("job", {})},
            "psi": {"id_type": "string"},
            "evaluation": {"key_bits": key_bits, "test_fraction": 0.25}, **extra}


def run(variant: str, bank, plat, key_bits: int, seed: int) -> dict:
    kw = dict(bank=bank, platform=plat, bank_policy=POLICY, platform_policy=POLICY,
              seed=seed, data_dir=tempfile.mkdtemp(prefix="bench-pipeline-"))
    t = time.perf_counter()
    if variant == "pipeline":
        stages = [{"name": "bin", "algorithm": "binning", "params": BIN},
                  {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
                   "params": SEL},
                  {"name": "lr", "algorithm": "logistic_regression",
                   "inputs": {"selection": "sel"}, "params": LR}]
        res = [fedjoint.run_local(job("pl", "pipeline", key_bits, stages=stages), **kw)]
        kept_b = res[0].stages["sel"]["bank"].feature_names
    else:
        res = [fedjoint.run_local(job("b", "binning", key_bits, params=BIN), **kw)]
        res.append(fedjoint.run_local(job("s", "selection", key_bits, params=SEL,
                                          inputs={"binning": "b"}), **kw))
        kept_b = res[1].bank_model.feature_names
        kept_p = res[1].platform_model.feature_names
        res.append(fedjoint.run_local(job("l", "logistic_regression", key_bits, params=LR,
                                          job={"features": kept_b,
                                               "peer_features": kept_p}), **kw))
    seconds = time.perf_counter() - t
    wire = [w for r in res for w in r.wire]
    return {"seconds": seconds, "psi_runs": sum(1 for w in wire
                                               if w[0] == "bank" and w[1] == "psi.hello"),
            "messages": len(wire), "bytes": sum(w[4] for w in wire),
            "test_auc": res[-1].metrics["test_auc"], "bank_features": len(kept_b)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    data = os.path.join(ROOT, "examples", "credit_risk", "data")
    bank = pd.read_csv(os.path.join(data, "bank.csv")).head(a.rows)
    plat = pd.read_csv(os.path.join(data, "platform.csv"))
    plat = plat[plat["id"].isin(bank["id"])].reset_index(drop=True)
    out = {}
    for variant in ("pipeline", "separate jobs"):
        runs = [run(variant, bank, plat, a.key_bits, seed) for seed in range(a.repeats)]
        out[variant] = {**runs[0], "seconds": statistics.median(r["seconds"] for r in runs),
                        "all_seconds": [round(r["seconds"], 2) for r in runs]}
    print(f"{a.rows} bank rows, {len(plat)} platform rows, {a.key_bits}-bit Paillier, "
          f"median of {a.repeats}")
    print(f"{'variant':<14} {'s':>8} {'PSI':>4} {'messages':>9} {'MB':>8} {'test AUC':>9}")
    for v, r in out.items():
        print(f"{v:<14} {r['seconds']:>8.2f} {r['psi_runs']:>4} {r['messages']:>9} "
              f"{r['bytes'] / 1e6:>8.2f} {r['test_auc']:>9.5f}")
    p, s = out["pipeline"], out["separate jobs"]
    print(f"pipeline / separate: time {p['seconds'] / s['seconds']:.2f}x, bytes "
          f"{p['bytes'] / s['bytes']:.2f}x")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"args": vars(a), "results": out}, fh, indent=2)


if __name__ == "__main__":
    main()
