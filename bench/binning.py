"""Federated binning benchmark: seconds per ``binning`` job (both roles over an in-memory
link pair that encodes every message as the wire does; 2048-bit Paillier by default),
printed beside the plaintext computation of the same tables on the joined data in the
same run (``parties.common.woe.bin_column`` per column: the floor) and the ratio.

    .venv/bin/python bench/binning.py --json out.json             # 30,000 x 10, 3 repeats
    .venv/bin/python bench/binning.py --rows 5000 --repeats 1     # quick

Synthetic data: 10 platform columns (one with 10% missing), 2 bank columns, labels from
a logistic model of both. Reported: median job seconds, the bank's encryption share,
median plaintext seconds, ratio, and whether both give the same tables.
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

from federation.link import ProtocolContext, local_link_pair, run_two_parties  # noqa: E402
from parties import registry  # noqa: E402
from parties.common import woe  # noqa: E402
from parties.common.role import PartyData, insecure_test_policy  # noqa: E402
from secure_agg.paillier import PaillierPrivateCipher  # noqa: E402
from secure_agg.rng import Drbg  # noqa: E402


def make_data(rows: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    xp, xb = rng.normal(size=(rows, 10)), rng.normal(size=(rows, 2))
    logit = -1.5 + 0.8 * xp[:, 0] - 0.5 * xp[:, 1] + 0.3 * xp[:, 2] ** 2 + 0.6 * xb[:, 0]
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    xp[rng.random(rows) < 0.1, 3] = np.nan
    return xb, xp, y


def one_job(algo, params, cipher, xb, xp, y):
    a, b, _ = local_link_pair("bench")
    cb = ProtocolContext(a, "bench", Drbg(os.urandom(32), "bank"))
    cp = ProtocolContext(b, "bench", Drbg(os.urandom(32), "platform"))
    bank = PartyData(xb, ["b0", "b1"], y=y)
    plat = PartyData(xp, [f"p{j}" for j in range(xp.shape[1])])
    pol = insecure_test_policy()
    t = time.perf_counter()
    ob, _ = run_two_parties(lambda: algo.bank.train(cb, bank, params, cipher, pol),
                            lambda: algo.platform.train(cp, plat, params, None, pol),
                            timeout=3600)
    return time.perf_counter() - t, ob


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--method", default="monotonic")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    algo = registry.get("binning")
    params = algo.parse_params({"method": args.method}, "bench")
    xb, xp, y = make_data(args.rows)
    cipher = PaillierPrivateCipher.generate(args.key_bits)
    t = time.perf_counter()
    cipher.encrypt(y.astype(np.int64), bound_bits=1)
    enc_s = time.perf_counter() - t
    jobs, plain, same = [], [], True
    for _ in range(args.repeats):
        s, ob = one_job(algo, params, cipher, xb, xp, y)
        jobs.append(s)
        t = time.perf_counter()
        ref = {f"p{j}": woe.bin_column(xp[:, j], y, params, f"p{j}") for j in range(10)}
        plain.append(time.perf_counter() - t)
        got = sorted(round(v["iv"], 12) for v in ob.model.body["platform_tables"].values())
        same &= got == sorted(round(v["iv"], 12) for v in ref.values())
    out = {"rows": args.rows, "platform_columns": 10, "key_bits": args.key_bits,
           "method": args.method, "job_s_median": statistics.median(jobs),
           "job_s": jobs, "label_encryption_s": enc_s,
           "plaintext_s_median": statistics.median(plain),
           "ratio": statistics.median(jobs) / statistics.median(plain),
           "same_iv_as_plaintext": same}
    print("| rows | cols | key | job s (median) | encrypt y s | plaintext s | ratio | same IV |")
    print(f"| {args.rows} | 10 | {args.key_bits} | {out['job_s_median']:.2f} | {enc_s:.2f} | "
          f"{out['plaintext_s_median']:.3f} | {out['ratio']:.0f}x | {same} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)


if __name__ == "__main__":
    main()
