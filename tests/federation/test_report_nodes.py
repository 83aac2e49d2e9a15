"""The model-risk report through two real nodes and the CLI: ``fedjoint job report JOB
--oot score.toml --threshold T`` runs the scoring job on a labelled out-of-time
dataset and reports it; its figures equal scikit-learn's on the scores the scoring job
wrote and the labels of the file. The platform's report of the same jobs has the PSI
of its own variables and nothing of the bank's labels or scores."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import sklearn.metrics as skm
from support.nodes import (
    DATA,
    make_party_keys,
    pipeline_job,
    run_cli,
    running_nodes,
    write_job,
    write_node_tomls,
)

from federation.report import stats

PIPELINE = [  # binning -> selection -> woe_lr
    {"name": "bin", "algorithm": "binning", "params": {"method": "quantile", "n_bins": 5}},
    {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
     "params": {"iv_min": 0.02}},
    {"name": "card", "algorithm": "woe_lr", "inputs": {"binning": "bin", "selection": "sel"},
     "params": {"epochs": 2, "batch_size": 0}}]


def test_report_with_out_of_time_population_through_nodes(tmp_path, capsys, monkeypatch):
    keys = make_party_keys(tmp_path)
    allowed = {"allowed_algorithms": ["logistic_regression", "score", "binning",
                                      "selection", "woe_lr", "secureboost"]}
    bank_toml, plat_toml = write_node_tomls(tmp_path, keys=keys, bank_rows=400,
                                            bank_policy=allowed, platform_policy=allowed)
    oot = pd.read_csv(DATA / "breast_hetero_guest.csv").iloc[400:]
    oot.to_csv(tmp_path / "oot.csv", index=False)
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")     # three classes by a bank column
    g["y"] = np.array(["high", "low", "mid"])[np.digitize(g["x0"], g["x0"].quantile([.33, .66]))]
    g.iloc[:400].to_csv(tmp_path / "mc.csv", index=False)
    g.iloc[400:].to_csv(tmp_path / "mc_oot.csv", index=False)
    with bank_toml.open("a") as fh:
        for name, path in (("loans_oot", "oot.csv"), ("loans_mc", "mc.csv"),
                           ("loans_mc_oot", "mc_oot.csv")):
            fh.write(f'\n[datasets.{name}]\npath = "{path}"\nid_column = "id"\n'
                     'label_column = "y"\n')
    (tmp_path / "oot.toml").write_text(
        '[job]\nname = "oot"\nalgorithm = "score"\ndataset = "loans_oot"\n'
        'peer_dataset = "enterprises"\nmodel = "MODEL"\n[psi]\nid_type = "string"\n'
        '[evaluation]\ncipher = "plain"\nkey_bits = 1024\n')
    with running_nodes(bank_toml, plat_toml) as (bank, plat):
        monkeypatch.setenv("FEDJOINT_CONFIG", str(bank_toml))
        job = write_job(tmp_path, "lr", params={"epochs": 2, "batch_size": 0})
        code, out, err = run_cli(capsys, "job", "submit", str(job), "--wait")
        assert code == 0, err + out
        job_id = out.split()[0]
        score_toml = tmp_path / "oot.toml"
        score_toml.write_text(score_toml.read_text().replace("MODEL", job_id))
        code, out, err = run_cli(capsys, "job", "report", job_id, "--oot", str(score_toml),
                                 "--threshold", "0.4", "--out", str(tmp_path / "r.html"))
        assert code == 0, err
        score_id = re.search(r"scored by job (\S+)", err).group(1)
        page = (tmp_path / "r.html").read_text()

        # the reference: the scoring job's own CSV and the file's labels, by id
        sc = pd.read_csv(tmp_path / "bank-a-data" / "jobs" / score_id / "scores.csv",
                         dtype={"id": str})
        y = oot.assign(id=oot["id"].astype(str)).set_index("id").loc[sc["id"], "y"].to_numpy()
        assert 0.5 < skm.roc_auc_score(y, sc["score"]) <= 1.0
        auc, ap = skm.roc_auc_score(y, sc["score"]), skm.average_precision_score(y, sc["score"])
        oot_sec = page.split('<section id="oot">')[1].split("</section>")[0]
        for v in (auc, ap, skm.brier_score_loss(y, sc["score"])):
            assert f"<td>{v:.4f}</td>" in oot_sec
        assert "Threshold <b>0.4</b> (chosen by the user" in page
        tp = int(((sc["score"] >= 0.4) & (y == 1)).sum())
        assert f"<td>{tp:,}</td>" in oot_sec.split("Out-of-time confusion")[1]
        # per-variable PSI of the bank's columns: training intersection vs the OOT rows
        stab = page.split('<section id="stability">')[1].split("</section>")[0]
        assert "Per variable (bank features)" in stab and "Platform variables are not" in stab
        dev = pd.read_csv(tmp_path / "bank.csv")
        edges = stats.quantile_edges(dev["x0"])   # every bank id is in the intersection
        want = stats.psi_table(dev["x0"], oot.set_index("id").loc[sc["id"].astype(int), "x0"],
                               edges)["psi"]
        assert re.search(rf"x0 &mdash; PSI {want:.4f}", stab)
        for sid in ("discrimination", "deciles", "calibration", "coefficients"):
            assert f'<section id="{sid}">' in page

        # the platform's report of the same jobs: its own variables, no labels or scores
        code, out, err = run_cli(capsys, "job", "report", job_id, "--oot", score_id,
                                 "--config", str(plat_toml), "--out", str(tmp_path / "p.html"))
        assert code == 0, err
        ppage = (tmp_path / "p.html").read_text()
        assert "Per variable (platform features)" in ppage
        assert '<section id="oot">' not in ppage and '<section id="deciles">' not in ppage
        assert "platform (this party&#x27;s own) coefficients" in ppage

        # a pipeline (binning -> selection -> woe_lr): the scorecard stage's sections, the
        # binning stage's WOE/IV; --oot scores that stage's model (<job>.card)
        pipe = pipeline_job(tmp_path, PIPELINE)
        code, out, err = run_cli(capsys, "job", "submit", str(pipe), "--wait")
        assert code == 0, err + out
        pipe_id = out.split()[0]
        score_toml.write_text(score_toml.read_text().replace(job_id, f"{pipe_id}.card"))
        code, out, err = run_cli(capsys, "job", "report", pipe_id, "--oot", str(score_toml),
                                 "--out", str(tmp_path / "pl.html"))
        assert code == 0, err
        pl = (tmp_path / "pl.html").read_text()
        for sid in ("stages", "woe-iv", "scorecard", "coefficients", "oot", "stability"):
            assert f'<section id="{sid}">' in pl, sid
        assert "binning part (WOE bins)" in pl      # the variables binned as the bin stage
        # --binning takes a pipeline's binning stage too; a job without one is refused
        code, out, err = run_cli(capsys, "job", "report", job_id, "--binning", pipe_id,
                                 "--out", str(tmp_path / "b.html"))
        assert code == 0 and '<section id="woe-iv">' in (tmp_path / "b.html").read_text()
        code, out, err = run_cli(capsys, "job", "report", job_id, "--binning", job_id)
        assert code == 1 and "has no binning part" in err
        # a multiclass model: --oot maps the file's class names to the model's classes
        mc = write_job(tmp_path, "mc", "secureboost",
                       params={"objective": "multi:softprob", "n_trees": 2, "max_depth": 2})
        mc.write_text(mc.read_text().replace('dataset = "loans"', 'dataset = "loans_mc"'))
        code, out, err = run_cli(capsys, "job", "submit", str(mc), "--wait")
        assert code == 0, err + out
        mc_id = out.split()[0]
        mc_score = tmp_path / "mc_oot.toml"
        mc_score.write_text(score_toml.read_text().replace(f"{pipe_id}.card", mc_id)
                            .replace('"loans_oot"', '"loans_mc_oot"'))
        code, out, err = run_cli(capsys, "job", "report", mc_id, "--oot", str(mc_score),
                                 "--out", str(tmp_path / "mc.html"))
        assert code == 0, err
        mc_sid = re.search(r"scored by job (\S+)", err).group(1)
        sc = pd.read_csv(tmp_path / "bank-a-data" / "jobs" / mc_sid / "scores.csv",
                         dtype={"id": str})
        ymc = g.assign(id=g["id"].astype(str)).set_index("id").loc[sc["id"], "y"]
        mc_page = (tmp_path / "mc.html").read_text().split('<section id="oot">')[1]
        assert f"<td>{skm.accuracy_score(ymc, sc['class']):.4f}</td>" in mc_page
        # a scoring job of another model, or no such job: one line each
        code, out, err = run_cli(capsys, "job", "report", job_id, "--oot", "no-such-job")
        assert code == 1 and "no job 'no-such-job'" in err
        code, out, err = run_cli(capsys, "job", "report", score_id, "--oot", score_id)
        assert code == 1 and "used model" in err
        code, out, err = run_cli(capsys, "job", "report", job_id, "--oot", str(score_toml))
        assert code == 1 and f"scores model '{pipe_id}.card', not job {job_id}'s" in err


def test_python_api_report_with_out_of_time_frames(tmp_path):
    """RunResult.report(oot=(bank_frame, platform_frame), threshold=...): the same report
    from a local run; the out-of-time figures equal scikit-learn's on result.score()."""
    import pytest

    from fedjoint import FedjointError, run_local
    from fedjoint.testing import TEST_POLICY
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    job = {"job": {"name": "lr", "algorithm": "logistic_regression", "dataset": "loans",
                   "peer_dataset": "enterprises"}, "psi": {"id_type": "string"},
           "params": {"epochs": 2, "batch_size": 0},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25}}
    res = run_local(job, bank=g.iloc[:400], platform=h, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY, seed=5)
    oot = g.iloc[400:]
    page = res.report(tmp_path / "r.html", oot=(oot, h), threshold=0.3,
                      oot_name="2025Q1").read_text()
    sc = res.score(oot, h)
    y = oot.set_index("id").loc[sc["id"].astype(int), "y"].to_numpy()
    oot_sec = page.split('<section id="oot">')[1].split("</section>")[0]
    assert f"<td>{skm.roc_auc_score(y, sc['score']):.4f}</td>" in oot_sec
    assert "Threshold <b>0.3</b>" in page and "2025Q1" in page
    with pytest.raises(FedjointError, match=r"threshold = 1.5: expected a number in \(0, 1\)"):
        res.report(tmp_path / "x.html", threshold=1.5)
    with pytest.raises(FedjointError, match="label column 'y' not found"):
        res.report(tmp_path / "x.html", oot=(oot.drop(columns="y"), h))


def test_python_api_regression_report_gets_its_sections(tmp_path):
    """A continuous target: regression plots, and with oot= the PSI of the prediction and
    of the bank's variables; no binary section, no out-of-time evaluation."""
    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    g = g.assign(y=g["x0"] * 2 + h.set_index("id").loc[g["id"], "x1"].to_numpy())
    job = {"job": {"name": "linreg", "algorithm": "linear_regression", "dataset": "loans",
                   "peer_dataset": "enterprises"}, "psi": {"id_type": "string"},
           "params": {"epochs": 2, "batch_size": 0},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25}}
    res = run_local(job, bank=g.iloc[:400], platform=h, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY, seed=5)
    page = res.report(tmp_path / "r.html", oot=(g.iloc[400:], h)).read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert "regression" in ids and "stability" in ids and "coefficients" in ids
    assert not {"discrimination", "deciles", "calibration", "confusion", "oot"} & set(ids)
    stab = page.split('<section id="stability">')[1]
    assert "Score PSI" in stab and "Per variable (bank features)" in stab


def test_python_api_multiclass_report_with_out_of_time_frames(tmp_path):
    """A multiclass model: the classes section, and with oot= the out-of-time accuracy,
    macro-F1 and K x K matrix equal to scikit-learn's on result.score()."""
    from fedjoint import run_local
    from fedjoint.testing import TEST_POLICY
    g = pd.read_csv(DATA / "breast_hetero_guest.csv")
    h = pd.read_csv(DATA / "breast_hetero_host.csv")
    s = g.x0 + h.set_index("id").loc[g["id"], "x0"].to_numpy()
    names = np.array(["high", "low", "mid"])
    g = g.assign(y=names[np.digitize(s, np.quantile(s, [0.33, 0.66]))])
    job = {"job": {"name": "mc", "algorithm": "secureboost", "dataset": "loans",
                   "peer_dataset": "enterprises"}, "psi": {"id_type": "string"},
           "params": {"objective": "multi:softprob", "n_trees": 2, "max_depth": 3},
           "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25}}
    res = run_local(job, bank=g.iloc[:400], platform=h, bank_policy=TEST_POLICY,
                    platform_policy=TEST_POLICY, seed=5)
    oot = g.iloc[400:]
    page = res.report(tmp_path / "r.html", oot=(oot, h)).read_text()
    ids = re.findall(r'<section id="([^"]+)">', page)
    assert "classes" in ids and "oot" in ids and "discrimination" not in ids
    sc = res.score(oot, h)
    y = oot.set_index("id").loc[sc["id"].astype(int), "y"].to_numpy()
    oot_sec = page.split('<section id="oot">')[1].split("</section>")[0]
    assert f"<td>{skm.accuracy_score(y, sc['class']):.4f}</td>" in oot_sec
    assert f"<td>{skm.f1_score(y, sc['class'], average='macro'):.4f}</td>" in oot_sec
    cm = skm.confusion_matrix(y, sc["class"], labels=list(names))
    assert f"<td>{cm[0, 0]:,}</td>" in oot_sec.split("Out-of-time classes")[1]
