"""Every SecAggError: bad messages are refused naming the client and the check, a
refused message is not recorded (the round can go on without that client), and too
few survivors fail the round cleanly."""

import dataclasses

import numpy as np
import pytest
from support.secagg_round import Round

from secure_agg.secagg import (
    AdvertiseKeys,
    KeyList,
    MaskedInput,
    SecAggClient,
    SecAggError,
    SecAggParams,
    SecAggServer,
    ShareBundle,
    UnmaskRequest,
    UnmaskShares,
    encode,
    quantise,
)


def _flip(ct: bytes, i: int = 20) -> bytes:
    return ct[:i] + bytes([ct[i] ^ 1]) + ct[i + 1:]


# -- fewer survivors than the threshold, at each stage -----------------------------

@pytest.mark.parametrize("stage", ["advertise", "share", "mask", "unmask"])
def test_too_few_survivors_fail_the_round_at_each_stage(stage):
    r = Round()
    order = ["advertise", "share", "mask", "unmask"]
    for s in order[:order.index(stage)]:
        getattr(r, s)()
    with pytest.raises(SecAggError, match="below the threshold 3"):
        getattr(r, stage)(ids=[0, 1])
    assert r.server.stage == "failed"
    with pytest.raises(SecAggError, match="round failed earlier"):
        r.server.key_list()


# -- ids --------------------------------------------------------------------------

def test_duplicate_and_unknown_ids():
    r = Round()
    adv = r.clients[0].advertise()
    r.server.receive_advertise(adv)
    with pytest.raises(SecAggError, match="client 0 sent its advertise message twice"):
        r.server.receive_advertise(adv)
    stranger = SecAggClient(77, r.p).advertise()
    with pytest.raises(SecAggError, match="client 77 is unknown"):
        r.server.receive_advertise(stranger)
    copycat = AdvertiseKeys(1, adv.c_pk, r.clients[1].advertise().s_pk)
    with pytest.raises(SecAggError, match="client 1 advertises a public key already"):
        r.server.receive_advertise(copycat)
    with pytest.raises(SecAggError, match="key list client id 3 appears twice"):
        KeyList((AdvertiseKeys(3, b"a" * 32, b"b" * 32), AdvertiseKeys(3, b"c" * 32,
                                                                      b"d" * 32)))


def test_open_server_takes_at_most_num_clients():
    p = SecAggParams(num_clients=3, threshold=2, dim=4)
    srv = SecAggServer(p)
    for c in (10, 20, 30):
        srv.receive_advertise(SecAggClient(c, p).advertise())
    with pytest.raises(SecAggError, match="client 40 would exceed num_clients 3"):
        srv.receive_advertise(SecAggClient(40, p).advertise())


def test_a_client_that_skipped_a_stage_is_unknown_later():
    r = Round()
    r.advertise()
    r.share(ids=[0, 1, 2, 3])
    r.mask(ids=[0, 1, 2, 3], close=False)
    late = MaskedInput(4, np.zeros(8, dtype="<u4"))
    with pytest.raises(SecAggError, match="client 4 is unknown at stage masked_input"):
        r.server.receive_masked_input(late)
    with pytest.raises(SecAggError, match="client 0 sent its masked_input message twice"):
        r.server.receive_masked_input(r.sent["masked_input"][0])


def test_shares_must_go_to_every_other_client():
    r = Round()
    r.advertise()
    msg = r.clients[0].share_keys(r.keys)
    short = dataclasses.replace(msg, shares=msg.shares[:-1])
    with pytest.raises(SecAggError, match="client 0's shares are addressed to"):
        r.server.receive_share_keys(short)
    r.server.receive_share_keys(msg)  # the refusal recorded nothing


# -- masked input: shape, dtype, range ---------------------------------------------

@pytest.mark.parametrize("data, match", [
    (np.zeros(7, dtype="<u4"), r"shape \(7,\)"),
    (np.zeros(8, dtype="<u8"), "uint64 of shape"),
    (np.zeros(8, dtype=np.float32), "float32"),
    (np.full(8, 2**24, dtype="<u4"), "value >= the modulus 2\\*\\*24"),
])
def test_bad_masked_input_is_refused(data, match):
    r = Round(bits=8, mod_bits=24)
    r.through("share")
    with pytest.raises(SecAggError, match="client 2's masked input .*" + match):
        r.server.receive_masked_input(MaskedInput(2, data))
    r.server.receive_masked_input(r.clients[2].masked_input(r.bundles[2], r.updates[2]))


@pytest.mark.parametrize("update, match", [
    (np.zeros(9), r"shape \(8,\)"),
    (np.array([np.nan] + [0.0] * 7), "1 non-finite values"),
    (np.array(["a"] * 8), "real vector"),
])
def test_client_refuses_a_bad_update(update, match):
    r = Round()
    r.through("share")
    with pytest.raises(SecAggError, match="client 1: " + ".*" + match):
        r.clients[1].masked_input(r.bundles[1], update)


# -- shares that fail their checks -------------------------------------------------

def test_tampered_share_fails_its_aead_check_at_the_receiver():
    r = Round()
    r.through("share")
    b = r.bundles[2]
    shares = tuple((u, _flip(ct) if u == 4 else ct) for u, ct in b.shares)
    with pytest.raises(SecAggError, match="client 2: the share from client 4 fails its "
                                          "AES-GCM check"):
        r.clients[2].masked_input(ShareBundle(2, shares), r.updates[2])


def test_misrouted_share_fails_its_aead_check():
    """The server relabels 3's ciphertext for 2 as coming from 4."""
    r = Round()
    r.through("share")
    b = dict(r.bundles[2].shares)
    b[4] = b[3]
    with pytest.raises(SecAggError, match="share from client 4 fails its AES-GCM"):
        r.clients[2].masked_input(ShareBundle(2, tuple(b.items())), r.updates[2])
    r2 = Round()
    r2.through("share")
    with pytest.raises(SecAggError, match="received the share bundle for client 3"):
        r2.clients[2].masked_input(r2.bundles[3], r2.updates[2])


def _corrupt_unmask(r, cid, peer, kind):
    m = r.clients[cid].unmask(r.request)
    field = "b_shares" if kind == "b" else "s_shares"
    pairs = tuple((v, (y + 1) if v == peer else y) for v, y in getattr(m, field))
    return dataclasses.replace(m, **{field: pairs})


@pytest.mark.parametrize("kind", ["b", "s"])
def test_corrupted_revealed_share_is_caught_and_attributed(kind):
    r = Round()
    r.through("share")
    r.mask(ids=[0, 1, 2, 4])  # 3 dropped: its s key is rebuilt
    peer = 0 if kind == "b" else 3
    r.server.receive_unmask(_corrupt_unmask(r, 1, peer, kind))
    r.unmask(ids=[0, 2, 4], close=False)
    check = "commitment" if kind == "b" else "advertised public key"
    with pytest.raises(SecAggError, match=f"client {peer}'s .* fails its check \\({check}"
                                          f"\\): client 1's share is corrupted"):
        r.server.result()
    assert r.server.stage == "failed"


def test_corrupted_share_with_exactly_t_shares_cannot_be_attributed():
    r = Round()
    r.through("mask")
    r.server.receive_unmask(_corrupt_unmask(r, 1, 0, "b"))
    r.unmask(ids=[2, 3], close=False)
    with pytest.raises(SecAggError, match="cannot be attributed"):
        r.server.result()


# -- both shares of one client ------------------------------------------------------

def test_server_asking_for_both_shares_of_a_client_is_refused():
    r = Round()
    r.through("mask")
    greedy = UnmaskRequest(survivors=(0, 1, 2, 3, 4), dropped=(3,))
    with pytest.raises(SecAggError, match="client 0: refuses to reveal both shares of "
                                          "client 3"):
        r.clients[0].unmask(greedy)
    # and the client stays refused, it sends nothing more
    with pytest.raises(SecAggError, match="out of order"):
        r.clients[0].unmask(r.request)


def test_two_inconsistent_requests_still_reveal_one_share_each():
    """Telling client 0 that 4 dropped and client 1 that 4 survived gets 4's s-share
    from 0 and b-share from 1: with t > n/2 no two disjoint sets of t honest clients
    exist, so neither secret reaches the threshold."""
    r = Round()
    r.through("mask")
    a = r.clients[0].unmask(UnmaskRequest((0, 1, 2, 3), (4,)))
    b = r.clients[1].unmask(UnmaskRequest((0, 1, 2, 3, 4), ()))
    assert [v for v, _ in a.s_shares] == [4] and 4 not in dict(a.b_shares)
    assert 4 in dict(b.b_shares) and not b.s_shares


@pytest.mark.parametrize("req, match", [
    (UnmaskRequest((1, 2, 3, 4), (0,)), "does not list this client as a survivor"),
    (UnmaskRequest((0, 1, 2), (3,)), "does not partition .* \\(differs at \\[4\\]\\)"),
    (UnmaskRequest((0, 1), (2, 3, 4)), "only 2 survivors"),
])
def test_client_refuses_an_inconsistent_unmask_request(req, match):
    r = Round()
    r.through("mask")
    with pytest.raises(SecAggError, match=match):
        r.clients[0].unmask(req)


def test_server_refuses_a_client_revealing_both_shares():
    r = Round()
    r.through("share")
    r.mask(ids=[0, 1, 2, 4])
    m = r.clients[1].unmask(r.request)
    both = dataclasses.replace(m, b_shares=m.b_shares + ((3, 5),))
    with pytest.raises(SecAggError, match="client 1 reveals both shares for client 3"):
        r.server.receive_unmask(both)
    missing = dataclasses.replace(m, s_shares=())
    with pytest.raises(SecAggError, match="client 1 reveals b-shares for"):
        r.server.receive_unmask(missing)
    r.server.receive_unmask(m)
    r.unmask(ids=[0, 2], close=False)
    res = r.server.result()
    want = np.sum([quantise(r.updates[c], r.p) for c in (0, 1, 2, 4)], axis=0)
    assert np.array_equal(res.quantised, want)


# -- the client checks the key list; stage order ------------------------------------

def test_client_checks_the_key_list():
    r = Round()
    r.advertise()
    others = KeyList(tuple(k for k in r.keys.keys if k.cid != 0))
    with pytest.raises(SecAggError, match="client 0: the key list does not carry"):
        r.clients[0].share_keys(others)
    r2 = Round()
    r2.advertise()
    k = r2.keys.keys
    dup = KeyList(k[:2] + (AdvertiseKeys(2, k[0].c_pk, k[2].s_pk),) + k[3:])
    with pytest.raises(SecAggError, match="client 1: the key list repeats a public key"):
        r2.clients[1].share_keys(dup)


def test_stages_out_of_order():
    r = Round()
    with pytest.raises(SecAggError, match="client 0: unmask called out of order "
                                          "\\(next stage: advertise\\)"):
        r.clients[0].unmask(UnmaskRequest((0,), ()))
    with pytest.raises(SecAggError, match="server is at stage advertise, not unmask"):
        r.server.receive_unmask(UnmaskShares(0, (), ()))
    r.clients[1].advertise()
    with pytest.raises(SecAggError, match="expected a KeyList message, got UnmaskRequest"):
        r.clients[1].share_keys(UnmaskRequest((0,), ()))


def test_a_rebuilt_client_refuses_a_second_different_unmask_request():
    """A stateless client replays its stages from its seed for each message; given the
    request it answered before, it refuses a different one (here: 3 'dropped')."""
    r = Round()
    r.through("mask")
    first = r.clients[0].unmask(r.request)
    twin = Round()  # same seeds: the same client, rebuilt
    twin.through("mask")
    again = twin.clients[0].unmask(encode(r.request), answered=encode(r.request))
    assert again == first
    greedy = UnmaskRequest((0, 1, 2, 4), (3,))
    twin2 = Round()
    twin2.through("mask")
    with pytest.raises(SecAggError, match="client 0: a second, different unmask request"):
        twin2.clients[0].unmask(greedy, answered=r.request)


def test_params_must_be_secagg_params():
    with pytest.raises(SecAggError, match="params must be SecAggParams, got dict"):
        SecAggClient(0, {"num_clients": 3})
    with pytest.raises(SecAggError, match="params must be SecAggParams"):
        SecAggServer(None)
