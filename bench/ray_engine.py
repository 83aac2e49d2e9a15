"""Ray engine overhead: SecureBoost s/tree, LR s/epoch and PSI s per job with ``engine =
"local"`` vs ``engine = "ray"`` on the same machine, the same data, in the same run.

A local Ray head on 127.0.0.1 (``--cpus``, default 2: this machine's cores) started
and stopped by PID (tests/support/ray_cluster.py); two real nodes in this process
(their jobs compute in job processes), ``workers = --workers`` on both engines; the
synthetic credit-like data of bench/scale.py (30 bank + 70 platform features, string
IDs, missing values). Three variants alternate (local, ray, ray-cold, local, ...) for
``--repeats`` rounds so a change of machine load hits all: ``ray`` uses the party's
warm actor pool (secure_agg/ray_engine.py; the nodes' warm-up made it), ``ray-cold``
drops the pool before each job, so each job starts its own Ray worker processes, as
every job did before the pool. Medians are quoted with the ratio to local. Both parties
use the engine (on this one machine they share the cluster; in a deployment each party
has its own, docs/ray.md).

    .venv/bin/python bench/ray_engine.py                         # 10k rows, 1024-bit keys
    .venv/bin/python bench/ray_engine.py --rows 30000 --key-bits 2048 --json out.json
    .venv/bin/python bench/ray_engine.py --predict RUN.json      # s/tree vs Ray CPUs

``--predict`` prints the cost model's s/tree vs Ray CPUs (:func:`predict_cores`) from
the per-term fit (bench/costmodel.py) of a bench/scale.py ``--json`` run's calibration
points, and runs nothing.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))   # support: Ray head, job helpers
sys.path.append(str(ROOT / "bench"))   # scale (appended: bench/psi.py is no package)


def _engine_toml(path: Path, engine: str, address: str, workers: int,
                 token: Path) -> None:
    base = path.with_suffix(".base")
    if not base.exists():
        base.write_text(path.read_text())
    extra = f"workers = {workers}\n"
    if engine.startswith("ray"):
        extra += (f'engine = "ray"\nray_address = "{address}"\n'
                  f'ray_auth_token_file = "{token}"\nray_connect_timeout_s = 120.0\n')
    path.write_text(base.read_text().replace("[node]\n", "[node]\n" + extra, 1))


def _warmed(nodes, timeout: float = 180.0) -> None:
    """Wait for both nodes' pool warm-up to have reported (engine.pool / pool_failed)."""
    deadline = time.monotonic() + timeout
    for n in nodes:
        log = Path(n.data_dir) / "node.log"
        while time.monotonic() < deadline:
            text = log.read_text() if log.exists() else ""
            if '"engine.pool"' in text or '"engine.pool_failed"' in text:
                break
            time.sleep(0.5)


def run_engine(root: Path, tomls: dict, engine: str, ray, a) -> dict:
    """One round of the SecureBoost and LR jobs on ``engine`` ("local", "ray" or
    "ray-cold"); ``ray``: (address, token file)."""
    from scale import run_job
    from support.ray_cluster import _drop_pool

    from federation.admin import AdminClient
    from federation.config import load_node_config
    from federation.node import Node
    for t in tomls.values():
        _engine_toml(t, engine, ray[0], a.workers, ray[1])
    for t in tomls.values():     # a fresh node log per round (the warm-up's report)
        log = load_node_config(t).data_dir / "node.log"
        log.unlink(missing_ok=True)
    nodes = [Node(load_node_config(tomls[p]), quiet=True).start()
             for p in ("bank", "platform")]
    try:
        if engine.startswith("ray"):
            _warmed(nodes)
        client = AdminClient(nodes[0].data_dir)
        out = {}
        for name, alg, params, per in (
                ("sb", "secureboost", {"n_trees": a.trees, "max_depth": a.depth,
                                       "max_bin": a.bins}, a.trees),
                ("lr", "logistic_regression", {"epochs": a.epochs, "batch_size": 0,
                                               "nan_policy": "median"}, a.epochs)):
            if engine == "ray-cold":
                _drop_pool(ray[0], ray[1], root)
            rec = run_job(client, f"{name}-{engine}", alg, params, a.key_bits, 3600)
            tim = rec["timings"]
            out[name] = {"per_unit_s": tim["training"] / per, "psi_s": tim["psi"],
                         **_start_up(client.call("logs", job_id=rec["job_id"])["events"])}
            r = out[name]
            print(f"  {engine:8s} {name}: {r['per_unit_s']:.2f} s per "
                  f"{'tree' if name == 'sb' else 'epoch'}, PSI {tim['psi']:.2f} s, approved -> "
                  f"PSI done {r['to_psi_done_s']:.1f} s (joining Ray {r['connect_s']:.1f} s, "
                  f"pool ready {r['pool_ready_s']:.1f} s, {r['pool_created']} actors made)",
                  flush=True)
        return out
    finally:
        for n in nodes:
            n.stop()


def _start_up(events: list[dict]) -> dict:
    """From the bank's job events: seconds from approval to the end of PSI (job process
    start, Ray join, data load, PSI), of them joining Ray (to ``engine.connected``), the
    pool's share (``pool_ready_s``) and how many actors the job made."""
    ts = {e.get("state") or e["event"]: e for e in events}
    t0 = ts["approved"]["ts"]
    conn = ts.get("engine.connected", {})
    return {"to_psi_done_s": ts["psi.done"]["ts"] - t0,
            "connect_s": conn["ts"] - t0 if conn else 0.0,
            "pool_ready_s": float(conn.get("pool_ready_s", 0.0)),
            "pool_created": int(conn.get("pool_created", 0))}


def predict_cores(units: dict, rows: int, cores: list[int], ratio: float, depth: int = 3,
                  bins: int = 16, kind: str = "cpu", fit_cores: int = 2,
                  node_cores: int = 2, serial_row_s: float = 4e-6, ct_bytes: int = 256,
                  gbit_s: float = 1.0) -> list[dict]:
    """s/tree of a ``rows``-row tree on ``C`` Ray CPUs from the per-term fit ``units``
    (bench/costmodel.py, of CPU seconds with ``kind="cpu"``, else wall seconds measured
    on ``fit_cores`` cores). Core-seconds of a term: its CPU seconds (or wall x
    ``fit_cores``). The encryption streaming (``sb_stream``) and histogram
    (``sb_hist``) terms spread over C cores at the measured Ray overhead ``ratio``,
    except the per-row serial work (applying obfuscators, serialising and range-checking
    ciphertexts; ``serial_row_s``, an estimate) that stays with the node-side terms
    (``sb_setup``, ``sb_decrypt``, ``sb_rest``: binning, decryption, splits, on
    ``node_cores``), plus the gradient ciphertexts on the wire (``ct_bytes`` each at
    ``gbit_s``)."""
    from costmodel import point_counts, predict_terms
    cnt = point_counts({}, rows, depth, bins)
    per = predict_terms({k: v for k, v in units.items() if k.startswith("sb_")}, cnt)
    scale = 1.0 if kind == "cpu" else float(fit_cores)
    serial = cnt["sb_stream"] * serial_row_s
    par = max(0.0, per["sb_stream"] * scale - serial) + per["sb_hist"] * scale
    floor = ((per["sb_setup"] + per["sb_decrypt"] + per["sb_rest"]) * scale / node_cores
             + serial + cnt["sb_stream"] * ct_bytes * 8 / (gbit_s * 1e9))
    return [{"cores": c, "parallel_s": par * ratio / c, "floor_s": floor,
             "s_per_tree": par * ratio / c + floor} for c in cores]


def print_prediction(a) -> None:
    from costmodel import fit, run_points
    run = json.loads(a.predict.read_text())
    ar, pts = run["args"], run_points(run)
    use = [int(r) for r in run.get("calibration", {})]
    units = None
    for kind in (("cpu", "wall") if a.kind == "auto" else (a.kind,)):
        try:
            units = fit([(r, pts[r]) for r in use], ar["depth"], ar["bins"], ar["trees"],
                        ar["epochs"], kind)
            a.kind = kind
            break
        except (ValueError, KeyError) as exc:   # no CPU timeline recorded in that run
            print(f"no {kind} fit of {a.predict}'s calibration points {use}: {exc}")
    if units is None:
        raise SystemExit(1)
    print(f"1M rows x (30 + 70) features, depth {ar['depth']}, {ar['bins']} bins, "
          f"{ar['key_bits']}-bit keys: per-term {a.kind} fit on {use} rows of {a.predict}, "
          f"Ray overhead x{a.ratio:g}")
    print(f"{'Ray CPUs':>9s} {'parallel s':>11s} {'node-side s':>12s} {'s/tree':>8s}")
    for r in predict_cores(units, 1_000_000, [2, 16, 64, 256], a.ratio, ar["depth"],
                           ar["bins"], a.kind):
        print(f"{r['cores']:9d} {r['parallel_s']:11.1f} {r['floor_s']:12.1f} "
              f"{r['s_per_tree']:8.1f}")


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
    ap.add_argument("--predict", type=Path, metavar="RUN.json",
                    help="only print the cost model's s/tree vs Ray CPUs, fitted on this "
                         "bench/scale.py --json run's calibration points (no run)")
    ap.add_argument("--kind", choices=("auto", "cpu", "wall"), default="auto",
                    help="--predict: fit CPU seconds, wall seconds, or CPU if the run "
                         "recorded CPU timelines else wall (default)")
    ap.add_argument("--ratio", type=float, default=1.0,
                    help="--predict: the Ray / local overhead ratio to apply")
    a = ap.parse_args()
    if a.predict:
        print_prediction(a)
        return
    from scale import write_data, write_nodes
    from support.ray_cluster import ray_head
    engines = ("local", "ray", "ray-cold")
    with tempfile.TemporaryDirectory(prefix="fedjoint-ray-bench-") as tmp:
        root = Path(tmp)
        write_data(root, a.rows, "")
        tomls = write_nodes(root, a.key_bits)
        token = root / "ray.token"
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)
        t = time.perf_counter()
        with ray_head(root, cpus=a.cpus, token_file=token) as (address, _pid):
            print(f"Ray head at {address} ({a.cpus} CPUs) up in "
                  f"{time.perf_counter() - t:.1f} s", flush=True)
            runs: dict[str, list[dict]] = {e: [] for e in engines}
            for _ in range(a.repeats):
                for engine in engines:
                    runs[engine].append(run_engine(root, tomls, engine, (address, token), a))
    table = {}
    print(f"\n{a.rows} rows per party x 100 features, {a.key_bits}-bit Paillier, "
          f"workers {a.workers}, depth {a.depth}, {a.bins} bins; medians of {a.repeats}")
    print(f"{'figure':16s} {'local':>9s} {'ray':>9s} {'ray-cold':>9s} {'ray/local':>10s} "
          f"{'cold/local':>10s}")
    for name, what in (("sb", "s/tree"), ("lr", "s/epoch")):
        for key, label in (("per_unit_s", what), ("psi_s", "PSI s"),
                           ("to_psi_done_s", "to PSI end s"), ("connect_s", "join Ray s"),
                           ("pool_ready_s", "pool s")):
            med = {e: statistics.median(r[name][key] for r in runs[e]) for e in engines}
            loc = med["local"] or float("nan")     # local: no Ray join, no pool
            table[f"{name}.{key}"] = med | {"ratio": med["ray"] / loc,
                                            "cold_ratio": med["ray-cold"] / loc}
            print(f"{name + ' ' + label:16s} {med['local']:9.2f} {med['ray']:9.2f} "
                  f"{med['ray-cold']:9.2f} {med['ray'] / loc:10.2f} "
                  f"{med['ray-cold'] / loc:10.2f}")
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)},
                                      "runs": runs, "table": table}, indent=2))


if __name__ == "__main__":
    main()
