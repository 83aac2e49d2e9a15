"""Feature selection on a federated binning: the report equals a plaintext computation
on the joined rows (IV from parties.common.woe on each column with its labels, WOE
correlation from pandas' DataFrame.corr, PSI from pandas value counts), the platform
learns only the kept labels, and a rule that leaves nothing fails naming the rule."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.roles import contexts, data, run_roles

from federation.link import PeerAborted
from parties import registry
from parties.bank import selection as bank_sel
from parties.common import selection as S
from parties.common import woe
from secure_agg.cipher import PlainCipher

sys.path.insert(0, str(Path(__file__).parent))
from woe_reference import frame  # noqa: E402

BANK = [f"x{j}" for j in range(13)]
PLATFORM = [f"x{j}" for j in range(10)]
BIN = {"method": "quantile", "n_bins": 6}
N_TRAIN = 2400                        # of the 3000 joined rows; the rest validate


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return frame()


@pytest.fixture(scope="module")
def binned(df):
    """Both parties' binning parts, trained on the first N_TRAIN rows."""
    tr = df.head(N_TRAIN)
    bank = data(tr[[f"b_{c}" for c in BANK]].to_numpy(), BANK, y=tr["y"].to_numpy(float))
    plat = data(tr[[f"p_{c}" for c in PLATFORM]].to_numpy(), PLATFORM)
    ob, op, _ = run_roles("binning", bank, plat, BIN, bank_cipher=PlainCipher(1024))
    return ob.model, op.model


def stage_data(df, parts, valid: bool = True):
    tr, va = df.head(N_TRAIN), df.iloc[N_TRAIN:]
    out = []
    for prefix, cols, part in (("b_", BANK, parts[0]), ("p_", PLATFORM, parts[1])):
        d = data(tr[[prefix + c for c in cols]].to_numpy(), cols,
                 X_valid=va[[prefix + c for c in cols]].to_numpy() if valid else None)
        d.inputs = {"binning": part}
        out.append(d)
    return out


def select(df, binned, params, valid: bool = True):
    bank, plat = stage_data(df, binned, valid)
    return run_roles("selection", bank, plat, params)


def reference(df, binned, p: S.SelectionParams) -> tuple[dict, dict, set]:
    """(IV per feature, PSI per feature, kept features) from the joined plaintext; the
    platform's columns under the bank's label for them."""
    tr, va = df.head(N_TRAIN), df.iloc[N_TRAIN:]
    y = tr["y"].to_numpy(float)
    params = registry.get("binning").parse_params(BIN, "test")
    label = {f: t["bank_label"] for f, t in binned[1].body["tables"].items()}
    ivs, psis, woes = {}, {}, {}
    for prefix, cols in (("b_", BANK), ("p_", PLATFORM)):
        for c in cols:
            t = woe.bin_column(tr[prefix + c].to_numpy(), y, params, c)
            name = c if prefix == "b_" else label[c]
            ivs[name] = t["iv"]
            edges = [-np.inf, *t["cuts"], np.inf]
            bins = {s: pd.cut(frame_[prefix + c], edges, right=False, labels=False)
                    .fillna(len(edges) - 1) for s, frame_ in (("t", tr), ("v", va))}
            share = {s: b.value_counts(normalize=True).reindex(range(len(edges)),
                                                                 fill_value=0.0)
                     .clip(lower=S.PSI_FLOOR) for s, b in bins.items()}
            psis[name] = float(((share["v"] - share["t"]) *
                                np.log(share["v"] / share["t"])).sum())
            if prefix == "b_":
                woes[c] = bins["t"].map(dict(enumerate(r["woe"] for r in t["bins"])))
    order = sorted(ivs, key=lambda f: (-ivs[f], f))
    alive = [f for f in order if ivs[f] >= p.iv_min and
             (p.psi_max == 0 or psis[f] <= p.psi_max)]
    corr = pd.DataFrame(woes).corr().fillna(0.0)
    kept = []
    for f in alive:
        if f in woes and p.max_corr < 1 and any(abs(corr.loc[f, k]) > p.max_corr
                                                for k in kept if k in woes):
            continue
        kept.append(f)
    return ivs, psis, set(kept[:p.top_k] if p.top_k else kept)


@pytest.mark.parametrize("params", [
    {"iv_min": 0.02},
    {"iv_min": 0.01, "max_corr": 0.5, "psi_max": 0.015},
    {"iv_min": 0.0, "max_corr": 0.6, "top_k": 5},
])
def test_selection_equals_plaintext_reference(df, binned, params):
    ob, op, crossed = select(df, binned, params)
    p = registry.get("selection").parse_params(params, "test")
    ivs, psis, kept = reference(df, binned, p)
    report = {r["feature"]: r for r in ob.metrics["selection"]}
    assert set(report) == set(ivs)
    for f, r in report.items():
        assert abs(r["iv"] - ivs[f]) < 1e-12, f
        if p.psi_max:
            assert abs(r["psi"] - psis[f]) < 1e-12, f
    assert {f for f, r in report.items() if r["kept"]} == kept
    assert all(r["reason"] for r in report.values() if not r["kept"])
    # each party holds its own kept columns; the platform knows them by its own names
    labels = {f: t["bank_label"] for f, t in binned[1].body["tables"].items()}
    assert ob.model.feature_names == [f for f in BANK if f in kept]
    assert op.model.feature_names == [f for f in PLATFORM if labels[f] in kept]
    assert ob.model.body["platform_selected"] == sorted(f for f in kept if "#" in f)
    kinds = [kind for _who, kind, *_ in crossed]
    assert kinds == ([S.K_INIT, S.K_COUNTS, S.K_KEEP] if p.psi_max else
                     [S.K_INIT, S.K_KEEP])
    if p.max_corr < 1:     # the rule bites on this data (bill amounts move together)
        assert any("corr" in r["reason"] for r in report.values())


def test_correlation_filter_matches_numpy_corrcoef():
    rng = np.random.default_rng(3)
    a = rng.normal(size=500)
    W = np.column_stack([a, a + 0.1 * rng.normal(size=500), rng.normal(size=500),
                         np.full(500, 2.0)])
    ref = np.corrcoef(W[:, :3], rowvar=False)
    dropped = S.correlated(W, [0, 1, 2, 3], 0.9)
    assert set(dropped) == {1} and dropped[1][0] == 0
    assert abs(dropped[1][1] - abs(ref[0, 1])) < 1e-12
    assert S.correlated(W, [1, 0, 2, 3], 0.9) == {0: (1, pytest.approx(abs(ref[0, 1])))}


def test_a_rule_that_leaves_nothing_is_named(df, binned):
    bank, plat = stage_data(df, binned)
    with pytest.raises(S.SelectionError, match=r"rule iv_min = 5\.0 leaves no features "
                       r"\(it removes all 23; the best, .* has IV .* < iv_min 5\.0\)"):
        run_roles("selection", bank, plat, {"iv_min": 5.0})
    with pytest.raises(S.SelectionError, match=r"rule psi_max = 1e-06 leaves no features"):
        run_roles("selection", bank, plat, {"iv_min": 0.0, "psi_max": 1e-6})
    with pytest.raises(S.SelectionError, match=r"psi_max = 0\.1 compares .* valid_fraction"):
        select(df, binned, {"psi_max": 0.1}, valid=False)


def test_bad_inputs_fail_before_anything_but_the_abort_crosses(df, binned):
    bank, _ = stage_data(df, binned)
    p = registry.get("selection").parse_params({}, "test")
    bank.inputs = None
    cb, _, crossed = contexts()
    with pytest.raises(S.SelectionError, match=r"selection needs a binning input"):
        bank_sel.train(cb, bank, p, None, None)
    assert [kind for _w, kind, *_ in crossed] == [S.K_ABORT]
    bank.inputs = {"binning": binned[1]}         # the platform's part is not the bank's
    with pytest.raises(S.SelectionError, match=r"'binning' part of the platform"):
        bank_sel.train(contexts()[0], bank, p, None, None)
    bank, plat = stage_data(df, binned)
    plat.inputs = {"binning": binned[0]}
    with pytest.raises((S.SelectionError, PeerAborted), match=r"part of the bank"):
        run_roles("selection", bank, plat, {})
    with pytest.raises(ValueError, match=r"max_corr = 0\.0: expected a number in \(0, 1\]"):
        registry.get("selection").parse_params({"max_corr": 0.0}, "test")


@pytest.mark.parametrize("tamper,match", [
    ("sums", r"sel.counts: feature 0: counts do not sum to the 2400 training / 600 "
             r"validation rows"),
    ("shape", r"sel.counts: expected a 2 x \d+ integer array"),
])
def test_bank_rejects_dishonest_platform_counts(df, binned, tamper, match):
    """Platform counts that do not add up to the rows, or of the wrong shape: the
    bank's job fails naming the message before any PSI is computed from them."""
    from federation.link import ProtocolError, run_two_parties
    bank, _ = stage_data(df, binned)
    cb, cp, _ = contexts()
    p = registry.get("selection").parse_params({"psi_max": 0.5}, "test")
    sizes = [S.fine_bins(t) for _, t in sorted(binned[0].body["platform_tables"].items())]

    def platform():
        cp.link.recv_json(S.K_INIT)
        arr = np.zeros((2, sum(sizes) + (tamper == "shape")), np.int64)
        arr[0, 0], arr[1, 0] = 2400 + (tamper == "sums"), 600
        cp.link.send(S.K_COUNTS, arr)
        with pytest.raises(PeerAborted):
            S.recv(cp.link, S.K_KEEP)

    with pytest.raises(ProtocolError, match=match):
        run_two_parties(lambda: bank_sel.train(cb, bank, p, None, None), platform,
                        timeout=60)


@pytest.mark.parametrize("tamper,match", [
    ("labels", r"sel.init: the bank's binning input names other platform features"),
    ("rows", r"sel.init: bank has 2399 / 600 training / validation rows, platform 2400"),
    ("params", r"selection parameter iv_min differs: bank 0\.5, platform 0\.02"),
    ("keep", r"sel.keep: expected distinct labels of this platform's features"),
])
def test_platform_rejects_a_bad_bank_message(df, binned, tamper, match):
    """A bank naming features the platform's binning part does not hold, other row
    counts or params, or keeping labels that are not the platform's: refused."""
    from federation.link import ProtocolError, run_two_parties
    from parties.provincial_platform import selection as platform_sel
    _, plat = stage_data(df, binned)
    cb, cp, _ = contexts()
    p = registry.get("selection").parse_params({}, "test")
    labels = sorted(binned[0].body["platform_tables"])

    def bank():
        params = {**S.shared_params(p), **({"iv_min": 0.5} if tamper == "params" else {})}
        cb.link.send(S.K_INIT, {"version": S.PROTOCOL_VERSION, "params": params,
                                "labels": labels[1:] if tamper == "labels" else labels,
                                "n_train": 2399 if tamper == "rows" else 2400,
                                "n_valid": 600})
        if tamper == "keep":
            cb.link.send(S.K_KEEP, {"keep": [labels[0], labels[0], "x0"]})
        with pytest.raises((PeerAborted, ProtocolError)):
            S.recv(cb.link, S.K_COUNTS)

    with pytest.raises(ProtocolError, match=match):
        run_two_parties(bank, lambda: platform_sel.train(cp, plat, p, None, None),
                        timeout=60)
