"""WOE logistic regression and its scorecard: test AUC vs scikit-learn on the same
WOE-encoded joined plaintext (the WOE computed here from the joined rows, not by
fedjoint's encoder), points that reproduce the LR's log-odds exactly from the two
parties' own points tables, what crosses, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from support.lr import load
from support.roles import TEST_POLICY, contexts, run_roles, typed

from federation.link import run_two_parties
from parties import registry
from parties.bank import woe_lr as bank_role
from parties.common import lr_common as C
from parties.common import woe_lr as W
from parties.common.role import PartyData
from parties.provincial_platform import woe_lr as platform_role
from secure_agg.cipher import PlainCipher

N = 12000
LAM = 1e-3
PARAMS = dict(epochs=8, batch_size=2048, learning_rate=0.05, l2=LAM, early_stopping="none",
              seed=5, pdo=20, base_score=600, base_odds=50)


@pytest.fixture(scope="module")
def credit():
    d = load("default_credit")
    return {k: (v[:N] if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def _bin(d):
    tr = d["train"]
    bank = PartyData(d["Xb"][tr], d["bnames"], y=d["y"][tr])
    plat = PartyData(d["Xp"][tr], d["pnames"])
    ob, op, _ = run_roles("binning", bank, plat, {"method": "monotonic", "n_prebins": 10,
                                                 "min_bin_size": 0.05},
                          bank_cipher=PlainCipher(1024))
    return ob.model, op.model


@pytest.fixture(scope="module")
def trained(credit):
    bb, pb = _bin(credit)
    tr = credit["train"]
    bank = PartyData(credit["Xb"][tr], credit["bnames"], y=credit["y"][tr],
                     inputs={"binning": bb})
    plat = PartyData(credit["Xp"][tr], credit["pnames"], inputs={"binning": pb})
    ob, op, crossed = run_roles("woe_lr", bank, plat, PARAMS, bank_cipher=PlainCipher(2048),
                                platform_cipher=PlainCipher(2048), timeout=600)
    return bb, pb, ob.model, op.model, crossed


def _score(bank_part, plat_part, Xb, Xp):
    cb, cp, crossed = contexts("score")
    out, zp = run_two_parties(lambda: bank_role.predict(cb, bank_part, Xb),
                              lambda: platform_role.predict(cp, plat_part, Xp))
    return out, zp, crossed


def _joined_woe(d, bb, pb):
    tr, y = d["train"], d["y"][d["train"]]
    cols = []
    for j, n in enumerate(d["bnames"]):
        edges = bb.body["tables"][n]["cuts"]
        cols.append((d["Xb"][:, j], edges, d["Xb"][tr, j]))
    for j, n in enumerate(d["pnames"]):   # the merged bins' edges: platform cuts at the
        mine = pb.body["tables"][n]        # bank's merge boundaries
        groups = bb.body["platform_tables"][mine["bank_label"]]["platform_bins"]
        edges = [mine["cuts"][i - 1] for i, _ in groups[1:]]
        cols.append((d["Xp"][:, j], edges, d["Xp"][tr, j]))
    out = []
    for x, edges, xtr in cols:   # the WOE table from the training rows, applied to all
        b = np.searchsorted(np.asarray(edges, float), x, side="right")
        b[np.isnan(x)] = len(edges) + 1
        btr = np.searchsorted(np.asarray(edges, float), xtr, side="right")
        btr[np.isnan(xtr)] = len(edges) + 1
        table = np.zeros(len(edges) + 2)
        for i in range(len(table)):
            e, ne = y[btr == i].sum(), (1 - y[btr == i]).sum()
            if e > 0 and ne > 0:
                table[i] = math.log((ne / (1 - y).sum()) / (e / y.sum()))
        out.append(table[b])
    return np.column_stack(out)


def test_auc_matches_sklearn_and_points_reproduce_log_odds(credit, trained):
    bb, pb, bank_part, plat_part, crossed = trained
    tr, te = credit["train"], ~credit["train"]
    X = _joined_woe(credit, bb, pb)
    mu, sd = X[tr].mean(0), X[tr].std(0)
    sk = LogisticRegression(C=1.0 / (tr.sum() * LAM), max_iter=5000)
    sk.fit((X[tr] - mu) / sd, credit["y"][tr])
    ref = roc_auc_score(credit["y"][te], sk.decision_function((X[te] - mu) / sd))
    out, zp, wire = _score(bank_part, plat_part, credit["Xb"][te], credit["Xp"][te])
    got = roc_auc_score(credit["y"][te], out.p)
    assert abs(got - ref) < 0.003, (got, ref)
    # points = offset - factor * log-odds, exactly (float rounding)
    sc = bank_part.body["scorecard"]
    factor, offset = 20 / math.log(2), 600 - 20 / math.log(2) * math.log(50)
    assert abs(sc["factor"] - factor) < 1e-12 and abs(sc["offset"] - offset) < 1e-12
    z = np.log(out.p / (1 - out.p))
    pts = np.asarray(out.columns["points"])
    assert np.abs(pts - (offset - factor * z)).max() < 1e-9
    # ... and = base points + the bank's table + the platform's table, each held by its
    # owner, looked up by the joined plaintext's bins
    bank_rows = {}
    for r in sc["rows"]:
        bank_rows.setdefault(r["feature"], []).append(r["points"])
    total = np.full(te.sum(), sc["base_points"])
    for j, n in enumerate(credit["bnames"]):
        b = np.searchsorted(bb.body["tables"][n]["cuts"], credit["Xb"][te, j], side="right")
        b[np.isnan(credit["Xb"][te, j])] = len(bank_rows[n]) - 1
        total += np.asarray(bank_rows[n])[b]
    for j, n in enumerate(credit["pnames"]):
        entry = next(e for e in plat_part.body["points"] if e["feature"] == n)
        table = np.array([b["points"] for b in entry["bins"]])
        b = np.searchsorted(pb.body["tables"][n]["cuts"], credit["Xp"][te, j], side="right")
        b[np.isnan(credit["Xp"][te, j])] = len(table) - 1
        total += table[b]
    assert np.abs(total - pts).max() < 1e-9
    # higher points = lower risk
    assert roc_auc_score(credit["y"][te], -pts) == pytest.approx(got, abs=1e-12)
    # the bank's points of a bin: -factor * coef * WOE, WOE from its binning table
    r0 = sc["rows"][0]
    assert r0["woe"] == bb.body["tables"][r0["feature"]]["bins"][0]["woe"]
    # reason codes: bank variables or the anonymous platform total, most points lost first
    reasons = [out.columns[f"reason_{k}"] for k in (1, 2, 3)]
    names = set(credit["bnames"]) | {"platform", ""}
    assert all(r in names for col in reasons for r in col)
    assert any(r == "platform" for r in reasons[0])
    assert np.allclose(out.columns["platform_points"], -factor * zp, atol=1e-12)
    # scoring discloses LR's partial scores only
    assert [k for who, k, *_ in wire if who == "platform"] == [C.K_SCORE_HELLO,
                                                               C.K_PARTIAL_SCORE]


def test_what_crosses_and_what_each_part_holds(credit, trained):
    bb, pb, bank_part, plat_part, crossed = trained
    kinds = [k for _who, k, *_ in crossed]
    assert kinds[:2] == [W.K_SETUP, W.K_READY] and W.K_BEST in kinds
    assert set(kinds) - {W.K_SETUP, W.K_READY, W.K_BEST} <= C.TABLE.kinds
    setup = next(b for who, k, _p, b in crossed if k == W.K_SETUP)
    text = setup.decode() if isinstance(setup, bytes) else str(setup)
    # the platform gets an affine image of its bins' WOE, never the WOE itself
    for label, t in bb.body["platform_tables"].items():
        assert label in text
        for r in t["bins"]:
            if r["woe"] != 0:
                assert f"{r['woe']!r}" not in text
    # each part names only its own features; the bank holds no platform points table
    assert set(bank_part.feature_names) == set(credit["bnames"])
    assert set(plat_part.feature_names) == set(credit["pnames"])
    assert "platform" not in bank_part.body["scorecard"]
    assert all(p not in str(bank_part.body) for p in credit["pnames"] if p not in
               credit["bnames"])
    assert bank_part.peer_part_digest == C.fingerprint(plat_part)
    assert plat_part.peer_part_digest == C.fingerprint(bank_part)


def test_selection_input_restricts_features(credit, trained):
    bb, pb, *_ = trained
    tr = np.flatnonzero(credit["train"])[:3000]
    labels = sorted(bb.body["platform_tables"])[:2]
    keep_p = [n for n in credit["pnames"] if pb.body["tables"][n]["bank_label"] in labels]
    from parties.common.artifact import ModelPart
    sel_b = ModelPart("selection", "bank", "sel", {}, {"selected": credit["bnames"][:3],
                                                       "platform_selected": labels})
    sel_p = ModelPart("selection", "platform", "sel", {}, {"selected": keep_p})
    bank = PartyData(credit["Xb"][tr], credit["bnames"], y=credit["y"][tr],
                     inputs={"binning": bb, "selection": sel_b})
    plat = PartyData(credit["Xp"][tr], credit["pnames"],
                     inputs={"binning": pb, "selection": sel_p})
    ob, op, _ = run_roles("woe_lr", bank, plat, dict(PARAMS, epochs=1),
                          bank_cipher=PlainCipher(2048), platform_cipher=PlainCipher(2048))
    assert ob.model.feature_names == credit["bnames"][:3]
    assert op.model.feature_names == keep_p
    # selections that disagree: one clear message on both sides
    sel_p = ModelPart("selection", "platform", "sel", {}, {"selected": keep_p[:1]})
    plat.inputs = {"binning": pb, "selection": sel_p}
    with pytest.raises(W.WoeLRError, match="the selections differ"):
        run_roles("woe_lr", bank, plat, dict(PARAMS, epochs=1),
                  bank_cipher=PlainCipher(2048), platform_cipher=PlainCipher(2048))


def test_no_binning_input_fails_clearly(credit):
    tr = np.flatnonzero(credit["train"])[:500]
    bank = PartyData(credit["Xb"][tr], credit["bnames"], y=credit["y"][tr])
    cb, cp, crossed = contexts()
    p = typed("woe_lr", PARAMS)
    with pytest.raises(W.WoeLRError, match="woe_lr needs a binning input"):
        bank_role.train(cb, bank, p, PlainCipher(2048), TEST_POLICY)
    assert [k for _w, k, *_ in crossed] == [C.K_ABORT]   # the reason, nothing else
    plat = PartyData(credit["Xp"][tr], credit["pnames"])
    with pytest.raises(C.LRError, match="binning input"):
        run_roles("woe_lr", bank, plat, PARAMS, bank_cipher=PlainCipher(2048),
                  platform_cipher=PlainCipher(2048))


@pytest.mark.parametrize("bad,match", [
    ({"pdo": 0}, "pdo = 0"), ({"base_odds": -1}, "base_odds = -1"),
    ({"multi_class": "ovr"}, "binary scorecard"), ({"standardize": False}, "standardize")])
def test_bad_params(bad, match):
    with pytest.raises(Exception, match=match):
        registry.get("woe_lr").parse_params(bad, "test")


def test_serving_answers_equal_the_scoring_job_bit_for_bit(credit, trained):
    from parties.bank.woe_lr_serving import Scorer
    from parties.provincial_platform.woe_lr_serving import Answerer
    _, _, bank_part, plat_part, _ = trained
    te = np.flatnonzero(~credit["train"])[:300]
    Xb, Xp = credit["Xb"][te], credit["Xp"][te]
    out, zp, _ = _score(bank_part, plat_part, Xb, Xp)
    answerer, scorer = Answerer(plat_part, {}), Scorer(bank_part)
    ans, ok = answerer.answer(Xp, np.ones(len(te), bool))
    assert ok.all() and (ans[:, 0] == zp).all()
    sc = scorer.score(Xb, ans, ok)
    assert (sc.probability == out.p).all()
    assert [e["points"] for e in sc.extra] == out.columns["points"]
    assert [e["reasons"][0]["feature"] if e["reasons"] else "" for e in sc.extra] == \
        out.columns["reason_1"]
    for k in (0, 17, 299):   # one applicant at a time: the same bits
        a1, _ = answerer.answer(Xp[k:k + 1], np.ones(1, bool))
        one = scorer.score(Xb[k:k + 1], a1, np.ones(1, bool))
        assert one.probability[0] == out.p[k] and one.extra[0] == sc.extra[k]
    # an applicant the platform holds no data for: partial score 0, points still add up
    none = scorer.score(Xb[:1], np.zeros((1, 1)), np.zeros(1, bool))
    assert none.extra[0]["platform_points"] == 0.0
    r = none.extra[0]["reasons"]
    assert [x["points_lost"] for x in r] == sorted((x["points_lost"] for x in r),
                                                   reverse=True)


def test_scoring_job_returns_points_and_reasons_and_names_a_missing_variable(
        tmp_path, credit, trained):
    """The node's scoring pipeline (PSI, model check, predict) on stored parts; a bank
    population without a scorecard variable fails naming it before anything is sent."""
    import pandas as pd

    from federation.config import job_spec_from_dict
    from federation.link import local_link_pair
    from federation.node.jobs import write_scores
    from federation.runner import JobFailed, model_path, run_job_side
    from fedjoint import FedjointError
    from fedjoint import local as L
    from fedjoint.testing import TEST_POLICY as NODE_POLICY
    _, _, bank_part, plat_part, _ = trained
    te = np.flatnonzero(~credit["train"])[:400]
    ids = [f"E{i:05d}" for i in te]
    bank_df = pd.DataFrame({"id": ids, **{n: credit["Xb"][te, j]
                                          for j, n in enumerate(credit["bnames"])}})
    plat_df = pd.DataFrame({"id": ids, **{n: credit["Xp"][te, j]
                                          for j, n in enumerate(credit["pnames"])}})
    spec = job_spec_from_dict({
        "job": {"name": "sc", "algorithm": "score", "dataset": "d", "peer_dataset": "d",
                "model": bank_part.job_id, "train_algorithm": "woe_lr"},
        "psi": {"id_type": "string"}, "evaluation": {"cipher": "plain", "key_bits": 1024}},
        "score job")
    nodes = {p: L._node(p, spec, tmp_path, "id", "y", 1, NODE_POLICY)
             for p in ("bank", "platform")}
    bank_part.save(model_path(nodes["bank"], bank_part.job_id))
    plat_part.save(model_path(nodes["platform"], plat_part.job_id))
    res_b, _, _ = L._run(spec, L._with_frames(nodes, spec, bank_df, plat_df), 1)
    sc = res_b.scores
    out, _, _ = _score(bank_part, plat_part, credit["Xb"][te], credit["Xp"][te])
    pos = {i: k for k, i in enumerate(ids)}
    order = [pos[i] for i in sc["ids"]]
    assert sc["p"] == [float(out.p[k]) for k in order]
    assert sc["columns"]["points"] == [out.columns["points"][k] for k in order]
    assert sc["columns"]["reason_1"] == [out.columns["reason_1"][k] for k in order]
    csv = write_scores(tmp_path / "s.csv", sc).read_text().splitlines()
    assert csv[0] == "id,score,points,platform_points,reason_1,reason_2,reason_3"
    assert csv[1].split(",")[0] == sc["ids"][0] and len(csv) == len(ids) + 1
    # a population missing a scorecard variable: one message naming it, nothing sent
    gone = credit["bnames"][2]
    short = bank_df.drop(columns=[gone])
    with pytest.raises(FedjointError, match=rf"lacks column\(s\) \['{gone}'\] the model"):
        L._run(spec, L._with_frames(nodes, spec, short, plat_df), 1)
    link, _, crossed = local_link_pair("sc")
    with pytest.raises(JobFailed, match=gone):
        run_job_side(spec, L._with_frames(nodes, spec, short, plat_df)["bank"], link,
                     b"s" * 32)
    assert crossed == []
    gone_p = credit["pnames"][3]    # the platform's population: named on its side
    with pytest.raises(FedjointError, match=rf"platform side.*{gone_p}") as ei:
        L._run(spec, L._with_frames(nodes, spec, bank_df, plat_df.drop(columns=[gone_p])), 1)
    assert ei.value.party == "platform"


def test_a_feature_without_a_table_is_named_to_its_owner_only(credit, trained):
    import dataclasses
    bb, pb, *_ = trained
    gone = credit["bnames"][1]
    body = dict(bb.body, tables={k: v for k, v in bb.body["tables"].items() if k != gone})
    tr = np.flatnonzero(credit["train"])[:500]
    bank = PartyData(credit["Xb"][tr], credit["bnames"], y=credit["y"][tr],
                     inputs={"binning": dataclasses.replace(bb, body=body)})
    cb, _, crossed = contexts()
    with pytest.raises(W.WoeLRError, match=rf"no table for bank feature\(s\) \['{gone}'\]"):
        bank_role.train(cb, bank, typed("woe_lr", PARAMS), PlainCipher(2048), TEST_POLICY)
    [(_who, kind, _p, reason)] = crossed
    assert kind == C.K_ABORT and gone.encode() not in reason and b"bank's inputs" in reason


def test_a_job_without_a_binning_input_is_refused_when_read():
    """Before anything is proposed: a single job and a pipeline stage."""
    from federation.config import ConfigError, job_spec_from_dict
    job = {"job": {"name": "card", "algorithm": "woe_lr", "dataset": "d",
                   "peer_dataset": "d"}, "psi": {"id_type": "string"}}
    with pytest.raises(ConfigError, match=r"woe_lr needs the input\(s\) \['binning'\]: name "
                                          r"an earlier job's output in \[inputs\]"):
        job_spec_from_dict(job, "card.toml")
    assert job_spec_from_dict({**job, "inputs": {"binning": "bin-1.bin"}}, "card.toml")
    pipe = {"job": dict(job["job"], algorithm="pipeline"), "psi": job["psi"],
            "stages": [{"name": "bin", "algorithm": "binning"},
                       {"name": "card", "algorithm": "woe_lr"}]}
    with pytest.raises(ConfigError, match=r"stages\[1\] \(card\): woe_lr needs the "
                                          r"input\(s\) \['binning'\]"):
        job_spec_from_dict(pipe, "card.toml")


def test_python_api_pipeline_scores_with_points():
    """run_local runs binning -> woe_lr; RunResult.score adds the scorecard's columns."""
    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY as NODE_POLICY
    from fedjoint.testing import synthetic_parties
    bank, plat = synthetic_parties()
    job = {"job": {"name": "card", "algorithm": "pipeline", "dataset": "d",
                   "peer_dataset": "d"}, "psi": {"id_type": "string"},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25},
           "stages": [{"name": "bin", "algorithm": "binning",
                       "params": {"method": "quantile", "n_bins": 4}},
                      {"name": "card", "algorithm": "woe_lr", "inputs": {"binning": "bin"},
                       "params": {"epochs": 20, "batch_size": 0, "learning_rate": 0.1}}]}
    res = run_local(job, bank=bank, platform=plat, bank_policy=NODE_POLICY,
                    platform_policy=NODE_POLICY, seed=1)
    sc = res.bank_model.body["scorecard"]
    assert res.bank_model.algorithm == "woe_lr" and sc["rows"]
    out = res.score(bank.drop(columns=["y"]), plat, seed=2)
    assert list(out.columns) == ["id", "score", "points", "platform_points", "reason_1",
                                 "reason_2", "reason_3"]
    z = np.log(out["score"] / (1 - out["score"]))
    assert np.abs(out["points"] - (sc["offset"] - sc["factor"] * z)).max() < 1e-9
