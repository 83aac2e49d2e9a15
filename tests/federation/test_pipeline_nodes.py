"""Pipelines through two real nodes (gRPC, TLS, SQLite, job processes):
``binning -> selection -> logistic_regression`` as one job with one PSI and one
transcript per party (stage boundaries recorded), both transcripts verified and the
bank's side replayed, each stage's output stored and usable by a later job's
``[inputs]``; and the bad inputs refused before anything crosses."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from support.nodes import pipeline_job, run_cli, running_nodes, stages_toml, two_nodes

import fedjoint
from federation import audit
from federation.config import ConfigError, load_job_spec
from federation.transcript import reader

DATA = Path(__file__).resolve().parents[2] / "examples" / "credit_risk" / "data"
ROWS = 1200


def frames() -> tuple[pd.DataFrame, pd.DataFrame]:
    bank = pd.read_csv(DATA / "bank.csv").head(ROWS)
    plat = pd.read_csv(DATA / "platform.csv")
    plat = plat[plat["id"].isin(bank["id"])].reset_index(drop=True)
    return bank[["id", "y", "x0", "x1", "x2", "x3", "x7", "x8"]], \
        plat[["id", "x0", "x1", "x5", "x6"]]


STAGES = stages_toml([
    {"name": "bin", "algorithm": "binning", "params": {"method": "quantile", "n_bins": 6}},
    {"name": "sel", "algorithm": "selection", "inputs": {"binning": "bin"},
     "params": {"iv_min": 0.02, "max_corr": 0.7, "psi_max": 0.5}},
    {"name": "lr", "algorithm": "logistic_regression", "inputs": {"selection": "sel"},
     "params": {"epochs": 3, "batch_size": 256}}])


def job_file(root: Path, stages: str = STAGES) -> Path:
    """The pipeline job of these tests (a fifth of the training rows for validation)."""
    return pipeline_job(root, stages, evaluation={"valid_fraction": 0.2})


def kinds(path: str, direction: str) -> list[str]:
    return [m["kind"] for m in reader.load(path).messages(direction)]


def test_pipeline_through_nodes(tmp_path, capsys, monkeypatch):
    bank, plat = frames()
    allowed = ["binning", "selection", "logistic_regression"]
    with two_nodes(tmp_path, monkeypatch, allowed, bank, plat):
        code, out, err = run_cli(capsys, "job", "submit", str(job_file(tmp_path)),
                                 "--wait")
        assert code == 0 and "done" in out, err + out
        job_id = out.split()[0]
        code, out, _ = run_cli(capsys, "job", "list", "--json")
        assert [j["job_id"] for j in json.loads(out)] == [job_id]     # one job
        code, out, _ = run_cli(capsys, "job", "status", job_id, "--json")
        rec = json.loads(out)
        for cmd in (("job", "status", job_id), ("job", "report", job_id, "--out",
                                                 str(tmp_path / "report.html"))):
            code, out, err = run_cli(capsys, *cmd)
            assert code == 0, (cmd, err + out)
            if cmd[1] == "status":     # one line per stage, each stage's model id
                assert "stage sel (selection): " in out and "kept: " in out, out
                assert "stage lr (logistic_regression): test AUC" in out, out
                assert f"model {job_id}.lr: " in out, out
        stages = rec["metrics"]["stages"]
        assert list(stages) == ["bin", "sel", "lr"]
        assert [stages[s]["algorithm"] for s in stages] == allowed
        kept = stages["sel"]["selected"]
        dropped = [r for r in stages["sel"]["selection"] if not r["kept"]]
        assert dropped and kept, stages["sel"]["selection"]   # the rules bit, not all
        assert rec["metrics"]["test_auc"] > 0.6

        # each stage's output is stored under <job>.<stage>; the LR trained on the
        # selected columns only, on both sides
        code, out, _ = run_cli(capsys, "model", "list", "--json")
        models = {m["model_id"]: m for m in json.loads(out)}
        assert {f"{job_id}.{s}" for s in stages} <= set(models)
        lr = models[f"{job_id}.lr"]
        own = [f for f in kept if not f.startswith("platform")]
        assert lr["feature_names"] == [c for c in bank.columns if c in own]
        sel_platform = tmp_path / "platform-b-data" / "models" / f"{job_id}.sel.json"
        lr_platform = tmp_path / "platform-b-data" / "models" / f"{job_id}.lr.json"
        kept_p = json.loads(sel_platform.read_text())["feature_names"]
        assert json.loads(lr_platform.read_text())["feature_names"] == kept_p
        assert len(kept_p) == len([f for f in kept if f.startswith("platform")])

        # one PSI, three stage boundaries, all in one transcript per party
        tb = rec["artifacts"]["transcript"]
        tp = str(tmp_path / "platform-b-data" / "transcripts" / f"{job_id}.jsonl")
        for path in (tb, tp):
            sent = kinds(path, "sent") + kinds(path, "received")
            assert sent.count("psi.hello") == 2, sent          # one each way
            assert sent.count("job.stage") == 8 and sent.count("job.model_digest") == 6
            # between two stage boundaries only that stage's protocol (and the binding)
            mine = [k for k in kinds(path, "sent") if k != "job.outcome"]
            stage_at = [i for i, k in enumerate(mine) if k == "job.stage"]
            assert stage_at[0] < mine.index("psi.hello")     # the plan, before PSI
            cuts = stage_at[1:] + [len(mine)]
            for i, prefix in enumerate(("bin.", "sel.", "lr.")):
                seg = mine[cuts[i] + 1:cuts[i + 1]]
                assert seg and all(k.startswith(prefix) for k in seg[:-1]), sorted(set(seg))
                assert seg[-1] == "job.model_digest"
            assert not any(k.startswith(("bin.", "sel.", "lr.")) for k in mine[:cuts[0]])
        header = reader.load(tb).header
        assert {"binning", "selection", "logistic_regression"} <= set(header["protocols"])
        v = audit.verify(tb, tp)
        assert v.ok, v.errors
        r = audit.replay(tb, tmp_path)
        assert r.ok, r.errors

        # a later job takes the pipeline's binning as its input (both nodes resolve
        # their own part and check it pairs with the peer's), from the Python API
        sel = {"job": {"name": "sel2", "algorithm": "selection", "dataset": "loans",
                       "peer_dataset": "enterprises"},
               "psi": {"id_type": "string"}, "params": {"iv_min": 0.05},
               "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.0},
               "inputs": {"binning": f"{job_id}.bin"}}
        done = fedjoint.submit(sel, config=tmp_path / "bank.toml")
        ivs = {r["feature"]: r["iv"] for r in done["metrics"]["selection"]}
        assert ivs == {r["feature"]: r["iv"] for r in stages["sel"]["selection"]}
        # an input that does not exist: refused at submit, nothing proposed
        sel["inputs"] = {"binning": f"{job_id}.nope"}
        with pytest.raises(fedjoint.FedjointError,
                           match=rf"input binning = '{job_id}.nope': no such output"):
            fedjoint.submit(sel)          # FEDJOINT_CONFIG names the bank's node.toml


@pytest.mark.parametrize("stages,match", [
    (STAGES.replace('binning = "bin"', 'binning = "bins"'),
     r"stages\[1\] \(sel\): inputs.binning = 'bins': no earlier stage .* is named 'bins' "
     r"\(known: bin\)"),
    (STAGES.replace("iv_min = 0.02", "iv_min = -1.0"),
     r"stages\[1\] \(sel\) \[params\].*iv_min = -1\.0: expected a number in \[0, 10\)"),
    (STAGES.replace('inputs = { binning = "bin" }\n', ""),
     r"stages\[1\] \(sel\): selection needs the input\(s\) \['binning'\]"),
    (STAGES + '[[stages]]\nname = "eval"\nalgorithm = "evaluate"\n',
     r"stages\[3\] \(eval\): 'evaluate' is not a stage: every train stage is evaluated"),
    (STAGES.replace('algorithm = "binning"', 'algorithm = "binnig"'),
     r"stages\[0\]\.algorithm = 'binnig': expected one of .*did you mean 'binning'"),
])
def test_bad_pipeline_files_name_the_stage(tmp_path, stages, match):
    with pytest.raises(ConfigError, match=match):
        load_job_spec(job_file(tmp_path, stages))


def test_a_stage_the_platform_does_not_allow_is_refused_before_psi(tmp_path, capsys,
                                                                     monkeypatch):
    bank, plat = frames()
    with two_nodes(tmp_path, monkeypatch, ["binning", "logistic_regression"], bank, plat):
        # the bank's own policy names the stage first (validate lists every stage)
        code, out, err = run_cli(capsys, "job", "validate", str(job_file(tmp_path)))
        assert code != 0 and "sel (selection, binning <- bin) iv_min = 0.02" in out, out
        assert "FAIL  stage 'sel': algorithm 'selection' is allowed" in out, out
        code, out, err = run_cli(capsys, "job", "submit", str(job_file(tmp_path)))
        assert code != 0 and "stage 'sel': algorithm 'selection' is not allowed" in err + out
    bank_toml = tmp_path / "bank.toml"
    text = bank_toml.read_text().replace('"binning", "logistic_regression"',
                                         '"binning", "selection", "logistic_regression"')
    bank_toml.write_text(text)
    with running_nodes(bank_toml, tmp_path / "platform.toml") as (b, p):
        code, out, err = run_cli(capsys, "job", "submit", str(job_file(tmp_path)),
                                 "--wait")
        assert code != 0
        assert "refused by platform-b's policy: stage 'sel': algorithm 'selection' is not " \
               "allowed" in err + out
        job_id = next(w for w in (err + out).split() if w.startswith("pl-"))
        assert not (tmp_path / "bank-a-data" / "transcripts" / f"{job_id}.jsonl").exists()
        assert not (tmp_path / "platform-b-data" / "transcripts" / f"{job_id}.jsonl").exists()


def test_pipeline_stage_limit_and_unknown_inputs_are_refused(tmp_path):
    """The platform's checks of a proposal, before anything is stored or crosses."""
    from dataclasses import replace

    from support.nodes import write_node_tomls

    from federation.config import load_node_config
    from federation.config.limits import Limits
    from federation.policy import policy_refusal
    _, plat_toml = write_node_tomls(tmp_path, platform_policy={
        "allowed_algorithms": ["binning", "selection", "logistic_regression"]})
    cfg = load_node_config(plat_toml)
    spec = load_job_spec(job_file(tmp_path))
    assert policy_refusal(spec, cfg) == ""
    small = replace(cfg, limits=Limits(max_pipeline_stages=2))
    assert policy_refusal(spec, small) == "the pipeline has 3 stages; " \
        "limits.max_pipeline_stages = 2"
    from federation.node import Node
    node = Node(cfg, quiet=True)      # not started: its control plane and store only
    spec.inputs = {"binning": "someone-elses-job.bin"}
    assert node.control._inputs_refusal(spec) == \
        "input binning = 'someone-elses-job.bin': no such output on platform-b"
