"""Per-job column choice: ``[job] features`` (the bank's columns) and ``peer_features``
(the platform's) through two real nodes: the model parts carry exactly the chosen
columns, a later job on the same running nodes chooses again, the platform refuses a
column it does not offer with one answer whether the column is withheld or does not
exist, and the bank names what is wrong with its own choice before proposing."""

from __future__ import annotations

import json

import pytest
from support.nodes import (
    make_party_keys,
    running_nodes,
    submit,
    wait_state,
    write_job,
    write_node_tomls,
)

from federation.admin import AdminClient, AdminError
from federation.config import job_spec_from_dict, load_job_spec, load_node_config
from federation.link import local_link_pair
from federation.node import Node
from federation.policy import NOT_OFFERED
from federation.runner import JobFailed, run_job_side
from parties.common.artifact import ModelPart

OFFERED = ["x0", "x1", "x2", "x3", "x4", "x5"]     # of the platform file's x0..x19


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_party_keys(tmp_path_factory.mktemp("keys"))


def _tomls(tmp_path, keys):
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    text = plat_toml.read_text().replace(
        'id_column = "id"', 'id_column = "id"\ncolumns = ' + json.dumps(OFFERED))
    plat_toml.write_text(text)
    assert load_node_config(plat_toml).datasets["enterprises"].columns == OFFERED
    return bank_toml, plat_toml


def _parts(bank: AdminClient, plat: AdminClient, job_id: str) -> tuple[ModelPart, ModelPart]:
    return (ModelPart.load(bank.call("model", model_id=job_id)["path"]),
            ModelPart.load(plat.call("model", model_id=job_id)["path"]))


def _loaded(client: AdminClient, job_id: str) -> list[dict]:
    return [e for e in client.call("logs", job_id=job_id)["events"]
            if e["event"] == "data.loaded"]


def test_jobs_train_on_the_columns_they_choose(tmp_path, keys):
    bank_toml, plat_toml = _tomls(tmp_path, keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client, pclient = AdminClient(bank.data_dir), AdminClient(plat.data_dir)
        # SecureBoost on three of the bank's ten columns and two of the six offered
        sb = submit(client, write_job(
            tmp_path, "sb", "secureboost", params={"n_trees": 2, "max_depth": 3},
            extra_job={"features": ["x2", "x0", "x5"], "peer_features": ["x3", "x1"]}))
        rec = wait_state(client, sb, timeout=90)
        assert rec["state"] == "done", rec["error"]
        bpart, ppart = _parts(client, pclient, sb)
        assert bpart.feature_names == ["x2", "x0", "x5"]
        assert ppart.feature_names == ["x3", "x1"]
        bank_splits = [nd["feature"] for t in bpart.body["trees"] for nd in t["nodes"]
                       if nd.get("owner") == "bank"]
        plat_splits = [s["feature"] for s in ppart.body["splits"].values()]
        assert bank_splits and set(bank_splits) <= {0, 1, 2}
        assert plat_splits and set(plat_splits) <= {0, 1}
        assert set(ppart.body["split_count"]) <= {"x3", "x1"}
        assert _loaded(client, sb)[0]["features"] == 3
        assert _loaded(pclient, sb)[0]["features"] == 2
        # the agreed spec carries the choice (both nodes store the same)
        assert bank.store.get(sb).spec["peer_features"] == ["x3", "x1"]
        assert plat.store.get(sb).spec["features"] == ["x2", "x0", "x5"]
        # an auditor replays each side from its transcript: the same columns again
        from federation import audit
        for tr in (rec["artifacts"]["transcript"],
                   pclient.call("status", job_id=sb)["artifacts"]["transcript"]):
            r = audit.replay(tr, tmp_path)
            assert r.ok, r.errors

        # the model scores with the columns it was trained on
        out = tmp_path / "scores.csv"
        sc = submit(client, write_job(tmp_path, "score", "score",
                                      extra_job={"model": sb, "output": str(out)}))
        assert wait_state(client, sc, timeout=60)["state"] == "done"
        assert len(out.read_text().splitlines()) == 570

        # the same running nodes, another job, another choice; none: everything offered
        lr = submit(client, write_job(tmp_path, "lr", params={"epochs": 1, "batch_size": 0},
                                      extra_job={"peer_features": ["x5"]}))
        assert wait_state(client, lr, timeout=60)["state"] == "done"
        bpart, ppart = _parts(client, pclient, lr)
        assert len(bpart.feature_names) == 10 and bpart.body["peer_n_features"] == 1
        assert ppart.feature_names == ["x5"] and len(ppart.body["weights"]) == 1
        lr2 = submit(client, write_job(tmp_path, "lr2", params={"epochs": 1,
                                                                "batch_size": 0}))
        assert wait_state(client, lr2, timeout=60)["state"] == "done"
        _, ppart = _parts(client, pclient, lr2)
        assert ppart.feature_names == OFFERED        # never beyond the platform's columns


def test_a_column_the_platform_does_not_offer_is_one_answer(tmp_path, keys):
    bank_toml, plat_toml = _tomls(tmp_path, keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        client = AdminClient(bank.data_dir)
        errors = {}
        # x10 is in the platform's file but withheld; x99 does not exist; x1 is offered
        for name, cols in (("withheld", ["x1", "x10"]), ("unknown", ["x1", "x99"]),
                           ("id", ["id"])):
            job_id = submit(client, write_job(tmp_path, name, params={"epochs": 1},
                                              extra_job={"peer_features": cols}))
            rec = wait_state(client, job_id, timeout=30)
            assert rec["state"] == "failed"
            errors[name] = rec["error"]
            prec = wait_state(AdminClient(plat.data_dir), job_id, timeout=30)
            assert prec["state"] == "failed"
            assert not (plat.data_dir / "models" / f"{job_id}.json").exists()
        assert errors["withheld"] == errors["unknown"] == errors["id"] == \
            f"refused by platform-b's policy: {NOT_OFFERED}"
        for err in errors.values():
            assert not any(c in err for c in ("x1", "x10", "x99", "id'"))
        # the platform's own operator sees which names failed, in its log only
        log = [json.loads(ln) for ln in (plat.data_dir / "node.log").read_text().splitlines()]
        refused = [e.get("not_offered") for e in log if e.get("event") == "job.refused"]
        assert refused == [["x10"], ["x99"], ["id"]]


def test_the_bank_names_what_is_wrong_with_its_own_choice(tmp_path, keys):
    bank_toml, plat_toml = _tomls(tmp_path, keys)
    bank = Node(load_node_config(bank_toml), quiet=True).start()
    try:
        client = AdminClient(bank.data_dir)
        for cols, says in ((["x0", "x9x"], "'x9x' is not a column of"),
                           (["x9x"], "did you mean 'x9'?"),
                           (["x1", "y"], "'y' is the label column"),
                           (["id"], "'id' is the id column")):
            with pytest.raises(AdminError, match="features: ") as ei:
                submit(client, write_job(tmp_path, "bad", params={"epochs": 1},
                                         extra_job={"features": cols}))
            assert says in str(ei.value) and "offers: x0, x1, x2" in str(ei.value)
        assert client.call("list") == []         # nothing was created or proposed
    finally:
        bank.stop()


def test_the_platform_runner_refuses_before_anything_crosses(tmp_path, keys):
    """Defence in depth: a platform's job process refuses an unoffered peer_features
    even if its control plane were bypassed, before sending a single message."""
    _, plat_toml = _tomls(tmp_path, keys)
    node = load_node_config(plat_toml)
    raw = json.loads(json.dumps(load_job_spec(write_job(
        tmp_path, "j", params={"epochs": 1}, extra_job={"peer_features": ["x12"]})).to_dict()))
    spec = job_spec_from_dict(raw, "proposal")
    _, link, crossed = local_link_pair("j-1")
    with pytest.raises(JobFailed, match=NOT_OFFERED):
        run_job_side(spec, node, link, b"s" * 32)
    assert crossed == []


@pytest.mark.parametrize("job,says", [
    ({"features": []}, "job.features = []: name at least one column"),
    ({"peer_features": ["x1", "x2", "x1"]}, "job.peer_features names 'x1' more than once"),
    ({"features": ["x1", " "]}, "job.features contains an empty column name"),
    ({"features": "x1"}, "job.features = 'x1': expected a list of strings"),
    ({"algorithm": "psi", "peer_features": ["x1"]},
     "job.peer_features is only used by training jobs (a 'psi' job trains nothing)"),
    ({"algorithm": "score", "model": "m", "features": ["x1"]},
     "a 'score' job uses the columns its model was trained on"),
])
def test_the_choice_is_checked_when_the_job_file_is_read(job, says):
    from federation.config import ConfigError
    raw = {"job": {"name": "j", "algorithm": "secureboost", "dataset": "d",
                   "peer_dataset": "e", **job}, "psi": {"id_type": "string"}}
    with pytest.raises(ConfigError, match="job.toml: ") as ei:
        job_spec_from_dict(raw, "job.toml")
    assert says in str(ei.value)


def test_the_choice_round_trips_through_the_proposal():
    raw = {"job": {"name": "j", "algorithm": "secureboost", "dataset": "d",
                   "peer_dataset": "e", "features": ["b", "a"], "peer_features": ["z"]},
           "psi": {"id_type": "string"}}
    spec = job_spec_from_dict(raw)
    sent = spec.to_dict()
    assert sent["features"] == ["b", "a"] and sent["peer_features"] == ["z"]
    again = job_spec_from_dict(sent, "proposal")
    assert (again.features, again.peer_features) == (["b", "a"], ["z"])
    assert again.features_for("bank") == ["b", "a"] and again.features_for("platform") == ["z"]
