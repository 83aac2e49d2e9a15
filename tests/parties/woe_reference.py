"""optbinning's results for tests/parties/test_woe.py: computed live when optbinning is
installed (the test extra installs it), and recorded for machines without it:

    python tests/parties/woe_reference.py > tests/parties/data/woe_optbinning.json

For each case: the joined credit_risk example (first N_ROWS bank rows that the platform
also has, missing values injected by the rule in ``frame``), the pre-bin splits given
to optbinning as ``user_splits`` (numpy.quantile at k/20, the documented convention),
and optbinning's optimal splits, per-bin event counts, WOE and IV.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parents[2] / "examples" / "credit_risk" / "data"
N_ROWS = 3000
CASES = [("platform", "x0"), ("platform", "x3"), ("platform", "x6"), ("platform", "x8"),
         ("bank", "x0"), ("bank", "x4")]
TRENDS = ("ascending", "descending", "auto_asc_desc")


def frame() -> pd.DataFrame:
    """Joined rows: columns y, b_<bank col>, p_<platform col>; every 13th platform x3
    and every 29th bank x4 set missing."""
    bank = pd.read_csv(HERE / "bank.csv")
    plat = pd.read_csv(HERE / "platform.csv")
    df = bank.merge(plat, on="id", suffixes=("_b", "_p")).head(N_ROWS).reset_index(drop=True)
    out = pd.DataFrame({"id": df["id"], "y": df["y"]})
    for c in df.columns:
        if c.endswith("_b"):
            out["b_" + c[:-2]] = df[c]
        elif c.endswith("_p"):
            out["p_" + c[:-2]] = df[c]
        elif c not in ("id", "y"):
            out[("b_" if c in bank.columns else "p_") + c] = df[c]
    out.loc[out.index % 13 == 0, "p_x3"] = np.nan
    out.loc[out.index % 29 == 0, "b_x4"] = np.nan
    return out


def prebins(x: np.ndarray, k: int = 20) -> np.ndarray:
    v = x[~np.isnan(x)]
    cuts = np.unique(np.quantile(v, np.linspace(0, 1, k + 1)[1:-1]))
    return cuts[cuts > v.min()]


def cases() -> list[dict]:
    """optbinning's binning of every (party, feature, trend) case on :func:`frame`."""
    from optbinning import OptimalBinning
    df = frame()
    y = df["y"].to_numpy()
    out = []
    for party, col in CASES:
        x = df[("p_" if party == "platform" else "b_") + col].to_numpy(dtype=float)
        splits = prebins(x)
        for trend in TRENDS:
            ob = OptimalBinning(name=col, dtype="numerical", solver="cp", divergence="iv",
                                monotonic_trend=trend, min_bin_size=0.05,
                                min_bin_n_event=1, min_bin_n_nonevent=1,
                                user_splits=splits, max_n_prebins=100, min_prebin_size=1e-6)
            ob.fit(x, y)
            bt = ob.binning_table.build()
            rows = bt.iloc[:-1]                          # drop the Totals row
            rows = rows[rows["Bin"].astype(str) != "Special"]
            out.append({"party": party, "feature": col, "trend": trend,
                        "status": ob.status, "prebin_splits": splits.tolist(),
                        "splits": [float(s) for s in ob.splits],
                        "count": rows["Count"].astype(int).tolist(),
                        "event": rows["Event"].astype(int).tolist(),
                        "woe": rows["WoE"].astype(float).tolist(),
                        "iv": float(bt.loc["Totals", "IV"])})
    return out


def main() -> None:
    json.dump({"n_rows": N_ROWS, "optbinning": __import__("optbinning").__version__,
               "cases": cases()}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
