"""Per-ID CPU cost of the PSI C extension's batch calls, optionally beside another build.

    .venv/bin/python bench/psi_native.py [--against OTHER.so] [--rounds 5] [--n 8192]
                                         [--scalar]

Measures, in CPU time of this process (the figure the load of a shared machine inflates
least), the calls a PSI worker makes per ID: ``hash_to_u_batch`` on packed 18-byte IDs,
``times8_witnessed`` (sender's witness), ``validate_witnessed`` (receiver's check) and
``check_points`` (curve check of a returned value), each on ``--n`` IDs or points. With
``--against`` the other build of ``psi/native/_psi_native`` (e.g. one compiled from an
earlier commit) is loaded in a child process and measured in alternation with this
tree's, and the ratios are printed. ``--scalar`` turns the AVX-512 IFMA code off in both.
Medians of ``--rounds`` rounds of 5 calls each. Local computation only.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CALLS = ("hash_to_u_batch", "times8_witnessed", "validate_witnessed", "check_points")


def measure(so: str, n: int, scalar: bool) -> dict:
    """One round: per-ID CPU microseconds of each call (median of 5 calls)."""
    import numpy as np
    sys.path.insert(0, ROOT)
    from psi.engine import x25519_many_openssl
    from psi.protocol import DEFAULT_DST
    spec = importlib.util.spec_from_file_location("psi.native._psi_native", so)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    ext.simd(not scalar)
    dst = DEFAULT_DST.encode()
    dst_prime = dst + bytes([len(dst)])
    ids = np.frombuffer(b"".join(f"9135{i:014d}".encode() for i in range(n)),
                        np.uint8).reshape(n, 18)
    us, _ = ext.hash_to_u_batch(ids, dst_prime, 18)
    w = x25519_many_openssl(os.urandom(32), us)
    wit = ext.times8_witnessed(w)
    args = {"hash_to_u_batch": (ids, dst_prime, 18), "times8_witnessed": (w,),
            "validate_witnessed": (wit, True), "check_points": (w,)}
    out = {}
    for name in CALLS:
        fn, a, runs = getattr(ext, name), args[name], []
        for _ in range(5):
            t = time.process_time()
            fn(*a)
            runs.append(time.process_time() - t)
        out[name] = statistics.median(runs) / n * 1e6
    return out


def _child(so: str, n: int, scalar: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", so, "--n", str(n)] + (["--scalar"] * scalar)
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", help="another build of _psi_native (.so) to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--scalar", action="store_true", help="without the AVX-512 IFMA code")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(a.child, a.n, a.scalar)))
        return
    sys.path.insert(0, ROOT)
    from psi.native import _psi_native
    builds = {"this tree": _psi_native.__file__}
    if a.against:
        builds["--against"] = os.path.abspath(a.against)
    res: dict = {k: [] for k in builds}
    for _ in range(a.rounds):  # alternate, so that both see the same load
        for k, so in builds.items():
            res[k].append(_child(so, a.n, a.scalar))
    print(f"per-ID CPU us, medians of {a.rounds} rounds, n={a.n}, "
          f"{'scalar C' if a.scalar else 'IFMA where the CPU has it'}; load "
          f"{os.getloadavg()[0]:.1f}")
    med = {k: {c: statistics.median(r[c] for r in v) for c in CALLS} for k, v in res.items()}
    for k in builds:
        med[k]["checks (last three)"] = sum(med[k][c] for c in CALLS[1:])
    print(f"{'call':24s}" + "".join(f"{k:>14s}" for k in builds) +
          ("   ratio" if a.against else ""))
    for c in med["this tree"]:
        row = f"{c:24s}" + "".join(f"{med[k][c]:14.3f}" for k in builds)
        if a.against:
            row += f"   {med['--against'][c] / med['this tree'][c]:.2f}x"
        print(row)


if __name__ == "__main__":
    main()
