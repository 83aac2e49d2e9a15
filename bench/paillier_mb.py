"""Multi-buffer modexp (libcrypto_mb ``mbx_exp_mb8``) vs the engine's obfuscator paths.

    .venv/bin/python bench/paillier_mb.py [--bits 2048] [--count 512] [--repeats 3]

Per obfuscator, single core (process CPU time, medians over ``--repeats``), same key,
same draws, same run, results checked equal:

* key holder, ``djn`` (1024-bit exponents mod p^2 and q^2, CRT): the engine's
  fixed-base tables (8-bit windows as ``encrypt``, 12-bit as precomputed batches) vs
  mb8 (two 8-lane modexps per 8 obfuscators) vs gmpy2 ``powmod``;
* refresh ``standard`` (``r^n mod n^2``): the engine with
  ``FEDJOINT_PAILLIER_MODEXP=gmpy2`` vs ``=mb``;
* refresh ``djn_full`` (2176-bit exponents mod n^2): the n^2 table vs mb8;
* key holder ``standard`` (``r^(n mod p(p-1)) mod p^2`` and q^2, CRT): the same;
* key holder CRT decryption (``c^(p-1) mod p^2`` and q^2): the same.

Table build time is printed separately (built once per key and process).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import gmpy2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from secure_agg import native_mb  # noqa: E402
from secure_agg.kernels import PrivateKernel, PublicKernel, crt_decrypt  # noqa: E402
from secure_agg.keys import generate_keypair  # noqa: E402
from secure_agg.rng import Drbg  # noqa: E402


def timed(fn, repeats: int):
    cpu, out = [], None
    for _ in range(repeats):
        c0 = time.process_time()
        out = fn()
        cpu.append(time.process_time() - c0)
    return statistics.median(cpu), out


def mb_pow(bases, exps, mods, exp_bits, mod_bits):
    """``b^e mod m`` per element, 8 lanes per call (the tail padded)."""
    f = native_mb.Exp8(mod_bits, exp_bits)
    out = []
    for s in range(0, len(bases), 8):
        k = min(8, len(bases) - s)
        pad = 8 - k
        out.extend(f(list(bases[s:s + 8]) + [1] * pad, list(exps[s:s + 8]) + [0] * pad,
                     list(mods[s:s + 8]) + [mods[s]] * pad)[:k])
    return out


def engine(mode: str, method, kernel, draws):
    """The engine's ``standard`` obfuscators with ``FEDJOINT_PAILLIER_MODEXP=mode``."""
    old = os.environ.get(native_mb.MODEXP_ENV)
    os.environ[native_mb.MODEXP_ENV] = mode
    try:
        return method(kernel, draws, "standard")
    finally:
        if old is None:
            os.environ.pop(native_mb.MODEXP_ENV)
        else:
            os.environ[native_mb.MODEXP_ENV] = old


def dec(kernel, args, _scheme):
    cts, hp, hq, piq = args
    return crt_decrypt(cts, kernel.n, kernel.p, kernel.q, hp, hq, piq)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bits", type=int, default=2048)
    ap.add_argument("--count", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    why = native_mb.exp_unavailable(2 * args.bits)
    print(f"mbx_exp_mb8: {'available' if not why else 'UNAVAILABLE: ' + why}")
    rng = Drbg(bytes(32), "bench-mb")
    pub, sk = generate_keypair(bits=args.bits, rng=rng.child("key"))
    k = PrivateKernel(pub.n, sk.p, sk.q)
    n, psq, qsq, nsq = k.n, k.psquare, k.qsquare, k.nsquare
    cnt, rep = args.count, args.repeats
    ebits = k.djn_exponent_bits
    alphas = [rng.randbits(ebits) for _ in range(cnt)]
    rows = []

    def row(name, ref_name, ref_s, cand):
        for cname, s in cand:
            rows.append((name, ref_name, ref_s / cnt * 1e3, cname, s / cnt * 1e3, ref_s / s))

    def crt(a, b):
        cinv = k.qsq_inv_psq
        return [y + qsq * ((x - y) * cinv % psq) for x, y in zip(a, b, strict=True)]

    t0 = time.process_time()
    k.crt_tables(ebits, 8)
    t8 = time.process_time() - t0
    t0 = time.process_time()
    k.crt_tables(ebits, 12)
    t12 = time.process_time() - t0
    print(f"table build (CPU s, both primes): 8-bit {t8:.2f}, 12-bit {t12:.2f}")
    s8, r8 = timed(lambda: k.obfuscate(alphas, "djn", 8), rep)
    s12, r12 = timed(lambda: k.obfuscate(alphas, "djn", 12), rep)
    hp, hq = k.h_s % psq, k.h_s % qsq
    sg, rg = timed(lambda: crt([gmpy2.powmod(hp, a, psq) for a in alphas],
                               [gmpy2.powmod(hq, a, qsq) for a in alphas]), rep)
    cand = [("fixed-base 12-bit", s12), ("gmpy2 powmod", sg)]
    if not why:
        sm, rm = timed(lambda: crt(mb_pow([hp] * cnt, alphas, [psq] * cnt, ebits,
                                          psq.bit_length()),
                                   mb_pow([hq] * cnt, alphas, [qsq] * cnt, ebits,
                                          qsq.bit_length())), rep)
        assert rm == r8, "mb8 djn differs"
        cand.append(("mb8", sm))
    assert r8 == r12 == rg
    row("key holder djn", "fixed-base 8-bit", s8, cand)

    units = [int(x) for x in _units(rng, cnt, n)]
    ss, rs = timed(lambda: engine("gmpy2", PublicKernel.obfuscate, k, units), rep)
    cand = []
    if not why:
        sm, rm = timed(lambda: engine("mb", PublicKernel.obfuscate, k, units), rep)
        assert rm == rs, "mb8 standard differs"
        cand.append(("mb8 (engine)", sm))
    row("refresh standard (mod n^2)", "gmpy2 (engine)", ss, cand)

    fbits = k.exp_bits("djn_full")
    full = [rng.randbits(fbits) for _ in range(cnt)]
    t0 = time.process_time()
    k.table(fbits, 8)
    print(f"table build (CPU s, n^2, {fbits}-bit exponents): {time.process_time() - t0:.2f}")
    sf, rf = timed(lambda: PublicKernel.obfuscate(k, full, "djn_full"), rep)
    cand = []
    if not why:
        sm, rm = timed(lambda: mb_pow([k.h_s] * cnt, full, [nsq] * cnt, fbits,
                                      nsq.bit_length()), rep)
        assert rm == rf, "mb8 djn_full differs"
        cand.append(("mb8", sm))
    row("refresh djn_full (mod n^2)", "fixed-base 8-bit", sf, cand)

    sks, rks = timed(lambda: engine("gmpy2", PrivateKernel.obfuscate, k, units), rep)
    cand = []
    if not why:
        sm, rm = timed(lambda: engine("mb", PrivateKernel.obfuscate, k, units), rep)
        assert rm == rks, "mb8 key-holder standard differs"
        cand.append(("mb8 (engine)", sm))
    row("key holder standard (CRT)", "gmpy2 (engine)", sks, cand)

    cts = k.encrypt(list(range(cnt)), units, "standard")
    hp_, hq_, piq = sk.hp, sk.hq, sk.p_inv_q
    sd, rd = timed(lambda: engine("gmpy2", dec, k, (cts, hp_, hq_, piq)), rep)
    cand = []
    if not why:
        sm, rm = timed(lambda: engine("mb", dec, k, (cts, hp_, hq_, piq)), rep)
        assert rm == rd == list(range(cnt)), "mb8 decryption differs"
        cand.append(("mb8 (engine)", sm))
    row("key holder decrypt (CRT)", "gmpy2 (engine)", sd, cand)

    print(f"\n{args.bits}-bit key, {cnt} obfuscators, median of {rep}, ms per obfuscator "
          "(one core)")
    print(f"{'path':28} {'reference':18} {'ref ms':>8}  {'candidate':18} {'ms':>8} "
          f"{'speedup':>8}")
    for name, rn, rms, cn, cms, ratio in rows:
        print(f"{name:28} {rn:18} {rms:8.3f}  {cn:18} {cms:8.3f} {ratio:7.2f}x")


def _units(rng, count, n):
    out = []
    while len(out) < count:
        r = rng.randbelow(n)
        if r > 1 and gmpy2.gcd(r, n) == 1:
            out.append(r)
    return out


if __name__ == "__main__":
    main()
