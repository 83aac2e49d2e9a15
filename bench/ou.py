"""OU vs Paillier per core: the OU cipher, the Paillier engine and phe in one run.

2048-bit keys for all three (and SecretFlow HEU's OU and ZPaillier when ``sf-heu`` is
installed), one worker (figures are process + worker CPU seconds: per-core cost,
robust to a shared machine). Per operation and value:

* key-holder encryption of 40-bit integers (the bank encrypting gradients);
* public-key encryption (under the peer's key);
* decryption, per ciphertext and per value when packed (SecureBoost's bin sums), and
  the same decryption with the modexp forced to gmpy2 (``FEDJOINT_PAILLIER_MODEXP``);
* refresh (``rerandomize``, ``"djn_full"``: the SecureBoost / LR default; Paillier's
  ``"standard"`` beside it);
* ciphertext + ciphertext;
* the ciphertext bytes on the wire.

Then OU's obfuscators ``H^r`` per path, the engine's fixed-base tables against Intel's
8-lane modexp (``mbx_exp_mb8``) on the same draws, values checked equal: ``encrypt``'s
short ``r`` and the refresh's ``bits(n) + 128``-bit ``r``, public and key holder. The
library takes moduli of 1024/2048/3072/4096 bits and exponents no longer than the
modulus, so mb8 runs mod ``n``: the public refresh as ``H^lo`` on mb8 times
``(H^(2^bits(n)))^hi`` from a 128-bit table; the key holder reduces ``r`` mod
``lcm(p - 1, q - 1)`` (``H mod p^2`` has order dividing ``t | p - 1``); the key
holder's CRT tables run on reduced exponents (``r mod p - 1``, ``r mod q - 1``), timed
against the same tables on the whole ``r`` (the path before) and gmpy2.

    .venv/bin/python bench/ou.py [--quick] [--json PATH] [--count N] [--obfuscators-only]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import gmpy2  # noqa: E402 (after the path set-up)

from bench.paillier_mb import mb_pow  # noqa: E402
from secure_agg.cipher import CipherVector  # noqa: E402
from secure_agg.kernels import FixedBaseTable  # noqa: E402
from secure_agg.native_mb import MODEXP_ENV, exp_unavailable, use_mb  # noqa: E402
from secure_agg.ou import OUPrivateCipher  # noqa: E402
from secure_agg.ou_kernels import OUKernel  # noqa: E402
from secure_agg.paillier import PaillierPrivateCipher  # noqa: E402
from secure_agg.procpool import worker_cpu_seconds  # noqa: E402
from secure_agg.rng import Drbg  # noqa: E402

SLOT = 43   # SecureBoost's packed (g, h) slot at 100,000 rows (docs/paillier.md)


def _cpu() -> float:
    return time.process_time() + worker_cpu_seconds()


def rate(fn, count: int, repeats: int) -> float:
    """Median operations per CPU second."""
    times = []
    for _ in range(repeats):
        c0 = _cpu()
        fn()
        times.append(_cpu() - c0)
    return count / statistics.median(times)


def engine(cipher, n: int, repeats: int, standard: bool = False) -> dict:
    """Per-core rates of one of our ciphers."""
    pub = cipher.public()
    vals = [(i * 7919) % (1 << 40) for i in range(n)]
    cipher.encrypt(vals[:256], rng=Drbg(bytes(32), "warm"))   # tables
    pub.encrypt(vals[:256], rng=Drbg(bytes(32), "warm"))
    out = {"keyholder_encrypt": rate(lambda: cipher.encrypt(vals, rng=Drbg(bytes(32), "e")),
                                     n, repeats),
           "public_encrypt": rate(lambda: pub.encrypt(vals, rng=Drbg(bytes(32), "p")),
                                  n, repeats)}
    enc = cipher.encrypt(vals, rng=Drbg(bytes(32), "d"))
    m = min(n, 2000)
    sub = CipherVector(enc.key_id, enc.data[:m], enc.bound_bits)
    out["decrypt"] = rate(lambda: cipher.decrypt(sub), m, repeats)
    saved = os.environ.get(MODEXP_ENV)
    os.environ[MODEXP_ENV] = "gmpy2"   # the reference: the same decryption on gmpy2 only
    try:
        out["decrypt_gmpy2"] = rate(lambda: cipher.decrypt(sub), m, repeats)
    finally:
        if saved is None:
            os.environ.pop(MODEXP_ENV)
        else:
            os.environ[MODEXP_ENV] = saved
    out["modexp_mb8"] = use_mb(int(cipher.n).bit_length())
    per = cipher.capacity_bits // SLOT
    small = cipher.encrypt([v % (1 << 30) for v in vals[:per * 40]], rng=Drbg(bytes(32), "s"))
    packed = cipher.pack(small, SLOT, per)
    out["packed_decrypt_values"] = rate(lambda: cipher.decrypt_packed(packed, SLOT, per),
                                        per * 40, repeats)
    out["values_per_packed_ciphertext"] = per
    out["add"] = rate(lambda: pub.add(enc, enc), n, repeats)
    r = min(n, 500)
    sub = CipherVector(enc.key_id, enc.data[:r], enc.bound_bits)
    out["refresh"] = rate(lambda: pub.rerandomize(sub, rng=Drbg(bytes(32), "r"),
                                                  obfuscation="djn_full"), r, repeats)
    if standard:   # Paillier's r^n (OU's "standard" is djn_full)
        out["refresh_standard"] = rate(lambda: pub.rerandomize(sub, rng=Drbg(bytes(32), "r")),
                                       r, repeats)
    out["ciphertext_bytes"] = pub.ciphertext_bytes
    return out


def obfuscators(cipher: OUPrivateCipher, count: int, repeats: int) -> list[tuple]:
    """OU's ``H^r`` per path: (path, reference, ms, candidate, ms), ms per obfuscator
    (process CPU, median of ``repeats``); every candidate equals its reference."""
    pk, sk = cipher.public_key, cipher.private_key
    n, h, p, q = gmpy2.mpz(pk.n), gmpy2.mpz(pk.h), sk.p, sk.q
    nb, psq = int(n.bit_length()), p * p
    pub, prv = OUKernel(n, pk.g, h), OUKernel(n, pk.g, h, (p, q))
    rng = Drbg(bytes(32), "bench-obf")
    short = [rng.randbits(pub.exp_bits("djn")) for _ in range(count)]
    full = [rng.randbits(pub.exp_bits("djn_full")) for _ in range(count)]
    for k in (pub, prv):  # tables (built once per key and process) outside the timing
        k.obfuscate(short[:8], "djn")
        k.obfuscate(full[:8], "djn_full")
    prv.obfuscate(short[:8], "djn", 12)
    mb = not exp_unavailable(nb)
    rows = []

    def row(name, ref, cands):
        """Reference and candidates interleaved in each repeat (load drifts)."""
        fns = [ref[1]] + [fn for _, fn in cands]
        cpu = [[] for _ in fns]
        for _ in range(repeats):
            outs = []
            for i, fn in enumerate(fns):
                c0 = time.process_time()
                outs.append(fn())
                cpu[i].append(time.process_time() - c0)
            for (cname, _), got in zip(cands, outs[1:], strict=True):
                assert got == outs[0], f"{name}: {cname} differs from {ref[0]}"
        ms = [statistics.median(c) / count * 1e3 for c in cpu]
        rows.extend((name, ref[0], ms[0], cname, m) for (cname, _), m in
                    zip(cands, ms[1:], strict=True))

    def mb_n(exps, bits):
        return mb_pow([h] * len(exps), exps, [n] * len(exps), bits, nb)

    row("public djn (encrypt)", ("table 8-bit", lambda: pub.obfuscate(short, "djn")),
        [("mb8 mod n", lambda: mb_n(short, pub.exp_bits("djn")))] if mb else [])
    row("key holder djn (CRT)", ("table 8-bit", lambda: prv.obfuscate(short, "djn")),
        [("table 12-bit", lambda: prv.obfuscate(short, "djn", 12))] +
        ([("mb8 mod n", lambda: mb_n(short, pub.exp_bits("djn")))] if mb else []))
    h_hi = FixedBaseTable(gmpy2.powmod(h, 1 << nb, n), n, pub.exp_bits("djn_full") - nb)
    mask = (1 << nb) - 1

    def mb_full():
        lo = mb_n([r & mask for r in full], nb)
        return [a * b % n for a, b in zip(lo, h_hi.pow_many([r >> nb for r in full]),
                                          strict=True)]

    row("public refresh (djn_full)", ("table 8-bit", lambda: pub.obfuscate(full, "djn_full")),
        [("mb8 lo + table hi", mb_full)] if mb else [])
    small_p = gmpy2.powmod(h % psq, p - 1, psq) == 1   # true for every valid key
    lam = gmpy2.lcm(p - 1 if small_p else p * (p - 1), q - 1)
    fbits = pub.exp_bits("djn_full")
    tp, tq = FixedBaseTable(h % psq, psq, fbits), FixedBaseTable(h % q, q, fbits)
    cands = [("engine: r reduced", lambda: prv.obfuscate(full, "djn_full")),
             ("gmpy2 powmod mod n", lambda: [gmpy2.powmod(h, r, n) for r in full])]
    if mb:
        cands.append(("mb8 mod n, r reduced",
                      lambda: mb_n([r % lam for r in full], int(lam.bit_length()))))
    row("key holder refresh (CRT)", ("tables, r whole", lambda: prv._combine(
        [tp.pow_many(full), tq.pow_many(full)])), cands)
    return rows


def phe_rates(n: int, repeats: int) -> dict:
    from phe import paillier
    pk, sk = paillier.generate_paillier_keypair(n_length=2048)
    vals = list(range(n))
    enc = [pk.encrypt(v) for v in vals]
    return {"keyholder_encrypt": rate(lambda: [pk.encrypt(v) for v in vals], n, repeats),
            "public_encrypt": rate(lambda: [pk.encrypt(v) for v in vals], n, repeats),
            "decrypt": rate(lambda: [sk.decrypt(c) for c in enc], n, repeats),
            "add": rate(lambda: [a + a for a in enc], n, repeats),
            "ciphertext_bytes": 512}


def heu_rates(n: int, repeats: int) -> dict:
    try:
        from heu import phe as hphe
    except ImportError:
        return {}
    out, vals = {}, list(range(n))
    for name, schema in (("heu_ou", hphe.SchemaType.OU), ("heu_zpaillier",
                                                           hphe.SchemaType.ZPaillier)):
        kit = hphe.setup(schema, 2048)
        enc, dec, ev = kit.encryptor(), kit.decryptor(), kit.evaluator()
        cts = [enc.encrypt_raw(v) for v in vals]
        out[name] = {"public_encrypt": rate(lambda e=enc: [e.encrypt_raw(v) for v in vals],
                                            n, repeats),
                     "decrypt": rate(lambda d=dec, c=cts: [d.decrypt_raw(x) for x in c],
                                     n, repeats),
                     "add": rate(lambda e=ev, c=cts: [e.add(x, x) for x in c], n, repeats)}
    return out


def print_rates(res: dict, repeats: int) -> None:
    ops = ("keyholder_encrypt", "public_encrypt", "decrypt", "packed_decrypt_values",
           "refresh", "add", "ciphertext_bytes")
    cols = [c for c in ("ou", "paillier", "phe", "heu_ou", "heu_zpaillier") if c in res]
    ks = res["keygen_s"]
    print(f"2048-bit keys, per core (ops per CPU second; medians of {repeats}); keygen "
          f"OU {ks['ou']:.2f} s, Paillier {ks['paillier']:.2f} s; load {res['loadavg']:.2f}")
    print(f"{'operation':24s}" + "".join(f"{c:>15s}" for c in cols) + f"{'OU/Paillier':>13s}")
    for op in ops:
        row = [res[c].get(op) for c in cols]
        ratio = res["ou"][op] / res["paillier"][op]
        print(f"{op:24s}" + "".join(f"{'-':>15s}" if v is None else f"{v:15,.0f}"
                                    for v in row) + f"{ratio:13.2f}")
    for c in ("ou", "paillier"):
        r = res[c]
        print(f"{c} decryption: {r['decrypt']:,.0f}/s ({'mb8' if r['modexp_mb8'] else 'gmpy2'}"
              f" modexp, picked at runtime) vs {r['decrypt_gmpy2']:,.0f}/s on gmpy2 only: "
              f"{r['decrypt'] / r['decrypt_gmpy2']:.2f}x")
    print(f"packed: {res['ou']['values_per_packed_ciphertext']} (OU) vs "
          f"{res['paillier']['values_per_packed_ciphertext']} (Paillier) {SLOT}-bit slots "
          f"per ciphertext")
    print(f"refresh: OU djn_full {res['ou']['refresh']:,.0f}/s vs Paillier djn_full "
          f"{res['paillier']['refresh']:,.0f}/s and standard (r^n) "
          f"{res['paillier']['refresh_standard']:,.0f}/s")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--count", type=int, default=None, help="obfuscators per path")
    ap.add_argument("--obfuscators-only", action="store_true",
                    help="only OU's obfuscators: tables vs mb8 (no engine rates)")
    a = ap.parse_args(argv)
    n = 500 if a.quick else 4000
    repeats = a.repeats or (1 if a.quick else 3)
    t = time.perf_counter()
    ou = OUPrivateCipher.generate(2048, rng=Drbg(bytes(32), "bench-ou"), workers=1)
    res: dict = {"keygen_s": {"ou": time.perf_counter() - t}, "values": n,
                 "repeats": repeats, "loadavg": os.getloadavg()[0]}
    if not a.obfuscators_only:
        t = time.perf_counter()
        pa = PaillierPrivateCipher.generate(2048, rng=Drbg(bytes(32), "bench-p"), workers=1)
        res["keygen_s"]["paillier"] = time.perf_counter() - t
        res.update(ou=engine(ou, n, repeats), paillier=engine(pa, n, repeats, standard=True),
                   phe=phe_rates(max(50, n // 20), repeats),
                   **heu_rates(max(100, n // 4), repeats))
        print_rates(res, repeats)
    nb = int(ou.n.bit_length())
    why = exp_unavailable(nb)
    obf = obfuscators(ou, a.count or (64 if a.quick else 512), repeats)
    res["obfuscators_ms"] = [dict(zip(("path", "reference", "ref_ms", "candidate", "ms"), r,
                                      strict=True)) for r in obf]
    print(f"\nOU obfuscators H^r, {nb}-bit key, ms per obfuscator (one core, median of "
          f"{repeats}; mb8 {'available' if not why else 'UNAVAILABLE: ' + why}; load "
          f"{os.getloadavg()[0]:.1f})")
    print(f"{'path':28} {'reference':15} {'ref ms':>8}  {'candidate':22} {'ms':>8} "
          f"{'speedup':>8}")
    for name, rn, rms, cn, cms in obf:
        print(f"{name:28} {rn:15} {rms:8.3f}  {cn:22} {cms:8.3f} {rms / cms:7.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
