"""Scale benchmark: PSI, SecureBoost s/tree and LR s/epoch at 100k / 300k / 1M rows.

A synthetic credit-like pair of datasets (``generate``): string enterprise IDs
(18-character unified social credit codes), each party holding ``rows`` rows of which
~80 % are shared, 30 bank + 70 platform features driven by 6 latent factors of the
enterprise, 5-20 % missing values per column, and a bank label with a ~20 % event rate
driven by the latent factors behind both parties' columns.

Both parties run as **real nodes in their own OS processes** (``fedjoint node start``,
mTLS gRPC on loopback); each job computes in a job process under its node. Peak RSS
per party is the sum over the node's process tree (daemon + job process + its
obfuscator workers), sampled every 0.25 s from /proc, printed with the tree's PSS (pages
shared by forked processes counted once) and each kind of process's own peak. Bytes on the wire are the
payload bytes the transcripts record (sent + received, one party's view); transcript
and sidecar bytes are the files each node keeps per job.

A fitted cost model sits beside the measurements (bench/costmodel.py: each job's time as
a sum of terms, each a count times a unit cost plus a fixed cost). The same run first
runs the same jobs at two or more small calibration sizes (``--cal-rows``, default
10,000 and 30,000 rows per party) and fits each term from the jobs' own phase timings
(one size cannot separate fixed from per-row costs: refused), then prints the
prediction for the measured point beside its measurement (ratio) and per term; of the
wall seconds and of both parties' CPU seconds (each node's process tree, sampled from
/proc with the RSS; the PSI floor of bench/psi.py measured at the start of the run),
with the cores the jobs got (CPU s / wall s).
``--quick`` uses 1024-bit test keys (flagged insecure) so the 100k point fits in minutes
on this machine unless ``--key-bits`` is given; the default is 2048.

    .venv/bin/python bench/scale.py --quick                 # 100k point, 1 tree, 1 epoch
    .venv/bin/python bench/scale.py --rows 300000 --trees 2 --epochs 1
    .venv/bin/python bench/scale.py --rows 1000000 --trees 1 --epochs 1   # ~hours here
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import costmodel  # noqa: E402 - bench/ (the script's folder) is on sys.path

BANK_F, PLAT_F, FACTORS = 30, 70, 6


def generate(rows: int, seed: int = 17, overlap: float = 0.8):
    """(bank DataFrame with id + y, platform DataFrame with id): see the module doc."""
    import pandas as pd
    rng = np.random.default_rng(seed)
    shared = int(rows * overlap)
    total = 2 * rows - shared                       # distinct enterprises
    z = rng.standard_normal((total, FACTORS))
    codes = rng.choice(np.array(list("0123456789ABCDEFGHJKLMNPQRTUWXY")), (total, 14))
    ids = np.char.add("9131", np.array(["".join(r) for r in codes]))
    bank_rows = np.arange(rows)                     # 0..rows-1; platform: shared + rest
    plat_rows = np.concatenate([np.arange(shared), np.arange(rows, total)])

    def features(rows_ix, k, name):
        w = rng.standard_normal((FACTORS, k)) / np.sqrt(FACTORS)
        x = z[rows_ix] @ w + 0.5 * rng.standard_normal((len(rows_ix), k))
        x[:, ::3] = np.exp(x[:, ::3])               # skewed, amount-like columns
        miss = rng.uniform(0.05, 0.20, k)
        x[rng.random(x.shape) < miss] = np.nan
        return pd.DataFrame(x.astype(np.float32), columns=[f"{name}{j}" for j in range(k)])

    bank = features(bank_rows, BANK_F, "b")
    plat = features(plat_rows, PLAT_F, "p")
    beta = np.array([0.9, -0.7, 0.6, 0.5, -0.4, 0.3])   # factors 0-2: bank-side, 3-5: platform
    logit = 2.0 * (z[bank_rows] @ beta)
    lo, hi = -20.0, 20.0                            # intercept: a 20 % event rate
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(logit - mid)))) > 0.2 else (lo, mid)
    y = (rng.random(rows) < 1 / (1 + np.exp(-(logit - lo)))).astype(np.int8)
    bank.insert(0, "id", ids[bank_rows])
    bank["y"] = y
    plat.insert(0, "id", ids[plat_rows])
    return bank, plat.sample(frac=1.0, random_state=seed).reset_index(drop=True)


# ---------------------------------------------------------------- process-tree RSS
def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _kb(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _role(pid: int, parent: str) -> str:
    """forkserver (the node's multiprocessing forkserver and resource tracker), job (a
    job process: a forkserver child), workers (secure_agg worker processes)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read()
    except OSError:
        cmd = b""
    if b"secure_agg.worker" in cmd:
        return "workers"
    if parent == "daemon":
        return "forkserver" if b"multiprocessing" in cmd else "job"
    return "job"


def tree_memory(pid: int) -> dict:
    """Resident bytes of ``pid`` and all its descendants: ``rss`` (summed VmRSS, which
    counts pages shared by forked processes once per process), ``pss`` (proportional
    set size: shared pages split between their processes) and the RSS by role."""
    out = {"rss": 0, "pss": 0, "daemon": 0, "forkserver": 0, "job": 0, "workers": 0}
    todo = [(pid, "daemon")]
    while todo:
        p, role = todo.pop()
        rss = _kb(f"/proc/{p}/status", "VmRSS:")
        if not rss:
            continue
        out["rss"] += rss
        out["pss"] += _kb(f"/proc/{p}/smaps_rollup", "Pss:")
        out[role] += rss
        todo += [(c, _role(c, role)) for c in _children(p)]
    return out


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants,
    including exited ones their parent has reaped (a job process and its workers once
    done count in the forkserver's and the job process's children times)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in f[11:15])   # utime stime cutime cstime
        todo += _children(p)
    return total / _TICK


def machine_busy() -> float:
    """CPU seconds all cores of the machine have spent busy (/proc/stat: everything but
    idle and iowait), for the share of the machine a job got."""
    with open("/proc/stat") as fh:
        v = [int(x) for x in fh.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / _TICK


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants (summed VmRSS)."""
    return tree_memory(pid)["rss"]


class RssSampler(threading.Thread):
    """Peak per party of the tree's RSS (``peak``) and of each figure of
    :func:`tree_memory` on its own (``parts``), every 0.25 s; and each party's tree CPU
    seconds (:func:`tree_cpu`) with the machine's busy CPU seconds, a timeline
    ``cpu`` of ``(monotonic s, machine busy s, {party: cpu s})`` (the cost model splits
    it along a job's phases: :func:`costmodel.cpu_terms`)."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids, self.peak = pids, {k: 0 for k in pids}
        self.parts: dict[str, dict] = {k: {} for k in pids}
        self.cpu: list = []
        self.stop = threading.Event()

    def cpu_sample(self) -> None:
        self.cpu.append((time.monotonic(), machine_busy(),
                         {k: tree_cpu(p) for k, p in self.pids.items()}))

    def cpu_since(self, t0: float, t1: float) -> dict:
        """The timeline between ``t0`` and ``t1`` (seconds from ``t0``), for the JSON."""
        rows = sorted((r for r in self.cpu if t0 - 0.5 <= r[0] <= t1 + 0.5), key=lambda r: r[0])
        return {"t": [round(r[0] - t0, 3) for r in rows], "t_done": round(t1 - t0, 3),
                **{k: [round(r[2][k], 2) for r in rows] for k in self.pids},
                "machine": [round(r[1], 2) for r in rows]}

    def reset(self) -> None:
        self.peak = {k: 0 for k in self.pids}
        self.parts = {k: {} for k in self.pids}

    def run(self):
        while not self.stop.wait(0.25):
            for k, pid in self.pids.items():
                m = tree_memory(pid)
                self.peak[k] = max(self.peak[k], m["rss"])
                self.parts[k] = {f: max(self.parts[k].get(f, 0), v) for f, v in m.items()}
            self.cpu_sample()


# ---------------------------------------------------------------- nodes and jobs
def psi_floor() -> dict:
    """bench/psi.py's PSI floor micro-benchmark (CPU time of this process, us per
    operation), measured in this run; loaded by path (bench/ first on sys.path would
    shadow the psi package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("psi_bench", ROOT / "bench" / "psi.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.measure_floor()


def write_nodes(root: Path, key_bits: int, keep_received: str = "full", n_cal: int = 1,
                default_limits: bool = False
                ) -> dict[str, Path]:
    from federation.keys import init_party_keys
    sys.path.insert(0, str(ROOT / "tests"))
    from support.nodes import _toml_value, free_port
    keys = {n: init_party_keys(n, root / "keys" / n) for n in ("bank-a", "platform-b")}
    ports = {n: free_port() for n in keys}
    out = {}
    for name, peer, party, ds in (("bank-a", "platform-b", "bank", "loans"),
                                  ("platform-b", "bank-a", "platform", "enterprises")):
        k, pk = keys[name], keys[peer]
        lines = ["[node]", f'party = "{party}"', f'name = "{name}"',
                 f'listen = "127.0.0.1:{ports[name]}"', f'data_dir = "{party}-data"', "",
                 "[keys]", *(f"{x} = {_toml_value(k[x])}"
                             for x in ("tls_key", "tls_cert", "signing_key")), "",
                 "[peer]", f'name = "{peer}"', f'address = "127.0.0.1:{ports[peer]}"',
                 f"cert = {_toml_value(pk['tls_cert'])}",
                 f'cert_fingerprint = "{pk["cert_fingerprint"]}"',
                 f"signing_public_key = {_toml_value(pk['signing_pub'])}", "",
                 ]
        for suffix in ("", *(f"_cal{i}" for i in range(n_cal))):
            lines += [f"[datasets.{ds}{suffix}]", f'path = "{party}{suffix}.csv"',
                      'id_column = "id"']
            if party == "bank":
                lines.append('label_column = "y"')
        lines += ["", "[policy]", 'allowed_algorithms = ["all"]',
                  f"allow_insecure_test_jobs = {'true' if key_bits < 2048 else 'false'}",
                  f"min_key_bits = {min(key_bits, 2048)}",
                  "psi_max_queries_per_job = 100000000" if party == "platform" else "",
                  "psi_max_queries_per_day = 100000000" if party == "platform" else "",
                  "", "[channel]", "deadline_s = 600.0", "connect_timeout_s = 30.0", "",
                  *([] if default_limits else ["[limits]", "max_message_bytes = 1073741824",
                                               "max_job_buffer_bytes = 4294967296", ""]),
                  "[transcript]", f'keep_received = "{keep_received}"', ""]
        out[party] = root / f"{party}.toml"
        out[party].write_text("\n".join(lines))
    return out


def run_job(client, name: str, algorithm: str, params: dict, key_bits: int,
            timeout: float, suffix: str = "") -> dict:
    from federation.config import job_spec_from_dict
    tables = {"job": {"name": name, "algorithm": algorithm, "dataset": "loans" + suffix,
                      "peer_dataset": "enterprises" + suffix}, "psi": {"id_type": "string"}}
    if algorithm != "psi":
        tables["params"] = params
        tables["evaluation"] = {"cipher": "paillier", "key_bits": key_bits,
                                "test_fraction": 0.2}
    spec = job_spec_from_dict(tables, name)
    job_id = client.call("submit", spec=spec.to_dict(), source=name)["job_id"]
    deadline = time.monotonic() + timeout
    while True:
        rec = client.call("status", job_id=job_id)
        if rec["state"] in ("done", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise SystemExit(f"job {name} stuck in {rec['state']}")
        time.sleep(0.2)
    if rec["state"] != "done":
        raise SystemExit(f"job {name} {rec['state']}: {rec.get('error')}")
    return rec


def transcript_bytes(path: str) -> dict:
    p = Path(path)
    wire = 0
    for line in p.read_text().splitlines():
        r = json.loads(line)
        if r.get("type") == "msg":
            wire += int(r["len"])
    side = p.with_name(p.name + ".recv")
    return {"wire": wire, "transcript": p.stat().st_size,
            "sidecar": side.stat().st_size if side.exists() else 0}


def write_data(root: Path, rows: int, suffix: str) -> None:
    t = time.perf_counter()
    bank, plat = generate(rows, seed=17 + len(suffix))
    bank.to_csv(root / f"bank{suffix}.csv", index=False)
    plat.to_csv(root / f"platform{suffix}.csv", index=False)
    print(f"{rows} rows generated in {time.perf_counter() - t:.1f} s: event rate "
          f"{bank['y'].mean():.3f}, missing {float(bank.iloc[:, 1:-1].isna().mean().mean()):.3f}"
          f" (bank) {float(plat.iloc[:, 1:].isna().mean().mean()):.3f} (platform)", flush=True)


def run_point(client_b, client_p, sampler, a, suffix: str, skip: set) -> dict:
    jobs = [("psi", "psi", {}, None),
            ("secureboost", "secureboost", {"n_trees": a.trees, "max_depth": a.depth,
                                            "max_bin": a.bins}, a.trees),
            ("lr", "logistic_regression", {"epochs": a.epochs, "batch_size": 0,
                                           "nan_policy": "median"}, a.epochs)]
    out = {}
    for name, alg, params, per in jobs:
        if name in skip:
            continue
        before = dict(sampler.peak)
        sampler.reset()
        t, load0 = time.perf_counter(), os.getloadavg()[0]
        sampler.cpu_sample()
        m0 = time.monotonic()
        rec = run_job(client_b, name + suffix, alg, params, a.key_bits, 6 * 3600, suffix)
        wall, m1 = time.perf_counter() - t, time.monotonic()
        sampler.cpu_sample()
        prec = client_p.call("status", job_id=rec["job_id"])
        for _ in range(240):        # the platform may still be finishing (its transcript)
            if prec.get("state") in ("done", "failed", "cancelled"):
                break
            time.sleep(0.5)
            prec = client_p.call("status", job_id=rec["job_id"])
        tim, ptim = rec.get("timings", {}), prec.get("timings", {})
        row = {"wall_s": wall, "psi_s": tim.get("psi"), "training_s": tim.get("training"),
               "intersection": ((rec.get("checkpoint") or {}).get("psi") or {}),
               "peak_rss": dict(sampler.peak), "peak_parts": dict(sampler.parts),
               "bank_t": tim, "plat_t": ptim, "load": [load0, os.getloadavg()[0]],
               "cpu_timeline": sampler.cpu_since(m0, m1),
               "bank": transcript_bytes(rec["artifacts"]["transcript"]),
               "platform": transcript_bytes(prec["artifacts"]["transcript"])}
        sampler.peak = {k: max(before[k], v) for k, v in sampler.peak.items()}
        if per:
            row["per_unit_s"] = (tim.get("training") or wall) / per
        out[name] = row
        unit = f"{row['per_unit_s']:.1f} s per {'tree' if name == 'secureboost' else 'epoch'}" \
            if per else f"psi {row['psi_s'] or 0:.1f} s"
        print(f"  {name}{suffix}: wall {wall:.1f} s, {unit}, peak RSS bank "
              f"{row['peak_rss']['bank'] / 2**20:.0f} MB / platform "
              f"{row['peak_rss']['platform'] / 2**20:.0f} MB, wire "
              f"{row['bank']['wire'] / 2**20:.1f} MB, transcript "
              f"{row['bank']['transcript'] / 2**10:.0f} / {row['platform']['transcript'] / 2**10:.0f}"
              f" KB, sidecar {row['bank']['sidecar'] / 2**20:.1f} / "
              f"{row['platform']['sidecar'] / 2**20:.1f} MB", flush=True)
        for party, m in row["peak_parts"].items():
            print(f"    {party} peaks (MB): PSS {m.get('pss', 0) / 2**20:.0f}, RSS by process: " +
                  ", ".join(f"{r} {m.get(r, 0) / 2**20:.0f}"
                            for r in ("daemon", "forkserver", "job", "workers")), flush=True)
    return out


def report_model(results: dict, points: list, main_pt: dict, a) -> None:
    """Fit the cost model on the calibration points and print its prediction for the
    measured point beside the measurement, with each term's: of the wall seconds, and
    of both parties' CPU seconds (the work, which the machine's load does not stretch)
    with the cores the jobs got."""
    fits = {}
    for kind in ("wall", "cpu"):
        try:
            fits[kind] = costmodel.fit(points, a.depth, a.bins, a.trees, a.epochs, kind,
                                       results.get("psi_floor_us"))
        except ValueError as exc:
            print(f"cost model ({kind}): not fitted ({exc}; give --cal-rows two sizes, "
                  "e.g. 10000,30000)")
            return
    results["units"], results["cpu_units"] = fits["wall"], fits["cpu"]
    cnt = costmodel.point_counts(main_pt, a.rows, a.depth, a.bins)
    results["predicted_terms"] = costmodel.predict_terms(fits["wall"], cnt)
    results["predicted"] = costmodel.totals(results["predicted_terms"])
    results["predicted_cpu"] = costmodel.totals(costmodel.predict_terms(fits["cpu"], cnt))
    for kind, u in fits.items():
        print(f"unit costs ({kind}) fitted at {a.cal_rows} rows (s, fixed + per unit): " +
              ", ".join(f"{k} {f:.3g} + {v:.3g}" for k, (f, v) in u.items()))
    loads = [(r, costmodel.mean_load(p)) for r, p in points] + \
        [(a.rows, costmodel.mean_load(main_pt))]
    print("1-minute load average during each point's jobs (a wall fit is only as good as "
          "their agreement): " + ", ".join(f"{r}: {v:.1f}" for r, v in loads))
    ar = vars(a)
    print("cores the jobs used (both parties' CPU s / wall s): " + "; ".join(
        f"{r}: " + ", ".join(f"{j} {v:.2f}" for j, v in costmodel.core_share(p, ar).items())
        for r, p in [*points, (a.rows, main_pt)]))
    print(f"cost model: prediction for {a.rows} rows (training rows {cnt['sb_rest']}) from "
          f"the fit at {a.cal_rows} rows, beside the measurement:")
    for kind in fits:
        costmodel.print_compare(a.rows, costmodel.compare(fits[kind], main_pt, a.rows, ar,
                                                          kind), kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true", help="100k rows, 1 tree, 1 epoch")
    ap.add_argument("--trees", type=int, default=2)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--bins", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--key-bits", type=int,
                    help="Paillier key bits (default 2048; 1024 with --quick)")
    ap.add_argument("--cal-rows", default="10000,30000",
                    help="calibration points (rows, comma-separated) the cost model is fitted on")
    ap.add_argument("--skip", default="", help="comma list of psi,secureboost,lr")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-received", default="full",
                    help='both nodes\' [transcript] keep_received ("digests": no sidecar left)')
    ap.add_argument("--default-limits", action="store_true",
                    help="both nodes with the default [limits] (else 1 GiB messages, 4 GiB "
                         "job buffers)")
    ap.add_argument("--keep-files", action="store_true",
                    help="keep the data, node directories and transcripts (default: deleted)")
    a = ap.parse_args()
    if a.quick:                     # test-size keys (1024 bits) to fit in minutes here
        a.rows, a.trees, a.epochs = 100_000, 1, 1
    a.key_bits = a.key_bits or (1024 if a.quick else 2048)   # an explicit --key-bits wins
    skip = set(filter(None, a.skip.split(",")))
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores; rows {a.rows} per "
          f"party, {BANK_F}+{PLAT_F} features, Paillier {a.key_bits}", flush=True)
    floor = psi_floor()
    print(f"PSI floor (CPU, this process): {costmodel.psi_floor_per_id(floor) * 1e6:.2f} us "
          "per ID (hash_to_curve + 2 X25519)", flush=True)
    root = Path(tempfile.mkdtemp(prefix="fedjoint-scale-"))
    write_data(root, a.rows, "")
    cal_rows = [int(x) for x in str(a.cal_rows).split(",")]
    for i, r in enumerate(cal_rows):
        write_data(root, r, f"_cal{i}")
    tomls = write_nodes(root, a.key_bits, a.keep_received, len(cal_rows), a.default_limits)
    procs = {p: subprocess.Popen([sys.executable, "-m", "federation.cli", "node", "start",
                                  "--config", str(tomls[p])], cwd=root,
                                 stdout=open(root / f"{p}.log", "wb"), stderr=subprocess.STDOUT)
             for p in tomls}
    sampler = RssSampler({p: procs[p].pid for p in procs})
    sampler.start()
    results: dict = {"rows": a.rows, "args": vars(a),
                     "load_before": os.getloadavg(), "psi_floor_us": floor}
    try:
        from federation.admin import AdminClient
        clients = {}
        for _ in range(120):
            try:
                clients = {p: AdminClient(root / f"{p}-data") for p in procs}
                clients["bank"].call("check")
                break
            except Exception:  # noqa: BLE001 - the node is still starting
                dead = [p for p, pr in procs.items() if pr.poll() is not None]
                if dead:
                    raise SystemExit(f"{dead[0]} node exited: "
                                     f"{(root / f'{dead[0]}.log').read_text()[-500:]}") from None
                clients = {}
                time.sleep(0.5)
        if not clients:
            raise SystemExit("the nodes did not come up in 60 s")
        results["idle_rss"] = {p: tree_rss(pr.pid) for p, pr in procs.items()}
        print("idle RSS (daemon, no job): " + ", ".join(
            f"{p} {v / 2**20:.0f} MB" for p, v in results["idle_rss"].items()), flush=True)
        points, cal = [], {}
        for i, r in enumerate(cal_rows):
            print(f"calibration point ({r} rows):", flush=True)
            cal[r] = run_point(clients["bank"], clients["platform"], sampler, a, f"_cal{i}",
                               skip)
            points.append((r, cal[r]))
        print(f"measured point ({a.rows} rows):", flush=True)
        main_pt = run_point(clients["bank"], clients["platform"], sampler, a, "", skip)
        results["calibration"], results["measured"] = cal, main_pt
        report_model(results, points, main_pt, a)
    finally:
        sampler.stop.set()
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    results["load_after"] = os.getloadavg()
    print(f"load average after: {results['load_after']} (one run per point: no median)")
    if a.keep_files:
        print(f"files kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
