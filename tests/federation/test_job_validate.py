"""`fedjoint job validate JOB.toml`: a job checked against the local node (job file and
[params], policy, key size, dataset file and header, the job's column choice) without
proposing anything; exit 0 valid, 1 a check failed, 2 could not check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.nodes import make_party_keys, write_job, write_node_tomls
from support.nodes import run_cli as run

from federation.config import load_node_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_party_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def nodes(tmp_path, keys, monkeypatch):
    monkeypatch.delenv("FEDJOINT_CONFIG", raising=False)
    return write_node_tomls(tmp_path, keys=keys,
                            platform_policy={"allowed_algorithms": ["psi", "secureboost"]})


def line(out: str, words: str) -> str:
    hits = [ln for ln in out.splitlines() if words in ln]
    assert len(hits) == 1, (words, out)
    return hits[0]


def test_a_valid_job_passes_and_nothing_is_proposed(tmp_path, nodes, capsys):
    bank_toml, _ = nodes
    job = write_job(tmp_path, "sb", "secureboost",
                    params={"eta": 0.2, "n_estimators": 2, "reg_alpha": 0.1},
                    extra_job={"features": ["x3", "x0"], "peer_features": ["x1"]})
    code, out, err = run(capsys, "job", "validate", str(job), "--config", str(bank_toml))
    assert code == 0, out + err
    assert "valid: 7 checks passed on bank-a (nothing was proposed)" in out
    assert "read eta as learning_rate, n_estimators as n_trees" in line(out, "parses")
    assert line(out, "algorithm 'secureboost' is allowed").lstrip().startswith("ok")
    assert "(512..4096 bits)" in line(out, "cipher 'plain' with 1024-bit keys")
    assert "12 columns in its header" in line(out, "dataset 'loans': file")
    assert line(out, "label column 'y'").lstrip().startswith("ok")
    assert line(out, "features (2) are columns").rstrip().endswith("x3, x0")
    assert "dataset 'enterprises', 1 chosen columns" in line(out, "the platform's side")
    assert "FAIL" not in out
    # nothing was created: no node was asked, no job store exists
    assert not load_node_config(bank_toml).data_dir.exists()

    code, out, _ = run(capsys, "job", "validate", str(job), "--config", str(bank_toml),
                       "--json")
    rep = json.loads(out)
    assert code == 0 and rep["valid"] and rep["party"] == "bank"
    assert {c["status"] for c in rep["checks"]} == {"ok", "--"}


def test_failing_checks_are_named_and_exit_1(tmp_path, nodes, capsys):
    bank_toml, plat_toml = nodes
    job = write_job(tmp_path, "sb", "secureboost", params={"n_trees": 2},
                    evaluation={"cipher": "paillier", "key_bits": 256},
                    extra_job={"features": ["x0", "x9x", "y"], "peer_features": ["x0",
                                                                                "nope"]})
    code, out, err = run(capsys, "job", "validate", str(job), "--config", str(bank_toml))
    assert code == 1 and err == ""
    assert "invalid: 2 of 7 checks failed (nothing was proposed)" in out
    keyline = line(out, "256-bit keys")
    assert keyline.lstrip().startswith("FAIL") and "256" in keyline
    feat = line(out, "features (3) are columns")
    assert feat.lstrip().startswith("FAIL")
    assert "'x9x' is not a column of" in feat and "did you mean 'x9'?" in feat
    assert "'y' is the label column" in feat
    # the platform's operator validates the same job against the platform's node: it
    # sees which of its columns the bank named and which it does not offer
    code, out, _ = run(capsys, "job", "validate", str(job), "--config", str(plat_toml))
    assert code == 1
    pf = line(out, "peer_features are columns this platform offers")
    assert pf.lstrip().startswith("FAIL") and "('nope')" in pf
    assert "jobs are submitted at the bank's node" in out

    # an algorithm the platform's policy does not allow; a dataset file that is gone
    lr = write_job(tmp_path, "lr", params={"epochs": 1})
    code, out, _ = run(capsys, "job", "validate", str(lr), "--config", str(plat_toml))
    assert code == 1
    assert "is not allowed (allowed: psi, secureboost)" in line(
        out, "algorithm 'logistic_regression'")
    (tmp_path / "bank.csv").unlink()
    code, out, _ = run(capsys, "job", "validate", str(lr), "--config", str(bank_toml))
    assert code == 1 and "dataset file not found" in line(out, "dataset 'loans': file")


def test_job_file_errors_are_one_failed_check(tmp_path, nodes, capsys):
    bank_toml, _ = nodes
    bad = write_job(tmp_path, "lr", params={"epoch": 1, "eta": 0.1})
    code, out, _ = run(capsys, "job", "validate", str(bad), "--config", str(bank_toml))
    assert code == 1
    assert "unknown key 'epoch'; did you mean 'epochs'?" in line(out, "FAIL")
    assert "invalid: 1 of 1 checks failed" in out
    twice = write_job(tmp_path, "lr2", params={"eta": 0.1, "learning_rate": 0.1})
    code, out, _ = run(capsys, "job", "validate", str(twice), "--config", str(bank_toml))
    assert code == 1 and "'eta' and 'learning_rate' are the same parameter" in out
    score = write_job(tmp_path, "sc", "score", extra_job={"model": "no-such-model"})
    code, out, _ = run(capsys, "job", "validate", str(score), "--config", str(bank_toml))
    assert code == 1 and "no model 'no-such-model'" in line(out, "model 'no-such-model'")
    psi = write_job(tmp_path, "p", "psi", extra_job={"features": ["x0"]})
    code, out, _ = run(capsys, "job", "validate", str(psi), "--config", str(bank_toml))
    assert code == 1 and "features is only used by training jobs" in out


def test_could_not_check_exits_2(tmp_path, nodes, capsys):
    bank_toml, _ = nodes
    job = write_job(tmp_path, "lr", params={"epochs": 1})
    code, out, err = run(capsys, "job", "validate", str(job))
    assert code == 2 and "no node config" in err and out == ""
    code, _, err = run(capsys, "job", "validate", str(tmp_path / "nope.toml"), "--config",
                       str(bank_toml))
    assert code == 2 and "nope.toml: job file not found" in err
    broken = tmp_path / "broken.toml"
    broken.write_text(bank_toml.read_text().replace("min_key_bits", "min_keybits"))
    code, _, err = run(capsys, "job", "validate", str(job), "--config", str(broken))
    assert code == 2 and "did you mean 'min_key_bits'" in err and err.count("\n") == 1


def test_console_script_exit_codes(tmp_path, nodes):
    bank_toml, _ = nodes
    env = {k: v for k, v in os.environ.items() if k != "FEDJOINT_CONFIG"}
    env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-m", "federation.cli", "job", "validate"]
    good = write_job(tmp_path, "lr", params={"l2": 0.01, "epochs": 1})
    bad = write_job(tmp_path, "lr2", params={"epochs": 1}, extra_job={"features": ["zz"]})
    codes = [subprocess.run([*cmd, str(j), "--config", str(bank_toml)], env=env,
                            capture_output=True, text=True, timeout=120)
             for j in (good, bad)]
    assert [c.returncode for c in codes] == [0, 1], [c.stdout + c.stderr for c in codes]
    assert "read l2 as reg_lambda" in codes[0].stdout
    assert "'zz' is not a column of" in codes[1].stdout
