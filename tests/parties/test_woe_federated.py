"""Federated binning: the platform's columns binned under the bank's Paillier key equal
optbinning's binning of the joined plaintext (recorded in data/woe_optbinning.json by
woe_reference.py), the Paillier run equals the plain-cipher run, only label
ciphertexts reach the platform, names stay private unless policy reveals them, bad
input fails with one clear message; then through two real nodes and the CLI (IV
ranking in the job result, the disclosure ledger in the transcript)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from support.nodes import run_cli, two_nodes, write_job
from support.roles import contexts, data, policy, run_roles

from federation.link import PeerAborted
from parties import registry
from parties.bank import binning_woe as bank_role
from parties.common import binning_woe_wire as W
from parties.common.woe import WoeError
from secure_agg.cipher import PlainCipher
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

sys.path.insert(0, str(Path(__file__).parent))
from woe_reference import frame  # noqa: E402

REFERENCE = json.loads((Path(__file__).parent / "data" / "woe_optbinning.json").read_text())
PLATFORM = ["x0", "x3", "x6", "x8"]         # the recorded platform cases (x3 has NaN)
BANK = ["x0", "x4"]
TREND = {"auto_asc_desc": "auto", "ascending": "ascending", "descending": "descending"}


@pytest.fixture(scope="module")
def df() -> pd.DataFrame:
    return frame()


@pytest.fixture(scope="module")
def paillier():
    return PaillierPrivateCipher.generate(1024, rng=Drbg(b"bin" * 11), insecure_test_key=True)


def parties(df):
    bank = data(df[[f"b_{c}" for c in BANK]].to_numpy(), BANK,
                y=df["y"].to_numpy(dtype=float))
    plat = data(df[[f"p_{c}" for c in PLATFORM]].to_numpy(), PLATFORM)
    return bank, plat


def run(df, cipher, trend="descending", **pol):
    bank, plat = parties(df)
    params = {"method": "monotonic", "n_prebins": 20, "monotonic_trend": trend,
              "min_bin_size": 0.05}
    return run_roles("binning", bank, plat, params, bank_cipher=cipher,
                     platform_policy=policy(**pol))


def joined(bank_body: dict, plat_body: dict, feature: str) -> dict:
    """A platform feature's full table: the platform's pre-bin cuts at the bank's merge
    boundaries, the bank's counts / WOE / IV."""
    mine = plat_body["tables"][feature]
    theirs = bank_body["platform_tables"][mine["bank_label"]]
    cuts = [mine["cuts"][i - 1] for i, _ in theirs["platform_bins"][1:]]
    return {"splits": cuts, **theirs}


@pytest.mark.parametrize("trend", ["ascending", "descending", "auto_asc_desc"])
def test_platform_tables_equal_optbinning(df, trend):
    ob, op, _ = run(df, PlainCipher(1024), TREND[trend])
    for case in (c for c in REFERENCE["cases"] if c["trend"] == trend):
        if case["party"] == "platform":
            t = joined(ob.model.body, op.model.body, case["feature"])
        else:
            t = dict(ob.model.body["tables"][case["feature"]], splits=None)
            t["splits"] = t["cuts"]
        where = f"{case['party']} {case['feature']} {trend}"
        np.testing.assert_allclose(t["splits"], case["splits"], rtol=0, atol=1e-12,
                                   err_msg=where)
        assert [r["count"] for r in t["bins"]] == case["count"], where
        assert [r["event"] for r in t["bins"]] == case["event"], where
        np.testing.assert_allclose([r["woe"] for r in t["bins"]], case["woe"], atol=1e-9,
                                   err_msg=where)
        assert abs(t["iv"] - case["iv"]) < 1e-9, where
    ranking = ob.metrics["iv_ranking"]
    assert [r["iv"] for r in ranking] == sorted((r["iv"] for r in ranking), reverse=True)
    assert len(ranking) == len(BANK) + len(PLATFORM)


def test_paillier_equals_plain_and_only_label_ciphertexts_cross(df, paillier):
    ob, op, crossed = run(df, paillier)
    pb, pp, _ = run(df, PlainCipher(1024))
    assert ob.model.body == pb.model.body and op.model.body == pp.model.body
    sent = {}
    for who, kind, _ptype, blob in crossed:
        sent.setdefault(who, []).append((kind, blob))
    assert {k for k, _ in sent["bank"]} == {W.K_INIT, W.K_LABELS}
    assert {k for k, _ in sent["platform"]} == {W.K_ACK, W.K_META, W.K_COUNTS, W.K_SUMS}
    width = paillier.ciphertext_bytes
    cts = b"".join(b for k, b in sent["bank"] if k == W.K_LABELS)
    assert len(cts) == len(df) * width
    vec = paillier.from_bytes(cts, 1)
    assert paillier.decrypt(vec) == df["y"].astype(int).tolist()
    assert len(set(vec.data)) == len(df)          # fresh randomness: no two alike
    # the bank's view of platform features: anonymous labels and bins, no threshold
    text = json.dumps(ob.model.body["platform_tables"])
    assert all(f'"{c}"' not in text for c in PLATFORM) and "inf" not in text
    assert sorted(ob.model.body["platform_tables"]) == [W.anonymous_label(k)
                                                        for k in range(len(PLATFORM))]


def test_reveal_feature_names(df):
    ob, op, _ = run(df, PlainCipher(1024), reveal_feature_names=True)
    # the credit data's parties both have x0: released names never shadow the bank's
    assert sorted(ob.model.body["platform_tables"]) == [f"platform:{c}" for c in PLATFORM]
    assert {r["feature"] for r in ob.metrics["iv_ranking"]} == \
        set(BANK) | {f"platform:{c}" for c in PLATFORM}
    assert all(op.model.body["tables"][c]["bank_label"] == f"platform:{c}" for c in PLATFORM)
    for c in PLATFORM:     # the join works the same with released names
        assert joined(ob.model.body, op.model.body, c)["bins"]


def test_bad_input(df):
    bank, plat = parties(df.head(400))
    # a platform column with a single value: the platform's operator sees the column,
    # the bank only the anonymous label it knows it by
    plat.X = plat.X.copy()
    plat.X[:, 1] = 7.0
    with pytest.raises(WoeError, match=r"single value \(7\).*platform column 'x3'") as ei:
        run_roles("binning", bank, plat, {}, bank_cipher=PlainCipher(1024))
    assert "x3" not in ei.value.peer_message and "platform#" in ei.value.peer_message
    # a bank label that is not 0/1 (a direct API caller; the node's loader refuses it
    # earlier): the bank fails before anything but its abort crosses
    bank, _ = parties(df.head(400))
    bank.y = bank.y.copy()
    bank.y[5] = 2.0
    cb, _, crossed = contexts()
    with pytest.raises(WoeError, match=r"label in row 5 is 2\.0; binning needs 0/1"):
        bank_role.train(cb, bank, registry.get("binning").parse_params({}, "test"),
                        PlainCipher(1024), policy())
    assert [kind for _who, kind, *_ in crossed] == [W.K_ABORT]
    # a bank column with a single value: named to the bank's operator only
    bank, plat = parties(df.head(400))
    bank.X = bank.X.copy()
    bank.X[:, 0] = 1.0
    with pytest.raises((WoeError, PeerAborted)) as ei:
        run_roles("binning", bank, plat, {}, bank_cipher=PlainCipher(1024))
    assert "x0" not in getattr(ei.value, "peer_message", "x0")


# ------------------------------------------------------------------- real nodes


def test_binning_job_through_nodes_and_cli(tmp_path, capsys, monkeypatch, df):
    bank = pd.DataFrame({"id": df["id"], "y": df["y"],
                         **{c: df[f"b_{c}"] for c in BANK}})
    plat = pd.DataFrame({"id": df["id"], **{c: df[f"p_{c}"] for c in PLATFORM}})
    with two_nodes(tmp_path, monkeypatch, ["binning"], bank, plat):
        job = write_job(tmp_path, "bin", "binning",
                        params={"method": "monotonic", "monotonic_trend": "descending"},
                        evaluation={"cipher": "paillier", "key_bits": 1024})
        code, out, err = run_cli(capsys, "job", "submit", str(job), "--wait")
        assert code == 0, err + out
        assert "done" in out and "IV ranking: " in out, out
        job_id = out.split()[0]
        code, out, err = run_cli(capsys, "job", "status", job_id, "--json")
        rec = json.loads(out)
        ranking = rec["metrics"]["iv_ranking"]
        ref = {c["feature"] if c["party"] == "bank" else None: c["iv"]
               for c in REFERENCE["cases"] if c["trend"] == "descending"}
        got = {r["feature"]: r["iv"] for r in ranking}
        for f in BANK:
            assert abs(got[f] - ref[f]) < 1e-9, (f, got, ref)
        plat_ivs = sorted(c["iv"] for c in REFERENCE["cases"]
                          if c["trend"] == "descending" and c["party"] == "platform")
        assert np.allclose(sorted(v for k, v in got.items() if k.startswith("platform#")),
                           plat_ivs, atol=1e-9)
        tb = rec["artifacts"]["transcript"]
        code, out, err = run_cli(capsys, "audit", "verify", tb, "--json")
        ledger = json.loads(out)["summary"]["ledger"]
        cats = {e["category"]: e for e in ledger}
        assert "row counts of anonymous platform bins" in cats, ledger
        print("ledger:", json.dumps(ledger))
        # the bank's side re-derives from its transcript (labels encrypted from the DRBG)
        code, out, err = run_cli(capsys, "audit", "replay", tb, "--party-dir", str(tmp_path))
        assert code == 0 and "REPLAYED" in out, err + out


@pytest.mark.parametrize("tamper,match", [
    ("counts", r"feature 0: counts or event sums out of range"),
    ("events", r"feature 0: counts or event sums out of range"),
    ("n_bins", r"bin.meta: feature 0: n_bins 99 not in \[1, 20\]"),
    ("short", r"bin.sums: expected \d+ ciphertexts"),
])
def test_bank_rejects_a_dishonest_platform_answer(df, tamper, match):
    """A platform whose counts do not sum to the rows, whose event sums exceed a bin's
    count, that announces more bins than the params allow, or sends too few
    ciphertexts: the bank's job fails naming the message, nothing is tabled."""
    from federation.link import ProtocolError, run_two_parties
    bank, _ = parties(df.head(300))
    cb, cp, _ = contexts()
    cipher = PlainCipher(1024)
    p = registry.get("binning").parse_params({}, "test")

    def platform():
        link = cp.link
        link.recv_json(W.K_INIT)
        link.send(W.K_ACK, {"n_rows": 300, "n_features": 1})
        for _ in range(-(-300 // W.CHUNK_ROWS)):
            link.recv(W.K_LABELS)
        n_bins = 99 if tamper == "n_bins" else 2
        link.send(W.K_META, {"features": [{"label": "", "named": False, "n_bins": n_bins}]})
        counts = np.array([150, 150 if tamper != "counts" else 151, 0])
        link.send(W.K_COUNTS, counts)
        sums = [10, 200 if tamper == "events" else 20, 0][:2 if tamper == "short" else 3]
        link.send(W.K_SUMS, cipher.to_bytes(cipher.encrypt(sums)))
        with pytest.raises(PeerAborted):
            W.recv(link, W.K_INIT)

    with pytest.raises(ProtocolError, match=match):
        run_two_parties(lambda: bank_role.train(cb, bank, p, cipher, policy()), platform,
                        timeout=60)


def test_platform_rejects_a_bad_label_chunk(df):
    """A bank sending fewer label ciphertexts than it announced rows: the platform's
    job fails naming the message before it computes anything."""
    from federation.link import ProtocolError, run_two_parties
    from parties.provincial_platform import binning_woe as platform_role
    from secure_agg.keypolicy import describe_public_key
    _, plat = parties(df.head(300))
    cb, cp, _ = contexts()
    cipher = PlainCipher(1024)
    p = registry.get("binning").parse_params({}, "test")

    def bank():
        link = cb.link
        link.send(W.K_INIT, {"version": W.PROTOCOL_VERSION, "n_rows": 300,
                             "params": {k: getattr(p, k) for k in W.SHARED},
                             "key": describe_public_key(cipher), "chunk_rows": 2048})
        link.recv_json(W.K_ACK)
        link.send(W.K_LABELS, cipher.to_bytes(cipher.encrypt([0, 1] * 100)))
        with pytest.raises(PeerAborted):
            W.recv(link, W.K_META)

    with pytest.raises(ProtocolError, match=r"bin.labels: expected 300 ciphertexts"):
        run_two_parties(bank, lambda: platform_role.train(cp, plat, p, None, policy()),
                        timeout=60)


@pytest.mark.parametrize("method", ["quantile", "equal_width"])
def test_platform_quantile_and_equal_width_tables_equal_pandas(df, method):
    """The platform's columns binned under encryption: per joined bin the counts,
    events, WOE and IV of a direct pandas computation on the joined plaintext."""
    from test_woe import pandas_table
    bank, plat = parties(df)
    ob, op, _ = run_roles("binning", bank, plat, {"method": method, "n_bins": 8},
                          bank_cipher=PlainCipher(1024))
    y = df["y"].to_numpy(dtype=float)
    for c in PLATFORM:
        mine = op.model.body["tables"][c]
        theirs = ob.model.body["platform_tables"][mine["bank_label"]]
        ref = pandas_table(df[f"p_{c}"].to_numpy(), y, np.asarray(mine["cuts"]))
        assert [r["count"] for r in theirs["bins"]] == ref["count"].tolist() == \
            [b["count"] for b in mine["bins"]]
        assert [r["event"] for r in theirs["bins"]] == ref["event"].tolist()
        np.testing.assert_allclose([r["woe"] for r in theirs["bins"]], ref["woe"], atol=1e-12)
        assert abs(theirs["iv"] - ref["iv"].sum()) < 1e-12
