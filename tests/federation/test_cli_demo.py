"""`fedjoint demo --quick` end to end: two nodes with TLS, PSI, SecureBoost, LR,
scoring, both transcripts verified, a report; metrics only a working model reaches."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console
from support.browser import rendered_series

from federation.config import ConfigError, load_job_spec, load_node_config, tomllib

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "credit_risk"


def test_example_configs_are_valid_once_fingerprints_are_pinned(tmp_path):
    for party in ("bank", "platform"):
        with pytest.raises(ConfigError, match=r"peer\.cert_fingerprint"):
            load_node_config(EXAMPLE / party / "node.toml")
        text = (EXAMPLE / party / "node.toml").read_text()
        text = text.replace("REPLACE-WITH-THE-PLATFORM-CERTIFICATE-FINGERPRINT", "AB" * 32)
        text = text.replace("REPLACE-WITH-THE-BANK-CERTIFICATE-FINGERPRINT", "CD" * 32)
        (tmp_path / party).mkdir()
        (tmp_path / party / "node.toml").write_text(text)
        cfg = load_node_config(tmp_path / party / "node.toml")
        assert cfg.policy.min_key_bits == 2048 and not cfg.policy.allow_insecure_test_jobs
    for job in sorted((EXAMPLE / "jobs").glob("*.toml")):
        spec = load_job_spec(job)
        if spec.algorithm != "psi" and spec.algorithm != "score":
            assert spec.evaluation.cipher == "paillier" and spec.evaluation.key_bits >= 2048
    assert tomllib.loads((EXAMPLE / "jobs" / "score.toml").read_text())["job"]["model"]


@pytest.mark.timeout(240)
def test_demo_quick_end_to_end(tmp_path):
    from federation.demo import run_demo
    out = io.StringIO()
    res = run_demo(quick=True, work_dir=tmp_path / "demo",
                   console=Console(file=out, width=200, emoji=False))
    text = out.getvalue()
    assert set(res.jobs) == {"PSI", "SecureBoost", "LR", "scoring"}, text
    assert all(res.verified.values()) and len(res.verified) == 4, text
    sb, lr = res.jobs["SecureBoost"]["metrics"], res.jobs["LR"]["metrics"]
    # partial intersection: the platform lacks some of the bank's customers
    assert 11000 < res.jobs["PSI"]["metrics"]["intersection"] < 12000
    assert sb["test_auc"] >= 0.75, sb
    assert lr["test_auc"] >= 0.68, lr
    assert res.jobs["scoring"]["metrics"]["scored"] == 2000
    assert res.score_auc is not None and res.score_auc >= 0.74
    page = res.report.read_text()
    assert "<svg" in page and "verified" in page
    assert '<section id="oot">' in page and f"<td>{res.score_auc:.4f}</td>" in page
    # ROC, KS (3 series), train/valid loss and AUC curves, importance bars: all drawn
    assert rendered_series(res.report, tmp_path) >= 10
