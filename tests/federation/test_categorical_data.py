"""Categorical columns through the loader, node.toml and the pipeline (issue 13 part
4): levels sorted locally (integers numerically, text as text), missing cells missing,
``max_categories`` enforced naming the column and the count, a stored model's levels
used at scoring (a level it never saw goes the split's default way), algorithms
without categorical support refused before any message; a SecureBoost job with
categorical columns on both sides through ``run_local`` and through two real nodes
compared with XGBoost (``enable_categorical=True``, hist) on the same rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from sklearn.metrics import roc_auc_score
from support.nodes import running_nodes, wait_state, write_job, write_node_tomls

from federation.config import ConfigError, DatasetConfig, node_config_from_dict
from federation.data import DataError, hashed_split, load_dataset
from psi.ids import normalise

DATA = Path(__file__).resolve().parents[1] / "data"
POLICY = {"allow_insecure_test_jobs": True, "min_key_bits": 1024}


def _ds(path, **kw):
    return DatasetConfig(name="d", path=Path(path), id_column="id", **kw)


def test_levels_sorted_and_missing_cells(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,ind,reg,x\n1,10,north,1\n2,9,south,2\n3,010,,3\n4,NA, north ,4\n"
                 "5,2,east,5\n")
    ds = load_dataset(_ds(p, categorical=["ind", "reg"]))
    assert ds.categories == {"ind": [2, 9, 10], "reg": ["east", "north", "south"]}
    ind, reg = ds.X[:, 0], ds.X[:, 1]
    assert ind[[0, 1, 2, 4]].tolist() == [2, 1, 2, 0] and np.isnan(ind[3])
    assert reg[[0, 1, 3, 4]].tolist() == [1, 2, 1, 0] and np.isnan(reg[2])
    assert ds.X[:, 2].tolist() == [1, 2, 3, 4, 5]
    # a stored model's levels: an unseen level is missing, and counted
    p.write_text("id,ind,reg,x\n1,9,west,1\n2,7,north,2\n")
    ds = load_dataset(_ds(p), categories={"ind": [2, 9, 10], "reg": ["east", "north"]})
    assert ds.X[0, 0] == 1 and np.isnan(ds.X[1, 0]) and np.isnan(ds.X[0, 1])
    assert ds.X[1, 1] == 1 and ds.unseen == {"ind": 1, "reg": 1}


def test_too_many_levels_is_a_clear_error(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,ind\n" + "".join(f"{i},SECRET{i}\n" for i in range(12)))
    with pytest.raises(DataError, match=r"categorical column 'ind' has 12 distinct levels, "
                       r"more than max_categories = 10 \(\[datasets.d\] max_categories\)"
                       ) as ei:
        load_dataset(_ds(p, categorical=["ind"], max_categories=10))
    assert str(p) in str(ei.value) and "SECRET" not in str(ei.value)
    with pytest.raises(DataError, match=r"categorical column\(s\) \['nope'\]"):
        load_dataset(_ds(p, categorical=["nope"]))


def test_dataframe_category_dtype_is_categorical():
    df = pd.DataFrame({"id": ["a", "b", "c"], "c": pd.Categorical(["z", "y", None]),
                       "n": [1.0, 2.0, 3.0]})
    ds = load_dataset(_ds("frame", frame=df))
    assert ds.categories == {"c": ["y", "z"]} and ds.X[:2, 0].tolist() == [1, 0]
    assert np.isnan(ds.X[2, 0])


def _node(datasets: dict):
    raw = {"node": {"party": "platform", "name": "p", "listen": "127.0.0.1:0",
                    "data_dir": "d"},
           "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
           "peer": {"name": "b", "address": "127.0.0.1:1", "cert_fingerprint": "00" * 32,
                    "signing_public_key": "00" * 32, "cert": "c"},
           "datasets": datasets}
    return node_config_from_dict(raw, "node.toml", base=Path("."))


@pytest.mark.parametrize("ds,match", [
    ({"categorical": ["a", "a"]}, "duplicate"),
    ({"categorical": ["id"]}, "not a feature column"),
    ({"columns": ["a"], "categorical": ["b"]}, "not a feature column"),
    ({"categorical": ["a"], "max_categories": 1}, r"must be in \[2, 32767\]"),
    ({"categorical": "a"}, "categorical"),
])
def test_node_toml_categorical_keys(ds, match):
    with pytest.raises(ConfigError, match=match):
        _node({"e": {"path": "e.csv", **ds}})
    cfg = _node({"e": {"path": "e.csv", "categorical": ["a"], "max_categories": 50}})
    assert cfg.datasets["e"].categorical == ["a"] and cfg.datasets["e"].max_categories == 50


# --------------------------------------------------------------- pipeline data
EDU = ["graduate", "university", "high_school", "others", "unknown", "unknown2", "zero"]


def credit_files(tmp_path: Path, rows: int = 4000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """default_credit with text / integer categorical columns on both sides (numeric
    features rounded so that XGBoost's sketch is exact, independent of row order)."""
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv").head(rows)
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv").head(rows)
    for df, cols in ((g, ["x0"]), (h, ["x1", "x2", "x3", "x5", "x6"])):
        for c in cols:
            lv = np.unique(df[c])
            df[c] = np.searchsorted(lv, df[c])
    g["x0"] = [f"pay{v:02d}" for v in g["x0"]]          # text levels, bank side
    h["x2"] = [EDU[v] for v in h["x2"]]                   # text levels, platform side
    for df in (g, h):
        for c in df.columns:
            if df[c].dtype.kind == "f":
                df[c] = df[c].round(1)
    g.to_csv(tmp_path / "bank.csv", index=False)
    h.to_csv(tmp_path / "platform.csv", index=False)
    return g, h


def xgb_reference(g, h, psi_rows_b, psi_rows_p, test, params):
    """XGBoost on the joined rows (pipeline order), the same levels as the loader."""
    cols = {}
    for df, rows, cat in ((g, psi_rows_b, ["x0"]), (h, psi_rows_p,
                                                    ["x1", "x2", "x3", "x5", "x6"])):
        sub = df.iloc[rows].drop(columns=["id", "y"], errors="ignore")
        for c in sub.columns:
            if c in cat:
                levels = sorted(set(df[c]))       # the loader's levels (whole file)
                cols[f"{id(df)}{c}"] = pd.Categorical(sub[c].to_numpy(), categories=levels)
            else:
                cols[f"{id(df)}{c}"] = sub[c].to_numpy(float)
    X = pd.DataFrame(cols)
    y = g["y"].to_numpy(float)[psi_rows_b]
    m = xgb.train(dict(tree_method="hist", max_bin=params["max_bin"],
                       max_depth=params["max_depth"], eta=params["learning_rate"],
                       reg_lambda=1.0, min_child_weight=1.0, base_score=float(y[~test].mean()),
                       objective="binary:logistic", nthread=1),
                  xgb.DMatrix(X[~test], y[~test], enable_categorical=True), params["n_trees"])
    return roc_auc_score(y[test], m.predict(xgb.DMatrix(X[test], enable_categorical=True)))


SB = {"n_trees": 6, "max_depth": 4, "max_bin": 256, "learning_rate": 0.3}
JOB = {"job": {"name": "sb-cat", "algorithm": "secureboost", "dataset": "loans",
               "peer_dataset": "ent"}, "psi": {"id_type": "string"}, "params": SB,
       "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.2}}


def test_run_local_categorical_both_sides_matches_xgboost(tmp_path):
    import fedjoint
    g, h = credit_files(tmp_path)
    cats = {"bank": ["x0"], "platform": ["x1", "x2", "x3", "x5", "x6"]}
    res = fedjoint.run_local(JOB, bank=tmp_path / "bank.csv", platform=tmp_path / "platform.csv",
                             bank_policy=POLICY, platform_policy=POLICY, seed=4,
                             categorical=cats)
    ids = [str(i) for i in g["id"].to_numpy()[res.bank.psi_rows]]
    test = hashed_split([normalise(i, "string") for i in ids], 0.2, "fedjoint")
    ref = xgb_reference(g, h, res.bank.psi_rows, res.platform.psi_rows, test, SB)
    print("run_local categorical test AUC", res.metrics["test_auc"], "xgboost", ref)
    assert abs(res.metrics["test_auc"] - ref) < 0.003, (res.metrics["test_auc"], ref)
    assert res.platform_model.body["categories"]["x2"] == sorted(set(h["x2"]))
    assert res.bank_model.body["categories"] == {"x0": sorted(set(g["x0"]))}
    # scoring with levels the model never saw: those cells go the default way
    h2 = h.copy()
    h2.loc[:99, "x5"] = 99                                   # PAY_0: the root's feature
    bank = pd.read_csv(tmp_path / "bank.csv")
    base = res.score(bank, h).set_index("id")["score"].sort_index()
    new = res.score(bank, h2).set_index("id")["score"].sort_index()
    h3 = h.copy()
    h3["x5"] = h3["x5"].astype(object)
    h3.loc[:99, "x5"] = ""                                   # the same cells, missing
    miss = res.score(bank, h3).set_index("id")["score"].sort_index()
    assert np.allclose(new.to_numpy(), miss.to_numpy()) and not np.allclose(
        new.to_numpy(), base.to_numpy())
    # logistic regression takes no categorical columns: refused before any message
    lr = {**JOB, "job": {**JOB["job"], "algorithm": "logistic_regression"},
          "params": {"epochs": 2}}
    with pytest.raises(fedjoint.FedjointError, match=r"categorical column\(s\) \['x0'\]; "
                       r"logistic_regression takes numeric features only"):
        fedjoint.run_local(lr, bank=tmp_path / "bank.csv", platform=tmp_path / "platform.csv",
                           bank_policy=POLICY, platform_policy=POLICY, seed=4,
                           categorical=cats)


def test_two_nodes_categorical_secureboost(tmp_path):
    from federation.admin import AdminClient
    from federation.config import load_job_spec
    bank_toml, plat_toml = write_node_tomls(tmp_path)
    g, h = credit_files(tmp_path, rows=3000)          # overwrites the nodes' data files
    for toml, cats in ((bank_toml, '["x0"]'), (plat_toml, '["x1", "x2", "x3", "x5", "x6"]')):
        text = toml.read_text().replace('id_column = "id"\n',
                                        f'id_column = "id"\ncategorical = {cats}\n', 1)
        if toml == bank_toml:   # the same file, with too low a bound on its levels
            text = text.replace("[policy]", f'[datasets.loans3]\npath = "{tmp_path / "bank.csv"}"'
                                '\nlabel_column = "y"\ncategorical = ["x0"]\n'
                                "max_categories = 3\n\n[policy]", 1)
        toml.write_text(text)
    with running_nodes(bank_toml, plat_toml) as nodes:
        client, pclient = AdminClient(nodes[0].data_dir), AdminClient(nodes[1].data_dir)
        job = write_job(tmp_path, "sbcat", "secureboost", params=SB)
        jid = client.call("submit", spec=load_job_spec(job).to_dict(),
                          source=str(job))["job_id"]
        rec = wait_state(client, jid, timeout=300)
        assert rec["state"] == "done", rec["error"]
        assert wait_state(pclient, jid, timeout=60)["state"] == "done"
        j = g.merge(h, on="id")
        ids = [normalise(str(i), "string") for i in j["id"]]
        test = hashed_split(ids, 0.25, "fedjoint")            # write_job: 0.25
        rows = np.arange(len(j))
        ref = xgb_reference(g, h, rows, rows, test, SB)
        got = rec["metrics"]["test_auc"]
        print("nodes categorical test AUC", got, "xgboost", ref)
        assert abs(got - ref) < 0.003, (got, ref)
        # an auditor replays each side from its transcript (the same levels again)
        from federation import audit
        for tr in (rec["artifacts"]["transcript"],
                   pclient.call("status", job_id=jid)["artifacts"]["transcript"]):
            r = audit.replay(tr, tmp_path)
            assert r.ok, r.errors
        # a scoring job maps the files' levels with the model's lists
        out = tmp_path / "scores.csv"
        sj = write_job(tmp_path, "score", "score", extra_job={"model": jid, "output": str(out)})
        sid = client.call("submit", spec=load_job_spec(sj).to_dict(), source=str(sj))["job_id"]
        assert wait_state(client, sid, timeout=120)["state"] == "done"
        assert len(out.read_text().splitlines()) == len(j) + 1
        # a column with more levels than its dataset's max_categories: the job fails at
        # the bank's load, naming the column and the count, before any message
        bad = tmp_path / "bad.toml"
        bad.write_text(job.read_text().replace('dataset = "loans"', 'dataset = "loans3"'))
        jid = client.call("submit", spec=load_job_spec(bad).to_dict(),
                          source=str(bad))["job_id"]
        rec = wait_state(client, jid, timeout=120)
        assert rec["state"] == "failed" and "categorical column 'x0' has 9 distinct " \
            "levels, more than max_categories = 3" in rec["error"], rec["error"]


def test_job_validate_checks_categorical_columns(tmp_path, capsys):
    from federation.cli import main
    bank_toml, _ = write_node_tomls(tmp_path)
    bank_toml.write_text(bank_toml.read_text().replace(
        'id_column = "id"\n', 'id_column = "id"\ncategorical = ["x0"]\n', 1))

    def validate(algorithm: str) -> str:
        job = write_job(tmp_path, algorithm, algorithm)
        try:
            main(["job", "validate", str(job), "--config", str(bank_toml)])
        except SystemExit:
            pass
        out = capsys.readouterr().out
        return next(ln for ln in out.splitlines() if "categorical columns" in ln)

    assert validate("secureboost").lstrip().startswith("ok")
    bad = validate("logistic_regression")
    assert bad.lstrip().startswith("FAIL") and "takes numeric features only" in bad, bad
