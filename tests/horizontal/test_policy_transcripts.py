"""Banks configured by node.toml: [horizontal] policy decides, each message is in the
bank's signed transcript and in the aggregator's copy, and the pair verifies."""

from __future__ import annotations

import json

import pytest
from conftest import job
from horizontal_nodes import write_horizontal_nodes

import fedjoint
from federation.config import ConfigError, load_node_config
from parties.horizontal.aggregate import RoundFailed


def test_policy_and_signed_transcripts(tmp_path, banks, columns):
    frames = {k: v.iloc[:1500] for k, v in list(banks.items())[:4]}
    platform, tomls, _ = write_horizontal_nodes(tmp_path, frames, bank_extra={
        "bank-3": {"join": False}})
    res = fedjoint.run_horizontal(job(columns, rounds=2), tomls, platform=platform)
    names = res.job.banks
    assert {names[n] for n in res.result.joined} == {"bank-0", "bank-1", "bank-2"}
    assert "join = false" in res.result.refused[next(n for n in names
                                                     if names[n] == "bank-3")]
    for bank in ("bank-0", "bank-1", "bank-2"):
        d = tmp_path / f"{bank}-data" / "horizontal" / "h-test"
        t_bank = d / "transcript.jsonl"
        t_agg = tmp_path / "platform-data" / "horizontal" / "h-test" / f"{bank}.transcript.jsonl"
        rep = fedjoint.verify(t_bank, peer_path=t_agg)
        assert rep.ok, [str(f) for f in rep.errors]
        kinds = [json.loads(line).get("kind") for line in t_bank.read_text().splitlines()]
        # what the bank sent: its masked inputs (digests in its signed records), per round
        assert kinds.count("train.sa_masked.reply") == 1 + 2 + 1   # counts, 2 fits, test
        result = json.loads((d / "result.json").read_text())
        assert 0.5 < result["metrics"]["auc"] < 1 and (d / "report.html").exists()
    # a tampered record fails verification
    t = tmp_path / "bank-0-data" / "horizontal" / "h-test" / "transcript.jsonl"
    lines = t.read_text().splitlines()
    rec = json.loads(lines[5])
    rec["len"] += 1
    lines[5] = json.dumps(rec)
    t.write_text("\n".join(lines) + "\n")
    assert not fedjoint.verify(t).ok


def test_policy_keys_and_refusals(tmp_path, banks, columns):
    frames = {k: v.iloc[:800] for k, v in list(banks.items())[:3]}
    platform, tomls, _ = write_horizontal_nodes(tmp_path, frames, bank_extra={
        "bank-0": {"allowed_algorithms": ["horizontal_mlp"]},
        "bank-1": {"min_banks": 4}})
    with pytest.raises(RoundFailed) as err:
        fedjoint.run_horizontal(job(columns, rounds=1, min_banks=3), tomls, platform=platform)
    msg = str(err.value)
    assert "1 bank(s) joined, fewer than min_banks = 3" in msg
    assert "bank-0.toml: [horizontal] allowed_algorithms does not list 'horizontal_lr'" in msg
    assert "bank-1.toml: [horizontal] min_banks = 4 refuses a job with params.min_banks = 3" in msg
    bad = tomls["bank-2"]
    bad.write_text(bad.read_text().replace("join = true", "join = true\njion = 1"))
    with pytest.raises(ConfigError, match="unknown key 'jion'"):
        load_node_config(bad)


def test_examples_parse_and_bad_keys_are_named(tmp_path):
    from pathlib import Path

    from federation.horizontal.job import load_job
    ex = Path(__file__).resolve().parents[2] / "examples" / "horizontal"
    assert load_node_config(ex / "bank-a.toml").horizontal.join
    assert sorted(load_node_config(ex / "platform.toml").horizontal.banks) == \
        ["bank-a", "bank-b", "bank-c"]
    assert load_job(ex / "job.toml")[0].algorithm == "horizontal_lr"
    bad = tmp_path / "p.toml"
    bad.write_text((ex / "platform.toml").read_text().replace(
        'supernode_key = "keys/bank-b.supernode.pub"', 'supernode_keys = "x"'))
    with pytest.raises(ConfigError, match=r"horizontal.banks.bank-b\] unknown key 'supernode_keys'"):
        load_node_config(bad)
    from federation.config import job_spec_from_dict
    with pytest.raises(ConfigError, match="fedjoint horizontal run"):
        job_spec_from_dict({"job": {"name": "h", "algorithm": "horizontal_lr"}})
    job = tmp_path / "j.toml"
    job.write_text((ex / "job.toml").read_text().replace("rounds = 20", "rounds = 0"))
    with pytest.raises(ConfigError, match=r"params.rounds = 0: expected an integer in \[1, 10000\]"):
        load_job(job)


def test_signed_rounds_check_keys_the_bank_was_given(tmp_path, banks, columns):
    """params.signed_rounds: each bank checks every other bank's SecAgg keys against the
    signing keys its [horizontal.peers] lists; bank-2 lacks bank-0's and refuses the
    round (dropped, reason named); bank-0 and bank-1 finish."""
    from horizontal_nodes import sign_pub
    names = ["bank-0", "bank-1", "bank-2"]
    peers = {b: {o: sign_pub(tmp_path, o) for o in names if o != b} for b in names}
    del peers["bank-2"]["bank-0"]
    platform, tomls, _ = write_horizontal_nodes(
        tmp_path, {b: banks[b].iloc[:800] for b in names},
        bank_extra={b: {"peers": peers[b], "min_banks": 2, "require_signed_rounds": True}
                    for b in names})
    res = fedjoint.run_horizontal(job(columns, rounds=1, min_banks=2, signed_rounds=True),
                                  tomls, platform=platform)
    by_name = {res.job.banks[n]: w for n, w in res.result.dropped.items()}
    assert sorted(res.job.banks[n] for n in res.result.joined) == ["bank-0", "bank-1"]
    assert "[horizontal.peers] does not list" in by_name["bank-2"]
    # an unsigned job is refused by banks that require signed rounds
    with pytest.raises(RoundFailed, match="require_signed_rounds = true"):
        fedjoint.run_horizontal(job(columns, "horizontal_lr", "h-unsigned", rounds=1,
                                    min_banks=2), tomls, platform=platform)
