"""Memory and time of loading a party's dataset, beside pandas in the same run.

Each party's file of ``bench/scale.py``'s synthetic pair (string ids, float features,
5-20 % blank cells; the bank 30 features + label, the platform 70) is loaded in a fresh
Python process per reader, and the reader's peak RSS above the process's RSS after its
imports is reported (VmRSS sampled every 2 ms), with the wall time:

- ``chunked``: ``federation.data.load_dataset`` (Arrow batches of
  ``limits.read_chunk_rows`` rows, straight to float64; federation.data_source);
- ``whole-table``: the loader before chunking, still the fallback for CSV rows of the
  wrong width: pandas reads every cell as a string, then the same checks;
- ``pandas float``: the reference, ``pandas.read_csv(path)`` with its own float
  parsing (no fedjoint checks, no missing-value tokens) and ``to_numpy(float64)``.

It also prints the per-row costs a job adds after loading (bytes per row, measured):
the float64 matrix, an id as a Python str, one Paillier ciphertext as the platform holds
it (gmpy2.mpz in a list) at 1024 and 2048 bits.

    .venv/bin/python bench/data_load.py --rows 100000
    .venv/bin/python bench/data_load.py --rows 1000000 --json load-1m.json
    .venv/bin/python bench/data_load.py --data DIR    # DIR: bench/scale.py --keep-files
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, os, sys, threading, time
from pathlib import Path
import numpy as np, pandas as pd
from federation.config import DatasetConfig
from federation.data import _read, load_dataset
reader, path, label, chunk = sys.argv[1], Path(sys.argv[2]), sys.argv[3] or None, int(sys.argv[4])
ds = DatasetConfig("d", path, "id", label)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * page
base, peak, done = rss(), [0], threading.Event()
def sample():
    while not done.wait(0.002):
        peak[0] = max(peak[0], rss())
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
if reader == "chunked":
    d = load_dataset(ds, chunk_rows=chunk); X = d.X
elif reader == "whole-table":
    from dataclasses import replace
    d = load_dataset(replace(ds, frame=_read(path))); X = d.X
else:
    df = pd.read_csv(path); X = df.drop(columns=[c for c in ("id", label) if c]).to_numpy(np.float64)
wall = time.perf_counter() - t
done.set()
print(json.dumps({"peak": max(peak[0], rss()) - base, "base": base, "wall": wall, "x_bytes": X.nbytes,
                  "rows": X.shape[0], "features": X.shape[1]}))
"""

READERS = ("chunked", "whole-table", "pandas float")


def measure(path: Path, label: str, chunk: int) -> dict:
    out = {}
    for reader in READERS:
        r = subprocess.run([sys.executable, "-c", CHILD, reader, str(path), label, str(chunk)],
                           capture_output=True, text=True, cwd=ROOT)
        if r.returncode:
            raise SystemExit(f"{reader} on {path.name} failed: {r.stderr[-800:]}")
        out[reader] = json.loads(r.stdout)
    return out


def row_costs() -> dict:
    """Bytes per row of what a job holds after loading (measured on this Python)."""
    import gmpy2
    from phe import paillier
    out = {"id (Python str + list slot)": sys.getsizeof("9131" + "X" * 14) + 8}
    for bits in (1024, 2048):
        pub, _ = paillier.generate_paillier_keypair(n_length=bits)
        c = gmpy2.mpz(pub.encrypt(12345).ciphertext(be_secure=False))
        out[f"ciphertext {bits}-bit key (mpz + list slot)"] = sys.getsizeof(c) + 8
        out[f"ciphertext {bits}-bit key on the wire"] = 2 * bits // 8
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--data", type=Path,
                    help="a folder with bench/scale.py's bank.csv and platform.csv to read "
                         "instead of generating them (e.g. one kept by --keep-files)")
    a = ap.parse_args()
    from scale import write_data
    print(f"load average {os.getloadavg()}; {a.rows} rows per party, read_chunk_rows "
          f"{a.chunk_rows}", flush=True)
    res: dict = {"rows": a.rows, "chunk_rows": a.chunk_rows, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="fedjoint-load-") as tmp:
        root = a.data or Path(tmp)
        if a.data is None:
            write_data(root, a.rows, "")
        for party, label in (("bank", "y"), ("platform", "")):
            path = root / f"{party}.csv"
            m = measure(path, label, a.chunk_rows)
            res[party] = {"file_bytes": path.stat().st_size, **m}
            ref = m["pandas float"]
            print(f"{party}: {path.stat().st_size / 2**20:.0f} MB CSV, "
                  f"{m['chunked']['rows']} x {m['chunked']['features']} "
                  f"(float64 matrix {m['chunked']['x_bytes'] / 2**20:.0f} MB)")
            print(f"  {'reader':12s} {'peak RSS':>9s} {'B/row':>7s} {'wall':>7s}  vs pandas float")
            for reader in READERS:
                r = m[reader]
                print(f"  {reader:12s} {r['peak'] / 2**20:6.0f} MB {r['peak'] / r['rows']:7.0f} "
                      f"{r['wall']:6.1f}s  {r['peak'] / ref['peak']:.2f}x memory, "
                      f"{r['wall'] / ref['wall']:.2f}x time")
            print(f"  (each process's RSS after imports: "
                  f"{m['chunked']['base'] / 2**20:.0f} MB, not included)")
    res["row_costs"] = row_costs()
    print("per-row costs a job adds (bytes):")
    for k, v in res["row_costs"].items():
        print(f"  {k:44s} {v}")
    res["load_after"] = os.getloadavg()
    print(f"load average after {res['load_after']}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "bench"))
    main()
