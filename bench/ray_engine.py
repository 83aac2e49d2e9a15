"""Ray engine overhead: SecureBoost s/tree and LR s/epoch with ``engine = "local"`` vs
``engine = "ray"`` on the same machine, the same data, in the same run.

A local Ray head on 127.0.0.1 (``--cpus``, default 2: this machine's cores) started
and stopped by PID (tests/support/ray_cluster.py); two real nodes in this process
(their jobs compute in job processes), ``workers = --workers`` on both engines; the
synthetic credit-like data of bench/scale.py (30 bank + 70 platform features, string
IDs, missing values). The engines alternate (local, ray, local, ray, ...) for
``--repeats`` rounds so a change of machine load hits both; medians are quoted with
the ratio ray / local. Both parties use the engine (on this one machine they share the
cluster; in a deployment each party has its own, docs/ray.md).

    .venv/bin/python bench/ray_engine.py                         # 10k rows, 1024-bit keys
    .venv/bin/python bench/ray_engine.py --rows 30000 --key-bits 2048 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))   # support: Ray head, job helpers
sys.path.append(str(ROOT / "bench"))   # scale (appended: bench/psi.py is no package)


def _engine_toml(path: Path, engine: str, address: str, workers: int) -> None:
    base = path.with_suffix(".base")
    if not base.exists():
        base.write_text(path.read_text())
    extra = f"workers = {workers}\n"
    if engine == "ray":
        extra += f'engine = "ray"\nray_address = "{address}"\nray_connect_timeout_s = 120.0\n'
    path.write_text(base.read_text().replace("[node]\n", "[node]\n" + extra, 1))


def run_engine(root: Path, tomls: dict, engine: str, address: str, a) -> dict:
    from scale import run_job

    from federation.admin import AdminClient
    from federation.config import load_node_config
    from federation.node import Node
    for t in tomls.values():
        _engine_toml(t, engine, address, a.workers)
    nodes = [Node(load_node_config(tomls[p]), quiet=True).start()
             for p in ("bank", "platform")]
    try:
        client = AdminClient(nodes[0].data_dir)
        out = {}
        for name, alg, params, per in (
                ("sb", "secureboost", {"n_trees": a.trees, "max_depth": a.depth,
                                       "max_bin": a.bins}, a.trees),
                ("lr", "logistic_regression", {"epochs": a.epochs, "batch_size": 0,
                                               "nan_policy": "median"}, a.epochs)):
            rec = run_job(client, f"{name}-{engine}", alg, params, a.key_bits, 3600)
            tim = rec["timings"]
            out[name] = {"per_unit_s": tim["training"] / per, "psi_s": tim["psi"]}
            print(f"  {engine:5s} {name}: {out[name]['per_unit_s']:.2f} s per "
                  f"{'tree' if name == 'sb' else 'epoch'}, PSI {tim['psi']:.2f} s", flush=True)
        return out
    finally:
        for n in nodes:
            n.stop()


#: unit costs of docs/scale.md's 300k fit (1024-bit keys, 2 cores per party; wall s)
UNITS_300K = {"enc": 1.25e-4, "hist": 7.9e-7, "node": 3.9e-4}


def predict_cores(units: dict, n: int, cores: list[int], ratio: float, depth: int = 3,
                  bins: int = 16, plat_f: int = 70, fit_cores: int = 2,
                  serial_row_s: float = 4e-6, ct_bytes: int = 256,
                  gbit_s: float = 1.0) -> list[dict]:
    """s/tree of an ``n``-row tree on ``C`` Ray CPUs from the scale fit: the encryption
    (``n*c_enc``) and histogram (``n*F_p*d*c_hist``) terms are core-seconds (fitted wall
    x ``fit_cores``) spread over C cores at the measured Ray overhead ``ratio``; what
    stays on the node hosts is not: the node-feature-bin term (packing, refresh,
    decryption; at the fit's 2 cores), the per-row serial work (applying obfuscators,
    serialising and range-checking ciphertexts; ``serial_row_s``, an estimate) and the
    gradient ciphertexts on the wire (``ct_bytes`` each at ``gbit_s``)."""
    par = (n * units["enc"] + n * plat_f * depth * units["hist"]) * fit_cores
    floor = ((2 ** depth - 1) * plat_f * bins * units["node"] + n * serial_row_s
             + n * ct_bytes * 8 / (gbit_s * 1e9))
    return [{"cores": c, "parallel_s": par * ratio / c, "floor_s": floor,
             "s_per_tree": par * ratio / c + floor} for c in cores]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--trees", type=int, default=2)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--key-bits", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="the local Ray head's CPUs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--predict", action="store_true",
                    help="only print the cost model's s/tree vs Ray CPUs (no run)")
    ap.add_argument("--ratio", type=float, default=1.0,
                    help="--predict: the Ray / local overhead ratio to apply")
    a = ap.parse_args()
    if a.predict:
        print(f"1M rows x (30 + 70) features, depth {a.depth}, {a.bins} bins, units of "
              f"docs/scale.md's 300k fit (1024-bit keys), Ray overhead x{a.ratio:g}")
        print(f"{'Ray CPUs':>9s} {'parallel s':>11s} {'node-side s':>12s} {'s/tree':>8s}")
        for r in predict_cores(UNITS_300K, 1_000_000, [2, 16, 64, 256], a.ratio,
                               a.depth, a.bins):
            print(f"{r['cores']:9d} {r['parallel_s']:11.1f} {r['floor_s']:12.1f} "
                  f"{r['s_per_tree']:8.1f}")
        return
    from scale import write_data, write_nodes
    from support.ray_cluster import ray_head
    with tempfile.TemporaryDirectory(prefix="fedjoint-ray-bench-") as tmp:
        root = Path(tmp)
        write_data(root, a.rows, "")
        tomls = write_nodes(root, a.key_bits)
        t = time.perf_counter()
        with ray_head(root, cpus=a.cpus) as (address, _pid):
            print(f"Ray head at {address} ({a.cpus} CPUs) up in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            runs: dict[str, list[dict]] = {"local": [], "ray": []}
            for _ in range(a.repeats):
                for engine in ("local", "ray"):
                    runs[engine].append(run_engine(root, tomls, engine, address, a))
    table = {}
    print(f"\n{a.rows} rows per party x 100 features, {a.key_bits}-bit Paillier, "
          f"workers {a.workers}, depth {a.depth}, {a.bins} bins; medians of {a.repeats}")
    print(f"{'figure':14s} {'local':>9s} {'ray':>9s} {'ray/local':>10s}")
    for name, what in (("sb", "s/tree"), ("lr", "s/epoch")):
        for key, label in (("per_unit_s", what), ("psi_s", "PSI s")):
            loc = statistics.median(r[name][key] for r in runs["local"])
            ray = statistics.median(r[name][key] for r in runs["ray"])
            table[f"{name}.{key}"] = {"local": loc, "ray": ray, "ratio": ray / loc}
            print(f"{name + ' ' + label:14s} {loc:9.2f} {ray:9.2f} {ray / loc:10.2f}")
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)},
                                      "runs": runs, "table": table}, indent=2))


if __name__ == "__main__":
    main()
