"""The Okamoto-Uchiyama cipher: keys, math against Python's pow / gmpy2 and lightphe,
known answers (tests/data/kat/ou_2048.json), homomorphic operations against plain
integers, the chosen-ciphertext key-recovery attack refused, serialisation checks."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import gmpy2
import numpy as np
import pytest

from secure_agg.cipher import CipherVector, KeyMismatch, PlaintextOverflow
from secure_agg.keypolicy import KeyPolicy, KeyPolicyError, describe_public_key, peer_public_cipher
from secure_agg.keys import InsecureKeyError
from secure_agg.ou import CCA_MARGIN_BITS, OUPrivateCipher, OUPublicCipher, PlaintextOutOfRange
from secure_agg.ou_keys import OUPrivateKey, OUPublicKey, generate_keypair
from secure_agg.rng import Drbg

SEED = b"ou-test-seed-0123456789abcdef!!!"
KAT = json.loads((Path(__file__).resolve().parents[1] / "data" / "kat" / "ou_2048.json")
                 .read_text())
OU_POLICY = KeyPolicy(allowed_ciphers=("paillier", "ou"))


@pytest.fixture(scope="module")
def key768():
    return generate_keypair(768, rng=Drbg(SEED, "k768"), insecure_test_key=True)


@pytest.fixture(scope="module")
def key2048():
    return generate_keypair(2048, rng=Drbg(SEED, "k2048"))


def _textbook_decrypt(c: int, sk: OUPrivateKey) -> int:
    """Okamoto-Uchiyama's original decryption, with Python ints only:
    m = L(c^(p-1) mod p^2) / L(G^(p-1) mod p^2) mod p, centred."""
    p = int(sk.p)
    psq = p * p
    L = lambda x: (x - 1) // p  # noqa: E731
    m = L(pow(int(c) % psq, p - 1, psq)) * pow(L(pow(int(sk.public_key.g) % psq, p - 1, psq)),
                                               -1, p) % p
    return m - p if m > p // 2 else m


# ---- keys -------------------------------------------------------------------------------
def test_key_structure_2048(key2048):
    pub, sk = key2048
    p, q, t, n = int(sk.p), int(sk.q), int(sk.t), int(pub.n)
    assert n == p * p * q and n.bit_length() == 2048 and pub.bits == 2048
    assert p.bit_length() == pub.p_bits == 683 and p >> 681 == 3   # top two bits set
    assert t.bit_length() == 224 and (p - 1) % t == 0
    assert all(gmpy2.is_prime(x) for x in (p, q, t))
    assert gmpy2.gcd(p * t, q - 1) == 1
    psq = p * p
    gt = pow(int(pub.g) % psq, t, psq)
    assert gt != 1 and pow(gt, p, psq) == 1               # G^t mod p^2 has order p
    assert pow(int(pub.h) % psq, t, psq) == 1             # H vanishes in c^t
    assert OUPrivateCipher(sk).capacity_bits == 683 - 2 - CCA_MARGIN_BITS == 553


def test_keygen_deterministic_and_small_keys_refused():
    a = generate_keypair(768, rng=Drbg(SEED, "d"), insecure_test_key=True)[0]
    b = generate_keypair(768, rng=Drbg(SEED, "d"), insecure_test_key=True)[0]
    assert a == b and a.key_id == b.key_id
    with pytest.raises(InsecureKeyError, match="below 2048"):
        generate_keypair(1024)


def test_key_files_and_secrecy(tmp_path, key768):
    pub, sk = key768
    path = tmp_path / "ou.key"
    sk.save(path)
    assert os.stat(path).st_mode & 0o777 == 0o600
    back = OUPrivateKey.load(path, insecure_test_key=True)
    assert back.key_id == sk.key_id and back.p == sk.p
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        OUPrivateKey.load(path, insecure_test_key=True)
    pub.save(tmp_path / "ou.pub")
    assert OUPublicKey.load(tmp_path / "ou.pub", insecure_test_key=True) == pub
    assert format(int(sk.p), "x") not in repr(sk) + str(sk)
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(sk)
    with pytest.raises(InsecureKeyError):
        OUPublicKey.load(tmp_path / "ou.pub")


# ---- known answers and the math, checked without the engine --------------------------
def test_known_answers():
    """The recorded key regenerates from its seed; the engine's ciphertexts for the
    recorded exponents equal those computed with Python's pow; all decrypt."""
    pub, sk = generate_keypair(KAT["bits"], rng=Drbg(bytes.fromhex(KAT["seed"]), "ou"))
    for f in ("n", "g", "h"):
        assert format(int(getattr(pub, f)), "x") == KAT[f]
    for f in "pqt":
        assert format(int(getattr(sk, f)), "x") == KAT[f]
    assert pub.key_id == KAT["key_id"]
    priv = OUPrivateCipher(sk, workers=1)
    for c in (priv, priv.public()):
        ms = [int(v["m"]) for v in KAT["vectors"]]
        rs = [int(v["r"], 16) for v in KAT["vectors"]]
        assert [format(int(x), "x") for x in c._kernel.encrypt(ms, rs, "djn")] == \
            [v["c"] for v in KAT["vectors"]]
    cts = [gmpy2.mpz(v["c"], 16) for v in KAT["vectors"]]
    assert priv.decrypt(CipherVector(priv.key_id, cts, priv.capacity_bits)) == \
        [int(v["m"]) for v in KAT["vectors"]]
    assert [_textbook_decrypt(c, sk) for c in cts] == [int(v["m"]) for v in KAT["vectors"]]


def test_math_against_pow_and_lightphe(key2048):
    """Ciphertexts are G^m H^r mod n (Python pow / gmpy2.powmod); decryption agrees with
    the textbook formula and with lightphe's independent Okamoto-Uchiyama."""
    pub, sk = key2048
    priv = OUPrivateCipher(sk, workers=1)
    rng = Drbg(SEED, "math")
    vals = [0, 7, -7, 2**100 + 3, -(2**400), 2**552 - 1, -(2**552 - 1)]
    draws = priv._draw(Drbg(SEED, "math"), len(vals), "djn")
    enc = priv.encrypt(vals, rng=rng)
    n, G, H = int(pub.n), int(pub.g), int(pub.h)
    for m, r, c in zip(vals, draws, enc.data, strict=True):
        assert int(c) == pow(G, m, n) * pow(H, r, n) % n
        assert int(c) == gmpy2.powmod(G, m, n) * gmpy2.powmod(H, r, n) % n
    assert priv.decrypt(enc) == vals == [_textbook_decrypt(c, sk) for c in enc.data]
    lightphe = pytest.importorskip("lightphe.cryptosystems.OkamotoUchiyama")
    ref = lightphe.OkamotoUchiyama(keys={
        "private_key": {"p": int(sk.p), "q": int(sk.q)},
        "public_key": {"n": n, "g": G, "h": H}})
    p = int(sk.p)
    assert [ref.decrypt(int(c)) for c in enc.data] == [m % p for m in vals]


def test_refresh_obfuscators_against_pow(key768):
    """The refresh's H^r (2176-bit r for 2048 bits): the key holder reduces r by
    multiples of H's order mod p^2 and q. Its values equal Python's pow mod n and the
    public tables' on the KAT key and a small key, at the reduction's edges (multiples
    of p - 1 and q - 1), and for bases outside the key's structure (r then reduced by
    p (p - 1)) or not a unit (not reduced)."""
    from secure_agg.ou_kernels import OUKernel
    n, g, h, p, q = (int(KAT[f], 16) for f in ("n", "g", "h", "p", "q"))
    k = OUKernel(n, g, h, (p, q))
    bits = k.exp_bits("djn_full")
    rs = [0, 1, p - 1, 3 * (p - 1), q - 1, (q - 1) * (p - 1) + 5, (1 << bits) - 1] + \
        [Drbg(SEED, f"rr-kat{i}").randbits(bits) for i in range(3)]
    assert k._h_orders == (p - 1, q - 1)
    assert k.obfuscate(rs, "djn_full") == [pow(h, r, n) for r in rs]
    pk, sk = key768
    n, p, q = int(pk.n), int(sk.p), int(sk.q)
    bits = pk.bits + 128
    rs = [p * (p - 1), (1 << bits) - 1, p - 1, q - 1, Drbg(SEED, "rr-768").randbits(bits)]
    want = [pow(int(pk.h), r, n) for r in rs]
    assert OUKernel(n, pk.g, pk.h).obfuscate(rs, "djn_full") == want
    assert OUKernel(n, pk.g, pk.h, (p, q)).obfuscate(rs, "djn_full") == want
    for base in (pow(5, 3, n), p * 7):   # H^(p-1) != 1 mod p^2; gcd(base, n) = p
        k = OUKernel(n, pk.g, base, (p, q))
        assert k._h_orders is None if base % p == 0 else k._h_orders[0] == p * (p - 1)
        assert k.obfuscate(rs, "djn_full") == [pow(base, r, n) for r in rs]


# ---- the chosen-ciphertext attack --------------------------------------------------------
def test_cca_key_recovery_attack_is_refused(key2048):
    """A peer that gets any decryption of a ciphertext of M >= p factors n: the
    plaintext comes back as M mod p, and gcd(M - (M mod p), n) = p. The attack is
    mounted here (it works against the unchecked formula) and the cipher refuses it."""
    pub, sk = key2048
    priv = OUPrivateCipher(sk, workers=1)
    peer = priv.public()
    M = (1 << 690) + 0xC0FFEE                      # above p (683 bits)
    c = int(gmpy2.powmod(pub.g, M, pub.n)) * int(peer._kernel.obfuscate([12345], "djn")[0]) \
        % int(pub.n)
    leaked = _textbook_decrypt(c, sk) % int(sk.p)  # what an unchecked decryption returns
    assert gmpy2.gcd(M - leaked, pub.n) == sk.p    # ... and it factors n
    blob = peer.to_bytes(CipherVector(peer.key_id, [gmpy2.mpz(c)], 0))
    vec = priv.from_bytes(peer.to_bytes(peer.encrypt([5, 6])) + blob, priv.capacity_bits)
    with pytest.raises(PlaintextOutOfRange, match="ciphertext 2 decrypts outside"):
        priv.decrypt(vec)
    # built homomorphically from honest ciphertexts: still refused
    honest = peer.encrypt([1 << 400]).data[0]
    big = CipherVector(peer.key_id, [gmpy2.powmod(honest, 1 << 300, pub.n)], 100)
    with pytest.raises(PlaintextOutOfRange):   # a malicious peer skips its own checks
        priv.decrypt(big)
    # a declared bound is enforced too: 2^60 in a vector promised to hold 40 bits
    with pytest.raises(PlaintextOutOfRange, match=r"2\^40"):
        priv.decrypt(priv.from_bytes(peer.to_bytes(peer.encrypt([1 << 60])), 40))


@pytest.mark.parametrize("backend", ["gmpy2", "auto"])
def test_decryption_on_each_modexp_backend(key2048, backend, monkeypatch):
    """Decryption's powers run mod n on 8-lane modexp where it is available (auto) and
    mod p^2 on gmpy2 otherwise: the same plaintexts (textbook formula) and the same
    refusals on both."""
    from secure_agg import native_mb
    from secure_agg.ou_kernels import decrypt_powers
    monkeypatch.setenv(native_mb.MODEXP_ENV, backend)
    pub, sk = key2048
    priv = OUPrivateCipher(sk, workers=1)
    vals = [0, 1, -1, 2**552 - 1, -(2**300)] + list(range(-6, 7))
    enc = priv.encrypt(vals, rng=Drbg(SEED, "backends"))
    assert priv.decrypt(enc) == vals == [_textbook_decrypt(c, sk) for c in enc.data]
    psq = sk.p * sk.p
    assert decrypt_powers(enc.data, sk.t, psq, pub.n) == \
        [gmpy2.powmod(c, sk.t, psq) for c in enc.data]
    with pytest.raises(PlaintextOutOfRange, match="ciphertext 3 decrypts outside"):
        priv.decrypt(CipherVector(priv.key_id, enc.data, 200))


def test_non_ou_ciphertext_refused(key768):
    pub, sk = key768
    priv = OUPrivateCipher(sk, workers=1)
    x = 2
    while pow(x, int(sk.t), int(sk.p)) == 1:
        x += 1
    with pytest.raises(PlaintextOutOfRange, match="not a valid OU ciphertext"):
        priv.decrypt(CipherVector(priv.key_id, [gmpy2.mpz(x)], 10))


# ---- homomorphic operations against plain integers ---------------------------------------
@pytest.mark.parametrize("workers", [1, 2])
def test_operations_match_plain_integers(key768, workers):
    pub, sk = key768
    priv = OUPrivateCipher(sk, workers=workers)
    peer = OUPublicCipher(pub, workers=workers)
    rng = np.random.default_rng(1)
    vals = rng.integers(-10**6, 10**6, size=3000).tolist()
    enc = peer.encrypt(vals, rng=Drbg(SEED, "ops"))
    assert enc.data == priv.encrypt(vals, rng=Drbg(SEED, "ops")).data  # CRT == public
    dec = priv.decrypt
    assert dec(enc) == vals
    assert dec(peer.add(enc, enc)) == [2 * v for v in vals]
    assert dec(peer.add_plain(enc, [-5])) == [v - 5 for v in vals]
    assert dec(peer.sub(enc, enc)) == [0] * len(vals)
    k = rng.integers(-1000, 1000, size=len(vals)).tolist()
    assert dec(peer.mul_plain(enc, k)) == [a * b for a, b in zip(vals, k, strict=True)]
    assert dec(peer.sum(enc)) == [sum(vals)]
    X = rng.integers(-2**15, 2**15, size=(len(vals), 3))
    assert dec(peer.matvec_t(X, enc)) == (X.T.astype(object) @ np.array(vals, dtype=object)
                                          ).tolist()
    bins = rng.integers(0, 8, size=(len(vals), 4))
    rows = np.flatnonzero(rng.random(len(vals)) < 0.6)
    want = np.zeros(32, dtype=object)
    for f in range(4):
        np.add.at(want, f * 8 + bins[rows, f], np.array(vals, dtype=object)[rows])
    assert dec(peer.histogram(enc, bins, 8, rows=rows)) == want.tolist()
    fresh = peer.rerandomize(enc, rng=Drbg(SEED, "rr"))
    assert dec(fresh) == vals and all(a != b for a, b in zip(fresh.data, enc.data,
                                                             strict=True))
    small = peer.encrypt(list(range(100)), rng=Drbg(SEED, "pk"))
    slot, per = 30, priv.capacity_bits // 30
    assert priv.decrypt_packed(peer.pack(small, slot, per), slot, per, 100) == list(range(100))


def test_precomputed_obfuscators_match_rng_encryption(key768):
    pub, sk = key768
    for c in (OUPrivateCipher(sk, workers=2), OUPublicCipher(pub, workers=2)):
        vals = list(range(-500, 700))
        batch = c.precompute_obfuscators(len(vals), rng=Drbg(SEED, "pre"))
        got = c.encrypt(vals[:300], obfuscators=batch).data + \
            c.encrypt(vals[300:], obfuscators=batch).data
        assert got == c.encrypt(vals, rng=Drbg(SEED, "pre")).data
        rr = c.precompute_obfuscators(5, rng=Drbg(SEED, "rr"), obfuscation="standard")
        v = c.encrypt([1, 2, 3, 4, 5], rng=Drbg(SEED, "x"))
        assert c.rerandomize(v, obfuscators=rr, obfuscation="djn_full").data == \
            c.rerandomize(v, rng=Drbg(SEED, "rr")).data
        batch.close()


def test_capacity_and_key_checks(key768):
    pub, sk = key768
    priv = OUPrivateCipher(sk, workers=1)
    cap = priv.capacity_bits
    with pytest.raises(PlaintextOverflow, match="exceeds by 1 bits"):
        priv.encrypt([1 << cap])
    with pytest.raises(PlaintextOverflow, match="pack"):
        priv.pack(priv.encrypt([1]), cap // 2 + 1, 2)
    other = OUPrivateCipher(generate_keypair(768, rng=Drbg(SEED, "o"),
                                             insecure_test_key=True)[1])
    with pytest.raises(KeyMismatch):
        priv.add(priv.encrypt([1]), other.encrypt([1]))


def test_from_bytes_range_checks(key768):
    pub, sk = key768
    c = OUPublicCipher(pub, workers=1)
    w = c.ciphertext_bytes
    assert w == 96   # bytes of n, half of Paillier's bytes of n^2
    for bad, msg in ((bytes(w), "out of range"), (int(pub.n).to_bytes(w, "big"), "out of range"),
                     (int(sk.p).to_bytes(w, "big"), "not coprime"), (b"\x01" * (w + 1), "multiple")):
        with pytest.raises(ValueError, match=msg):
            c.from_bytes(bad, 10)


# ---- keys over the wire and the policy -----------------------------------------------------
@pytest.mark.parametrize("form", ["full", "modulus"])
def test_peer_key_description_round_trip_and_tampering(key2048, form):
    pub, sk = key2048
    desc = describe_public_key(OUPrivateCipher(sk, workers=1).public(), form=form)
    assert desc["scheme"] == "ou" and "p" not in desc and "q" not in desc
    assert peer_public_cipher(desc, OU_POLICY).key_id == pub.key_id
    with pytest.raises(KeyPolicyError, match="allowed_ciphers") as exc:
        peer_public_cipher(desc, KeyPolicy())
    assert exc.value.rule == "allowed_ciphers"
    n = int(pub.n)
    for field, value, msg in (("g", format(n + 5, "x"), "G must be in"),
                              ("h", "1", "H must be in"),
                              ("g", "zz", "not hex"), ("h", "f" * 3000, "at most"),
                              ("key_bits", 3072, "says 3072 bits")) + (
                              (("n", format(n - 2, "x"), "key_id|not a unit"),) if form == "full" else ()):
        bad = dict(desc, **{field: value})
        with pytest.raises(KeyPolicyError, match=msg):
            peer_public_cipher(bad, OU_POLICY)
    with pytest.raises(KeyPolicyError, match="ou_max_key_bits = 3072"):
        peer_public_cipher(dict(desc, key_bits=4096),
                           KeyPolicy(allowed_ciphers=("ou",), ou_max_key_bits=3072))
    with pytest.raises(KeyPolicyError, match="ou_min_key_bits = 3072"):
        peer_public_cipher(desc, KeyPolicy(allowed_ciphers=("ou",), ou_min_key_bits=3072,
                                           ou_max_key_bits=4096))
    # LR: the peer must use this party's scheme
    from secure_agg.paillier import PaillierPrivateCipher
    own = PaillierPrivateCipher.generate(512, insecure_test_key=True, workers=1)
    with pytest.raises(KeyPolicyError, match="uses cipher 'ou'"):
        peer_public_cipher(desc, OU_POLICY, own=own)


# ---- fuzzing what a peer sends (issue 12 part 6; profiles: tests/conftest.py) ------------
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.binary(max_size=300), st.lists(st.integers(0, 2 ** 768 - 1), max_size=3))
def test_fuzz_ou_ciphertexts_from_a_peer(key768, data, vals):
    """``from_bytes`` returns units in [1, n) or raises ValueError; decrypting what it
    accepted gives plaintexts within the declared bound or PlaintextOutOfRange."""
    pub, sk = key768
    priv = OUPrivateCipher(sk, workers=1)
    w = priv.ciphertext_bytes
    specials = [int(sk.p), int(sk.q), int(pub.n) - 1, int(sk.p) ** 2]
    for blob in (data, b"".join(v.to_bytes(w, "big") for v in vals + specials[:len(vals)])):
        try:
            vec = priv.from_bytes(blob, 40)
        except ValueError:
            continue
        assert all(0 < c < pub.n and gmpy2.gcd(c, pub.n) == 1 for c in vec.data)
        assert priv.to_bytes(vec) == blob
        try:
            out = priv.decrypt(vec)
        except PlaintextOutOfRange:
            continue
        assert len(out) == len(vec) and all(abs(m) < 2 ** 40 for m in out)


@given(st.dictionaries(st.sampled_from(["n", "g", "h", "key_id", "key_bits", "scheme"]),
                       st.text(max_size=40) | st.integers() | st.none(), max_size=6))
def test_fuzz_ou_peer_key_descriptions(desc):
    """A peer's key description builds a cipher or is refused with KeyPolicyError."""
    desc = {"scheme": "ou", "key_bits": 2048, **desc}
    try:
        peer_public_cipher(desc, OU_POLICY)
    except KeyPolicyError:
        pass
