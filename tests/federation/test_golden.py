"""Golden digests: the node pipeline (PSI -> checks -> split -> train -> evaluate ->
model parts) for SecureBoost, LR and a scoring job, run from fixed seeds over in-memory
links, must give exactly the model digests and the per-message digests recorded in
``tests/data/golden_digests.json``.

The file was recorded before the architecture refactor; a behaviour-preserving change
leaves every digest equal. A change that is meant to alter the wire (it then bumps a
protocol version) re-records it with ``FEDJOINT_RECORD_GOLDEN=1 pytest tests/test_golden.py``
and says so in its commit message.

Small test sizes: 1024-bit Paillier keys (flagged insecure, test policy), 2 trees, 2
epochs on the 569-row breast data.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from support.golden import JOBS, SEEDS

from federation.config import job_spec_from_dict, node_config_from_dict
from federation.link import local_link_pair, run_two_parties
from federation.runner import run_job_side

DATA = Path(__file__).resolve().parents[1] / "data"
GOLDEN = DATA / "golden_digests.json"
def _node(party: str, tmp: Path) -> object:
    ds = {"path": str(DATA / ("breast_hetero_guest.csv" if party == "bank"
                              else "breast_hetero_host.csv")), "id_column": "id"}
    if party == "bank":
        ds["label_column"] = "y"
    raw = {
        "node": {"party": party, "name": f"{party}-golden", "listen": "127.0.0.1:0",
                 "data_dir": str(tmp / party)},
        "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
        "peer": {"name": "peer-golden", "address": "127.0.0.1:1",
                 "cert_fingerprint": "00" * 32, "signing_public_key": "00" * 32,
                 "cert": "peer.crt"},
        "datasets": {"d": ds},
        "policy": {"allow_insecure_test_jobs": True, "min_key_bits": 1024,
                   "min_intersection": 10},
    }
    return node_config_from_dict(raw, f"{party}.toml", base=tmp)


def _spec(algorithm: str, extra: dict, model: str = ""):
    raw = {"job": {"name": f"golden-{algorithm}", "algorithm": algorithm,
                   "dataset": "d", "peer_dataset": "d"},
           "psi": {"id_type": "string"},
           "evaluation": {"cipher": "paillier", "key_bits": 1024, "test_fraction": 0.25}}
    raw.update(extra)
    if model:
        raw["job"]["model"] = model
    return job_spec_from_dict(raw, "golden.toml")


def _run(spec, nodes, job_id: str) -> dict:
    a, b, crossed = local_link_pair(job_id)
    res_b, res_p = run_two_parties(
        lambda: run_job_side(spec, nodes["bank"], a, SEEDS["bank"]),
        lambda: run_job_side(spec, nodes["platform"], b, SEEDS["platform"]), timeout=600)
    # each direction's order is deterministic; the interleaving of the two is not
    messages = [f"{who} {kind} {ptype} {hashlib.sha256(data).hexdigest()}"
                for who, kind, ptype, data in crossed]
    out = {"bank_model": res_b.model_digest, "platform_model": res_p.model_digest,
           "messages": len(messages), "kinds": sorted({m.split()[1] for m in messages})}
    for party in ("bank", "platform"):
        sent = "\n".join(m for m in messages if m.startswith(party + " "))
        out[f"{party}_sent"] = hashlib.sha256(sent.encode()).hexdigest()
    messages.sort(key=lambda m: not m.startswith("bank "))
    return out, res_b, res_p, messages


def _save_models(nodes, job_id, res_b, res_p):
    from federation.runner import model_path
    for party, res in (("bank", res_b), ("platform", res_p)):
        path = model_path(nodes[party], job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        res.model.save(path)


def test_golden_digests(tmp_path):
    nodes = {p: _node(p, tmp_path) for p in ("bank", "platform")}
    got, wires = {}, {}
    for algorithm, extra in JOBS.items():
        job_id = f"golden-{algorithm}"
        got[algorithm], res_b, res_p, wires[algorithm] = _run(
            _spec(algorithm, extra), nodes, job_id)
        got[algorithm]["test_auc"] = round(float(res_b.metrics["test_auc"]), 12)
        _save_models(nodes, job_id, res_b, res_p)
        score = _spec("score", {}, model=job_id)
        score.train_algorithm = algorithm
        got[f"score/{algorithm}"], *_ = _run(score, nodes, f"golden-score-{algorithm}")
    if os.environ.get("FEDJOINT_RECORD_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
        (DATA / "golden_wire.txt").write_text(
            "".join(f"# {k}\n" + "\n".join(v) + "\n" for k, v in wires.items()))
        pytest.skip("recorded golden digests")
    want = json.loads(GOLDEN.read_text())
    assert got == want
