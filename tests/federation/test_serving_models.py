"""Online scoring of the models the first serving tests do not cover, through two real
nodes and real HTTP (issue 15): a SecureBoost model with categorical features on both
sides (the bank's as text levels in the request, the platform's level sets evaluated by
its answerer) and a multinomial logistic regression (the platform's K partial scores in
the one round trip). Served outputs equal the scoring job's bit for bit: the job's
result digest is recomputed from the served probabilities, in the job's row order.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from support.nodes import (
    make_party_keys,
    run_cli,
    running_nodes,
    wait_state,
    write_job,
    write_node_tomls,
)

from federation.admin import AdminClient
from federation.config import load_job_spec, load_node_config
from federation.data import load_dataset

pytest.importorskip("fastapi")

DATA = Path(__file__).resolve().parents[1] / "data"
ROWS = 1200
BANK_NUM = [f"x{i}" for i in range(1, 13)]
PLAT_NUM = ["x0", "x1", "x3", "x4"]


@contextlib.contextmanager
def _revealing(bank_toml: Path, model: str):
    """The bank's node.toml with ``[serving] reveal_models = [model]`` (the export's
    consent), restored on exit."""
    base = bank_toml.read_text()
    bank_toml.write_text(base + f'\n[serving]\nreveal_models = ["{model}"]\n')
    try:
        yield
    finally:
        bank_toml.write_text(base)


def _frames(tmp: Path) -> None:
    """default_credit: a text categorical bank column (x0), a text and an integer
    categorical platform column (x2, x5) and a 4-class label y3 for the LR."""
    g = pd.read_csv(DATA / "default_credit_hetero_guest.csv").head(ROWS)
    h = pd.read_csv(DATA / "default_credit_hetero_host.csv").head(ROWS)
    h = h.drop(columns=["x6", "x7", "x8", "x9"])   # so that bank splits win some nodes
    g["y3"] = 2 * g["y"] + (g["x1"] > 0)
    rng = np.random.default_rng(0)         # x0: 8 text levels, half of them risky
    noisy = np.where(rng.random(len(g)) < 0.4, rng.integers(0, 2, len(g)), g["y"])
    code = 4 * noisy + np.searchsorted(np.unique(g["x0"]), g["x0"]) % 4
    g["x0"] = [f"pay{v:02d}" for v in np.array([5, 0, 7, 2, 1, 6, 3, 4])[code]]
    h["x2"] = [f"edu{v}" for v in np.searchsorted(np.unique(h["x2"]), h["x2"])]
    h["x5"] = np.searchsorted(np.unique(h["x5"]), h["x5"])
    g.to_csv(tmp / "bank.csv", index=False)
    h.to_csv(tmp / "platform.csv", index=False)


def _run_job(client, job: Path) -> dict:
    jid = client.call("submit", spec=load_job_spec(job).to_dict(), source=str(job))["job_id"]
    rec = wait_state(client, jid, timeout=180)
    assert rec["state"] == "done", rec["error"]
    return rec


def _datasets(toml: Path, first: str, extra: str) -> None:
    text = toml.read_text().replace('id_column = "id"\n', f'id_column = "id"\n{first}', 1)
    toml.write_text(text + extra)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from federation.cli.serve import build
    from federation.serving.app import ThreadedServer
    tmp = tmp_path_factory.mktemp("serving-models")
    bank_toml, plat_toml = write_node_tomls(tmp, keys=make_party_keys(tmp))
    _frames(tmp)
    q = ", ".join
    _datasets(bank_toml, f'columns = ["x0", {q(map(repr, BANK_NUM))}]\ncategorical = ["x0"]\n'
              .replace("'", '"'),
              f'\n[datasets.loans3]\npath = "{tmp / "bank.csv"}"\nid_column = "id"\n'
              f'label_column = "y3"\ncolumns = {BANK_NUM}\n'.replace("'", '"')
              + f'\n[datasets.loans_num]\npath = "{tmp / "bank.csv"}"\nid_column = "id"\n'
              f'label_column = "y"\ncolumns = {BANK_NUM}\n'.replace("'", '"')
              + "\n[limits]\nserve_lookup_timeout_s = 15.0\n")
    _datasets(plat_toml, 'categorical = ["x2", "x5"]\n',
              f'\n[datasets.ent_num]\npath = "{tmp / "platform.csv"}"\nid_column = "id"\n'
              f'columns = {PLAT_NUM}\n'.replace("'", '"'))
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        sb = _run_job(client, write_job(tmp, "sbcat", "secureboost",
                                        params={"n_trees": 3, "max_depth": 3}))["job_id"]
        job = write_job(tmp, "mclr", params={"multi_class": "multinomial", "epochs": 3,
                                             "batch_size": 256})
        job.write_text(job.read_text().replace('"loans"', '"loans3"')
                       .replace('"enterprises"', '"ent_num"'))
        lr = _run_job(client, job)["job_id"]
        job = write_job(tmp, "lrb", params={"epochs": 2, "batch_size": 256})
        job.write_text(job.read_text().replace('"loans"', '"loans_num"')
                       .replace('"enterprises"', '"ent_num"'))
        lrb = _run_job(client, job)["job_id"]
        job = write_job(tmp, "sbmc", "secureboost", params={
            "n_trees": 3, "max_depth": 3, "objective": "multi:softprob"})
        job.write_text(job.read_text().replace('"loans"', '"loans3"')
                       .replace('"enterprises"', '"ent_num"'))
        sbmc = _run_job(client, job)["job_id"]
        jobs = {}
        for m, ds, peer in ((sb, "loans", "enterprises"), (lr, "loans3", "ent_num")):
            score = write_job(tmp, f"score-{m[:4]}", "score", extra_job={"model": m})
            score.write_text(score.read_text().replace('"loans"', f'"{ds}"')
                             .replace('"enterprises"', f'"{peer}"'))
            jobs[m] = (_run_job(client, score), ds)
        lines = plat_toml.read_text() + f'\n[serving]\nmodels = ["{sb}", "{lr}"]\n' \
            f'rate_per_s = 100000.0\nreveal_models = ["{lrb}", "{lr}", "{sbmc}", "{sb}"]\n'
        plat_toml.write_text(lines)
        AdminClient(plat.data_dir).call("reload")
        cfg = load_node_config(bank_toml)
        app, models, token = build(cfg, [sb, lr])
        srv = ThreadedServer(app).start()
        try:
            yield {"cfg": cfg, "sb": sb, "lr": lr, "lrb": lrb, "sbmc": sbmc, "jobs": jobs,
                   "url": srv.url, "token": token, "models": {m.model_id: m for m in models}, "tmp": tmp,
                   "plat_cfg": load_node_config(plat_toml), "bank_toml": bank_toml,
                   "plat_toml": plat_toml}
        finally:
            srv.stop()


def _applicants(world, model_id: str) -> tuple[list[str], list[dict]]:
    """The scoring job's rows, in its order, as API applicants (a categorical feature
    as its level's text, as the CSV holds it)."""
    served = world["models"][model_id]
    rec, ds = world["jobs"][model_id]
    data = load_dataset(world["cfg"].dataset(ds), need_label=False,
                        categories=served.categories)
    pos = {str(i): r for r, i in enumerate(data.ids)}
    cols = [data.feature_names.index(f) for f in served.features]
    ids = [ln.split(",")[0] for ln in
           Path(rec["artifacts"]["scores"]).read_text().splitlines()[1:]]
    apps = []
    for i in ids:
        feats = {}
        for f, v in zip(served.features, data.X[pos[i], cols], strict=True):
            feats[f] = None if math.isnan(v) else \
                served.categories[f][int(v)] if f in served.categories else float(v)
        apps.append({"id": i, "features": feats})
    return ids, apps


def _served(world, model_id: str, apps: list[dict]) -> list[dict]:
    with httpx.Client(base_url=world["url"], timeout=60,
                      headers={"Authorization": f"Bearer {world['token']}"}) as c:
        out = []
        for s in range(0, len(apps), 512):      # limits.serve_max_batch_rows = 1024
            r = c.post("/v1/score:batch", json={"model": model_id,
                                                "applicants": apps[s:s + 512]})
            assert r.status_code == 200, r.text
            out += r.json()["results"]
    return out


def _job_digest(world, model_id: str, probs: np.ndarray, n: int) -> tuple[str, str]:
    from federation.runner import _digest, model_path
    from parties.common.artifact import ModelPart
    part = ModelPart.load(model_path(world["cfg"], model_id))
    got = _digest(b"fedjoint-score-result-v1", part.digest().encode(),
                  probs.astype(">f8").ravel().tobytes(), str(n).encode())
    return got, world["jobs"][model_id][0]["checkpoint"]["model_digest"]


def test_categorical_secureboost_is_served_as_the_scoring_job_scores(world):
    from federation.runner import model_path
    from federation.serving.bulk import score_file
    from parties.common.artifact import ModelPart
    sb = world["sb"]
    served = world["models"][sb]
    bank_part = ModelPart.load(model_path(world["cfg"], sb))
    plat_part = ModelPart.load(model_path(world["plat_cfg"], sb))
    assert any("cats" in nd for tr in bank_part.body["trees"] for nd in tr["nodes"])
    assert any("cats" in r for r in plat_part.body["splits"].values())
    assert list(served.categories) == ["x0"] and served.categories["x0"][0] == "pay00"
    ids, apps = _applicants(world, sb)
    res = _served(world, sb, apps)
    p = np.array([x["probability"] for x in res])
    assert [x["id"] for x in res] == ids and all(x["platform_data"] for x in res)
    got, want = _job_digest(world, sb, p, len(ids))
    assert got == want
    # a level the model never saw goes the default way, as a missing cell does
    unseen = [{**a, "features": {**a["features"], "x0": v}} for a in apps[:40]
              for v in ("no-such-level", None)]
    r2 = _served(world, sb, unseen)
    assert [x["probability"] for x in r2[::2]] == [x["probability"] for x in r2[1::2]]
    assert served.describe()["counters"]["unseen_levels"] >= 40
    # the bulk path maps the CSV's level texts the same way
    src = pd.read_csv(world["cfg"].dataset("loans").path, dtype=str, keep_default_na=False)
    src[src["id"].isin(ids)].to_csv(world["tmp"] / "in.csv", index=False)
    score_file(served, world["tmp"] / "in.csv", world["tmp"] / "out.csv")
    out = pd.read_csv(world["tmp"] / "out.csv", dtype={"id": str}).set_index("id")
    assert out.loc[ids, "probability"].tolist() == p.tolist()


def test_multinomial_lr_serves_the_scoring_jobs_class_probabilities(world):
    lr = world["lr"]
    ids, apps = _applicants(world, lr)
    res = _served(world, lr, apps)
    classes = list(res[0]["probabilities"])
    P = np.array([[x["probabilities"][k] for k in classes] for x in res])
    assert classes == ["0", "1", "2", "3"] and "score" not in res[0]
    assert [x["class"] for x in res] == [int(classes[k]) for k in P.argmax(axis=1)]
    got, want = _job_digest(world, lr, P, len(ids))
    assert got == want
    assert world["models"][lr].values_per_row == 4


def test_node_serving_lists_the_open_sessions_on_both_nodes(world, capsys):
    """``fedjoint node serving``: the platform's sessions (from its daemon) and the
    bank's (from the serving process's status file), with counts and the budget left."""
    import json
    lr = world["lr"]
    _, apps = _applicants(world, lr)
    served = world["models"][lr]
    served._status_at = 0.0                   # the next lookup rewrites the status file
    _served(world, lr, apps[:5])
    code, out, err = run_cli(capsys, "node", "serving", "--config", str(world["plat_toml"]),
                             "--json")
    assert code == 0, err
    plat = json.loads(out)
    mine = [r for r in plat["sessions"] if r["model"] == lr]
    assert len(mine) == 1 and mine[0]["peer"] == "bank-a"
    assert mine[0]["lookups"] >= 1 and mine[0]["ids"] >= len(apps) + 5
    b = plat["budget"]
    assert b["left"] == b["daily_budget"] - b["used"] and b["used"] >= mine[0]["ids"]
    code, out, err = run_cli(capsys, "node", "serving", "--config", str(world["bank_toml"]),
                             "--json")
    assert code == 0, err
    bank = {r["model"]: r for r in json.loads(out)["sessions"]}
    assert bank[lr]["session"] == mine[0]["session"] and bank[lr]["peer"] == "platform-b"
    assert bank[lr]["ids"] == served.counters["rows"]
    assert bank[lr]["budget_left"] == b["left"]   # as the platform reported it last
    code, out, _ = run_cli(capsys, "node", "serving", "--config", str(world["plat_toml"]))
    assert code == 0 and lr in out and "lookups used" in out and mine[0]["opened"] in out


def test_an_export_is_recorded_in_both_training_transcripts(world, capsys):
    """The platform's reveal and the bank's export are signed records after the outcome
    of their transcripts of the training job; `audit verify` lists and checks them
    (a changed record, or an export whose reveal the platform did not record, fails)."""
    import json

    from federation.audit.verify import verify
    lrb, cfg = world["lrb"], world["cfg"]
    bank_toml = world["bank_toml"]
    out = world["tmp"] / "lrb.json"
    with _revealing(bank_toml, lrb):
        code, so, err = run_cli(capsys, "model", "export", lrb, "--format", "sklearn-json",
                                "--out", str(out), "--config", str(bank_toml))
    assert code == 0, err + so
    bt = cfg.data_dir / "transcripts" / f"{lrb}.jsonl"
    pt = world["plat_cfg"].data_dir / "transcripts" / f"{lrb}.jsonl"
    rep = verify(bt, pt)
    assert rep.ok, [str(e) for e in rep.errors]
    (ex,), (rv,) = rep.summary["exports"], rep.peer_summary["exports"]
    import hashlib
    assert ex["act"] == "export" and ex["format"] == "sklearn-json" and \
        ex["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert ex["revealed_by"] == "platform-b" and rv["act"] == "reveal" and rv["to"] == "bank-a"
    code, so, _ = run_cli(capsys, "audit", "verify", str(bt))
    assert code == 0 and "exported the full model as sklearn-json" in so
    # a changed export record: its signature no longer verifies
    lines = bt.read_bytes().split(b"\n")
    good = bt.read_bytes()
    lines[-2] = lines[-2].replace(b'"format":"sklearn-json"', b'"format":"onnx"')
    bt.write_bytes(b"\n".join(lines))
    try:
        rep = verify(bt)
        assert not rep.ok and "record signature does not verify" in str(rep.errors[0])
    finally:
        bt.write_bytes(good)
    # the platform's reveal record removed: the bank's export has no recorded reveal
    pgood = pt.read_bytes()
    pt.write_bytes(b"\n".join(pgood.split(b"\n")[:-2]) + b"\n")
    try:
        rep = verify(bt, pt)
        assert not rep.ok and "whose reveal is not recorded" in str(rep.errors[0])
    finally:
        pt.write_bytes(pgood)
    assert json.loads(out.read_text())["coef"]


def test_multinomial_lr_exports_as_scikit_learn_and_onnx(world, capsys):
    """The full multinomial LR (both halves, raw feature units) as sklearn-json and
    ONNX: scikit-learn's and onnxruntime's class probabilities on the joined rows equal
    the served (= scoring job) ones within 1e-9; PMML is refused naming the formats."""
    import json

    from federation.serving.export import sklearn_model
    ort = pytest.importorskip("onnxruntime")
    lr, cfg, bank_toml = world["lr"], world["cfg"], world["bank_toml"]
    ids, apps = _applicants(world, lr)
    P = np.array([[x["probabilities"][k] for k in ("0", "1", "2", "3")]
                  for x in _served(world, lr, apps)])
    with _revealing(bank_toml, lr):
        for fmt in ("sklearn-json", "onnx", "pmml"):
            code, so, err = run_cli(capsys, "model", "export", lr, "--format", fmt, "--out",
                                    str(world["tmp"] / f"mn.{fmt}"), "--config",
                                    str(bank_toml))
            assert (code == 0) == (fmt != "pmml"), err + so
    assert "no pmml export yet (formats: sklearn-json, onnx)" in err
    doc = json.loads((world["tmp"] / "mn.sklearn-json").read_text())
    # the joined raw rows, in the document's column order
    bank = load_dataset(cfg.dataset("loans3"), need_label=False)
    plat = load_dataset(world["plat_cfg"].dataset("ent_num"), need_label=False)
    rows = []
    for data, prefix in ((bank, ""), (plat, "platform.")):
        pos = {str(i): r for r, i in enumerate(data.ids)}
        cols = [data.feature_names.index(n[len(prefix):]) for n in doc["feature_names"]
                if (n.startswith("platform.") == bool(prefix))]
        rows.append(data.X[[pos[i] for i in ids]][:, cols])
    X = np.hstack(rows)
    p_sk = sklearn_model(doc).predict_proba(X)
    assert list(sklearn_model(doc).classes_) == [0, 1, 2, 3]
    assert np.max(np.abs(p_sk - P)) < 1e-9
    sess = ort.InferenceSession(str(world["tmp"] / "mn.onnx"),
                                providers=["CPUExecutionProvider"])
    p_onnx = sess.run(["probabilities"], {"input": X})[0]
    assert np.max(np.abs(p_onnx - P)) < 1e-9, np.max(np.abs(p_onnx - P))


@pytest.mark.parametrize("which, bank_ds, plat_ds", [("sbmc", "loans3", "ent_num"),
                                                    ("sb", "loans", "enterprises")])
def test_multiclass_and_categorical_secureboost_export_as_xgboost_json(
        world, capsys, which, bank_ds, plat_ds):
    """Multiclass: K trees per round (tree_info = class), the K intercept margins.
    Categorical (both sides): split_type 1 with the level sets that go right, columns
    typed "c" taking the level's index in the exported level lists. xgboost's
    probabilities equal the in-process predict of the model's two halves (the serving
    code, equal to the scoring job's) within 1e-6; onnx is refused naming the format."""
    import json

    import xgboost as xgb

    from federation.runner import model_path
    from parties.bank import secureboost_serving as bank_sb
    from parties.common.artifact import ModelPart
    from parties.provincial_platform import secureboost_serving as plat_sb
    sbmc, cfg, bank_toml = world[which], world["cfg"], world["bank_toml"]
    out = world["tmp"] / "sbmc.json"
    with _revealing(bank_toml, sbmc):
        code, so, err = run_cli(capsys, "model", "export", sbmc, "--format", "xgboost-json",
                                "--out", str(out), "--config", str(bank_toml))
        assert code == 0, err + so
        code, so, err = run_cli(capsys, "model", "export", sbmc, "--format", "onnx",
                                "--out", str(out) + ".onnx", "--config", str(bank_toml))
        assert code != 0 and "onnx export yet (formats: xgboost-json" in err
    bp = ModelPart.load(model_path(cfg, sbmc))
    pp = ModelPart.load(model_path(world["plat_cfg"], sbmc))
    doc = json.loads(out.read_text())["learner"]
    K = 4 if which == "sbmc" else 0
    assert doc["learner_model_param"]["num_class"] == str(K)
    bank = load_dataset(cfg.dataset(bank_ds), need_label=False, categories=bp.categories())
    plat = load_dataset(world["plat_cfg"].dataset(plat_ds), need_label=False,
                        categories=pp.categories())
    pos = {str(i): r for r, i in enumerate(plat.ids)}
    rows = [r for r, i in enumerate(bank.ids) if str(i) in pos]
    Xb = bank.X[rows][:, [bank.feature_names.index(n) for n in bp.feature_names]]
    Xp = plat.X[[pos[str(bank.ids[r])] for r in rows]][
        :, [plat.feature_names.index(n) for n in pp.feature_names]]
    scorer = bank_sb.scorer(bp)
    found = np.ones(len(rows), dtype=bool)
    answers, _ = plat_sb.answerer(pp, scorer.setup).answer(Xp, found)
    sc = scorer.score(Xb, answers, found)
    P = sc.probabilities if K else sc.probability
    booster = xgb.Booster(model_file=str(out))
    types = doc.get("feature_types") or None
    p_xgb = booster.predict(xgb.DMatrix(np.hstack([Xb, Xp]), feature_types=types,
                                        feature_names=booster.feature_names,
                                        enable_categorical=bool(types)))
    assert p_xgb.shape == P.shape == ((len(rows), 4) if K else (len(rows),)) and scorer.keys
    if not K:     # a categorical split on each side, and the level lists named
        assert sum(t.count("c") for t in [types]) == 3
        assert json.loads(doc["attributes"]["fedjoint_categories"])["x0"][0] == "pay00"
    assert np.max(np.abs(p_xgb - P)) < 1e-6, np.max(np.abs(p_xgb - P))
