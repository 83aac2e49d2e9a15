"""Binning / WOE / IV arithmetic against references no one here wrote: scikit-learn's
KBinsDiscretizer for the cut points, a direct pandas computation for the quantile and
equal-width tables, optbinning's OptimalBinning (recorded by woe_reference.py; live
when optbinning is importable) for monotonic optimal binning."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import KBinsDiscretizer

from parties.common import woe
from parties.common.params import ParamError, from_dict

sys.path.insert(0, str(Path(__file__).parent))
from woe_reference import frame  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "woe_optbinning.json").read_text())
TREND = {"auto_asc_desc": "auto", "ascending": "ascending", "descending": "descending"}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return frame()


def params(**kw) -> woe.BinningParams:
    return from_dict(woe.BinningParams, kw, "test")


@pytest.mark.parametrize("strategy,method", [("quantile", "quantile"),
                                             ("uniform", "equal_width")])
def test_cut_points_are_kbinsdiscretizer_edges(df, strategy, method):
    for col in ("p_x0", "p_x5", "b_x1", "b_x7"):
        x = df[col].to_numpy()
        kw = {"quantile_method": "linear"} if strategy == "quantile" else {}
        try:
            est = KBinsDiscretizer(n_bins=8, encode="ordinal", strategy=strategy, **kw)
        except TypeError:        # scikit-learn < 1.7 has no quantile_method (linear)
            est = KBinsDiscretizer(n_bins=8, encode="ordinal", strategy=strategy)
        ref_bins = est.fit(x.reshape(-1, 1)).transform(x.reshape(-1, 1))[:, 0]
        edges = est.bin_edges_[0][1:-1]
        cuts = woe.cut_points(x, method, 8, col)
        np.testing.assert_allclose(cuts, np.unique(edges[edges > x.min()]), rtol=0, atol=1e-12)
        if len(cuts) == len(edges):    # no duplicate edges: the same bin per row
            assert (woe.assign(x, cuts) == ref_bins).all()


def pandas_table(x: np.ndarray, y: np.ndarray, cuts: np.ndarray) -> pd.DataFrame:
    """WOE/IV per bin written directly with pandas (bins by pd.cut, right-open)."""
    b = pd.cut(pd.Series(x), [-np.inf, *cuts, np.inf], right=False, labels=False)
    g = pd.DataFrame({"b": b.fillna(len(cuts) + 1), "y": y}).groupby("b")["y"]
    t = pd.DataFrame({"count": g.size(), "event": g.sum()}).reindex(
        range(len(cuts) + 2), fill_value=0)
    t["non_event"] = t["count"] - t["event"]
    ps, qs = t["non_event"] / t["non_event"].sum(), t["event"] / t["event"].sum()
    t["woe"] = np.where((t["event"] > 0) & (t["non_event"] > 0), np.log(ps / qs), 0.0)
    t["iv"] = (ps - qs) * t["woe"]
    return t


@pytest.mark.parametrize("method", ["quantile", "equal_width"])
def test_quantile_and_equal_width_tables_match_pandas(df, method):
    y = df["y"].to_numpy(dtype=float)
    for col in ("b_x0", "b_x4", "p_x3", "p_x9"):        # b_x4 / p_x3 have missing values
        x = df[col].to_numpy()
        got = woe.bin_column(x, y, params(method=method, n_bins=7), col)
        ref = pandas_table(x, y, np.asarray(got["cuts"]))
        assert [r["count"] for r in got["bins"]] == ref["count"].tolist()
        assert [r["event"] for r in got["bins"]] == ref["event"].tolist()
        np.testing.assert_allclose([r["woe"] for r in got["bins"]], ref["woe"], atol=1e-12)
        np.testing.assert_allclose(got["iv"], ref["iv"].sum(), atol=1e-12)
        assert got["bins"][-1]["bin"] == "Missing"


def check_against_optbinning(case: dict, splits, counts, events, woes, iv) -> None:
    where = f"{case['party']} {case['feature']} {case['trend']}"
    np.testing.assert_allclose(splits, case["splits"], rtol=0, atol=1e-12, err_msg=where)
    assert list(counts) == case["count"], where
    assert list(events) == case["event"], where
    np.testing.assert_allclose(woes, case["woe"], rtol=0, atol=1e-9, err_msg=where)
    np.testing.assert_allclose(iv, case["iv"], rtol=0, atol=1e-9, err_msg=where)


@pytest.mark.parametrize("case", REFERENCE["cases"],
                         ids=lambda c: f"{c['party']}-{c['feature']}-{c['trend']}")
def test_monotonic_plaintext_equals_optbinning(df, case):
    """The plaintext binning of a column (what the bank runs on its own columns)."""
    col = ("p_" if case["party"] == "platform" else "b_") + case["feature"]
    x, y = df[col].to_numpy(), df["y"].to_numpy(dtype=float)
    p = params(method="monotonic", n_prebins=20, monotonic_trend=TREND[case["trend"]],
               min_bin_size=0.05)
    np.testing.assert_allclose(woe.cut_points(x, "quantile", 20, col),
                               case["prebin_splits"], rtol=0, atol=1e-12)
    got = woe.bin_column(x, y, p, col)
    check_against_optbinning(case, got["cuts"], [r["count"] for r in got["bins"]],
                             [r["event"] for r in got["bins"]],
                             [r["woe"] for r in got["bins"]], got["iv"])


def test_optbinning_live_equals_fedjoint_and_the_record(df):
    """optbinning (installed by the test extra) recomputes every case live: fedjoint's
    monotonic binning equals it, and so does the recorded reference the test above uses
    on machines without optbinning."""
    pytest.importorskip("optbinning")
    from woe_reference import cases
    live = cases()
    assert [(c["party"], c["feature"], c["trend"]) for c in live] == [
        (c["party"], c["feature"], c["trend"]) for c in REFERENCE["cases"]]
    y = df["y"].to_numpy(dtype=float)
    for case, recorded in zip(live, REFERENCE["cases"], strict=True):
        col = ("p_" if case["party"] == "platform" else "b_") + case["feature"]
        p = params(method="monotonic", n_prebins=20, monotonic_trend=TREND[case["trend"]],
                   min_bin_size=0.05)
        got = woe.bin_column(df[col].to_numpy(), y, p, col)
        check_against_optbinning(case, got["cuts"], [r["count"] for r in got["bins"]],
                                 [r["event"] for r in got["bins"]],
                                 [r["woe"] for r in got["bins"]], got["iv"])
        check_against_optbinning(recorded, case["splits"], case["count"], case["event"],
                                 case["woe"], case["iv"])


def test_monotonic_trend_holds_and_constraints_hold(df):
    y = df["y"].to_numpy(dtype=float)
    for trend, sign in (("ascending", 1), ("descending", -1)):
        for col in ("p_x1", "b_x2"):
            got = woe.bin_column(df[col].to_numpy(), y,
                                 params(monotonic_trend=trend, min_bin_size=0.1), col)
            rows = got["bins"][:-1]
            rates = np.array([r["event_rate"] for r in rows])
            assert (sign * np.diff(rates) >= -1e-12).all(), (trend, col, rates)
            assert min(r["count"] for r in rows) >= np.ceil(0.1 * len(y))
            assert min(min(r["event"], r["non_event"]) for r in rows) >= 1


def test_auto_picks_the_larger_iv(df):
    x, y = df["p_x6"].to_numpy(), df["y"].to_numpy(dtype=float)
    ivs = {t: woe.bin_column(x, y, params(monotonic_trend=t), "x")["iv"]
           for t in ("ascending", "descending", "auto")}
    assert ivs["auto"] == max(ivs["ascending"], ivs["descending"])


# ---------------------------------------------------------------------- bad input


def test_bad_labels_and_columns():
    with pytest.raises(woe.WoeError, match=r"row 2 is 2\.0.*0/1"):
        woe.check_binary(np.array([0, 1, 2, 0]), "bank labels")
    with pytest.raises(woe.WoeError, match="every label is 0"):
        woe.check_binary(np.zeros(5), "bank labels")
    with pytest.raises(woe.WoeError, match=r"feature 'flat' has a single value \(3\)"):
        woe.cut_points(np.array([3.0, 3.0, np.nan]), "quantile", 5, "flat")
    with pytest.raises(woe.WoeError, match="feature 'empty' has no non-missing value"):
        woe.cut_points(np.array([np.nan, np.nan]), "quantile", 5, "empty")


@pytest.mark.parametrize("kw,match", [
    ({"min_bin_size": 0.7}, r"min_bin_size = 0\.7: expected a share of the rows in \(0, 0\.5\]"),
    ({"min_bin_size": 0.0}, "min_bin_size = 0.0"),
    ({"method": "cart"}, "method = 'cart': expected one of quantile, equal_width, monotonic"),
    ({"monotonic_trend": "peak"}, "monotonic_trend = 'peak'"),
    ({"n_prebins": 1}, r"n_prebins = 1: expected an integer in \[2, 256\]"),
])
def test_bad_params(kw, match):
    with pytest.raises(ParamError, match=match):
        params(**kw)


def test_infeasible_constraints_name_the_feature():
    x = np.arange(20, dtype=float)
    y = np.zeros(20)
    y[0] = 1.0
    with pytest.raises(woe.WoeError, match=r"feature 'rare': no binning meets the "
                                           r"constraints.*min_bin_n_event 2"):
        woe.bin_column(x, y, params(min_bin_n_event=2), "rare")
