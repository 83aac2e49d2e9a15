"""PSI benchmark: two party nodes as separate OS processes over real gRPC + mTLS on
127.0.0.1, on this machine's cores, against the physical floor measured in the same run.

    .venv/bin/python bench/psi.py --quick --json out.json
    .venv/bin/python bench/psi.py --json out.json          # 1M x 1M; 10M cached vs 100k
    .venv/bin/python bench/psi.py --only balanced --fallback   # + the fallback paths

Reported per configuration (median over --repeat runs):
  wall seconds (slowest node, including worker-pool start), peak RSS per node (main
  process and its worker processes), per-ID cost = wall x cores / (n_bank + n_platform)
  next to the floor = 2 X25519 per ID (each ID is blinded by its owner and by the peer)
  and floor + hash_to_curve, with the compute path the nodes run (psi/native: X25519
  multi-buffer or OpenSSL, field code C or Python), all measured in this process
  before the runs, as CPU time (other load on the machine does not inflate it). The
  floor uses the fastest X25519 available here; OpenSSL's and the pure-Python hash are
  printed beside it. No other system's figure is printed: a
  reference must be measured in the same run (quoted figures live in docs/psi.md,
  labelled as quoted).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# fallback compute paths for --fallback (psi/native's environment switches)
FALLBACKS = {"openssl+c": {"FEDJOINT_PSI_BACKEND": "openssl", "FEDJOINT_PSI_NATIVE": "scalar"},
             "openssl+python": {"FEDJOINT_PSI_BACKEND": "openssl", "FEDJOINT_PSI_NATIVE": "off"}}


def make_ids(lo: int, hi: int, seed: int) -> list[str]:
    from psi.ids import uscc_check_char
    ids = [f"913{i:014d}" for i in range(lo, hi)]
    ids = [b + uscc_check_char(b) for b in ids]
    random.Random(seed).shuffle(ids)
    return ids


def measure_floor(n: int = 4000) -> dict:
    import nacl.bindings as sodium
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    from psi import native
    from psi.engine import (
        times8_witnessed,
        validate_points,
        validate_witnessed,
        x25519_many,
    )
    from psi.hash_to_curve import hash_to_u_batch, hash_to_u_batch_py
    from psi.protocol import DEFAULT_DST
    ids = [f"9135{i:014d}".encode() for i in range(n)]
    dst = DEFAULT_DST.encode()
    t = time.process_time()
    us = hash_to_u_batch(ids, dst)
    h2c = (time.process_time() - t) / n
    t = time.process_time()
    hash_to_u_batch_py(ids[:n // 4], dst)
    h2c_py = (time.process_time() - t) / (n // 4)
    scalar = os.urandom(32)
    t = time.process_time()
    x25519_many(scalar, us)  # the backend psi.native picked (multi-buffer or OpenSSL)
    x_backend = (time.process_time() - t) / n
    pts = [us[i:i + 32] for i in range(0, len(us), 32)]
    priv = X25519PrivateKey.from_private_bytes(os.urandom(32))
    pubs = [X25519PublicKey.from_public_bytes(p) for p in pts]
    t = time.process_time()
    blinded = [priv.exchange(q) for q in pubs]
    x25519 = (time.process_time() - t) / n
    t = time.process_time()
    for p in pts:
        sodium.crypto_scalarmult(b"\x01" * 32, p)
    sodium_x = (time.process_time() - t) / n
    s = sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))
    ed = [sodium.crypto_scalarmult_ed25519_base_noclamp(
        sodium.crypto_core_ed25519_scalar_reduce(os.urandom(64))) for _ in range(n // 4)]
    t = time.process_time()
    for p in ed:
        sodium.crypto_scalarmult_ed25519_noclamp(s, p)
    ed_noclamp = (time.process_time() - t) / len(ed)
    blob = b"".join(blinded)
    t = time.process_time()
    validate_points(blob, check_subgroup=False)
    v_curve = (time.process_time() - t) / n
    t = time.process_time()
    validate_points(blob, check_subgroup=True)
    v_full = (time.process_time() - t) / n
    t = time.process_time()
    wit = times8_witnessed(blob)
    w_make = (time.process_time() - t) / n
    t = time.process_time()
    validate_witnessed(wit, check_subgroup=True)
    w_check = (time.process_time() - t) / n
    return {k: round(v * 1e6, 2) for k, v in {
        f"x25519_{native.x25519_backend()[0]}_batch_us": x_backend,
        "hash_to_curve_python_us": h2c_py, "witness_make_us": w_make, "validate_curve_subgroup_witness_us": w_check,
        "x25519_openssl_us": x25519, "x25519_libsodium_us": sodium_x,
        "ed25519_noclamp_libsodium_us": ed_noclamp, "hash_to_curve_us": h2c,
        "validate_curve_us": v_curve, "validate_curve_subgroup_libsodium_us": v_full}.items()}


def _cpu_s() -> tuple[float, float]:
    """CPU seconds (user + sys) of this process and of its reaped children (workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _rss_mb() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(own, 1), round(kids, 1)


def node_main(role: str, keys: dict, conn, cfg: dict) -> None:
    """One party node: own process, own gRPC server/client, own worker pool."""
    try:
        from federation.channel.testing import process_side
        from federation.link import ProtocolContext
        from psi.protocol import PsiParams, prepare_platform_cache, run_psi
        from secure_agg.rng import Drbg
        chan = process_side(role, keys, conn)
        chan.settings.peer_deadline = cfg["peer_deadline"]
        lo, hi = cfg["ranges"][role]
        ids = make_ids(lo, hi, seed=1 if role == "bank" else 2)
        base = cfg["dir"] if role == "platform" else cfg["tmp"]   # the bank starts cold
        params = PsiParams(mode=cfg["mode"], check_subgroup=cfg["check_subgroup"],
                           key_dir=base + f"/{role}/keys",
                           cache_dir=base + f"/{role}/cache", timeout=3600)
        out: dict = {}
        if cfg["mode"] == "unbalanced" and role == "platform":
            t = time.perf_counter()
            prepare_platform_cache(ids, params, "bank", workers=cfg["workers"])
            out["cache_build_s"] = round(time.perf_counter() - t, 2)
        conn.send("ready")
        runs = []
        for r in range(cfg["jobs"]):
            assert conn.recv() == "go"
            job = f"psi-bench-{r}"
            link = chan.link(job)
            ctx = ProtocolContext(link, job, Drbg(os.urandom(32)), workers=cfg["workers"])
            t = time.perf_counter()
            c0 = _cpu_s()
            prof = None
            if cfg.get("profile"):  # the node's main process only (workers: cpu_workers_s)
                import cProfile
                prof = cProfile.Profile()
                prof.enable()
            res = run_psi(ctx, role, ids, params)
            if prof is not None:
                prof.disable()
                prof.dump_stats(os.path.join(cfg["profile"], f"{role}-{r}.prof"))
            wall = time.perf_counter() - t
            c1 = _cpu_s()
            link.close()
            digest = hashlib.sha256("\n".join(ids[i] for i in res.indices).encode()).hexdigest()
            runs.append({"wall_s": round(wall, 3), "size": res.size, "digest": digest,
                         "cpu_main_s": round(c1[0] - c0[0], 2),
                         "cpu_workers_s": round(c1[1] - c0[1], 2), "stats": res.stats})
            conn.send("done")
        out["runs"] = runs
        out["rss_main_mb"], out["rss_workers_mb"] = _rss_mb()
        chan.stop(1)
        conn.send(out)
    except BaseException as exc:  # report to the parent
        import traceback
        conn.send({"error": f"{role}: {exc!r}\n{traceback.format_exc()}"})


def run_config(cfg: dict) -> dict:
    from federation.channel.testing import spawn_process_pair
    with tempfile.TemporaryDirectory() as tmp:
        d = tmp
        if cfg.get("keep_dir"):   # the platform's key store and cache: a later run reuses them
            d = os.path.join(cfg["keep_dir"], f"{cfg['mode']}-{cfg['ranges']['platform'][1]}")
            os.makedirs(d, mode=0o700, exist_ok=True)
        cfg = dict(cfg, dir=d, tmp=tmp)
        procs, pipes = spawn_process_pair(node_main, cfg, tmp + "/tls")
        walls = []
        for _ in range(cfg["jobs"]):
            t = time.perf_counter()
            for r in pipes:
                pipes[r].send("go")
            for r in pipes:
                msg = pipes[r].recv()
                if msg != "done":
                    raise RuntimeError(msg["error"])
            walls.append(time.perf_counter() - t)
        res = {r: pipes[r].recv() for r in pipes}
        for p in procs.values():
            p.join(30)
        for r in res.values():
            if "error" in r:
                raise RuntimeError(r["error"])
    for b, p in zip(res["bank"]["runs"], res["platform"]["runs"], strict=True):
        if b["size"] != cfg["expect"] or p["size"] != cfg["expect"] or b["digest"] != p["digest"]:
            raise AssertionError(f"wrong PSI result: {b['size']} / {p['size']} "
                                 f"(expected {cfg['expect']}) or order mismatch")
    return {"walls": [round(w, 3) for w in walls], "nodes": res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (minutes, not hours)")
    ap.add_argument("--json", help="write results to this path")
    ap.add_argument("--repeat", type=int, default=1, help="runs per config (median reported)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", choices=["balanced", "unbalanced"], default=None)
    ap.add_argument("--platform-n", default=None,
                    help="unbalanced: platform set size(s), comma-separated, each its own "
                    "config in this run (default 10M, 1M with --quick)")
    ap.add_argument("--balanced-n", type=int, default=None,
                    help="balanced: IDs per side (default 1M, 100k with --quick)")
    ap.add_argument("--fallback", action="store_true",
                    help="also run balanced on the fallback paths (references in the same "
                    "run): OpenSSL X25519 + scalar C, and OpenSSL + pure Python")
    ap.add_argument("--profile", metavar="DIR",
                    help="cProfile each node's main process during run_psi: DIR/<role>-<job>.prof")
    ap.add_argument("--keep-dir", metavar="DIR",
                    help="unbalanced: keep the platform's key store and OPRF cache under "
                    "DIR (a later run with the same sizes skips the build)")
    ap.add_argument("--peer-deadline", type=float, default=10.0,
                    help="seconds of peer silence before a job fails (the channel's "
                    "default 10; more on a loaded machine)")
    ap.add_argument("--no-subgroup-check", action="store_true",
                    help="also run balanced without the prime-order subgroup check")
    a = ap.parse_args()
    cores = os.cpu_count() or 1
    nb = 100_000 if a.quick else 1_000_000
    nu_plat, nu_bank = (1_000_000, 100_000) if a.quick else (10_000_000, 100_000)
    plat_ns = [int(v) for v in a.platform_n.split(",")] if a.platform_n else [nu_plat]
    if a.balanced_n:
        nb = a.balanced_n
    from psi import native
    path = native.describe()
    floor = measure_floor()
    print(f"machine: {cores} cores; compute path: X25519 {path['x25519']}, field code "
          f"{path['field']} (AVX-512 IFMA: {path['cpu_avx512ifma']}); floor measured "
          "here (single core, one shot, CPU time of this process):")
    for k, v in floor.items():
        print(f"  {k:40s} {v:8.2f} us")
    xo = floor["x25519_openssl_us"]
    x = min(xo, floor.get("x25519_mb_batch_us", xo))
    print(f"  X25519 OpenSSL vs libsodium ed25519_noclamp (incl. its subgroup check): "
          f"{floor['ed25519_noclamp_libsodium_us'] / xo:.2f}x faster; vs libsodium X25519: "
          f"{floor['x25519_libsodium_us'] / xo:.2f}x; multi-buffer vs OpenSSL: "
          f"{xo / x:.2f}x")
    results: dict = {"floor_us": floor, "cores": cores, "channel": "grpc+mTLS loopback",
                     "compute_path": path, "quick": a.quick, "configs": []}
    configs = []
    if a.only in (None, "balanced"):
        configs.append(("balanced", nb, nb, True, ""))
        if a.no_subgroup_check:
            configs.append(("balanced", nb, nb, False, ""))
        if a.fallback:
            configs += [("balanced", nb, nb, True, p) for p in FALLBACKS]
    if a.only in (None, "unbalanced"):
        configs += [("unbalanced", nu_bank, n, True, "") for n in plat_ns]
    print(f"\n{'config':44s} {'wall s':>8s} {'per-ID us':>10s} {'floor us':>9s} "
          f"{'+h2c us':>8s} {'RSS MB bank/plat (main+workers)':>34s}")
    fast = None  # (wall, CPU) of the default balanced run, for the fallback ratios
    for mode, n_bank, n_plat, sub, fallback in configs:
        if mode == "balanced":
            ranges = {"bank": (0, n_bank), "platform": (n_bank // 2, n_bank // 2 + n_plat)}
            expect = n_bank // 2
        else:  # bank: half inside the platform's set
            ranges = {"bank": (n_plat - n_bank // 2, n_plat + n_bank // 2),
                      "platform": (0, n_plat)}
            expect = n_bank // 2
        jobs = a.repeat if mode == "balanced" else 1 + a.repeat  # first = cold peer-set
        cfg = {"mode": mode, "ranges": ranges, "expect": expect, "check_subgroup": sub,
               "workers": a.workers, "jobs": jobs, "profile": a.profile,
               "keep_dir": a.keep_dir, "peer_deadline": a.peer_deadline}
        saved = {k: os.environ.get(k) for k in FALLBACKS.get(fallback, {})}
        os.environ.update(FALLBACKS.get(fallback, {}))  # the node processes inherit it
        t = time.perf_counter()
        try:
            r = run_config(cfg)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k)
                else:
                    os.environ[k] = v
        total = time.perf_counter() - t
        bank, plat = r["nodes"]["bank"], r["nodes"]["platform"]
        per_job = [max(b["wall_s"], p["wall_s"]) for b, p in zip(bank["runs"], plat["runs"],
                                                                 strict=True)]
        rss = (f"{bank['rss_main_mb']:.0f}+{bank['rss_workers_mb']:.0f} / "
               f"{plat['rss_main_mb']:.0f}+{plat['rss_workers_mb']:.0f}")
        cpu = [b["cpu_main_s"] + b["cpu_workers_s"] + p["cpu_main_s"] + p["cpu_workers_s"]
               for b, p in zip(bank["runs"], plat["runs"], strict=True)]
        cpu_split = [f"bank {b['cpu_main_s']:.1f}+{b['cpu_workers_s']:.1f}, platform "
                     f"{p['cpu_main_s']:.1f}+{p['cpu_workers_s']:.1f}"
                     for b, p in zip(bank["runs"], plat["runs"], strict=True)]
        entry = {"mode": mode, "path": fallback or "default", "n_bank": n_bank, "n_platform": n_plat, "check_subgroup": sub,
                 "job_walls_s": per_job, "rss": rss, "bench_total_s": round(total, 1),
                 "job_cpu_s": [round(c, 1) for c in cpu], "job_cpu_split_main_workers":
                 cpu_split,
                 "bank_stats": [x["stats"] for x in bank["runs"]],
                 "platform_stats": [x["stats"] for x in plat["runs"]]}
        if mode == "balanced":
            med = statistics.median(per_job)
            per_id = med * cores / (n_bank + n_plat) * 1e6
            fl = 2 * x
            label = f"balanced {n_bank:,}x{n_plat:,} subgroup={sub}" + \
                (f" [{fallback}]" if fallback else "")
            print(f"{label:44s} {med:8.2f} {per_id:10.2f} {fl:9.2f} "
                  f"{fl + floor['hash_to_curve_us']:8.2f} {rss:>34s}")
            fl_h = fl + floor["hash_to_curve_us"]
            entry.update(median_wall_s=med, per_id_us=round(per_id, 2), floor_per_id_us=fl,
                         floor_h2c_per_id_us=round(fl_h, 2),
                         ratio_to_floor=round(per_id / fl_h, 2),
                         floor_wall_s=round(fl_h * (n_bank + n_plat) / cores / 1e6, 2))
            print(f"  per-ID cost {per_id / fl_h:.2f}x the floor (2 X25519 + hash_to_curve = "
                  f"{fl_h:.2f} us; {entry['floor_wall_s']:.1f} s of wall on {cores} cores)")
            cmed = statistics.median(cpu)
            print(f"  CPU of both nodes (main+workers): {cmed:.1f} s = "
                  f"{cmed / (n_bank + n_plat) * 1e6:.1f} us/ID ({cpu_split[0]}); "
                  f"{cmed / cores:.1f} s if the {cores} cores were ours alone")
            entry.update(cpu_s=cmed, cpu_per_id_us=round(cmed / (n_bank + n_plat) * 1e6, 2))
            if not fallback and sub:
                fast = (med, cmed)
            elif fallback and fast:
                print(f"  the default path is {med / fast[0]:.2f}x faster (wall), "
                      f"{cmed / fast[1]:.2f}x (CPU) than {fallback}, same run")
                entry.update(default_speedup_wall=round(med / fast[0], 2),
                             default_speedup_cpu=round(cmed / fast[1], 2))
            print(f"  CPU per ID {cmed / (n_bank + n_plat) * 1e6 / fl_h:.2f}x the floor")
        else:
            build = plat.get("cache_build_s")
            cold, warm = per_job[0], per_job[1:]
            med = statistics.median(warm)
            per_id = med * cores / n_bank * 1e6
            fl = 3 * x  # bank blind + platform eval + bank unblind
            label = f"unbalanced online {n_bank:,} vs {n_plat:,} cached"
            print(f"{label:44s} {med:8.2f} {per_id:10.2f} {fl:9.2f} "
                  f"{fl + floor['hash_to_curve_us']:8.2f} {rss:>34s}")
            cw = statistics.median(cpu[1:])
            print(f"  online CPU of both nodes: {cw:.1f} s = {cw / n_bank * 1e6:.1f} us per bank "
                  f"ID ({cpu_split[-1]})")
            entry.update(online_cpu_s=cw)
            print(f"  one-off platform cache build for {n_plat:,}: {build} s; first online job "
                  f"(bank fetches {n_plat * 8 / 2**20:.0f} MiB truncated set): {cold:.2f} s")
            entry.update(median_online_s=med, cold_online_s=cold, cache_build_s=build,
                         per_id_us=round(per_id, 2), floor_per_id_us=fl)
        results["configs"].append(entry)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2, default=str)
        print(f"\nwrote {a.json}")


if __name__ == "__main__":
    main()
