"""Every algorithm's checkpoints are consistent cuts: both roles call ``ctx.checkpoint``
for the same rounds, and at each one what one role had sent the other had consumed
(otherwise a resume could not roll both back to it). In-process, plain cipher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.config import job_spec_from_dict, node_config_from_dict
from federation.link import local_link_pair, run_two_parties
from federation.node.checkpoint import ResumeLink
from federation.runner import run_job_side

DATA = Path(__file__).resolve().parents[1] / "data"


def _nodes(tmp: Path, label) -> dict:
    guest = pd.read_csv(DATA / "breast_hetero_guest.csv")
    if label is not None:
        guest["y"] = label(guest)
    guest.to_csv(tmp / "bank.csv", index=False)
    out = {}
    for party, path in (("bank", tmp / "bank.csv"),
                        ("platform", DATA / "breast_hetero_host.csv")):
        ds = {"path": str(path), "id_column": "id"}
        if party == "bank":
            ds["label_column"] = "y"
        out[party] = node_config_from_dict({
            "node": {"party": party, "name": f"{party}-cut", "listen": "127.0.0.1:0",
                     "data_dir": str(tmp / party)},
            "keys": {"tls_key": "k", "tls_cert": "c", "signing_key": "s"},
            "peer": {"name": "peer-cut", "address": "127.0.0.1:1",
                     "cert_fingerprint": "00" * 32, "signing_public_key": "00" * 32,
                     "cert": "peer.crt"},
            "datasets": {"d": ds},
            "policy": {"allow_insecure_test_jobs": True, "min_intersection": 10,
                       "allowed_algorithms": ["secureboost", "logistic_regression",
                                              "linear_regression"]}},
            f"{party}.toml", base=tmp)
    return out


def _classes(g: pd.DataFrame) -> np.ndarray:
    return np.digitize(g["x0"], np.quantile(g["x0"], [1 / 3, 2 / 3]))


def _target(g: pd.DataFrame) -> np.ndarray:
    return 2.0 * g["x0"] - g["x1"] + 0.1 * np.sin(np.arange(len(g)))


CASES = {
    "secureboost": ("secureboost", {"n_trees": 3, "max_depth": 2, "max_bin": 8}, None),
    "secureboost-multiclass": ("secureboost", {"objective": "multi:softprob",
                                               "num_class": 3, "n_trees": 2,
                                               "max_depth": 2, "max_bin": 8}, _classes),
    "logistic_regression": ("logistic_regression", {"epochs": 3, "batch_size": 128,
                                                    "early_stopping": "none"}, None),
    "linear_regression": ("linear_regression", {"epochs": 3, "batch_size": 128}, _target),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoints_are_consistent_cuts(tmp_path, case):
    algorithm, params, label = CASES[case]
    nodes = _nodes(tmp_path, label)
    spec = job_spec_from_dict({
        "job": {"name": "cut", "algorithm": algorithm, "dataset": "d", "peer_dataset": "d"},
        "psi": {"id_type": "string"}, "params": params,
        "evaluation": {"cipher": "plain", "key_bits": 1024, "test_fraction": 0.25}},
        "cut.toml")
    a, b, _ = local_link_pair("cut-1")
    links = {"bank": ResumeLink(a, tmp_path, None), "platform": ResumeLink(b, tmp_path, None)}
    seen: dict[str, list] = {"bank": [], "platform": []}

    def side(party: str):
        link = links[party]
        return run_job_side(spec, nodes[party], link, bytes(32), checkpoint=lambda stage,
                            step, state: seen[party].append(
                                (stage, step, link.count("sent"), link.count("received"))))

    run_two_parties(lambda: side("bank"), lambda: side("platform"), timeout=600)
    bank, plat = seen["bank"], seen["platform"]
    assert bank and [c[:2] for c in bank] == [c[:2] for c in plat]
    for (stage, step, sent, received), (_, _, p_sent, p_received) in zip(bank, plat,
                                                                         strict=True):
        assert (sent, received) == (p_received, p_sent), (stage, step)
