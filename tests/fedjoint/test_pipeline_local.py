"""Pipelines with the Python API (``fedjoint.run_local``, the node's own runner): stage
results and scoring, a later job's ``[inputs]``, and one clear message for each bad
input (a selection that leaves nothing, a stage that gets no column, a disallowed
stage, parts that do not pair)."""

from __future__ import annotations

import shutil

import pytest

from fedjoint import FedjointError, run_local
from fedjoint.testing import TEST_POLICY, synthetic_parties

BIN = {"name": "bin", "algorithm": "binning", "params": {"method": "quantile", "n_bins": 4}}


def job(name: str = "pl", sel: dict | None = None, lr: bool = True, **extra) -> dict:
    stages = [BIN, {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
                    "params": sel if sel is not None else {"iv_min": 0.05}}]
    if lr:
        stages.append({"name": "lr", "algorithm": "logistic_regression",
                       "inputs": {"selection": "sel"},
                       "params": {"epochs": 3, "batch_size": 64}})
    return {"job": {"name": name, "algorithm": "pipeline", "dataset": "d",
                    "peer_dataset": "d"},
            "psi": {"id_type": "string"},
            "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25},
            "stages": stages, **extra}


def run(spec: dict, tmp_path, seed=1, platform_policy=TEST_POLICY):
    bank, plat = synthetic_parties()
    return run_local(spec, bank=bank, platform=plat, bank_policy=TEST_POLICY,
                     platform_policy=platform_policy, seed=seed, data_dir=tmp_path)


def test_pipeline_result_stages_and_scoring(tmp_path):
    res = run(job(), tmp_path)
    assert list(res.stages) == ["bin", "sel", "lr"]
    kept = res.stages["sel"]["metrics"]["selected"]
    assert res.bank_model.algorithm == "logistic_regression"
    assert res.bank_model.feature_names == res.stages["sel"]["bank"].feature_names
    assert res.platform_model.feature_names == res.stages["sel"]["platform"].feature_names
    assert len(res.bank_model.feature_names) + len(res.platform_model.feature_names) == \
        len(kept)
    assert res.metrics["test_auc"] > 0.7 and res.metrics["stages"]["lr"]["test_auc"] == \
        res.metrics["test_auc"]
    bank, plat = synthetic_parties()
    scored = res.score(bank.drop(columns=["y"]), plat, seed=2)
    assert len(scored) == res.bank.intersection
    with pytest.raises(FedjointError, match=r"no stage 'nope' \(stages: bin, sel, lr\)"):
        res.score(bank, plat, stage="nope")
    # the same seed gives the same stage parts (what replay relies on)
    again = run(job(), tmp_path / "again")
    assert [s["model_digest"] for s in again.bank.stages] == \
        [s["model_digest"] for s in res.bank.stages]


def test_a_later_job_takes_an_earlier_output_as_input(tmp_path):
    first = run(job(lr=False), tmp_path)
    single = {"job": {"name": "sel-again", "algorithm": "selection", "dataset": "d",
                      "peer_dataset": "d"},
              "psi": {"id_type": "string"}, "params": {"iv_min": 0.05},
              "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.0},
              "inputs": {"binning": "pl.bin"}}
    res = run(single, tmp_path)
    assert res.bank_model.feature_names == first.stages["sel"]["bank"].feature_names
    # a platform part that is not the one the bank's part was bound to: refused
    # before PSI, naming the input
    keep = tmp_path / "kept.json"
    shutil.copy(tmp_path / "bank" / "models" / "pl.bin.json", keep)
    run(job(lr=False), tmp_path, seed=5)             # new parts on both sides
    shutil.copy(keep, tmp_path / "bank" / "models" / "pl.bin.json")
    with pytest.raises(FedjointError, match=r"input binning = 'pl.bin': the peer's part is "
                       r"not the one this node's part was made with"):
        run(single, tmp_path)
    single["inputs"] = {"binning": "pl.missing"}
    with pytest.raises(FedjointError, match=r"no model 'pl.missing'"):
        run(single, tmp_path)


@pytest.mark.parametrize("sel,match", [
    ({"iv_min": 5.0}, r"selection: rule iv_min = 5\.0 leaves no features \(it removes all 7"),
    ({"iv_min": 0.0, "top_k": 1},
     r"stage 'lr': its selection input keeps none of the (bank|platform)'s columns"),
])
def test_bad_selection_inputs(tmp_path, sel, match):
    with pytest.raises(FedjointError, match=match):
        run(job(sel=sel), tmp_path)


def test_a_disallowed_stage_is_refused_before_anything_runs(tmp_path):
    policy = {**TEST_POLICY, "allowed_algorithms": ["binning", "logistic_regression"]}
    with pytest.raises(FedjointError, match=r"platform side: refused by its policy: stage "
                       r"'sel': algorithm 'selection' is not allowed"):
        run(job(), tmp_path, platform_policy=policy)
    assert not (tmp_path / "bank" / "models").exists()
