"""``binning -> selection -> woe_lr`` as one pipeline through two real nodes: its test
AUC equals the same pipeline run centrally on the joined plaintext - bins from the
stored parts' cut points, WOE and IV recomputed here from the joined training rows, the
same IV / correlation selection done with pandas, scikit-learn's LogisticRegression on
the standardised WOE columns - within 0.003; both transcripts verify and the ledger
names woe_lr's disclosure; a scoring job on the scorecard writes points (= offset -
factor * log-odds) and reason codes per applicant. Full-batch
training: the PSI's row order (which depends on each job's random blinding) then
cannot change the optimiser's path."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from support.nodes import pipeline_job, run_cli, two_nodes, write_job

from federation import audit

DATA = Path(__file__).resolve().parents[2] / "examples" / "credit_risk" / "data"
ROWS = 6000
LAM = 1e-3
IV_MIN, MAX_CORR = 0.02, 0.8
STAGES = [
    {"name": "bin", "algorithm": "binning", "params": {"method": "monotonic", "n_prebins": 10}},
    {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
     "params": {"iv_min": IV_MIN, "max_corr": MAX_CORR}},
    {"name": "card", "algorithm": "woe_lr", "inputs": {"binning": "bin", "selection": "sel"},
     "params": {"epochs": 60, "batch_size": 0, "learning_rate": 0.1, "reg_lambda": LAM,
                "early_stopping": "none", "seed": 5}}]


def woe_columns(x: pd.Series, edges: list, train: np.ndarray, y: np.ndarray):
    """(WOE per row, IV) of a column cut at ``edges``, the table from the training rows."""
    b = np.searchsorted(np.asarray(edges, float), x.to_numpy(float), side="right")
    b[x.isna().to_numpy()] = len(edges) + 1
    table, iv = np.zeros(len(edges) + 2), 0.0
    E, NE = y[train].sum(), (1 - y[train]).sum()
    for i in range(len(table)):
        e = y[train & (b == i)].sum()
        ne = (1 - y[train & (b == i)]).sum()
        if e > 0 and ne > 0:
            table[i] = math.log((ne / NE) / (e / E))
            iv += (ne / NE - e / E) * table[i]
    return table[b], iv


def _serve(root: Path, model_id: str, bank: pd.DataFrame, ids) -> list[dict]:
    """``fedjoint serve``'s application (uvicorn in a thread) on the scorecard: the
    applicants ``ids`` scored in one batch over HTTP, the platform answering from its
    daemon over the channel."""
    pytest.importorskip("fastapi")
    import httpx

    from federation.admin import AdminClient
    from federation.cli.serve import build
    from federation.config import load_node_config
    from federation.serving.app import ThreadedServer
    plat_toml = root / "platform.toml"
    plat_toml.write_text(plat_toml.read_text() + f'\n[serving]\nmodels = ["{model_id}"]\n')
    AdminClient(root / "platform-b-data").call("reload")
    cfg = load_node_config(root / "bank.toml")
    app, models, token = build(cfg, [model_id])
    rows = bank.set_index(bank["id"].astype(str))
    apps = [{"id": i, "features": {f: (None if pd.isna(rows.at[i, f]) else
                                       float(rows.at[i, f]))
                                   for f in models[0].features}} for i in ids]
    srv = ThreadedServer(app).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            r = c.post("/v1/score:batch", json={"model": model_id, "applicants": apps})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
        # the score file (no PSI, the platform's pseudonym store): the same values
        from federation.serving.bulk import score_file
        src, dst = root / "applicants.csv", root / "scored.csv"
        rows.loc[list(ids), ["id", *models[0].features]].to_csv(src, index=False)
        score_file(models[0], src, dst)
        got = pd.read_csv(dst, keep_default_na=False)
        assert list(got.columns)[4:] == ["points", "platform_points", "reason_1",
                                         "reason_2", "reason_3"]
        assert got["points"].tolist() == [x["points"] for x in results]
        assert got["reason_1"].tolist() == [x["reasons"][0]["feature"] if x["reasons"]
                                            else "" for x in results]
        return results
    finally:
        srv.stop()


def test_woe_lr_pipeline_matches_the_central_pipeline(tmp_path, capsys, monkeypatch):
    bank = pd.read_csv(DATA / "bank.csv").head(ROWS)
    plat = pd.read_csv(DATA / "platform.csv")
    plat = plat[plat["id"].isin(bank["id"])].reset_index(drop=True)
    with two_nodes(tmp_path, monkeypatch, ["binning", "selection", "woe_lr", "score"], bank,
                   plat):
        job = pipeline_job(tmp_path, STAGES, name="card",
                           evaluation={"cipher": "plain", "test_fraction": 0.25})
        code, out, err = run_cli(capsys, "job", "submit", str(job), "--wait")
        assert code == 0 and "done" in out, err + out
        job_id = out.split()[0]
        code, out, _ = run_cli(capsys, "job", "status", job_id, "--json")
        rec = json.loads(out)
        tb = rec["artifacts"]["transcript"]
        tp = str(tmp_path / "platform-b-data" / "transcripts" / f"{job_id}.jsonl")
        assert audit.verify(tb, tp).ok
        replayed = audit.replay(tb, tmp_path)    # the bank's side, woe_lr's masks included
        assert replayed.ok, replayed.errors
        test = json.loads(Path(rec["artifacts"]["test_scores"]).read_text())
        models = {s: {p: json.loads((tmp_path / f"{d}-data" / "models" /
                                     f"{job_id}.{s}.json").read_text())
                      for p, d in (("bank", "bank-a"), ("platform", "platform-b"))}
                  for s in ("bin", "sel", "card")}
        fed_kept = rec["metrics"]["stages"]["sel"]["selected"]
        # the ledger names woe_lr's one disclosure beyond LR's
        code, out, _ = run_cli(capsys, "audit", "verify", tb, "--json")
        cats = {e["category"] for e in json.loads(out)["summary"]["ledger"]}
        assert "WOE of the platform's bins up to a secret affine map per feature" in cats
        # a scoring job on the scorecard: points and reason codes per applicant
        sjob = write_job(tmp_path, "card-score", "score",
                         extra_job={"model": f"{job_id}.card"})
        code, out, err = run_cli(capsys, "job", "submit", str(sjob), "--wait")
        assert code == 0 and "done" in out, err + out
        code, out, _ = run_cli(capsys, "job", "status", out.split()[0], "--json")
        scored = pd.read_csv(json.loads(out)["artifacts"]["scores"], keep_default_na=False)
        served = _serve(tmp_path, f"{job_id}.card", bank, scored["id"].astype(str)[:40])

    # ---- the same pipeline, centrally, on the joined rows -----------------------------
    joined = bank.merge(plat, on="id", suffixes=("_b", "_p"))
    assert len(joined) == rec["metrics"]["intersection"]
    ids = joined["id"].astype(str).to_numpy()
    is_test = np.isin(ids, [str(i) for i in test["ids"]])
    train, y = ~is_test, joined["y"].to_numpy(float)
    bb, pb = models["bin"]["bank"]["body"], models["bin"]["platform"]["body"]
    cols, ivs, label = {}, {}, {}
    for name, t in bb["tables"].items():
        col = name + "_b" if name + "_b" in joined else name
        cols[name], ivs[name] = woe_columns(joined[col], t["cuts"], train, y)
    for name, t in pb["tables"].items():   # the platform's cuts at the bank's merges
        groups = bb["platform_tables"][t["bank_label"]]["platform_bins"]
        edges = [t["cuts"][i - 1] for i, _ in groups[1:]]
        col = name + "_p" if name + "_p" in joined else name
        label[t["bank_label"]] = name
        cols[t["bank_label"]], ivs[t["bank_label"]] = woe_columns(joined[col], edges,
                                                                  train, y)
    # IV recomputed from the joined rows equals the federated binning's
    for f, iv in ivs.items():
        t = bb["tables"].get(f) or bb["platform_tables"][f]
        assert abs(t["iv"] - iv) < 1e-9, f
    order = sorted(ivs, key=lambda f: (-ivs[f], f))
    corr = pd.DataFrame({f: cols[f][train] for f in bb["tables"]}).corr().fillna(0.0)
    kept = []
    for f in (f for f in order if ivs[f] >= IV_MIN):
        if f in bb["tables"] and any(abs(corr.loc[f, k]) > MAX_CORR for k in kept
                                     if k in bb["tables"]):
            continue
        kept.append(f)
    assert kept == fed_kept
    X = np.column_stack([cols[f] for f in kept])
    mu, sd = X[train].mean(0), X[train].std(0)
    sk = LogisticRegression(C=1.0 / (train.sum() * LAM), max_iter=5000)
    sk.fit((X[train] - mu) / sd, y[train])
    order_test = pd.Series(np.arange(len(ids)), index=ids)[[str(i) for i in test["ids"]]]
    ref = roc_auc_score(y[order_test], sk.decision_function(((X - mu) / sd)[order_test]))
    got = rec["metrics"]["test_auc"]
    print(f"woe_lr pipeline test AUC {got:.5f}, central scikit-learn {ref:.5f}")
    assert abs(got - ref) < 0.003, (got, ref)
    assert abs(roc_auc_score(test["y"], test["p"]) - got) < 1e-12
    # the scorecard's parts use exactly the selected columns, each party its own
    card_b, card_p = models["card"]["bank"], models["card"]["platform"]
    assert card_b["feature_names"] == [f for f in bank.columns if f in kept]
    assert sorted(card_p["feature_names"]) == sorted(label[f] for f in kept if f in label)
    # scoring: points = offset - factor * log-odds (the CSV keeps 6 decimals), reason
    # codes among the bank's variables and the anonymous platform total
    assert list(scored.columns) == ["id", "score", "points", "platform_points",
                                    "reason_1", "reason_2", "reason_3"]
    sc = card_b["body"]["scorecard"]
    p = scored["score"].to_numpy(float)
    ok = (p > 1e-4) & (p < 1 - 1e-4)
    logit = np.log(p[ok] / (1 - p[ok]))
    assert np.abs(scored["points"].to_numpy(float)[ok] - (sc["offset"] - sc["factor"] * logit)
                  ).max() < 0.05 * sc["factor"]
    assert set(scored["reason_1"]) <= set(card_b["feature_names"]) | {"platform", ""}
    assert (scored["reason_1"] != "").any()
    # served online: the scoring job's probabilities, points and first reason code
    # (the CSV keeps 6 decimals)
    first = scored.head(len(served))
    assert [r["id"] for r in served] == first["id"].astype(str).tolist()
    assert np.allclose([r["probability"] for r in served], first["score"], atol=1e-6, rtol=0)
    assert np.allclose([r["points"] for r in served], first["points"], atol=1e-6, rtol=0)
    assert [r["reasons"][0]["feature"] if r["reasons"] else "" for r in served] == \
        first["reason_1"].tolist()
    assert all(r["platform_data"] for r in served)

