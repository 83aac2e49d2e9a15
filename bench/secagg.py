"""Secure aggregation benchmark: per-stage seconds and bytes per client per round,
beside plain (unmasked) aggregation of the same updates in the same run, and the ratio.

    .venv/bin/python bench/secagg.py --json out.json        # n = 5, 10, 20; 1k and 100k
    .venv/bin/python bench/secagg.py --quick                              # make bench
    .venv/bin/python bench/secagg.py --clients 20 50 --neighbours 4       # SecAgg+

One process plays every client and the server (``secure_agg.secagg.run_round``, every
message through its byte encoding), timed in CPU seconds (``time.process_time``: the
figures hold on a loaded machine), so a client's seconds are its own compute; the
round time is the sum over stages of the median client plus the server (clients run
in parallel in a deployment and do the same work, so the median client stands for
each; the slowest of 20 in one process measures the machine's scheduling noise; no
network time). Two scenarios: nobody drops, and one
client drops after sharing keys (the server rebuilds its s key and recomputes its
masks with every survivor). Plain aggregation: each client serialises its float32
update (Flower's model dtype), the server decodes and sums them in float64. Medians
over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from secure_agg.secagg import STAGES, SecAggParams, run_round  # noqa: E402

med = statistics.median


def plain_round(updates: dict[int, np.ndarray]) -> dict:
    """Each client sends float32 bytes, the server decodes and sums."""
    client_s, up = [], []
    wires = []
    for u in updates.values():
        t0 = time.process_time()
        w = u.astype("<f4").tobytes()
        client_s.append(time.process_time() - t0)
        up.append(len(w))
        wires.append(w)
    t0 = time.process_time()
    total = np.zeros(len(next(iter(updates.values()))))
    for w in wires:
        total += np.frombuffer(w, dtype="<f4")
    server_s = time.process_time() - t0
    return {"client_s": med(client_s), "server_s": server_s,
            "round_s": med(client_s) + server_s, "bytes": med(up)}


def secagg_round(updates, params, drop) -> dict:
    st: dict = {}
    run_round(updates, params, drop, np.random.default_rng(), stats=st)
    out = {"stages": {}}
    for s in STAGES:
        rec = st[s]
        cs = list(rec["client_s"].values())
        out["stages"][s] = {"client_s": med(cs), "client_max_s": max(cs),
                            "server_s": rec["server_s"],
                            "up": med(rec["up"].values()),
                            "down": med(rec["down"].values())}
    out["round_s"] = sum(v["client_s"] + v["server_s"] for v in out["stages"].values())
    out["client_s"] = sum(v["client_s"] for v in out["stages"].values())
    out["server_s"] = sum(v["server_s"] for v in out["stages"].values())
    out["bytes"] = sum(v["up"] + v["down"] for v in out["stages"].values())
    return out


def summarise(runs: list[dict]) -> dict:
    keys = ("round_s", "client_s", "server_s", "bytes")
    out = {k: med(r[k] for r in runs) for k in keys}
    out["stages"] = {s: {k: med(r["stages"][s][k] for r in runs)
                         for k in runs[0]["stages"][s]} for s in STAGES}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[5, 10, 20])
    ap.add_argument("--dims", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("--neighbours", type=int, help="SecAgg+: each client masks with k "
                    "neighbours (even k; default: plain SecAgg, every peer)")
    ap.add_argument("--signed", action="store_true",
                    help="signed rounds (Ed25519 signatures on the advertised keys)")
    ap.add_argument("--quick", action="store_true",
                    help="n = 5, 10; 1k and 10k floats; 3 repeats (make bench)")
    ap.add_argument("--json", help="write all figures here")
    a = ap.parse_args()
    if a.quick:
        a.clients, a.dims, a.repeats = [5, 10], [1000, 10_000], 3
    rows = []
    print(f"{'n':>3} {'dim':>7} {'drop':>4} | {'round s':>8} {'client s':>8} "
          f"{'server s':>8} {'KB/client':>9} | {'plain s':>8} {'plain KB':>8} | "
          f"{'x time':>7} {'x bytes':>7}")
    for n in a.clients:
        for dim in a.dims:
            params = SecAggParams(num_clients=n, threshold=n // 2 + 1, dim=dim,
                                  bits=a.bits, neighbours=a.neighbours, signed=a.signed)
            rng = np.random.default_rng(n * 7 + dim)
            updates = {c: rng.normal(0, 0.1, dim) for c in range(n)}
            plain = summarise_plain([plain_round(updates) for _ in range(a.repeats)])
            for drop in ({}, {1: "share_keys"}):
                sa = summarise([secagg_round(updates, params, drop)
                                for _ in range(a.repeats)])
                row = {"n": n, "dim": dim, "dropped": len(drop), "secagg": sa,
                       "plain": plain, "time_ratio": sa["round_s"] / plain["round_s"],
                       "bytes_ratio": sa["bytes"] / plain["bytes"]}
                rows.append(row)
                print(f"{n:>3} {dim:>7} {len(drop):>4} | {sa['round_s']:8.4f} "
                      f"{sa['client_s']:8.4f} {sa['server_s']:8.4f} "
                      f"{sa['bytes'] / 1e3:9.1f} | {plain['round_s']:8.5f} "
                      f"{plain['bytes'] / 1e3:8.1f} | {row['time_ratio']:7.0f} "
                      f"{row['bytes_ratio']:7.3f}")
    print("\nper stage (median seconds per client / server, bytes up / down per client):")
    for r in rows:
        parts = ", ".join(f"{s} {v['client_s'] * 1e3:.2f}/{v['server_s'] * 1e3:.2f} ms "
                          f"{v['up']:.0f}/{v['down']:.0f} B"
                          for s, v in r["secagg"]["stages"].items())
        print(f"  n={r['n']} dim={r['dim']} drop={r['dropped']}: {parts}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"repeats": a.repeats, "bits": a.bits, "neighbours": a.neighbours,
                       "signed": a.signed, "rows": rows}, f, indent=1)


def summarise_plain(runs: list[dict]) -> dict:
    return {k: med(r[k] for r in runs) for k in runs[0]}


if __name__ == "__main__":
    main()
