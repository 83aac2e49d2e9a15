"""OU vs Paillier per core: the OU cipher, the Paillier engine and phe in one run.

2048-bit keys for all three (and SecretFlow HEU's OU and ZPaillier when ``sf-heu`` is
installed), one worker (figures are process + worker CPU seconds: per-core cost,
robust to a shared machine). Per operation and value:

* key-holder encryption of 40-bit integers (the bank encrypting gradients);
* public-key encryption (under the peer's key);
* decryption, per ciphertext and per value when packed (SecureBoost's bin sums), and
  the same decryption with the modexp forced to gmpy2 (``FEDJOINT_PAILLIER_MODEXP``);
* ciphertext + ciphertext;
* the ciphertext bytes on the wire.

    .venv/bin/python bench/ou.py [--quick] [--json PATH]
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

from secure_agg.cipher import CipherVector  # noqa: E402 (after the path set-up)
from secure_agg.native_mb import MODEXP_ENV, use_mb  # noqa: E402
from secure_agg.ou import OUPrivateCipher  # noqa: E402
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


def engine(cipher, n: int, repeats: int) -> dict:
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
    out["ciphertext_bytes"] = pub.ciphertext_bytes
    return out


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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    n = 500 if a.quick else 4000
    repeats = a.repeats or (1 if a.quick else 3)
    t = time.perf_counter()
    ou = OUPrivateCipher.generate(2048, rng=Drbg(bytes(32), "bench-ou"), workers=1)
    ou_keygen = time.perf_counter() - t
    t = time.perf_counter()
    pa = PaillierPrivateCipher.generate(2048, rng=Drbg(bytes(32), "bench-p"), workers=1)
    pa_keygen = time.perf_counter() - t
    res = {"ou": engine(ou, n, repeats), "paillier": engine(pa, n, repeats),
           "phe": phe_rates(max(50, n // 20), repeats), **heu_rates(max(100, n // 4), repeats),
           "keygen_s": {"ou": ou_keygen, "paillier": pa_keygen}, "values": n,
           "repeats": repeats, "loadavg": os.getloadavg()[0]}
    ops = ("keyholder_encrypt", "public_encrypt", "decrypt", "packed_decrypt_values", "add",
           "ciphertext_bytes")
    cols = [c for c in ("ou", "paillier", "phe", "heu_ou", "heu_zpaillier") if c in res]
    print(f"2048-bit keys, per core (ops per CPU second; medians of {repeats}); keygen "
          f"OU {ou_keygen:.2f} s, Paillier {pa_keygen:.2f} s; load {res['loadavg']:.2f}")
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
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
