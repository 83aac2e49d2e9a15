"""The report of a woe_lr scorecard from real role outputs (binning, then woe_lr, then
scoring, over in-memory links): the scorecard and WOE/IV sections come from the parts
the roles produced, and each bank variable's log-odds spread equals the spread of its
scorecard points divided by the factor (an independent route to the same number)."""

from __future__ import annotations

import numpy as np
from support.lr import load
from support.roles import contexts, run_roles

from federation.data import Dataset
from federation.link import run_two_parties
from federation.report import collect, sections
from parties.bank import woe_lr as bank_role
from parties.common.role import PartyData
from parties.provincial_platform import woe_lr as platform_role
from secure_agg.cipher import PlainCipher

N = 3000


def test_scorecard_report_from_role_parts():
    d = load("default_credit")
    d = {k: (v[:N] if isinstance(v, np.ndarray) else v) for k, v in d.items()}
    tr, te = d["train"], ~d["train"]
    ob, op, _ = run_roles("binning", PartyData(d["Xb"][tr], d["bnames"], y=d["y"][tr]),
                          PartyData(d["Xp"][tr], d["pnames"]),
                          {"method": "monotonic", "n_prebins": 10, "min_bin_size": 0.05},
                          bank_cipher=PlainCipher(1024))
    bb, pb = ob.model, op.model
    wb, wp, _ = run_roles(
        "woe_lr", PartyData(d["Xb"][tr], d["bnames"], y=d["y"][tr], inputs={"binning": bb}),
        PartyData(d["Xp"][tr], d["pnames"], inputs={"binning": pb}),
        dict(epochs=3, batch_size=1024, learning_rate=0.05, seed=5, pdo=20, base_score=600,
             base_odds=50), bank_cipher=PlainCipher(2048), platform_cipher=PlainCipher(2048))
    cb, cp, _ = contexts("score")
    out, _ = run_two_parties(lambda: bank_role.predict(cb, wb.model, d["Xb"][te]),
                             lambda: platform_role.predict(cp, wp.model, d["Xp"][te]))
    p = np.asarray(getattr(out, "p", out), dtype=float)
    ids = [str(i) for i in range(int(te.sum()))]
    scores = {"ids": ids, "y": d["y"][te].tolist(), "p": p.tolist(), "label_kind": "binary"}
    test = Dataset("test", ids, d["Xb"][te], list(d["bnames"]), d["y"][te])
    data = {"job": {"id": "w"}, "scores": scores, "binning": bb.body,
            **collect.explain(wb.model, test, scores)}
    card = wb.model.body["scorecard"]
    assert data["scorecard"] is card and "platform" in data["coefficients"]
    # spread of a bank variable's log-odds term = spread of its points / factor
    rows = {r["feature"]: r for r in data["coefficients"]["bank"]}
    assert len(rows) == len(wb.model.feature_names) > 3
    for name in wb.model.feature_names:
        pts = [r["points"] for r in card["rows"] if r["feature"] == name]
        cuts = np.asarray(bb.body["tables"][name]["cuts"], float)
        x = test.X[:, d["bnames"].index(name)]
        b = np.where(np.isnan(x), len(pts) - 1, np.searchsorted(cuts, x, side="right"))
        want = np.std(np.asarray(pts)[b]) / card["factor"]
        assert abs(rows[name]["spread of log-odds term (test rows)"] - want) < 1e-9, name
    html = {sid: body for sid, _, body in sections(data)}
    assert f"{card['base_points']:.4f}" in html["scorecard"]
    assert "platform#" in html["woe-iv"] and "held by the platform" in html["coefficients"]


def test_pipeline_scorecard_report_with_out_of_time(tmp_path):
    """binning -> selection -> woe_lr as one pipeline (run_local), reported with a
    labelled out-of-time population: the stages table, the first binning stage's WOE/IV,
    the scorecard, the variables' PSI on the WOE bins, and OOT figures equal to
    scikit-learn's on the stage's own scoring of the same frame."""
    import re
    from pathlib import Path

    import pandas as pd
    from sklearn.metrics import roc_auc_score

    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY
    data = Path(__file__).resolve().parents[2] / "examples" / "credit_risk" / "data"
    bank, oot = pd.read_csv(data / "bank.csv").head(2000), \
        pd.read_csv(data / "bank_holdout.csv").head(500)
    plat = pd.read_csv(data / "platform.csv")    # the enterprises of both (PSI stays small)
    plat = plat[plat["id"].isin(set(bank["id"]) | set(oot["id"]))]
    job = {"job": {"name": "card", "algorithm": "pipeline", "dataset": "loans",
                   "peer_dataset": "enterprises"}, "psi": {"id_type": "string"},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25},
           "stages": [{"name": "bin", "algorithm": "binning",
                       "params": {"method": "monotonic", "n_prebins": 10}},
                      {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
                       "params": {"iv_min": 0.02}},
                      {"name": "card", "algorithm": "woe_lr",
                       "inputs": {"binning": "bin", "selection": "sel"},
                       "params": {"epochs": 3, "batch_size": 512, "pdo": 20,
                                  "base_score": 600, "base_odds": 50}}]}
    res = run_local(job, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY, seed=3)
    from federation.report import write_report
    from fedjoint.report import report_data
    rep = report_data(res, oot=(oot, plat), oot_name="holdout")
    page = write_report(rep, tmp_path / "r.html").read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    for sid in ("stages", "woe-iv", "scorecard", "coefficients", "oot", "stability",
                "discrimination", "calibration"):
        assert sid in ids, sid
    sc = res.score(oot, plat)
    y = oot.set_index("id").loc[sc["id"].astype(int), "y"].to_numpy()
    oot_sec = page.split('<section id="oot">')[1].split("</section>")[0]
    assert f"<td>{roc_auc_score(y, sc['score']):.4f}</td>" in oot_sec
    stab = page.split('<section id="stability">')[1].split("</section>")[0]
    assert "binning part (WOE bins)" in stab
    assert "platform#" in page.split('<section id="woe-iv">')[1].split("</section>")[0]
    card = res.bank_model.body["scorecard"]
    assert f"{card['base_points']:.4f}" in page
    # characteristic analysis: each scorecard variable's shift of the mean score equals
    # the mean of its points over the OOT rows minus over the training intersection
    tables = res.stages["bin"]["bank"].body["tables"]
    dev = bank[bank["id"].isin(plat["id"])]
    got = {v["feature"]: v for v in rep["stability"]["variables"]}
    for name in res.bank_model.feature_names:
        pts = np.asarray([r["points"] for r in card["rows"] if r["feature"] == name])
        cuts = np.asarray(tables[name]["cuts"], float)

        def mean_points(x, pts=pts, cuts=cuts):
            b = np.where(np.isnan(x), len(pts) - 1, np.searchsorted(cuts, x, side="right"))
            return pts[b].mean()
        want = mean_points(oot.set_index("id").loc[sc["id"].astype(int), name].to_numpy()) - \
            mean_points(dev[name].to_numpy())
        assert abs(got[name]["score shift (points)"] - want) < 1e-9, name
