"""Signed rounds (params.signed): clients sign their advertised keys with long-term
Ed25519 keys and check every peer's, so the server cannot substitute keys or add
clients of its own. References: RFC 8032's Ed25519 test vector 1 through the key
helpers, ``cryptography``'s own verification of the signatures sent."""

import dataclasses

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from support.secagg_round import Round

from secure_agg.secagg import (
    AdvertiseKeys,
    KeyList,
    SecAggClient,
    SecAggError,
    SecAggParams,
    SecAggServer,
    decode_message,
    encode,
    quantise,
    run_round,
)
from secure_agg.secagg_core import signature_ok, signing_key, verify_key
from secure_agg.secagg_wire import advertise_payload


def test_rfc8032_vector_through_the_key_helpers():
    sk = signing_key(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"), "t")
    pk = verify_key(bytes.fromhex(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"), "t")
    sig = bytes.fromhex("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
                        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    assert sk.sign(b"") == sig and signature_ok(pk, sig, b"")
    assert not signature_ok(pk, sig, b"x")


def test_signed_round_is_exact_and_its_signatures_verify():
    p = SecAggParams(num_clients=5, threshold=3, dim=20, signed=True, session=b"r1")
    ups = {c: np.linspace(-1, 1, 20) * (c + 1) / 5 for c in range(5)}
    res = run_round(ups, p, {2: "share_keys"})
    want = np.sum([quantise(ups[c], p) for c in (0, 1, 3, 4)], axis=0)
    assert np.array_equal(res.quantised, want)
    r = Round(signed=True, session=b"r1")
    r.advertise()
    for a in decode_message(encode(r.keys)).keys:
        r.pubs[a.cid].verify(a.sig, advertise_payload(b"r1", a.cid, a.c_pk, a.s_pk))


def _substituted(r, victim: int, sig_key=None) -> KeyList:
    """The key list with ``victim``'s keys replaced by the server's own."""
    fake = SecAggClient(victim, dataclasses.replace(r.p, signed=False)).advertise()
    sig = b"" if sig_key is None else sig_key.sign(
        advertise_payload(r.p.session, victim, fake.c_pk, fake.s_pk))
    entries = tuple(AdvertiseKeys(victim, fake.c_pk, fake.s_pk, sig or b"\0" * 64)
                    if k.cid == victim else k for k in r.keys.keys)
    return KeyList(entries)


@pytest.mark.parametrize("signer", ["none", "server"])
def test_substituted_keys_are_refused_by_every_other_client(signer):
    r = Round(signed=True)
    r.advertise()
    forged = _substituted(r, 3, None if signer == "none" else Ed25519PrivateKey.generate())
    for c in (0, 1, 2, 4):
        with pytest.raises(SecAggError, match=f"client {c}: client 3's advertised keys "
                                              f"fail their signature check"):
            r.clients[c].share_keys(forged)


def test_a_client_of_the_servers_own_is_refused():
    r = Round(signed=True)
    r.advertise()
    sybil = SecAggClient(9, r.p, signing_key=Ed25519PrivateKey.generate(),
                         peer_keys={}).advertise()
    swapped = KeyList(r.keys.keys[:4] + (sybil,))  # client 4 replaced by the server's 9
    with pytest.raises(SecAggError, match="client 0: the key list names client 9, which "
                                          "has no known signing key"):
        r.clients[0].share_keys(swapped)


def test_server_checks_advertisements_when_it_has_the_keys():
    r = Round(signed=True)
    good = r.clients[0].advertise()
    bad = dataclasses.replace(good, sig=bytes(64))
    with pytest.raises(SecAggError, match="client 0's advertised keys fail their "
                                          "signature check"):
        r.server.receive_advertise(bad)
    with pytest.raises(SecAggError, match="client 0's advertise is unsigned in a signed"):
        r.server.receive_advertise(dataclasses.replace(good, sig=b""))
    r.server.receive_advertise(good)
    plain = SecAggServer(SecAggParams(num_clients=5, threshold=3, dim=8))
    with pytest.raises(SecAggError, match="client 0's advertise is signed in a unsigned"):
        plain.receive_advertise(good)


def test_signing_configuration_is_checked():
    signed = SecAggParams(num_clients=3, threshold=2, dim=4, signed=True)
    with pytest.raises(SecAggError, match="needs an Ed25519 signing key"):
        SecAggClient(0, signed)
    with pytest.raises(SecAggError, match="needs peer_keys"):
        SecAggClient(0, signed, signing_key=Ed25519PrivateKey.generate())
    with pytest.raises(SecAggError, match="peer 1: not an Ed25519 public key"):
        SecAggClient(0, signed, signing_key=bytes(32), peer_keys={1: b"short"})
    with pytest.raises(SecAggError, match="signing keys given but params.signed is False"):
        SecAggClient(0, dataclasses.replace(signed, signed=False), signing_key=bytes(32))
    with pytest.raises(SecAggError, match="signed must be a bool"):
        SecAggParams(num_clients=3, threshold=2, dim=4, signed=1)


def test_signed_messages_round_trip_and_mixed_lists_are_refused():
    r = Round(signed=True)
    r.advertise()
    a = r.sent["advertise"][1]
    assert decode_message(encode(a)) == a and len(encode(a)) == 78 + 64
    assert decode_message(encode(r.keys)) == r.keys
    with pytest.raises(SecAggError, match="all signed or all unsigned"):
        KeyList((a, AdvertiseKeys(2, bytes(32), b"\1" * 32)))
