"""Rebuild data/ from FATE's vertically split default-credit set (already bundled).

    python examples/credit_risk/make_data.py [FATE_DIR]

* ``bank.csv``         the bank's training customers (rows 0..23999 of the guest file,
                       id, label ``y`` and 13 bank features);
* ``bank_holdout.csv`` new applicants the bank scores later (rows 24000..29999);
* ``platform.csv``     the platform's enterprise features for every enterprise it
                       covers: all 30,000 minus 480 of the bank's training customers,
                       so the intersection is partial on both sides.
"""

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
SRC = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "data" / "fate"


def main() -> None:
    guest = pd.read_csv(SRC / "default_credit_hetero_guest.csv", dtype={"id": str})
    host = pd.read_csv(SRC / "default_credit_hetero_host.csv", dtype={"id": str})
    assert list(guest["id"]) == list(host["id"]), "guest and host rows must align"
    out = HERE / "data"
    out.mkdir(exist_ok=True)
    guest.iloc[:24000].to_csv(out / "bank.csv", index=False)
    guest.iloc[24000:].to_csv(out / "bank_holdout.csv", index=False)
    keep = [i for i in range(len(host)) if not (i < 24000 and i % 50 == 7)]
    host.iloc[keep].to_csv(out / "platform.csv", index=False)
    print(f"bank.csv 24000 rows, bank_holdout.csv {len(guest) - 24000} rows, "
          f"platform.csv {len(keep)} rows in {out}")


if __name__ == "__main__":
    main()
