"""SecureBoost with categorical columns: seconds per tree and bytes on the wire beside
the same columns read as numbers, and XGBoost (``enable_categorical``) on the joined
plaintext, all in this run.

default_credit (``--rows``, default 6,000): bank PAY_6 (10 levels); platform SEX,
EDUCATION, MARRIAGE, PAY_0..PAY_4 as categories (or as numbers), Paillier 2048-bit
keys, max_bin 32, depth 4, both roles in one process over the in-memory link.

    .venv/bin/python bench/secureboost_categorical.py [--rows N] [--trees N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

DATA = ROOT / "tests" / "data"
BANK_CAT, PLAT_CAT = ["x0"], ["p1", "p2", "p3", "p5", "p6", "p7", "p8", "p9"]


def data(rows: int, categorical: bool):
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv").head(rows)
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv").head(rows)
    Xb = g.drop(columns=["id", "y"]).to_numpy(float, copy=True)
    Xp = h.drop(columns=["id"]).to_numpy(float, copy=True)
    bn, pn = [f"x{j}" for j in range(Xb.shape[1])], [f"p{j}" for j in range(Xp.shape[1])]
    cats = ({}, {})
    for X, names, want, out in ((Xb, bn, BANK_CAT, cats[0]), (Xp, pn, PLAT_CAT, cats[1])):
        for j, n in enumerate(names):
            if categorical and n in want:
                levels = np.unique(X[:, j])
                X[:, j] = np.searchsorted(levels, X[:, j])
                out[n] = list(range(levels.size))
    return Xb, Xp, g.y.to_numpy(float), bn, pn, cats


def run(rows: int, trees: int, categorical: bool, key) -> dict:
    import xgboost as xgb
    from support.roles import run_roles

    from parties.common.role import PartyData
    Xb, Xp, y, bn, pn, (bc, pc) = data(rows, categorical)
    params = dict(n_trees=trees, max_depth=4, learning_rate=0.3, max_bin=32)
    t = time.perf_counter()
    ob, _, crossed = run_roles("secureboost",
                               PartyData(Xb, bn, y=y, categories=bc or None),
                               PartyData(Xp, pn, categories=pc or None), params,
                               bank_cipher=key, timeout=6000)
    wall = time.perf_counter() - t
    ft = ["c" if n in bc else "q" for n in bn] + ["c" if n in pc else "q" for n in pn]
    t = time.perf_counter()
    xgb.train(dict(tree_method="hist", max_bin=32, max_depth=4, eta=0.3, nthread=1,
                   objective="binary:logistic", base_score=float(y.mean())),
              xgb.DMatrix(np.hstack([Xb, Xp]), y, feature_types=ft, enable_categorical=True),
              trees)
    return {"s_per_tree": statistics.median(h["seconds"] for h in ob.history),
            "wall": wall, "bytes": sum(len(c[3]) for c in crossed),
            "xgboost_s_per_tree": (time.perf_counter() - t) / trees}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--trees", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    from secure_agg.paillier import PaillierPrivateCipher
    key = PaillierPrivateCipher.generate(2048)
    out = {name: run(a.rows, a.trees, name == "categorical", key)
           for name in ("numeric", "categorical")}
    print(f"{'columns':<12} {'median s/tree':>14} {'MB on wire':>11} {'xgboost s/tree':>15}")
    for name, r in out.items():
        print(f"{name:<12} {r['s_per_tree']:>14.2f} {r['bytes'] / 1e6:>11.2f} "
              f"{r['xgboost_s_per_tree']:>15.4f}")
    ratio = out["categorical"]["s_per_tree"] / out["numeric"]["s_per_tree"]
    print(f"categorical / numeric s/tree: {ratio:.3f}; bytes "
          f"{out['categorical']['bytes'] / out['numeric']['bytes']:.3f}")
    if a.json:
        a.json.write_text(json.dumps({"rows": a.rows, "trees": a.trees, **out,
                                      "ratio_s_per_tree": ratio}, indent=2))


if __name__ == "__main__":
    main()
