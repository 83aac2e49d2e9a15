"""SecureBoost benchmark: seconds per tree on default_credit, beside XGBoost.

default_credit (30,000 rows; bank 13 features + label, platform 10 features), Paillier
2048-bit keys, max_bin 32, depth 5. Both parties run in **separate processes** talking
over the real mTLS gRPC channel on loopback (``--link tls``, default) or in one process
over the in-memory link (``--link local``). Prints median seconds per tree and where the
time goes (bank encryption, platform histograms, packing + refresh, bank decryption,
waiting/network), and XGBoost's time for the same trees on the joined plaintext.

In the same run (``--classes K``, default 4; 0 skips it) a ``multi:softprob`` job on a
K-class label derived from default_credit (the label and quantiles of one bank plus one
platform column) trains ``--rounds`` rounds of K class trees, each row's K gradient
pairs in one ciphertext: seconds per class tree beside the binary figure, and XGBoost's
multiclass seconds per tree.

    .venv/bin/python bench/secureboost.py [--quick] [--trees N] [--classes K] [--json PATH]
    .venv/bin/python bench/secureboost.py --cipher ou   # plain, Paillier and OU, one run

``--cipher ou`` trains the same binary trees with the plain cipher, Paillier and OU
(same key size) one after another in this run: OU's s/tree as a ratio of Paillier's,
CPU seconds per tree of both parties, and whether each train AUC equals the plain
cipher's (the multiclass job is skipped).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT / "tests" / "data"

from parties import registry  # noqa: E402 (after the path set-up)
from parties.common.role import PartyData, insecure_test_policy  # noqa: E402

BENCH_POLICY = insecure_test_policy()   # bench keys may be test sizes (--key-bits)


def typed(params: dict):
    return registry.get("secureboost").parse_params(params, "bench params")


def load(rows: int | None, classes: int = 0):
    """default_credit's halves; ``classes`` K > 0: a K-class label instead of y (y
    crossed with the K/2-quantiles of one bank and one platform column)."""
    import pandas as pd
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv")
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv")
    if rows:
        g, h = g[:rows], h[:rows]
    y = g.y.values.astype(float)
    if classes:
        s = g.iloc[:, 2].values + h.iloc[:, 1].values
        half = max(1, classes // 2)
        q = np.digitize(s, np.quantile(s, np.arange(1, half) / half)) if half > 1 else 0
        y = np.minimum(y * half + q, classes - 1).astype(float)
    return (g.drop(columns=["id", "y"]).values, y,
            h.drop(columns=["id"]).values, list(g.columns[2:]), list(h.columns[1:]))


def _bank_data(Xb, nb, y, params) -> PartyData:
    k = 0 if not params.get("objective", "").startswith("multi:") else int(y.max()) + 1
    return PartyData(Xb, nb, y=y, classes=list(range(k)) if k else None)


def _train_auc(metrics: dict) -> float:
    return metrics["train"]["auc"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu() -> float:
    """CPU seconds of this party: its own process plus its worker processes
    (background obfuscator workers included)."""
    from secure_agg.procpool import worker_cpu_seconds
    return time.process_time() + worker_cpu_seconds()


def make_cipher(kind: str, bits: int, workers: int):
    """The bank's private cipher of ``kind`` ("paillier", "ou" or "plain")."""
    from secure_agg.keypolicy import private_cipher
    return private_cipher(kind, bits, workers=workers, insecure_test_key=bits < 2048)


def _party(role, keys, ports, params, rows, bits, workers, out_q, profile=None,
           kind="paillier"):
    if profile:  # cProfile of this party's main process (worker processes not included)
        import cProfile
        prof = cProfile.Profile()
        try:
            return prof.runcall(_party, role, keys, ports, params, rows, bits, workers,
                                out_q, None, kind)
        finally:
            prof.dump_stats(str(Path(profile) / f"{role}.prof"))
    from federation.channel.peer import PeerChannel
    from federation.channel.testing import identities
    from federation.link import ProtocolContext
    from secure_agg.rng import Drbg
    me, peer = (keys[0], keys[1]) if role == "bank" else (keys[1], keys[0])
    local, pinned = identities(me, peer)
    my_port, peer_port = (ports[0], ports[1]) if role == "bank" else (ports[1], ports[0])
    chan = PeerChannel(local, pinned, f"127.0.0.1:{my_port}",
                       f"127.0.0.1:{peer_port}").start()
    try:
        link = chan.link("bench-sb")
        ctx = ProtocolContext(link, "bench-sb", Drbg.fresh(role), workers=workers)
        Xb, y, Xp, nb, npf = load(rows, params.get("num_class", 0))
        if role == "bank":
            from parties.bank import secureboost as bank
            t = time.perf_counter()
            cipher = make_cipher(kind, bits, workers)
            keygen = time.perf_counter() - t
            out = bank.train(ctx, _bank_data(Xb, nb, y, params), typed(params), cipher,
                             BENCH_POLICY)
            out_q.put({"role": role, "keygen": keygen, "timings": out.timings,
                       "cpu": _cpu(),
                       "history": [{k: h[k] for k in ("tree", "seconds", "n_leaves")}
                                   for h in out.history],
                       "auc": _train_auc(out.metrics)})
        else:
            from parties.provincial_platform import secureboost as plat
            out = plat.train(ctx, PartyData(Xp, npf), typed(params), None, BENCH_POLICY)
            out_q.put({"role": role, "timings": out.timings, "cpu": _cpu()})
        try:
            link.flush(30)
        except Exception:  # noqa: BLE001
            pass
    finally:
        time.sleep(0.5)
        chan.stop(0.5)


def run_tls(params, rows, bits, workers, profile=None, kind="paillier"):
    from federation.channel.testing import make_keys
    with tempfile.TemporaryDirectory() as d:
        keys = [make_keys(d, "bank"), make_keys(d, "platform")]
        ports = [_free_port(), _free_port()]
        ctxm = mp.get_context("spawn")
        q = ctxm.Queue()
        procs = [ctxm.Process(target=_party, args=(r, keys, ports, params, rows, bits,
                                                   workers, q, profile, kind))
                 for r in ("bank", "platform")]
        for p in procs:
            p.start()
        res = {}
        for _ in procs:
            r = q.get(timeout=3600)
            res[r["role"]] = r
        for p in procs:
            p.join(60)
        return res


def run_local(params, rows, bits, workers, kind="paillier"):
    from federation.link import ProtocolContext, local_link_pair, run_two_parties
    from parties.bank import secureboost as bank
    from parties.provincial_platform import secureboost as plat
    from secure_agg.rng import Drbg
    Xb, y, Xp, nb, npf = load(rows, params.get("num_class", 0))
    a, b, _ = local_link_pair("bench-sb")
    t = time.perf_counter()
    cipher = make_cipher(kind, bits, workers)
    keygen = time.perf_counter() - t
    ob, op = run_two_parties(
        lambda: bank.train(ProtocolContext(a, "b", Drbg.fresh("b"), workers=workers),
                           _bank_data(Xb, nb, y, params), typed(params), cipher,
                           BENCH_POLICY),
        lambda: plat.train(ProtocolContext(b, "b", Drbg.fresh("p"), workers=workers),
                           PartyData(Xp, npf), typed(params), None, BENCH_POLICY),
        timeout=7200)
    return {"bank": {"keygen": keygen, "timings": ob.timings, "auc": _train_auc(ob.metrics),
                     "history": [{k: h[k] for k in ("tree", "seconds", "n_leaves")}
                                 for h in ob.history]},
            "platform": {"timings": op.timings}}


def xgb_time(params, rows):
    """XGBoost's seconds per tree for the same job (multiclass: per class tree)."""
    import xgboost as xgb
    k = params.get("num_class", 0)
    Xb, y, Xp, _, _ = load(rows, k)
    X = np.hstack([Xb, Xp])
    d = xgb.DMatrix(X, y)
    extra = {"objective": "multi:softprob", "num_class": k} if k else \
        {"objective": "binary:logistic"}
    t = time.perf_counter()
    xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                   max_depth=params["max_depth"], eta=0.3, nthread=1, **extra),
              d, params["n_trees"])
    return (time.perf_counter() - t) / (params["n_trees"] * max(k, 1))


def run(a, params, kind="paillier"):
    if a.link == "tls":
        return run_tls(params, a.rows, a.bits, a.workers, a.profile, kind)
    return run_local(params, a.rows, a.bits, a.workers, kind)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 trees instead of 20")
    ap.add_argument("--trees", type=int, default=None)
    ap.add_argument("--rows", type=int, default=None, help="subsample rows (default all)")
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=1, help="threads per party")
    ap.add_argument("--link", choices=("tls", "local"), default="tls")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--profile", type=str, default=None,
                    help="directory for cProfile stats of each party (tls link)")
    ap.add_argument("--classes", type=int, default=4,
                    help="K of the multiclass job run after the binary one (0: none)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds of the multiclass job (default max(1, trees // 4))")
    ap.add_argument("--cipher", choices=("paillier", "ou"), default="paillier",
                    help="ou: train with plain, Paillier and OU in this run and compare")
    a = ap.parse_args(argv)
    trees = a.trees or (3 if a.quick else 20)
    params = dict(n_trees=trees, max_depth=5, max_bin=32, learning_rate=0.3)
    if a.cipher == "ou":
        out = compare_ciphers(a, params)
        if a.json:
            Path(a.json).write_text(json.dumps(out, indent=2))
        return out
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = run(a, params)
    wall = time.perf_counter() - t0
    bt, pt = res["bank"]["timings"], res["platform"]["timings"]
    per_tree = [h["seconds"] for h in res["bank"]["history"]]
    med = statistics.median(per_tree)
    total = sum(per_tree)
    shares = {
        "bank_encrypt": bt.get("encrypt", 0.0),
        "platform_histograms": pt.get("histograms", 0.0),
        "platform_pack": pt.get("pack", 0.0),
        "platform_refresh": pt.get("rerandomize", 0.0),
        "bank_decrypt": bt.get("decrypt", 0.0) + bt.get("unpack", 0.0),
        "bank_local_splits": bt.get("bank_local", 0.0),
    }
    busy = sum(shares.values())
    shares["network_and_idle(approx)"] = max(0.0, 2 * total - busy)
    xt = xgb_time(params, a.rows)
    out = {"dataset": "default_credit", "rows": a.rows or 30000, "trees": trees,
           "key_bits": a.bits, "max_bin": 32, "max_depth": 5, "link": a.link,
           "workers_per_party": a.workers, "cpus": os.cpu_count(),
           "median_seconds_per_tree": med, "mean_seconds_per_tree": total / trees,
           "per_tree": per_tree, "xgboost_seconds_per_tree": xt,
           "ratio_vs_xgboost": med / xt if xt else None,
           "component_seconds_total": shares, "train_auc": res["bank"]["auc"],
           "keygen_seconds": res["bank"]["keygen"], "wall_seconds": wall,
           "cpu_seconds": {r: res[r].get("cpu") for r in ("bank", "platform")},
           "load_avg_before": load0, "load_avg_after": os.getloadavg()}
    print(f"SecureBoost default_credit {out['rows']}x(13+10), {a.bits}-bit Paillier, "
          f"depth 5, 32 bins, {trees} trees, link={a.link}, workers/party={a.workers}")
    print(f"{'':34s}{'fedjoint':>12s}{'xgboost':>12s}")
    print(f"{'median s/tree':34s}{med:12.2f}{xt:12.4f}")
    print("where the time goes (seconds over all trees; parties run concurrently):")
    for k, v in shares.items():
        print(f"  {k:32s}{v:10.2f}  ({v / max(2 * total, 1e-9):5.1%} of 2 x wall)")
    print(f"train AUC {out['train_auc']:.4f}")
    obf = {k[len("obf_chunks_"):]: int(v) for k, v in bt.items() if k.startswith("obf_chunks_")}
    if obf:
        print(f"bank obfuscator chunks by who computed them: {obf}")
    cpu = out["cpu_seconds"]
    if cpu.get("bank") is not None:
        print(f"CPU seconds (process + workers, incl. keygen/setup): bank {cpu['bank']:.1f}, "
              f"platform {cpu['platform']:.1f}; {(cpu['bank'] + cpu['platform']) / wall:.2f}"
              f" cores busy on average over {wall:.0f} s wall")
    print(f"load average before {load0[0]:.2f}, after {out['load_avg_after'][0]:.2f} "
          f"(1 min; this machine has {os.cpu_count()} cores)")
    if a.classes:
        out["multiclass"] = _multiclass(a, trees, med, out["xgboost_seconds_per_tree"])
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return out


def compare_ciphers(a, params) -> dict:
    """The same binary trees under plain, Paillier and OU, one after another."""
    runs = {}
    for kind in ("plain", "paillier", "ou"):
        load0 = os.getloadavg()[0]
        res = run(a, params, kind)
        per_tree = [h["seconds"] for h in res["bank"]["history"]]
        cpu = {r: res[r].get("cpu") for r in ("bank", "platform")}
        runs[kind] = {"median_seconds_per_tree": statistics.median(per_tree),
                      "per_tree": per_tree, "train_auc": res["bank"]["auc"],
                      "cpu_seconds": cpu, "load_avg_before": load0,
                      "timings": {r: res[r]["timings"] for r in ("bank", "platform")}}
    plain_auc = runs["plain"]["train_auc"]
    print(f"SecureBoost default_credit {a.rows or 30000} rows, {a.bits}-bit keys, depth 5, "
          f"32 bins, {params['n_trees']} trees, link={a.link}, workers/party={a.workers}")
    print(f"{'cipher':10s}{'median s/tree':>15s}{'CPU s (b+p)':>13s}{'train AUC':>12s}"
          f"{'= plain':>9s}{'load':>7s}")
    for kind, r in runs.items():
        r["auc_equals_plain"] = r["train_auc"] == plain_auc
        c = r["cpu_seconds"]
        cs = (c["bank"] or 0) + (c["platform"] or 0)
        print(f"{kind:10s}{r['median_seconds_per_tree']:15.2f}{cs:13.1f}"
              f"{r['train_auc']:12.6f}{str(r['auc_equals_plain']):>9s}"
              f"{r['load_avg_before']:7.2f}")
    pai, ou = runs["paillier"], runs["ou"]
    ratio = ou["median_seconds_per_tree"] / pai["median_seconds_per_tree"]
    cpu_ratio = (sum(v or 0 for v in ou["cpu_seconds"].values())
                 / max(sum(v or 0 for v in pai["cpu_seconds"].values()), 1e-9))
    print(f"OU / Paillier (same run): s/tree {ratio:.3f}, CPU seconds {cpu_ratio:.3f}")
    return {"runs": runs, "ou_over_paillier_s_per_tree": ratio,
            "ou_over_paillier_cpu": cpu_ratio}


def _multiclass(a, trees: int, binary_med: float, binary_xgb: float) -> dict:
    """The K-class job of the same run: seconds per round and per class tree."""
    K = a.classes
    rounds = a.rounds or max(1, trees // 4)
    params = dict(n_trees=rounds, max_depth=5, max_bin=32, learning_rate=0.3,
                  objective="multi:softprob", num_class=K)
    t0 = time.perf_counter()
    res = run(a, params)
    wall = time.perf_counter() - t0
    per_round = [h["seconds"] for h in res["bank"]["history"]]
    med = statistics.median(per_round)
    bt, pt = res["bank"]["timings"], res["platform"]["timings"]
    xt = xgb_time(params, a.rows)
    out = {"classes": K, "rounds": rounds, "median_seconds_per_round": med,
           "median_seconds_per_class_tree": med / K, "per_round": per_round,
           "xgboost_seconds_per_class_tree": xt,
           "ratio_vs_binary_tree": med / K / binary_med if binary_med else None,
           "ratio_vs_xgboost": med / K / xt if xt else None,
           "bank_encrypt": bt.get("encrypt", 0.0),
           "bank_decrypt": bt.get("decrypt", 0.0) + bt.get("unpack", 0.0),
           "platform_histograms": pt.get("histograms", 0.0),
           "platform_pack_and_mask": pt.get("pack", 0.0),
           "platform_refresh": pt.get("rerandomize", 0.0),
           "train_auc_macro": res["bank"]["auc"], "wall_seconds": wall}
    print(f"multi:softprob K={K}, {rounds} round(s) of {K} class trees, same data and "
          "settings (one encryption per row per round):")
    print(f"{'':34s}{'fedjoint':>12s}{'xgboost':>12s}")
    print(f"{'median s/class tree':34s}{med / K:12.2f}{xt:12.4f}")
    print(f"{'binary s/tree (above)':34s}{binary_med:12.2f}{binary_xgb:12.4f}")
    print(f"  class tree / binary tree {out['ratio_vs_binary_tree']:.2f}x; s/round {med:.2f}; "
          f"bank encrypt {out['bank_encrypt']:.1f} s, decrypt {out['bank_decrypt']:.1f} s, "
          f"platform histograms {out['platform_histograms']:.1f} s, pack+mask "
          f"{out['platform_pack_and_mask']:.1f} s, refresh {out['platform_refresh']:.1f} s "
          f"(over all rounds); train macro AUC {out['train_auc_macro']:.4f}")
    return out


if __name__ == "__main__":
    main()
