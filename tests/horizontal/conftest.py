"""default_credit split horizontally across 5 banks, non-IID by a column (x0 of the
guest file, in quintiles: each bank holds one band of it)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("flwr")

import pandas as pd  # noqa: E402
from support.nodes import DATA  # noqa: E402

N_BANKS = 5


@pytest.fixture(scope="session")
def credit() -> pd.DataFrame:
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv")
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv")
    return g.merge(h, on="id", suffixes=("_g", "_h"))


@pytest.fixture(scope="session")
def columns(credit) -> list[str]:
    return [c for c in credit.columns if c not in ("id", "y")]


@pytest.fixture(scope="session")
def banks(credit) -> dict[str, pd.DataFrame]:
    band = pd.qcut(credit["x0_g"].rank(method="first"), N_BANKS, labels=False)
    return {f"bank-{i}": credit[band == i].reset_index(drop=True) for i in range(N_BANKS)}


def job(columns, algorithm="horizontal_lr", job_id="h-test", **params) -> dict:
    return {"job": {"name": "h", "algorithm": algorithm, "job_id": job_id},
            "horizontal": {"columns": list(columns)},
            "params": {"class_weight": "balanced", "min_banks": 3, **params}}
