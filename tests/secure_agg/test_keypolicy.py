"""One key policy for every algorithm (secure_agg.keypolicy), and the trap it fixes: a
test node whose minimum is 1024 bits accepts a 1024-bit key."""

from __future__ import annotations

import pytest

from secure_agg.cipher import PlainCipher
from secure_agg.keypolicy import (
    KeyPolicy,
    KeyPolicyError,
    describe_public_key,
    peer_public_cipher,
)
from secure_agg.paillier import PaillierPrivateCipher
from secure_agg.rng import Drbg

TEST_NODE = KeyPolicy(min_key_bits=1024, allow_plain=True, allow_test_keys=True)


@pytest.fixture(scope="module")
def key1024():
    """1024-bit test key (test size only)."""
    return PaillierPrivateCipher.generate(1024, rng=Drbg(b"k" * 32), insecure_test_key=True)


def test_rules():
    prod = KeyPolicy()
    assert prod.check_bits(2048) is False and prod.check_bits(4096) is False
    for bits, rule in ((1024, "min_key_bits"), (8192, "max_key_bits")):
        with pytest.raises(KeyPolicyError) as e:
            prod.check_bits(bits)
        assert e.value.rule == rule
    with pytest.raises(KeyPolicyError, match="'plain'") as e:
        prod.check("plain", 2048)
    assert e.value.rule == "plain"
    # min below 2048 without test keys: test keys are still refused
    with pytest.raises(KeyPolicyError) as e:
        KeyPolicy(min_key_bits=1024).check_bits(1024)
    assert e.value.rule == "test_key"
    # the trap: a test node with min_key_bits = 1024 accepts a 1024-bit key
    assert TEST_NODE.check_bits(1024) is True
    for bad in ("2048", 2048.0, True, None):
        with pytest.raises(KeyPolicyError, match="not an integer"):
            prod.check_bits(bad)
    with pytest.raises(ValueError):
        KeyPolicy(min_key_bits=4096, max_key_bits=2048)
    with pytest.raises(ValueError):
        KeyPolicy(max_key_bits=16384)


@pytest.mark.parametrize("form", ["full", "modulus"])
def test_peer_key_both_wire_forms(key1024, form):
    desc = describe_public_key(key1024.public() if form == "modulus" else key1024, form)
    pub = peer_public_cipher(desc, TEST_NODE)
    ct = pub.encrypt([5, -7], rng=Drbg(b"e" * 32))
    assert key1024.decrypt(ct) == [5, -7]
    with pytest.raises(KeyPolicyError, match="below this node's minimum") as e:
        peer_public_cipher(desc, KeyPolicy())
    assert e.value.rule == "min_key_bits"


def test_peer_key_malformed_or_lying(key1024):
    desc = describe_public_key(key1024.public(), "modulus")
    for bad, match in (
            ({**desc, "key_bits": 2048}, "does not match its declared size|below"),
            ({**desc, "n": "zz"}, "refused"),
            ({**desc, "n": "f" * 5000}, "refused"),
            ({**desc, "key_bits": 9000}, "above this node's maximum"),
            ({**desc, "scheme": "rsa"}, "unknown"),
            ("not a dict", "not an object")):
        with pytest.raises(KeyPolicyError, match=match):
            peer_public_cipher(bad, TEST_NODE)


def test_peer_key_against_own_key(key1024):
    plain = describe_public_key(PlainCipher(2048), "modulus")
    with pytest.raises(KeyPolicyError, match="uses cipher 'plain' but this party uses "
                                             "'paillier'"):
        peer_public_cipher(plain, TEST_NODE, own=key1024.public())
    strong = PaillierPrivateCipher.generate(2048, rng=Drbg(b"s" * 32))
    with pytest.raises(KeyPolicyError, match="weaker than this party's 2048-bit key"):
        peer_public_cipher(describe_public_key(key1024, "full"), TEST_NODE,
                           own=strong.public())
    with pytest.raises(KeyPolicyError, match="'plain'"):
        peer_public_cipher(plain, KeyPolicy())
