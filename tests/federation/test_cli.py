"""`fedjoint` CLI: keys, node check, job submit --wait / status / list / logs, models,
reports, and one-line errors with a non-zero exit."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from support.nodes import make_party_keys, running_nodes, write_job, write_node_tomls
from support.nodes import run_cli as run

ROOT = Path(__file__).resolve().parents[2]


def test_keys_init_prints_fingerprints(tmp_path, capsys):
    code, out, err = run(capsys, "keys", "init", "--party", "bank-a", "--out",
                         str(tmp_path / "k"))
    assert code == 0, err
    assert "certificate fingerprint" in out and "signing key fingerprint" in out
    key = tmp_path / "k" / "bank-a.tls.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "k" / "bank-a.sign.key").st_mode) == 0o600
    # refusing to overwrite is one clear line
    code, out, err = run(capsys, "keys", "init", "--party", "bank-a", "--out",
                         str(tmp_path / "k"))
    assert code == 1 and err.count("\n") == 1 and "refusing to overwrite" in err


def test_errors_are_one_line(tmp_path, capsys):
    keys = make_party_keys(tmp_path)
    bank_toml, _ = write_node_tomls(tmp_path, keys=keys)
    job = write_job(tmp_path, "lr", params={"epochs": 1})
    job.write_text(job.read_text().replace("test_fraction", "test_fracton"))
    code, out, err = run(capsys, "job", "submit", str(job), "--config", str(bank_toml))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert str(job) in err and "'test_fracton'; did you mean 'test_fraction'?" in err

    bad_params = write_job(tmp_path, "lr2", params={"epoch": 1})
    code, out, err = run(capsys, "job", "submit", str(bad_params), "--config", str(bank_toml))
    assert code == 1 and "did you mean 'epochs'" in err

    # the node is not running
    good = write_job(tmp_path, "lr3", params={"epochs": 1})
    code, out, err = run(capsys, "job", "submit", str(good), "--config", str(bank_toml))
    assert code == 1 and "not running" in err and "fedjoint node start" in err

    # no config at all
    os.environ.pop("FEDJOINT_CONFIG", None)
    code, out, err = run(capsys, "job", "list")
    assert code == 1 and "--config" in err

    # node.toml typo
    text = bank_toml.read_text().replace("min_key_bits", "min_keybits")
    bank_toml.write_text(text)
    code, out, err = run(capsys, "job", "list", "--config", str(bank_toml))
    assert code == 1 and "did you mean 'min_key_bits'" in err and str(bank_toml) in err

    # a dataset path that does not exist: named at submit time by the runner
    code, out, err = run(capsys, "node", "start", "--config", str(tmp_path / "nope.toml"))
    assert code == 1 and "nope.toml: node config file not found" in err


def test_console_script_help():
    exe = Path(sys.executable).parent / "fedjoint"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "federation.cli"]
    res = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0
    for word in ("keys", "node", "job", "model", "audit", "demo"):
        assert word in res.stdout


@pytest.mark.skipif(not (ROOT / "psi" / "protocol.py").exists(), reason="psi not built")
def test_cli_against_two_nodes(tmp_path, capsys, monkeypatch):
    keys = make_party_keys(tmp_path)
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys)
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        monkeypatch.setenv("FEDJOINT_CONFIG", str(bank_toml))
        code, out, err = run(capsys, "node", "check")
        assert code == 0, err
        assert "peer reachable" in out and "round trip" in out
        assert keys["platform-b"]["cert_fingerprint"] in out
        assert keys["bank-a"]["cert_fingerprint"] in out

        job = write_job(tmp_path, "lr", params={"epochs": 2, "batch_size": 0})
        code, out, err = run(capsys, "job", "submit", str(job), "--wait")
        assert code == 0, err + out
        assert "done" in out and "test_auc=" in out
        job_id = out.split()[0]

        code, out, err = run(capsys, "job", "status", job_id)
        assert code == 0 and "done" in out
        code, out, err = run(capsys, "job", "list", "--json")
        assert code == 0 and job_id in out
        code, out, err = run(capsys, "job", "logs", job_id, "--follow")
        assert code == 0 and "psi.done" in out and "state" in out
        code, out, err = run(capsys, "model", "list")
        assert code == 0 and job_id[:10] in out
        code, out, err = run(capsys, "model", "export", job_id, "--out",
                             str(tmp_path / "m.json"))
        assert code == 0 and stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o600
        code, out, err = run(capsys, "job", "report", job_id, "--out",
                             str(tmp_path / "r.html"))
        assert code == 0, err
        page = (tmp_path / "r.html").read_text()
        assert "<svg" in page and job_id in page

        # refused by policy: one clear line, exit code 3 for a failed job
        job2 = write_job(tmp_path, "sb", "secureboost", params={"n_trees": 1},
                         evaluation={"cipher": "paillier", "key_bits": 1024})
        plat.cfg.policy.allow_insecure_test_jobs = False
        code, out, err = run(capsys, "job", "submit", str(job2), "--wait")
        assert code == 3 and "failed" in out
        assert "refused by platform-b's policy" in out and "1024 bits" in out

        code, out, err = run(capsys, "job", "status", "no-such-job")
        assert code == 1 and "no job 'no-such-job'" in err
        # the platform's operator sees the same job from its side
        code, out, err = run(capsys, "job", "list", "--config", str(plat_toml))
        assert code == 0 and "platform" in out
