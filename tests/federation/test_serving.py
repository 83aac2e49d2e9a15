"""Online scoring (issue 15) with two real nodes on loopback and real HTTP: a SecureBoost
and an LR model trained by jobs, served by ``fedjoint serve``'s application (uvicorn
in a thread), the platform answering over the mutual-TLS channel.

* served scores equal the scoring job's bit for bit (the job's result digest is
  recomputed from the served probabilities, in the job's row order);
* bad input is a 4xx naming the field, never a 500;
* the platform's policy: models not listed, the rate and the daily budget, IDs it does
  not hold ("no_data": the model's defaults, flagged; "refuse": 404);
* the service survives the platform node restarting (503 while it is down, then
  scores again on a new session).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from support.nodes import make_party_keys, start_node, wait_state, write_job, write_node_tomls

from federation.admin import AdminClient
from federation.config import load_job_spec, load_node_config
from federation.data import load_dataset
from federation.node import Node

pytest.importorskip("fastapi")


def _run_job(client, job: Path) -> dict:
    jid = client.call("submit", spec=load_job_spec(job).to_dict(), source=str(job))["job_id"]
    rec = wait_state(client, jid, timeout=120)
    assert rec["state"] == "done", rec["error"]
    return rec


def _set_serving(plat: Node, toml: Path, **serving) -> None:
    """Rewrite platform.toml's [serving] and reload the running node."""
    text = toml.read_text().split("\n[serving]\n")[0]
    lines = ["", "[serving]"] + [f"{k} = {json.dumps(v)}" for k, v in serving.items()]
    toml.write_text(text + "\n".join(lines) + "\n")
    AdminClient(plat.data_dir).call("reload")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Both nodes, an SB and an LR model, their scoring jobs, and the serving app."""
    from federation.cli.serve import build
    from federation.serving.app import ThreadedServer
    tmp = tmp_path_factory.mktemp("serving")
    bank_toml, plat_toml = write_node_tomls(tmp, keys=make_party_keys(tmp))
    # a loaded test machine: lookups may wait longer than the 2 s default
    with open(bank_toml, "a") as fh:
        fh.write("\n[limits]\nserve_lookup_timeout_s = 15.0\n")
    bank, plat = start_node(bank_toml), start_node(plat_toml)
    srv, world = None, {"plat": plat}
    try:
        client = AdminClient(bank.data_dir)
        sb = _run_job(client, write_job(tmp, "sb", "secureboost",
                                        params={"n_trees": 4, "max_depth": 3}))["job_id"]
        lr = _run_job(client, write_job(tmp, "lr", params={"epochs": 3, "batch_size": 128}))["job_id"]
        jobs = {m: _run_job(client, write_job(tmp, f"score-{m[:2]}", "score",
                                              extra_job={"model": m})) for m in (sb, lr)}
        _set_serving(plat, plat_toml, models=[sb, lr], rate_per_s=100000.0)
        cfg = load_node_config(bank_toml)
        app, models, token = build(cfg, [sb, lr])
        srv = ThreadedServer(app).start()
        world.update({"tmp": tmp, "bank": bank, "plat_toml": plat_toml, "cfg": cfg,
                      "sb": sb, "lr": lr, "jobs": jobs, "url": srv.url, "token": token,
                      "models": {m.model_id: m for m in models}})
        yield world
    finally:
        if srv is not None:
            srv.stop()
        bank.stop()
        world["plat"].stop()      # the platform node running now (a test restarts it)


def _http(world) -> httpx.Client:
    return httpx.Client(base_url=world["url"], timeout=30,
                        headers={"Authorization": f"Bearer {world['token']}"})


def _applicants(world, model_id: str) -> tuple[list[str], list[dict]]:
    """The bank's rows of the scoring job, in its order, as API applicants."""
    served = world["models"][model_id]
    ds = world["cfg"].dataset("loans")
    data = load_dataset(ds, need_label=False)
    pos = {str(i): r for r, i in enumerate(data.ids)}
    cols = [data.feature_names.index(f) for f in served.features]
    rec = world["jobs"][model_id]
    ids = [line.split(",")[0] for line in
           Path(rec["artifacts"]["scores"]).read_text().splitlines()[1:]]
    apps = []
    for i in ids:
        row = data.X[pos[i], cols]
        apps.append({"id": i, "features": {f: (None if np.isnan(v) else float(v))
                                           for f, v in zip(served.features, row, strict=True)}})
    return ids, apps


@pytest.mark.parametrize("which", ["sb", "lr"])
def test_served_scores_equal_the_scoring_job_bit_for_bit(world, which):
    from federation.runner import _digest, model_path
    from parties.common.artifact import ModelPart
    model_id = world[which]
    ids, apps = _applicants(world, model_id)
    with _http(world) as c:
        r = c.post("/v1/score:batch", json={"model": model_id, "applicants": apps})
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        p = np.array([x["probability"] for x in res])
        assert all(x["platform_data"] for x in res) and [x["id"] for x in res] == ids
        # one at a time: the same bits as in the batch
        for k in (0, 7, len(apps) - 1):
            one = c.post("/v1/score", json={"model": model_id, **apps[k]}).json()
            assert one["probability"] == p[k] and one["id"] == ids[k]
            assert one["score"] == res[k]["score"]
    # the scoring job's result digest binds its model part and its probabilities (f8)
    part = ModelPart.load(model_path(world["cfg"], model_id))
    digest = _digest(b"fedjoint-score-result-v1", part.digest().encode(),
                     p.astype(">f8").tobytes(), str(len(ids)).encode())
    assert digest == world["jobs"][model_id]["checkpoint"]["model_digest"]
    csv = [float(line.split(",")[1]) for line in Path(
        world["jobs"][model_id]["artifacts"]["scores"]).read_text().splitlines()[1:]]
    assert np.allclose(csv, p, atol=1e-6, rtol=0)


def test_bad_input_is_a_4xx_naming_the_field(world):
    sb = world["sb"]
    _, apps = _applicants(world, sb)
    good = {"model": sb, **apps[0]}
    feats = dict(apps[0]["features"])
    first = next(iter(feats))
    cases = [
        (b"{not json", 400, "body", "malformed JSON"),
        (b"[1, 2]", 400, "body", "JSON object"),
        (b'{"model": "x", "id": "1", "features": {"a": NaN}}', 400, "body", "NaN"),
        ({**good, "extra": 1}, 422, "extra", "unexpected field extra"),
        ({k: v for k, v in good.items() if k != "id"}, 422, "id", "missing field id"),
        ({**good, "model": "nope"}, 404, "model", "not served here"),
        ({**good, "id": 17}, 422, "id", "expected a non-empty string"),
        ({**good, "features": [1, 2]}, 422, "features", "expected an object"),
        ({**good, "features": {k: v for k, v in feats.items() if k != first}}, 422,
         f"features.{first}", f"missing feature(s) {first}"),
        ({**good, "features": {**feats, "zz_unknown": 1.0}}, 422, "features.zz_unknown",
         "unexpected feature(s) zz_unknown"),
        ({**good, "features": {**feats, first: "1.5"}}, 422, f"features.{first}",
         "expected a number or null, got str"),
        ({**good, "features": {**feats, first: True}}, 422, f"features.{first}",
         "got bool"),
        ({**good, "features": {**feats, first: 10 ** 400}}, 422, f"features.{first}",
         "expected a finite number"),
    ]
    with _http(world) as c:
        for body, status, field, text in cases:
            r = (c.post("/v1/score", content=body) if isinstance(body, bytes)
                 else c.post("/v1/score", json=body))
            assert r.status_code == status, (body, r.text)
            assert r.json()["field"] == field and text in r.json()["error"], (body, r.text)
        lim = world["cfg"].limits
        r = c.post("/v1/score:batch", json={"model": sb, "applicants": [apps[0]] *
                                            (lim.serve_max_batch_rows + 1)})
        assert r.status_code == 422 and r.json()["field"] == "applicants", r.text
        r = c.post("/v1/score:batch", json={"model": sb, "applicants": [
            apps[0], {"id": "x", "features": {**feats, first: "bad"}}]})
        assert r.status_code == 422 and r.json()["field"] == f"applicants[1].features.{first}"
        # LR trained with nan_policy "fail": a missing value is refused, naming the column
        lr_apps = _applicants(world, world["lr"])[1]
        lr_feats = dict(lr_apps[0]["features"])
        lr_first = next(iter(lr_feats))
        r = c.post("/v1/score:batch", json={"model": world["lr"], "applicants": [
            lr_apps[0], {"id": "x", "features": {**lr_feats, lr_first: None}}]})
        assert r.status_code == 422 and r.json()["field"] == "applicants[1].features", r.text
        assert repr(lr_first) in r.json()["error"] and "fail" in r.json()["error"]
        r = c.post("/v1/score", content=b"{" + b" " * lim.serve_max_body_bytes + b"}")
        assert r.status_code == 413 and "limits.serve_max_body_bytes" in r.json()["error"]
        for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
            r = c.post("/v1/score", json=good, headers=headers)
            assert r.status_code == 401 and r.json()["field"] == "authorization"
        assert c.get("/v1/models", headers={"Authorization": "x"}).status_code == 401
        assert c.get("/healthz").json() == {"status": "ok"}
        doc = c.get("/openapi.json").json()
        assert {"/v1/score", "/v1/score:batch", "/v1/models", "/healthz"} <= set(doc["paths"])
        models = c.get("/v1/models").json()["models"]
        assert {m["model"] for m in models} == {sb, world["lr"]}


def test_platform_policy_unknown_ids_rate_and_budget(world):
    sb, lr, plat, toml = world["sb"], world["lr"], world["plat"], world["plat_toml"]
    _, apps = _applicants(world, sb)
    feats = apps[0]["features"]
    served = world["models"][sb]
    with _http(world) as c:
        # an ID the platform does not hold: the model's default directions, flagged
        r = c.post("/v1/score", json={"model": sb, "id": "not-a-platform-id",
                                      "features": feats}).json()
        assert r["platform_data"] is False
        X = np.array([[np.nan if v is None else v for v in feats.values()]])
        defaults = [bool(s["default_left"]) for s in _platform_splits(world, sb,
                                                                       served.scorer.keys)]
        all_default = served.scorer.score(X, np.packbits(np.array([defaults]), axis=1), None)
        assert r["score"] == float(all_default.score[0])
        r = c.post("/v1/score", json={"model": lr, "id": "not-a-platform-id",
                                      "features": _applicants(world, lr)[1][0]["features"]})
        assert r.json()["platform_data"] is False
        _set_serving(plat, toml, models=[sb, lr], unknown_ids="refuse", rate_per_s=100000.0)
        r = c.post("/v1/score", json={"model": sb, "id": "not-a-platform-id",
                                      "features": feats})
        assert r.status_code == 404 and "holds no data" in r.json()["error"], r.text
        # the model is no longer listed: refused by the platform's policy
        _set_serving(plat, toml, models=[lr], rate_per_s=100000.0)
        r = c.post("/v1/score", json={"model": sb, **apps[1]})
        assert r.status_code == 403 and "[serving] models" in r.json()["error"], r.text
        # the rate: a burst of one second's worth, then 429 (a batch larger than that
        # passes, then the bucket is in debt)
        _set_serving(plat, toml, models=[sb, lr], rate_per_s=1.0)
        codes = [c.post("/v1/score", json={"model": sb, **apps[k]}).status_code
                 for k in range(6)]
        assert 429 in codes and codes[0] == 200, codes
        r = c.post("/v1/score", json={"model": sb, **apps[0]})
        assert r.status_code == 429 and "serving.rate_per_s" in r.json()["error"]
        # the day's budget (what was used today stays counted)
        used = plat.serving._used
        _set_serving(plat, toml, models=[sb, lr], rate_per_s=100000.0, daily_budget=used + 2)
        r = c.post("/v1/score:batch", json={"model": sb, "applicants": apps[:3]})
        assert r.status_code == 429 and "serving.daily_budget" in r.json()["error"], r.text
        assert c.post("/v1/score:batch", json={"model": sb, "applicants": apps[:2]}
                      ).status_code == 200
        _set_serving(plat, toml, models=[sb, lr], rate_per_s=100000.0)
    # what the platform learned is in its ledger: pseudonyms, never raw IDs
    ledger = (plat.data_dir / "serving" / "ledger.jsonl").read_text()
    assert "not-a-platform-id" not in ledger
    assert json.dumps(str(apps[0]["id"])) not in ledger   # as a JSON string: "0", not 0
    rec = json.loads(ledger.splitlines()[-1])
    assert rec["n"] == 2 and len(rec["ids"][0]) == 32


def _platform_splits(world, model_id, keys):
    from federation.runner import model_path
    from parties.common.artifact import ModelPart
    part = ModelPart.load(model_path(load_node_config(world["plat_toml"]), model_id))
    return [part.body["splits"][k] for k in keys]


def test_the_service_survives_the_platform_restarting(world):
    sb = world["sb"]
    _, apps = _applicants(world, sb)
    with _http(world) as c:
        before = c.post("/v1/score", json={"model": sb, **apps[3]}).json()
        world["plat"].stop()
        r = c.post("/v1/score", json={"model": sb, **apps[3]})
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        world["plat"] = start_node(world["plat_toml"])
        deadline = time.monotonic() + 30     # the channel reconnects (backoff <= 1 s)
        while True:
            r = c.post("/v1/score", json={"model": sb, **apps[3]})
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.status_code == 503, r.text
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert r.json()["probability"] == before["probability"]
        m = {x["model"]: x for x in c.get("/v1/models").json()["models"]}[sb]
        assert m["counters"]["reopened"] >= 1


@pytest.mark.parametrize("which", ["sb", "lr"])
def test_score_file_through_the_pseudonym_store_equals_the_scoring_job(world, which, capsys):
    """Part 4: a CSV scored with no PSI (``fedjoint serve --score-file``), in chunks,
    gives the scoring job's probabilities bit for bit; a bad cell names its column."""
    from federation.cli import main
    model_id = world[which]
    src = world["cfg"].dataset("loans").path
    out = world["tmp"] / f"bulk-{which}.csv"
    main(["serve", "--config", str(world["cfg"].file), "--model", model_id,
          "--score-file", str(src), "--out", str(out)])
    assert "scored 569 applicants" in capsys.readouterr().out
    got = {}
    for line in out.read_text().splitlines()[1:]:
        i, score, p, held = line.split(",")
        assert held == "true"
        got[i] = float(p)
    ids, apps = _applicants(world, model_id)
    with _http(world) as c:
        res = c.post("/v1/score:batch", json={"model": model_id, "applicants": apps}).json()
    assert [got[i] for i in ids] == [r["probability"] for r in res["results"]]
    bad = world["tmp"] / "bad.csv"
    lines = Path(src).read_text().splitlines()
    col = lines[0].split(",")[2]
    head = lines[0].split(",")
    row = lines[5].split(",")
    row[head.index(col)] = "abc"
    bad.write_text("\n".join([lines[0], *lines[1:5], ",".join(row)]) + "\n")
    with pytest.raises(SystemExit):
        main(["serve", "--config", str(world["cfg"].file), "--model", model_id,
              "--score-file", str(bad), "--out", str(world["tmp"] / "bad-out.csv")])
    err = capsys.readouterr().err
    assert f"column {col!r} is not numeric" in err and "data row 5" in err, err


def _full_rows(world, model_id: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The scoring job's applicants as full-model rows (columns ``names``: the bank's,
    then ``platform.<name>`` from the platform's dataset; NaN where missing) and their
    federated probabilities from the service."""
    _, apps = _applicants(world, model_id)
    pdata = load_dataset(load_node_config(world["plat_toml"]).dataset("enterprises"),
                         need_label=False)
    prow = {str(i): r for r, i in enumerate(pdata.ids)}
    nb = len(world["models"][model_id].features)
    X = np.array([[np.nan if a["features"][f] is None else a["features"][f]
                   for f in names[:nb]] +
                  [pdata.X[prow[a["id"]], pdata.feature_names.index(f[len("platform."):])]
                   for f in names[nb:]] for a in apps])
    with _http(world) as c:
        res = c.post("/v1/score:batch", json={"model": model_id, "applicants": apps}).json()
    return X, np.array([r["probability"] for r in res["results"]])


def test_full_export_to_xgboost_json_needs_both_policies(world, capsys):
    """Part 5: the full SecureBoost model as XGBoost JSON predicts within 1e-6 of the
    federated scores; refused (saying so) unless both nodes list it in reveal_models."""
    import xgboost as xgb

    from federation.cli import main
    sb, plat = world["sb"], world["plat"]
    out = world["tmp"] / "full.json"
    bank_toml = Path(world["cfg"].file)
    argv = ["model", "export", sb, "--format", "xgboost-json", "--out", str(out),
            "--config", str(bank_toml)]
    with pytest.raises(SystemExit):          # the bank's own policy does not list it
        main(argv)
    assert "not in [serving] reveal_models of bank-a" in capsys.readouterr().err
    base = bank_toml.read_text()
    bank_toml.write_text(base + f'\n[serving]\nreveal_models = ["{sb}"]\n')
    try:
        with pytest.raises(SystemExit):      # the platform's does not
            main(argv)
        assert "refused by platform-b" in capsys.readouterr().err
        _set_serving(plat, world["plat_toml"], models=[sb, world["lr"]], rate_per_s=1e5,
                     reveal_models=[sb])
        main(argv)
        assert "revealed by platform-b" in capsys.readouterr().out
    finally:
        bank_toml.write_text(base)
        _set_serving(plat, world["plat_toml"], models=[sb, world["lr"]], rate_per_s=1e5)
    booster = xgb.Booster(model_file=str(out))
    names = booster.feature_names
    X, p_fed = _full_rows(world, sb, names)
    p_xgb = booster.predict(xgb.DMatrix(X, feature_names=names))
    assert np.max(np.abs(p_xgb - p_fed)) < 1e-6
    st = json.loads((world["tmp"] / "full.json.reveal.json").read_text())
    assert st["statement"]["model"] == sb and len(st["signature"]) == 128


def test_full_export_of_lr_as_a_scikit_learn_model(world, capsys):
    from federation.cli import main
    from federation.serving.export import sklearn_model
    lr, plat = world["lr"], world["plat"]
    out = world["tmp"] / "lr.json"
    bank_toml = Path(world["cfg"].file)
    base = bank_toml.read_text()
    bank_toml.write_text(base + f'\n[serving]\nreveal_models = ["{lr}"]\n')
    _set_serving(plat, world["plat_toml"], models=[world["sb"], lr], rate_per_s=1e5,
                 reveal_models=[lr])
    try:
        with pytest.raises(SystemExit):
            main(["model", "export", lr, "--format", "xgboost-json", "--out", str(out),
                  "--config", str(bank_toml)])
        assert "no xgboost-json export (formats: fedjoint, sklearn-json, onnx, pmml)" in \
            capsys.readouterr().err
        main(["model", "export", lr, "--format", "sklearn-json", "--out", str(out),
              "--config", str(bank_toml)])
    finally:
        bank_toml.write_text(base)
        _set_serving(plat, world["plat_toml"], models=[world["sb"], lr], rate_per_s=1e5)
    doc = json.loads(out.read_text())
    model = sklearn_model(doc)
    names = doc["feature_names"]
    X, p_fed = _full_rows(world, lr, names)
    import pandas as pd
    p_sk = model.predict_proba(pd.DataFrame(X, columns=names))[:, 1]
    assert np.max(np.abs(p_sk - p_fed)) < 1e-9


def test_full_export_as_onnx_and_pmml_predicts_the_federated_scores(world, capsys):
    """--format onnx for both models: onnxruntime's probabilities equal the federated
    scores (LR: float64 graph, 1e-12; SecureBoost: float32 trees as in XGBoost, 1e-6);
    missing cells score as XGBoost scores the XGBoost-JSON export; --format pmml for LR,
    evaluated by sklearn-pmml-model (1e-12); SecureBoost has no PMML export and the
    refusal names the formats it has."""
    ort = pytest.importorskip("onnxruntime")
    import onnx
    import pandas as pd
    import xgboost as xgb
    from sklearn_pmml_model.linear_model import PMMLLogisticRegression

    from federation.cli import main
    from federation.serving.export import fetch_platform_table, xgboost_json
    sb, lr, plat = world["sb"], world["lr"], world["plat"]
    bank_toml = Path(world["cfg"].file)
    base = bank_toml.read_text()
    bank_toml.write_text(base + f'\n[serving]\nreveal_models = ["{sb}", "{lr}"]\n')
    _set_serving(plat, world["plat_toml"], models=[sb, lr], rate_per_s=1e5,
                 reveal_models=[sb, lr])
    try:
        for m in (sb, lr):
            main(["model", "export", m, "--format", "onnx", "--out",
                  str(world["tmp"] / f"{m}.onnx"), "--config", str(bank_toml)])
            assert "as onnx" in capsys.readouterr().out
        pmml = world["tmp"] / "lr.pmml"
        main(["model", "export", lr, "--format", "pmml", "--out", str(pmml),
              "--config", str(bank_toml)])
        with pytest.raises(SystemExit):
            main(["model", "export", sb, "--format", "pmml", "--out", str(pmml) + ".sb",
                  "--config", str(bank_toml)])
        assert "no pmml export (formats: fedjoint, xgboost-json, onnx)" in \
            capsys.readouterr().err
        sb_doc = xgboost_json(*fetch_platform_table(load_node_config(bank_toml), sb))
    finally:
        bank_toml.write_text(base)
        _set_serving(plat, world["plat_toml"], models=[sb, lr], rate_per_s=1e5)
    for m, dtype, tol in ((sb, np.float32, 1e-6), (lr, np.float64, 1e-12)):
        path = world["tmp"] / f"{m}.onnx"
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        names = json.loads(meta["feature_names"])
        X, p_fed = _full_rows(world, m, names)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        label, proba = sess.run(["label", "probabilities"], {"input": X.astype(dtype)})
        assert proba.shape == (len(X), 2) and meta["fedjoint_model"] == m
        assert np.max(np.abs(proba[:, 1] - p_fed)) < tol, (m, np.max(np.abs(proba[:, 1] - p_fed)))
        assert (label == (proba[:, 1] > 0.5)).all()
        if m == sb:   # missing cells (none in the data) follow the default directions
            X[::3, ::2] = np.nan
            booster = xgb.Booster(model_file=bytearray(json.dumps(sb_doc).encode()))
            p_na = sess.run(["probabilities"], {"input": X.astype(dtype)})[0][:, 1]
            p_xgb = booster.predict(xgb.DMatrix(X, feature_names=names))
            assert np.max(np.abs(p_na - p_xgb)) < 1e-6
            assert np.max(np.abs(p_na - proba[:, 1])) > 1e-3   # the cells were used
    X, p_fed = _full_rows(world, lr, names)        # names: the LR's, from the loop
    p_pmml = PMMLLogisticRegression(pmml=str(pmml)).predict_proba(
        pd.DataFrame(X, columns=names))[:, 1]
    assert np.max(np.abs(p_pmml - p_fed)) < 1e-12


def test_multiclass_secureboost_serves_the_scoring_jobs_class_probabilities(world):
    """A 3-class SecureBoost model (the label cut from a bank feature): served per-class
    probabilities equal the scoring job's (its result digest binds them)."""
    from federation.runner import _digest, model_path
    from parties.common.artifact import ModelPart
    tmp, bank = world["tmp"], world["bank"]
    src = world["cfg"].dataset("loans").path
    lines = Path(src).read_text().splitlines()
    head = lines[0].split(",")
    yi, xi = head.index("y"), head.index(world["models"][world["sb"]].features[0])
    vals = sorted(float(r.split(",")[xi]) for r in lines[1:])
    cuts = vals[len(vals) // 3], vals[2 * len(vals) // 3]
    out = [lines[0]]
    for r in lines[1:]:
        c = r.split(",")
        x = float(c[xi])
        c[yi] = str(0 if x < cuts[0] else 1 if x < cuts[1] else 2)
        out.append(",".join(c))
    (tmp / "bank3.csv").write_text("\n".join(out) + "\n")
    bank_toml = Path(world["cfg"].file)
    base = bank_toml.read_text()
    bank_toml.write_text(base + '\n[datasets.loans3]\npath = "bank3.csv"\nid_column = "id"\n'
                         'label_column = "y"\n')
    try:
        client = AdminClient(bank.data_dir)
        client.call("reload")
        job = write_job(tmp, "mc", "secureboost", params={
            "n_trees": 3, "max_depth": 3, "objective": "multi:softprob"})
        job.write_text(job.read_text().replace('dataset = "loans"', 'dataset = "loans3"'))
        mc = _run_job(client, job)["job_id"]
        score = write_job(tmp, "score-mc", "score", extra_job={"model": mc})
        score.write_text(score.read_text().replace('dataset = "loans"', 'dataset = "loans3"'))
        rec = _run_job(client, score)
        _set_serving(world["plat"], world["plat_toml"], models=[mc], rate_per_s=1e5)
        from federation.cli.serve import build
        from federation.serving.app import ThreadedServer
        cfg = load_node_config(bank_toml)
        app, models, token = build(cfg, [mc])
        srv = ThreadedServer(app).start()
        try:
            ds = cfg.dataset("loans3")
            data = load_dataset(ds, need_label=False)
            feats = models[0].features
            cols = [data.feature_names.index(f) for f in feats]
            pos = {str(i): r for r, i in enumerate(data.ids)}
            ids = [ln.split(",")[0] for ln in
                   Path(rec["artifacts"]["scores"]).read_text().splitlines()[1:]]
            apps = [{"id": i, "features": {f: float(v) for f, v in
                                           zip(feats, data.X[pos[i], cols], strict=True)}}
                    for i in ids]
            with httpx.Client(base_url=srv.url, timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as c:
                r = c.post("/v1/score:batch", json={"model": mc, "applicants": apps})
            assert r.status_code == 200, r.text
            res = r.json()["results"]
        finally:
            srv.stop()
    finally:
        bank_toml.write_text(base)
        AdminClient(bank.data_dir).call("reload")
        _set_serving(world["plat"], world["plat_toml"], models=[world["sb"], world["lr"]],
                     rate_per_s=1e5)
    classes = list(res[0]["probabilities"])
    P = np.array([[x["probabilities"][k] for k in classes] for x in res])
    assert len(classes) == 3 and all(x["class"] == int(classes[np.argmax(p)])
                                     for x, p in zip(res, P, strict=True))
    part = ModelPart.load(model_path(cfg, mc))
    digest = _digest(b"fedjoint-score-result-v1", part.digest().encode(),
                     P.astype(">f8").ravel().tobytes(), str(len(ids)).encode())
    assert digest == rec["checkpoint"]["model_digest"]


def test_the_token_file_is_private(tmp_path):
    from federation.cli.common import CliError
    from federation.cli.serve import token_from
    path = tmp_path / "serving.token"
    token = token_from(path)                      # created, 0600
    assert len(token) >= 32 and path.stat().st_mode & 0o777 == 0o600
    assert token_from(path) == token
    path.chmod(0o644)
    with pytest.raises(CliError, match="readable by group or others"):
        token_from(path)


def test_the_fedjoint_serve_command_serves_over_http(world):
    """The console command itself (uvicorn in its own process, [serving] token file)."""
    import subprocess
    import sys

    from support.nodes import free_port
    sb = world["sb"]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "federation.cli", "serve", "--config",
                             str(world["cfg"].file), "--model", sb, "--listen",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, \
                proc.stdout.read().decode()[-2000:]
            time.sleep(0.2)
        _, apps = _applicants(world, sb)
        token = (world["cfg"].data_dir / "serving.token").read_text().strip()
        r = httpx.post(url + "/v1/score", json={"model": sb, **apps[2]}, timeout=30,
                       headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        with _http(world) as c:
            want = c.post("/v1/score", json={"model": sb, **apps[2]}).json()
        assert r.json()["probability"] == want["probability"]
        assert httpx.post(url + "/v1/score", json={}, timeout=30).status_code == 401
    finally:
        proc.terminate()
        proc.wait(15)
