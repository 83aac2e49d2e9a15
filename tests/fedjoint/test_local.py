"""The Python API: run_local runs the node's pipeline in one process; the README's
example runs as written; bad frames get one message naming the frame and column."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import fedjoint
from fedjoint import FedjointError, run_local

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
POLICY = {"allow_insecure_test_jobs": True, "min_key_bits": 1024, "min_intersection": 10}


@pytest.fixture(scope="module")
def frames():
    return (pd.read_csv(DATA / "breast_hetero_guest.csv"),
            pd.read_csv(DATA / "breast_hetero_host.csv"))


def test_readme_example_runs(monkeypatch):
    """The README's Python API block, as written (2048-bit keys, default policies)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(ROOT)
    env: dict = {}
    exec(compile(block, "README.md", "exec"), env)  # noqa: S102 - our own README
    res, scores = env["result"], env["scores"]
    assert res.bank.intersection == 2940 and res.metrics["test_auc"] > 0.6
    assert list(scores.columns) == ["id", "score"] and 0 < len(scores) <= 300
    assert scores["score"].between(0, 1).all()


def test_same_pipeline_as_the_node(frames):
    """run_local with the golden test's seeds reproduces the node pipeline's recorded
    model digests: the Python API and a node's job run the same function."""
    from support.golden import JOBS, SEEDS
    want = json.loads((DATA / "golden_digests.json").read_text())
    bank, plat = frames
    for algorithm, extra in JOBS.items():
        job = {"job": {"name": f"golden-{algorithm}", "algorithm": algorithm,
                       "dataset": "d", "peer_dataset": "d"},
               "psi": {"id_type": "string"}, **extra,
               "evaluation": {"cipher": "paillier", "key_bits": 1024, "test_fraction": 0.25}}
        res = run_local(job, bank=bank, platform=plat, bank_policy=POLICY,
                        platform_policy=POLICY, seed=SEEDS)
        assert res.bank.model_digest == want[algorithm]["bank_model"]
        assert res.platform.model_digest == want[algorithm]["platform_model"]


def test_result_and_scoring(frames, tmp_path):
    bank, plat = frames
    job = {"job": {"name": "api", "algorithm": "logistic_regression", "dataset": "loans",
                   "peer_dataset": "ent"}, "psi": {"id_type": "string"},
           "params": {"epochs": 2, "batch_size": 128},
           "evaluation": {"cipher": "plain", "key_bits": 1024}}
    res = run_local(job, bank=bank, platform=plat, bank_policy=POLICY,
                    platform_policy=POLICY, seed=5, data_dir=tmp_path)
    assert res.metrics["test_auc"] > 0.95 and len(res.history) == 2
    assert (tmp_path / "bank" / "models" / "api.json").exists()
    kinds = {k for _, k, *_ in res.wire}
    assert {"psi.hello", "lr.hello", "job.model_digest"} <= kinds
    assert all(len(w) == 5 for w in res.wire)
    again = run_local(job, bank=bank, platform=plat, bank_policy=POLICY,
                      platform_policy=POLICY, seed=5)
    assert again.bank_model.digest() == res.bank_model.digest()
    some = plat.sample(300, random_state=0)
    scores = res.score(bank.drop(columns=["y"]).head(60), some, seed=1)
    shared = set(bank.id.head(60)) & set(some.id)
    assert len(shared) > 10
    assert set(scores["id"].astype(int)) == shared
    # CSV paths work like frames
    from_files = run_local(job, bank=DATA / "breast_hetero_guest.csv",
                           platform=DATA / "breast_hetero_host.csv", bank_policy=POLICY,
                           platform_policy=POLICY, seed=5)
    assert from_files.bank_model.digest() == res.bank_model.digest()


@pytest.mark.parametrize("change,match", [
    (lambda b, p: (b.rename(columns={"id": "ID"}), p),
     "the bank DataFrame has no id column 'id'"),
    (lambda b, p: (b, p.assign(id=p.id.astype(float))),
     "the platform DataFrame: id column 'id' has dtype float64"),
    (lambda b, p: (b, p.assign(id=p.id.astype(str))),
     "the id columns differ in type: the bank DataFrame's 'id' holds integers, the "
     "platform DataFrame's 'id' holds strings"),
    (lambda b, p: (b, p.assign(y=0)),
     "the platform DataFrame has a column 'y' named like the bank's label"),
    (lambda b, p: (b.drop(columns=["y"]), p), "the bank DataFrame has no label column 'y'"),
    (lambda b, p: (b.assign(x3=b.x3.astype(str).where(b.index > 2, "n/a")), p),
     "bank side: bank DataFrame: column 'x3' is not numeric"),
])
def test_bad_frames_get_one_clear_message(frames, change, match):
    bank, plat = change(*frames)
    job = {"job": {"name": "bad", "algorithm": "secureboost", "dataset": "loans",
                   "peer_dataset": "ent"}, "psi": {"id_type": "string"},
           "params": {"n_trees": 1}, "evaluation": {"cipher": "plain", "key_bits": 1024}}
    with pytest.raises(FedjointError, match=re.escape(match)):
        run_local(job, bank=bank, platform=plat, bank_policy=POLICY, platform_policy=POLICY)


def test_root_cause_of_either_side(frames):
    bank, plat = frames
    job = {"job": {"name": "rc", "algorithm": "secureboost", "dataset": "loans",
                   "peer_dataset": "ent"}, "psi": {"id_type": "string"},
           "params": {"n_trees": 1}, "evaluation": {"key_bits": 1024}}
    with pytest.raises(FedjointError, match="platform side: refused by its policy: the "
                                            "job's Paillier key of 1024 bits") as e:
        run_local(job, bank=bank, platform=plat, bank_policy=POLICY)
    assert e.value.party == "platform"
    with pytest.raises(FedjointError, match="min_intersection") as e:
        run_local(job, bank=bank, platform=plat.head(5), bank_policy=POLICY,
                  platform_policy=POLICY)
    with pytest.raises(FedjointError, match="unknown key 'n_tree'.*valid keys for "
                                            "secureboost: objective, n_trees"):
        run_local({**job, "params": {"n_tree": 2}}, bank=bank, platform=plat)


def test_public_names():
    assert set(fedjoint.algorithms()) >= {"secureboost", "logistic_regression"}
    assert callable(fedjoint.verify) and callable(fedjoint.replay)
    assert fedjoint.SecureBoostParams().n_trees == 20
