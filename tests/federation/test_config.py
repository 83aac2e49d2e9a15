"""node.toml / job.toml validation, dataset loading and the SQLite job store."""

from pathlib import Path

import numpy as np
import pytest

from federation.config import ConfigError, load_job_spec, load_node_config
from federation.data import DataError, hashed_split, load_dataset
from federation.jobstore import InvalidTransition, JobNotFound, JobStore

DATA = Path(__file__).resolve().parents[1] / "data"
FP = "sha256:" + "ab" * 32

NODE = f"""
[node]
party = "bank"
name = "bank-a"
listen = "127.0.0.1:7443"
data_dir = "state"

[keys]
tls_key = "k/tls.key"
tls_cert = "k/tls.crt"
signing_key = "k/signing.key"

[peer]
name = "platform-b"
address = "127.0.0.1:7444"
cert_fingerprint = "{FP}"
cert = "k/peer.tls.crt"
signing_public_key = "k/peer.sign.pub"

[datasets.loans]
path = "{DATA / 'breast_hetero_guest.csv'}"
id_column = "id"
label_column = "y"

[policy]
min_key_bits = 2048
"""

JOB = """
[job]
name = "lr-1"
algorithm = "logistic_regression"
dataset = "loans"
peer_dataset = "enterprises"

[evaluation]
test_fraction = 0.25
cipher = "plain"
key_bits = 1024
"""


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_node_config_ok_and_paths_relative_to_file(tmp_path):
    cfg = load_node_config(_write(tmp_path, "node.toml", NODE))
    assert cfg.party == "bank" and cfg.peer_party == "platform"
    assert cfg.data_dir == tmp_path / "state"
    assert cfg.keys.tls_key == tmp_path / "k/tls.key"
    assert cfg.admin.startswith("127.0.0.1")
    assert cfg.policy.min_key_bits == 2048 and not cfg.policy.allow_insecure_test_jobs
    assert cfg.dataset("loans").label_column == "y"
    with pytest.raises(ConfigError, match="did you mean 'loans'"):
        cfg.dataset("loan")


@pytest.mark.parametrize("old,new,match", [
    ("min_key_bits = 2048", "min_key_bit = 2048",
     r"node\.toml: \[policy\] unknown key 'min_key_bit'; did you mean 'min_key_bits'\?"),
    ('party = "bank"', 'party = "bnak"',
     r"node\.toml: node\.party = 'bnak': expected one of 'bank', 'platform'; did you mean "
     r"'bank'\?"),
    ('listen = "127.0.0.1:7443"', 'listen = "nowhere"', r"node\.listen = 'nowhere': expected "
     "host:port"),
    ('address = "127.0.0.1:7444"', "", r"missing required key peer\.address"),
    (f'cert_fingerprint = "{FP}"', 'cert_fingerprint = "xyz"', r"peer\.cert_fingerprint"),
    ("min_key_bits = 2048", 'min_key_bits = "big"',
     r"policy\.min_key_bits = 'big': expected an integer"),
    ('data_dir = "state"', 'data_dir = "state"\nadmin = "0.0.0.0:80"', "loopback"),
    ("[policy]", "[policy]\nallowed_algorithms = ['secureboots']",
     "did you mean 'secureboost'"),
    ("[peer]", "[peeer]\n[peer]", r"unknown key 'peeer'; did you mean 'peer'"),
])
def test_node_config_errors_name_file_and_key(tmp_path, old, new, match):
    assert old in NODE
    p = _write(tmp_path, "node.toml", NODE.replace(old, new, 1))
    with pytest.raises(ConfigError, match=match) as ei:
        load_node_config(p)
    assert str(p) in str(ei.value)


def test_node_config_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_node_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_node_config(_write(tmp_path, "bad.toml", "[node\nparty="))
    plat = NODE.replace('party = "bank"', 'party = "platform"')
    with pytest.raises(ConfigError, match="label_column is only allowed on the bank"):
        load_node_config(_write(tmp_path, "p.toml", plat))


def test_job_spec_ok_and_roundtrip(tmp_path):
    from federation.config import job_spec_from_dict
    spec = load_job_spec(_write(tmp_path, "job.toml", JOB))
    assert spec.algorithm == "logistic_regression" and spec.evaluation.cipher == "plain"
    assert spec.dataset_for("bank") == "loans" and spec.dataset_for("platform") == "enterprises"
    again = job_spec_from_dict(spec.to_dict(), "proposal")
    assert again == spec


@pytest.mark.parametrize("old,new,match", [
    ("test_fraction", "test_fracton", r"\[evaluation\] unknown key 'test_fracton'; did you "
     r"mean 'test_fraction'\?"),
    ('algorithm = "logistic_regression"', 'algorithm = "logistic_regresion"',
     "did you mean 'logistic_regression'"),
    ('cipher = "plain"', 'cipher = "rsa"', r"evaluation\.cipher = 'rsa'"),
    ("test_fraction = 0.25", "test_fraction = 1.5", r"evaluation\.test_fraction"),
    ('dataset = "loans"\n', "", r"missing required key job\.dataset"),
    ("[job]", "[jobs]\n[job]", "did you mean 'job'"),
    ("test_fraction = 0.25", "test_fraction = 0.25\nvalid_fraction = -0.1",
     r"evaluation\.valid_fraction"),
    ("[evaluation]", "[psi]\nkey_dir = '/etc'\n[evaluation]",
     r"\[psi\] key_dir is chosen by each node"),
    ("[evaluation]", "[params]\nearly_stopping = 'valid_auc'\n[evaluation]",
     r"valid_fraction: \[params\] early_stopping = 'valid_auc' needs a validation split"),
])
def test_job_spec_errors(tmp_path, old, new, match):
    assert old in JOB
    p = _write(tmp_path, "job.toml", JOB.replace(old, new, 1))
    with pytest.raises(ConfigError, match=match) as ei:
        load_job_spec(p)
    assert str(p) in str(ei.value)


def test_score_job_needs_model(tmp_path):
    text = JOB.replace('"logistic_regression"', '"score"')
    with pytest.raises(ConfigError, match=r"job\.model"):
        load_job_spec(_write(tmp_path, "s.toml", text))


# ------------------------------------------------------------------------ data

def _ds(path, **kw):
    from federation.config import DatasetConfig
    return DatasetConfig(name="d", path=Path(path), id_column=kw.pop("id_column", "id"), **kw)


def test_load_dataset_bank_and_platform():
    bank = load_dataset(_ds(DATA / "breast_hetero_guest.csv", label_column="y"))
    assert len(bank) == 569 and bank.X.shape == (569, 10) and set(bank.y) == {0, 1}
    assert bank.feature_names[0] == "x0" and bank.ids[0] == "133"
    plat = load_dataset(_ds(DATA / "breast_hetero_host.csv", columns=["x3", "x1"]))
    assert plat.y is None and plat.feature_names == ["x3", "x1"]
    sub = bank.take([2, 0])
    assert sub.ids == [bank.ids[2], bank.ids[0]]


@pytest.mark.parametrize("content,kw,match", [
    (None, {}, "not found"),
    ("", {}, "empty"),
    ("id,a\n", {}, "no data rows"),
    ("key,a\n1,2\n", {}, r"id column 'id' not found"),
    ("id,a\n1,2\n2,3\n", {"label_column": "y"}, r"label column 'y' not found"),
    ("id,y,a\n1,2,1\n2,0,1\n", {"label_column": "y"}, "must be binary"),
    ("id,a,b\n1,2,x\n2,3,4\n", {}, r"column 'b' is not numeric.*data row 1"),
    ("id,a\n1,2\n2,inf\n3,1\n", {}, r"column 'a' has 1 (missing or )?infinite.*data row 2"),
    ("id,a\n1,2\n1,3\n", {}, "duplicate id"),
    ("id,a\n1,2\n", {"columns": ["a", "zz"]}, r"\['zz'\]"),
])
def test_load_dataset_errors(tmp_path, content, kw, match):
    p = tmp_path / "d.csv"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=match) as ei:
        load_dataset(_ds(p, **kw))
    assert str(p) in str(ei.value) or "datasets" in str(ei.value)


def test_non_numeric_error_does_not_leak_values(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("id,a\n1,SECRETVALUE\n")
    with pytest.raises(DataError) as ei:
        load_dataset(_ds(p))
    assert "SECRETVALUE" not in str(ei.value)


def test_hashed_split_is_deterministic():
    ids = [str(i) for i in range(2000)]
    m1 = hashed_split(ids, 0.2, "job-1")
    m2 = hashed_split(list(reversed(ids)), 0.2, "job-1")[::-1]
    assert np.array_equal(m1, m2) and 0.15 < m1.mean() < 0.25
    assert not np.array_equal(m1, hashed_split(ids, 0.2, "job-2"))
    assert not hashed_split(ids, 0.0, "x").any()


# ------------------------------------------------------------------------ job store

def test_jobstore_state_machine(tmp_path):
    st = JobStore(tmp_path / "jobs.db")
    st.create("j1", "n", "secureboost", "bank", {"a": 1})
    for s in ("approved", "psi", "training", "evaluating", "done"):
        st.transition("j1", s)
    with pytest.raises(InvalidTransition):
        st.transition("j1", "failed", "late")
    st.create("j2", "n", "psi", "bank", {})
    with pytest.raises(InvalidTransition, match="'submitted' to 'training'"):
        st.transition("j2", "training")
    st.transition("j2", "failed", "refused by peer policy: nope")
    rec = st.get("j2")
    assert rec.state == "failed" and "nope" in rec.error
    st.update("j1", metrics={"auc": np.float64(0.9)}, history=[{"it": 1}])
    assert st.get("j1").metrics == {"auc": 0.9}
    assert [e["state"] for e in st.events("j1") if e["event"] == "state"][-1] == "done"
    assert {r.job_id for r in st.list()} == {"j1", "j2"} and st.active() == []
    with pytest.raises(JobNotFound):
        st.get("nope")
    assert st.get("j2").job_id == "j2"
    with pytest.raises(JobNotFound):
        st.get("j")           # ambiguous prefix
    with pytest.raises(JobNotFound):
        st.get("%")           # no wildcard matching
    st.add_model("j1", "j1", "secureboost", "/m", "abc", metrics={"auc": 0.9})
    assert st.model("j1")["digest"] == "abc" and len(st.models()) == 1


def test_policy_keys_documented_exactly():
    """The example walkthrough's [policy] table lists every policy key and only those."""
    import dataclasses
    import re

    from federation.config import PolicyConfig
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples" / "credit_risk" / "README.md").read_text()
    table = text.split("`[policy]` in `platform/node.toml`", 1)[1].split("\n\n", 2)[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    assert documented == {f.name for f in dataclasses.fields(PolicyConfig)}


def test_names_refuse_a_trailing_newline():
    from federation.config import ConfigError, job_spec_from_dict
    job = {"job": {"name": "ok\n", "algorithm": "psi", "dataset": "d", "peer_dataset": "d"}}
    with pytest.raises(ConfigError, match="job.name"):
        job_spec_from_dict(job)


def test_every_node_config_field_is_classified_for_node_reload():
    """`fedjoint node reload` applies the fields in RELOADABLE and refuses changes to
    those in RESTART_ONLY; a NodeConfig field in neither list (or in both) makes every
    reload fail, so a new field must be put in exactly one of them."""
    from dataclasses import fields

    from federation.config import NodeConfig
    from federation.node.reload import RELOADABLE, RESTART_ONLY
    names = {f.name for f in fields(NodeConfig)} - {"file"}
    unclassified = names - set(RELOADABLE) - set(RESTART_ONLY)
    assert not unclassified, (f"NodeConfig fields {sorted(unclassified)} are in neither "
                              "RELOADABLE nor RESTART_ONLY of federation/node/reload.py")
    assert not set(RELOADABLE) & set(RESTART_ONLY), "a field is both reloadable and not"
    assert not (set(RELOADABLE) | set(RESTART_ONLY)) - names, "a listed field does not exist"
