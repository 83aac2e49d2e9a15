"""Cost of rotating the unbalanced-PSI key: re-encrypting the platform's OPRF cache,
against the X25519 floor measured in the same run.

    .venv/bin/python bench/psi_rotate.py --n 1000000 --workers 2 --json out.json

Builds a cache of ``--n`` IDs (once, not timed as rotation), then times
:meth:`psi.cache.KeyStore.rotate` (``--repeat`` rotations: one X25519 of the cached
value by ``clamp(k')/clamp(k) mod L`` per ID with a curve check, re-sort, write) as wall
time and CPU seconds (this process and its worker processes, from ``getrusage``), and
checks a sample of the re-encrypted values against hashing those IDs afresh under the
new key. Floor: one X25519 per ID through the backend this process runs
(``psi.engine.x25519_many``: multi-buffer where available, see docs/psi.md) and, for
reference, OpenSSL's (``cryptography`` ``exchange`` incl. ``from_public_bytes``), single
core, measured here before the rotations; the rebuild it replaces (hash_to_curve +
X25519 + [64]) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def floor_us(n: int = 20000) -> dict:
    from psi import native
    from psi.engine import task_hash_blind_times64, x25519_many, x25519_many_openssl
    from psi.protocol import DEFAULT_DST
    dst = DEFAULT_DST.encode()
    k = os.urandom(32)
    blob = x25519_many_openssl(k, bytes([9]) + bytes(31)) * n  # a valid point, n times
    out = {"backend": str(native.x25519_backend()[0])}
    for name, fn in (("x25519_us", x25519_many), ("openssl_x25519_us", x25519_many_openssl)):
        t = time.process_time()
        fn(os.urandom(32), blob)
        out[name] = round((time.process_time() - t) / n * 1e6, 2)
    ids = [f"ent-{i}".encode() for i in range(n // 4)]
    t = time.process_time()
    task_hash_blind_times64(ids, dst, k)
    rebuild = (time.process_time() - t) / len(ids) * 1e6
    return {**out, "rebuild_us": round(rebuild, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    from psi.cache import KeyStore, OprfCache
    from psi.engine import task_hash_blind_times64
    from psi.protocol import PsiParams, prepare_platform_cache
    fl = floor_us()
    ids = [f"ent-{i:09d}" for i in range(a.n)]
    with tempfile.TemporaryDirectory() as tmp:
        p = PsiParams(mode="unbalanced", id_type="string", key_dir=f"{tmp}/k",
                      cache_dir=f"{tmp}/c")
        t = time.perf_counter()
        cache = prepare_platform_cache(ids, p, "bank", workers=a.workers)
        build_s = time.perf_counter() - t
        digest, nv = cache.meta["dataset_digest"], cache.meta["norm_version"]
        del cache
        keys, runs = KeyStore(p.key_dir), []
        for _ in range(a.repeat):
            c0, t0 = _cpu(), time.perf_counter()
            rot = keys.rotate("bank", p.cache_dir, workers=a.workers)
            runs.append((time.perf_counter() - t0, _cpu() - c0))
            assert rot.n_ids == a.n
        key = keys.oprf_key("bank")
        got = OprfCache.lookup(p.cache_dir, "bank", key, digest, nv, p.dst)
        sample = list(range(0, a.n, max(1, a.n // 1000)))
        rows = [int(got.rows[i]) for i in sample]
        ref = task_hash_blind_times64([ids[r].encode() for r in rows], p.dst.encode(), key)
        ok = ref == b"".join(bytes(got.full[i]) for i in sample)
    wall = statistics.median(r[0] for r in runs)
    cpu = statistics.median(r[1] for r in runs)
    per = cpu / a.n * 1e6
    out = {"n": a.n, "workers": a.workers, "repeat": a.repeat, "build_s": round(build_s, 2),
           "rotate_wall_s": round(wall, 2), "rotate_cpu_s": round(cpu, 2),
           "rotate_wall_s_per_1M": round(wall / a.n * 1e6, 2),
           "rotate_cpu_us_per_id": round(per, 2), **fl,
           "ratio_to_x25519_floor": round(per / fl["x25519_us"], 2),
           "sample_matches_fresh_hash": ok, "load": os.getloadavg()[0]}
    print(f"cache of {a.n:,} IDs built in {build_s:.1f} s ({a.workers} workers)")
    print(f"rotation (median of {a.repeat}): {wall:.2f} s wall, {cpu:.2f} s CPU = "
          f"{per:.2f} us/ID; per 1M IDs {out['rotate_wall_s_per_1M']:.2f} s wall")
    print(f"floor, same run: X25519 ({fl['backend']}) {fl['x25519_us']:.2f} us/op -> ratio "
          f"{per / fl['x25519_us']:.2f}; OpenSSL X25519 {fl['openssl_x25519_us']:.2f} us/op; "
          f"a rebuild (hash + X25519 + [64]) costs {fl['rebuild_us']:.2f} us/ID")
    print(f"sample of 1000 re-encrypted values equal to fresh hashing: {ok}; "
          f"load average {out['load']:.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
